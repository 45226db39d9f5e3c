"""The systemd units in deploy/systemd/, checked by systemd's own verifier (systemd-analyze
verify and its offline security review). PID 1 of the test machines is not systemd
(/proc/1/comm), so the units run for real only under systemd in a container
(tests/integration/test_container.py, GFS_CONTAINER_TESTS=1); the daemons' READY=1 is also
checked with a plain socket in tests/integration/test_daemons_from_config.py."""
from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from cli.init_node import default_path

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
ROLES = ("master", "chunkserver")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(apt-get install systemd)")


def unit(role: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / f"gfs-{role}.service")
    return parser


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A root directory for `systemd-analyze --root`: the distribution's units (for the targets
    ours depend on), ours, and an executable where ExecStart expects gfs."""
    root = tmp_path_factory.mktemp("root")
    system = Path("/lib/systemd/system")
    if not system.is_dir():
        pytest.skip(f"{system} not found: the distribution's units are needed to resolve targets")
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for role in ROLES:
        shutil.copy(UNITS / f"gfs-{role}.service", root / "etc/systemd/system")
    gfs = root / "opt/gfs/bin/gfs"
    gfs.parent.mkdir(parents=True)
    gfs.write_text("#!/bin/sh\n")
    gfs.chmod(0o755)
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, *args, f"--root={root}"], capture_output=True, text=True,
                          timeout=60)


@needs_analyze
@pytest.mark.parametrize("role", ROLES)
def test_systemd_analyze_verify_finds_nothing(root, role):
    r = analyze(root, "verify", str(root / f"etc/systemd/system/gfs-{role}.service"))
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stdout + r.stderr


@needs_analyze
def test_verify_would_catch_a_mistake(root):
    bad = root / "etc/systemd/system/gfs-bad.service"
    bad.write_text((UNITS / "gfs-master.service").read_text()
                   .replace("ProtectSystem=", "ProtectSystm="))
    r = analyze(root, "verify", str(bad))
    assert "Unknown key 'ProtectSystm'" in r.stderr


@needs_analyze
@pytest.mark.parametrize("role", ROLES)
def test_security_exposure_is_low(root, role):
    # systemd's own score, 0 (locked down) to 10 (exposed); --threshold is in tenths.
    r = analyze(root, "security", "--offline=yes", "--threshold=20",
                str(root / f"etc/systemd/system/gfs-{role}.service"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr


@pytest.mark.parametrize("role", ROLES)
def test_units_run_the_daemon_from_init_node_config_with_readiness(role):
    service = unit(role)["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert service["Environment"] == f"GFS_CONFIG={default_path(role)}"
    assert service["ExecStart"] == f"/opt/gfs/bin/gfs {role}"
    assert service["User"] == "gfs" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["PrivateTmp"] == "yes"
    assert service["ReadWritePaths"] == "/var/lib/gfs"
