"""The cluster secret file and the keys derived from it; daemons refuse to start without it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gfs.auth.secret import SECRET_BYTES, create_secret_file, derive_key, load_secret_file
from gfs.errors import FailedPrecondition
from master.raft_auth import FrameAuthenticator, ForgedFrame


def test_secret_file_is_created_private_and_loads(tmp_path):
    path = tmp_path / "cluster.secret"
    secret = create_secret_file(path)
    assert len(secret) == SECRET_BYTES
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_secret_file(path) == secret
    with pytest.raises(FileExistsError):
        create_secret_file(path)          # never overwritten


@pytest.mark.parametrize("case", ["missing", "none", "short", "world-readable"])
def test_bad_secret_files_are_refused_with_one_line(tmp_path, case):
    path = tmp_path / "s"
    if case == "short":
        path.write_bytes(b"x" * 16)
        os.chmod(path, 0o600)
    elif case == "world-readable":
        path.write_bytes(os.urandom(32))
        os.chmod(path, 0o644)
    with pytest.raises(FailedPrecondition) as err:
        load_secret_file(None if case == "none" else path)
    assert "\n" not in err.value.message and "secret" in err.value.message


def test_derived_keys_depend_on_purpose_parts_and_secret():
    a, b = os.urandom(32), os.urandom(32)
    keys = {derive_key(a, "p"), derive_key(a, "q"), derive_key(b, "p"),
            derive_key(a, "p", b"1"), derive_key(a, "p", b"1", b""), derive_key(a, "p", b"", b"1")}
    assert len(keys) == 6
    assert derive_key(a, "p", b"x") == derive_key(a, "p", b"x")


def test_raft_frames_verify_only_with_the_same_secret():
    secret = os.urandom(32)
    sender, receiver = FrameAuthenticator(secret), FrameAuthenticator(secret)
    frame = sender.encrypt_at_time(b"payload", 42)
    assert receiver.extract_timestamp(frame) == 42
    assert receiver.decrypt(frame) == b"payload"
    other = FrameAuthenticator(os.urandom(32)).encrypt_at_time(b"payload", 42)
    tampered = frame[:-1] + b"X"
    for bad in (other, tampered, frame[:20], b""):
        with pytest.raises(ForgedFrame):
            receiver.extract_timestamp(bad)
        with pytest.raises(ForgedFrame):
            receiver.decrypt(bad)


@pytest.mark.parametrize("daemon", ["master", "chunkserver"])
def test_daemons_refuse_to_start_without_a_secret(tmp_path, daemon):
    argv = {"master": ["master", "--id", "1", "--raft", "127.0.0.1:1", "--grpc", "127.0.0.1:0",
                       "--data", str(tmp_path / "m")],
            "chunkserver": ["chunkserver", "--data", str(tmp_path / "c"),
                            "--masters", "127.0.0.1:1", "--bind", "127.0.0.1:0"]}[daemon]
    env = {k: v for k, v in os.environ.items() if k != "GFS_CLUSTER_SECRET_FILE"}
    proc = subprocess.run([sys.executable, "-m", "cli.main", *argv], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cluster-secret-file" in lines[0], proc.stderr
