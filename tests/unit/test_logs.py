"""gfs/logs.py: failures that repeat are not logged at the rate they happen."""
import logging

from gfs.logs import RepeatedFailure


def test_a_repeated_failure_is_logged_once_per_interval_with_a_count(caplog):
    logger = logging.getLogger("test.repeated")
    failures = RepeatedFailure(logger, "tick failed", interval=3600)
    with caplog.at_level(logging.ERROR, logger="test.repeated"):
        for _ in range(50):
            try:
                raise OSError(28, "No space left on device")
            except OSError as err:
                failures.exception(err)
        try:
            raise ValueError("another kind")
        except ValueError as err:
            failures.exception(err)
    assert [r.getMessage() for r in caplog.records] == ["tick failed", "tick failed"]
    assert all(r.exc_info for r in caplog.records)
    failures.interval = 0                     # the interval passed: logged with the count
    with caplog.at_level(logging.ERROR, logger="test.repeated"):
        try:
            raise OSError(28, "No space left on device")
        except OSError as err:
            failures.exception(err)
    assert caplog.records[-1].getMessage() == "tick failed (49 more like it in the last 0 s)"


def test_a_daemon_killed_by_a_fatal_signal_leaves_its_python_stack_in_its_log():
    """A SIGBUS from an mmap'd LMDB page otherwise ends a daemon without a word."""
    import signal
    import subprocess
    import sys
    code = ("from gfs import logs; import os, signal; logs.setup('t'); "
            "os.kill(os.getpid(), signal.SIGBUS)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -signal.SIGBUS
    assert "Fatal Python error" in done.stderr and "<string>" in done.stderr
