"""The committed gRPC stubs must match proto/*.proto."""
import subprocess
import sys


def test_generated_stubs_are_current():
    proc = subprocess.run([sys.executable, "-m", "proto.generate", "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
