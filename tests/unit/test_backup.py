"""master/backup.py without servers: a backup of a store restores into a store that starts a
new log and holds the same namespace; damage is refused."""
import io
import os

import pytest

from gfs.errors import AlreadyExists, DataLoss, InvalidArgument, NotFound
from gfs import backupfile
from master import backup
from master.journal import DurableJournal
from master.state import RESTORE_HANDLE_GAP, MetadataState
from master.store import NEXT_CHUNK


def make_backup(tmp_path) -> tuple[str, dict]:
    with MetadataState(str(tmp_path / "src")) as st:
        for i, path in enumerate(["/a", "/a/b"], start=1):
            st.apply(i, {"now": 1000, "op": "mkdir", "path": path, "parents": False,
                         "mode": 0o755, "owner": ""})
        copy = tmp_path / "copy.mdb"
        with open(copy, "wb") as f:
            st.copy_to_fd(f.fileno())
        applied = st.applied_index()
    size, sha = backupfile.digest_file(str(copy))
    header = backupfile.make_header(applied, 1234, size, sha)
    path = tmp_path / "b.gfsbackup"
    path.write_bytes(backupfile.header_bytes(header) + copy.read_bytes())
    return str(path), header


def test_round_trip_starts_a_new_log(tmp_path):
    path, header = make_backup(tmp_path)
    assert header["applied_index"] == 2
    with MetadataState(str(tmp_path / "src")) as st, st._reader() as tx:
        before_next_chunk = tx.counter(NEXT_CHUNK)
    got = backup.restore(path, str(tmp_path / "master"))
    assert got == header
    with MetadataState(str(tmp_path / "master" / "meta")) as st:
        # the new log's first entries stand for the restore: the store is the state at the last
        assert st.applied_index() == backup.RESTORED_LOG_BASE
        journal = DurableJournal(str(tmp_path / "master" / "raft"))
        assert [e[1:] for e in journal._entries] == [(2, 0), (3, 0)]
        journal.close()
        with st._reader() as tx:                          # past chunks written after the backup
            assert tx.counter(NEXT_CHUNK) == before_next_chunk + RESTORE_HANDLE_GAP
        assert st.stat("/a/b")["type"] == "dir"
        assert st.apply(4, {"now": 2000, "op": "mkdir", "path": "/c", "parents": False,
                            "mode": 0o755, "owner": ""})["ok"]
    assert os.path.isdir(tmp_path / "master" / "raft")
    with pytest.raises(AlreadyExists):
        backup.restore(path, str(tmp_path / "master"))
    backup.restore(path, str(tmp_path / "master"), force=True)
    with MetadataState(str(tmp_path / "master" / "meta")) as st:
        entries, _ = st.list("/")
        assert [e["path"] for e in entries] == ["/a"]     # replaced by the backup's state
        with pytest.raises(NotFound):
            st.stat("/c")


def test_damage_is_refused(tmp_path):
    path, _ = make_backup(tmp_path)
    data = open(path, "rb").read()
    for name, content, error in [("flip", data[:-10] + bytes([data[-10] ^ 1]) + data[-9:], DataLoss),
                                 ("short", data[:-5000], DataLoss),
                                 ("magic", b"NOTGFS!!" + data[8:], InvalidArgument),
                                 ("empty", b"", InvalidArgument)]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(error):
            backup.restore(str(bad), str(tmp_path / f"m-{name}"))
        assert not (tmp_path / f"m-{name}" / "meta").exists()
    with pytest.raises(InvalidArgument):
        backupfile.read_header(io.BytesIO(b""))
