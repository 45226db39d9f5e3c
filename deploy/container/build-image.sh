#!/usr/bin/env bash
# Build the gfs container image with podman, from Debian packages and PyPI only (no container
# registry): a Debian base from debootstrap (`podman import`), the pinned Python dependencies
# as wheels built on this machine, then deploy/container/Containerfile on top.
#
#   deploy/container/build-image.sh [TAG]          (default tag: localhost/gfs:latest)
#   deploy/container/build-image.sh --run-args     print the `podman run` options that work
#                                                  here (one per line), after building the base
#
# Environment:
#   GFS_IMAGE_CACHE   cache directory (default /var/cache/gfs-image): the base rootfs tarball
#                     and the wheelhouse, each kept under a hash of its inputs, so a rebuild
#                     after a code change only redoes the last, small layer.
#   GFS_DEBIAN_MIRROR Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   GFS_DEBIAN_SUITE  Debian release (default bookworm: its python3 is 3.11, like the wheels)
#   PYTHON            the Python that builds the wheels (same minor version as the image's)
# Needs: podman, debootstrap (apt-get install podman debootstrap), root.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
TAG=${1:-localhost/gfs:latest}
CACHE=${GFS_IMAGE_CACHE:-/var/cache/gfs-image}
MIRROR=${GFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${GFS_DEBIAN_SUITE:-bookworm}
PY=${PYTHON:-python3}
PACKAGES=python3,python3-venv,ca-certificates,tini
mkdir -p "$CACHE"
log() { echo "build-image: $*" >&2; }

# 1. The base: a minimal Debian with Python, imported as localhost/gfs-base:HASH.
base_key=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" "base-v1" | sha256sum | cut -c1-16)
BASE=localhost/gfs-base:$base_key
if ! podman image exists "$BASE"; then
    tarball=$CACHE/base-$base_key.tar
    if [ ! -s "$tarball" ]; then
        log "debootstrap $SUITE from $MIRROR (cached as $tarball)"
        rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        trap 'rm -rf "$rootfs"' EXIT
        debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    log "podman import $tarball as $BASE"
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE" >/dev/null
fi

# Options podman needs on this machine to run a container, found by trying: none where podman
# works as installed; else runc with the host's own resource limits (hosts with hybrid cgroups,
# where crun refuses to start containers, and without CAP_SYS_RESOURCE, where podman's default
# limits exceed the host's). Fails with podman's errors when nothing works.
RUN_ARGS=()
if ! err=$(podman run --rm --entrypoint /bin/true "$BASE" 2>&1); then
    errors="podman run (defaults): $err"
    if command -v runc >/dev/null; then
        RUN_ARGS=(--runtime runc --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
        if ! err=$(podman run --rm "${RUN_ARGS[@]}" --entrypoint /bin/true "$BASE" 2>&1); then
            errors="$errors; podman run ${RUN_ARGS[*]}: $err"
            RUN_ARGS=(CANNOT)
        fi
    else
        errors="$errors; runc (apt-get install runc) is not installed to try instead"
        RUN_ARGS=(CANNOT)
    fi
    if [ "${RUN_ARGS[0]}" = CANNOT ]; then
        echo "build-image: podman cannot run a container on this machine: $errors" >&2
        exit 3
    fi
    log "podman needs: ${RUN_ARGS[*]}"
fi
if [ "$TAG" = --run-args ]; then
    printf '%s\n' "${RUN_ARGS[@]}"
    exit 0
fi

# 2. The pinned dependencies as wheels, built here (PyPI as this machine reaches it).
wheel_key=$(cat requirements.txt | sha256sum | cut -c1-16)-$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
WHEELS=$CACHE/wheels-$wheel_key
if [ ! -f "$WHEELS/.complete" ]; then
    log "building dependency wheels into $WHEELS"
    rm -rf "$WHEELS"
    "$PY" -m pip wheel -q --disable-pip-version-check -r requirements.txt -w "$WHEELS" >&2
    touch "$WHEELS/.complete"
fi

# 3. The build context: the wheels and gfs itself as a wheel.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/wheels"
cp "$WHEELS"/*.whl "$ctx/wheels/"
# gfs itself, built from a copy so the work tree gets no build/ or egg-info litter.
mkdir "$ctx/src"
tar -C "$ROOT" --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude=build \
    --exclude='*.egg-info' --exclude=tests -cf - . | tar -C "$ctx/src" -xf -
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps "$ctx/src" -w "$ctx/wheels" >&2
rm -rf "$ctx/src"
cp deploy/container/Containerfile "$ctx/"
log "podman build $TAG from $BASE"
previous=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
podman build -q --network=none "${RUN_ARGS[@]}" --build-arg "BASE=$BASE" -t "$TAG" -f "$ctx/Containerfile" "$ctx" >/dev/null
# The image this tag named before, now untagged, would pile up with every rebuild.
current=$(podman image inspect --format '{{.Id}}' "$TAG")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
echo "$TAG"
