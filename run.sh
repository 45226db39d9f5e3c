#!/usr/bin/env bash
# One entry point for the README's quick start:
#   ./run.sh demo   set everything up, start a local cluster, put and get a file
#   ./run.sh test   set everything up, run the whole test suite
#   ./run.sh bench [NAME ...] [--quick]   run the benchmark suite (bench/, docs/benchmarks.md)
#   ./run.sh chaos [--minutes N | --hours N] [--seed S]   the chaos suite (--hours: a resumable, recorded run)
#   ./run.sh setup  only set up (.venv with pinned dependencies, system packages)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}

need_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    # Install Debian packages that are missing; quiet when everything is present.
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || { echo "run.sh: need Debian packages: ${missing[*]}" >&2; return 1; }
    need_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive need_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup() {
    if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        echo "run.sh: Python 3.11 or newer is required (found: $("$PY" --version 2>&1))" >&2; exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; "$PY" -m venv "$VENV"; }
    fi
    # System tools the tests use: ip (network namespaces for partition tests), systemd-analyze
    # (checks deploy/systemd/; installing the package does not make systemd PID 1).
    apt_install iproute2 systemd || true
    # nft: the chaos lab's partitions, packet loss and one-way links between those namespaces
    # (bench/chaos/netns.py; without it the partition faults and their tests are skipped).
    apt_install nftables || true
    # libfuse3 and fusermount3: `gfs mount` and the chaos suite's FaultFS (bench/chaos/faultfs/,
    # power loss and disk faults); rsync for the mount's tests.
    apt_install fuse3 rsync || true
    # Debian's rclone: one of the real S3 clients the S3 API's tests drive (tests/integration/test_s3_clients.py).
    apt_install rclone || true
    # The container tests (GFS_CONTAINER_TESTS=1) build and run the image with podman.
    if [ "${GFS_CONTAINER_TESTS:-}" = 1 ]; then apt_install podman debootstrap runc || true; fi
    local stamp="$VENV/.installed"
    if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
        "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-dev.txt
        "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
        touch "$stamp"
    fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
    setup) setup ;;
    demo)
        setup
        exec "$VENV/bin/python" -m cli.demo "$@" ;;
    test)
        setup
        # Two pytest-xdist workers (GFS_TEST_WORKERS; 0 runs in this process), each taking
        # whole files: most integration tests wait on daemons, so two at once use both cores.
        # pytest exit code 5 means "no tests ran": that must fail, not pass silently.
        set +e
        "$VENV/bin/python" -m pytest -q -p no:cacheprovider -n "${GFS_TEST_WORKERS:-2}" \
            --dist loadfile "$@"
        rc=$?
        set -e
        if [ $rc -eq 5 ]; then echo "run.sh: no tests were collected" >&2; exit 1; fi
        exit $rc ;;
    bench)
        setup
        # The metadata, small-file and failover benchmarks run a real etcd beside gfs (Debian's
        # etcd-server). Install it when missing and we are root; without it those comparisons
        # are skipped with a message, never the whole bench.
        if ! command -v etcd >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt_install etcd-server || echo "run.sh: could not install etcd-server;" \
                "the etcd comparisons will be skipped" >&2
        fi
        # The gateway benchmarks run Debian's nginx (the upstream, and a peer) and HAProxy (a
        # peer), with load from wrk and h2load (nghttp2-client). Missing and not root: the
        # gateway benchmarks fail with a message naming the packages; the others run.
        if [ "$(id -u)" = 0 ]; then
            apt_install nginx haproxy wrk nghttp2-client || echo "run.sh: could not install" \
                "nginx, haproxy, wrk, nghttp2-client; the gateway benchmarks will fail" >&2
        fi
        exec "$VENV/bin/python" -m bench "$@" ;;
    chaos)
        setup
        exec "$VENV/bin/python" -m bench.chaos "$@" ;;
    *)
        echo "usage: ./run.sh {demo|test|bench|chaos|setup} [args...]" >&2; exit 2 ;;
esac
