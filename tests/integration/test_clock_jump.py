"""A forward jump of the leader's wall clock (gfs/clock.py, moved through --test-clock-file) with
real daemons: a token with 5 minutes left stays valid and a trash entry is not purged early.
The positive control restarts the leader with its clock still 10 minutes ahead: a daemon takes
the wall clock as it is at start, so then both do expire — proof that the jump reached it."""
import io
import time

import pytest

from gfs.clock import write_test_offset
from gfs.errors import GfsError

RETENTION_S = 300          # trash retention: 5 minutes
GC_PASS_S = 10             # the masters' garbage-collection interval


def test_forward_jump_on_the_leader_expires_nothing_early(make_cluster, tmp_path):
    c = make_cluster(masters=1, options={"master": {"trash-retention": RETENTION_S}},
                     start=False)
    clock_file = tmp_path / "leader-clock"
    c.set_daemon_options("master-1", {"test-clock-file": str(clock_file)})
    c.up()
    with c.client(deadline=20) as admin:
        token, _ = admin.token_create("five-minutes", ttl_s=RETENTION_S)
        admin.put(io.BytesIO(b""), "/doomed")
        admin.delete("/doomed")
        assert [e["path"] for e in admin.trash_list()] == ["/doomed"]

    write_test_offset(clock_file, 600)        # the leader's wall clock jumps 10 minutes ahead
    time.sleep(GC_PASS_S + 3)                 # at least one garbage-collection pass
    with c.client(deadline=20, token=token) as user:
        assert user.whoami()["user"] == "admin"           # the token is still valid
    with c.client(deadline=20) as admin:
        assert [e["path"] for e in admin.trash_list()] == ["/doomed"]  # not purged
    log = (tmp_path / "cluster" / "master-1" / "daemon.log").read_text()
    assert "wall clock jumped forward by 6" in log

    # Control: a restart takes the (still jumped) wall clock as it is.
    c.stop("master-1")
    c.start("master-1")
    c.wait_healthy(60)
    with c.client(deadline=20, token=token) as user:
        with pytest.raises(GfsError) as err:
            user.whoami()
        assert err.value.code == "UNAUTHENTICATED" and "expired" in err.value.message
    deadline = time.monotonic() + GC_PASS_S * 3
    with c.client(deadline=20) as admin:
        while admin.trash_list() and time.monotonic() < deadline:
            time.sleep(1)
        assert admin.trash_list() == []
