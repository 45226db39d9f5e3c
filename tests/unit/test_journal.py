"""DurableJournal: group commit, torn tails, truncation in both directions, term/vote."""
import pytest
import os

from master.journal import DurableJournal, encode_record, read_records


def entries(n, start=1, term=1):
    return [(f"cmd-{i}".encode(), i, term) for i in range(start, start + n)]


def test_nothing_reaches_disk_before_sync_and_everything_after(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(5):
        j.add(*e)
    assert os.path.getsize(tmp_path / "journal.log") == 0
    assert j.sync() is True
    assert j.sync() is False            # nothing new: no second fsync
    assert j.fsyncs == 1
    again = DurableJournal(str(tmp_path))
    assert [again[i] for i in range(len(again))] == entries(5)


def test_torn_tail_is_cut_and_short_garbage_not_kept(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(3):
        j.add(*e)
    j.sync()
    j._destroy()
    rec = encode_record(b"half-written", 4, 1)
    with open(tmp_path / "journal.log", "ab") as f:
        f.write(rec[:-3])
    again = DurableJournal(str(tmp_path))
    assert len(again) == 3 and again[-1][1] == 3
    assert os.path.getsize(tmp_path / "journal.log") == sum(len(encode_record(*e)) for e in entries(3))


def test_damaged_middle_record_is_preserved_aside(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(20):
        j.add(*e)
    j.sync()
    j._destroy()
    path = tmp_path / "journal.log"
    data = bytearray(path.read_bytes())
    data[len(encode_record(*entries(1)[0])) + 26] ^= 0xFF   # corrupt record 2's payload
    path.write_bytes(bytes(data))
    again = DurableJournal(str(tmp_path))
    assert len(again) == 1
    assert any(p.name.startswith("journal.log.damaged-") for p in tmp_path.iterdir())


def test_delete_from_then_append_replaces_the_tail(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(10):
        j.add(*e)
    j.sync()
    j.deleteEntriesFrom(6)                     # keep indexes 1..6
    for e in entries(3, start=7, term=2):
        j.add(*e)
    j.sync()
    again = DurableJournal(str(tmp_path))
    assert [again[i][1:] for i in range(len(again))] == [(i, 1) for i in range(1, 7)] + [(i, 2) for i in range(7, 10)]


def test_delete_to_compacts_and_later_appends_survive(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(100):
        j.add(*e)
    j.sync()
    j.deleteEntriesTo(90)
    assert j.first_index == 91 and len(j) == 10
    for e in entries(5, start=101):
        j.add(*e)
    j.deleteEntriesFrom(12)                    # a new leader's entry 103 replaces 103..105
    j.add(b"other", 103, 2)
    j.sync()
    again = DurableJournal(str(tmp_path))
    assert [again[i][1:] for i in range(len(again))] == [(i, 1) for i in range(91, 103)] + [(103, 2)]


def test_clear_then_add_is_atomic_on_sync(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(10):
        j.add(*e)
    j.sync()
    j.clear()
    j.add(b"prev", 50, 3)
    j.add(b"last", 51, 3)
    before = DurableJournal(str(tmp_path))     # not synced yet: the old log is intact
    assert len(before) == 10
    j.sync()
    after = DurableJournal(str(tmp_path))
    assert [after[i] for i in range(len(after))] == [(b"prev", 50, 3), (b"last", 51, 3)]


def test_term_and_vote_are_durable_immediately(tmp_path):
    j = DurableJournal(str(tmp_path))
    j.setCurrentTerm(7, "127.0.0.1:5000")
    again = DurableJournal(str(tmp_path))
    assert again.getCurrentTerm() == 7 and again.getVotedForNodeId() == "127.0.0.1:5000"


def test_read_records_rejects_gaps(tmp_path):
    path = tmp_path / "journal.log"
    path.write_bytes(encode_record(b"a", 1, 1) + encode_record(b"b", 3, 1))
    got, _, end, size = read_records(str(path))
    assert [g[1] for g in got] == [1] and end < size


def test_synced_trace_marks_exactly_the_durable_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("GFS_TRACE_SYNCED", "1")
    j = DurableJournal(str(tmp_path))
    for e in entries(3):
        j.add(*e)
    j.sync()
    durable = int((tmp_path / "journal.synced").read_text())
    j.add(b"unsynced", 4, 1)
    j._write_queued()           # written to the file, but not fsync'd
    assert os.path.getsize(tmp_path / "journal.log") > durable
    os.truncate(tmp_path / "journal.log", durable)   # what a power cut does
    again = DurableJournal(str(tmp_path))
    assert [again[i] for i in range(len(again))] == entries(3)


def test_resent_matching_entries_do_not_cut_the_log(tmp_path):
    """A leader that moved nextIndex back resends entries the follower has: nothing is cut."""
    j = DurableJournal(str(tmp_path))
    for e in entries(10):
        j.add(*e)
    j.sync()
    j.deleteEntriesFrom(4)                 # pysyncobj: prevLogIdx = 4, resend 5..7
    for e in entries(3, start=5):
        j.add(*e)
    assert len(j) == 10 and j.unverified_index() == 8   # 8..10 kept, not yet confirmed
    for e in entries(3, start=8):
        j.add(*e)                          # the next resend confirms them
    assert len(j) == 10 and j.unverified_index() is None
    j.sync()
    assert len(DurableJournal(str(tmp_path))) == 10


def test_a_conflicting_entry_cuts_from_there(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(10):
        j.add(*e)
    j.sync()
    j.deleteEntriesFrom(4)
    j.add(b"cmd-5", 5, 1)                  # matches
    j.add(b"new-6", 6, 2)                  # term differs: 6..10 go
    assert [j[i][1:] for i in range(len(j))] == [(i, 1) for i in range(1, 6)] + [(6, 2)]
    assert j.unverified_index() is None
    j.sync()
    again = DurableJournal(str(tmp_path))
    assert again[-1] == (b"new-6", 6, 2) and len(again) == 6


def journal_with_a_pending_cut(tmp_path) -> DurableJournal:
    """Entries 1..10 (term 1), then a leader's resend of 5..6 only (prevLogIdx 4): the cut
    is pending at 7, entries 7..10 kept but not confirmed."""
    j = DurableJournal(str(tmp_path))
    for e in entries(10):
        j.add(*e)
    j.sync()
    j.deleteEntriesFrom(4)
    for e in entries(2, start=5):
        j.add(*e)
    assert j.unverified_index() == 7
    return j


def test_a_deferred_cut_left_by_an_earlier_resend_never_drops_the_tail(tmp_path):
    """The chaos CI run that found it: a resend of 5..6 left the cut pending at 7; the next
    message followed the last entry (prevLogIdx 10, matched), so only 11 was added. The old
    journal compared 11 with the stored 7, called it a conflict, dropped the acknowledged
    7..10 and wrote 11 after 6: a log with a hole, stuck for good."""
    j = journal_with_a_pending_cut(tmp_path)
    j.add(b"cmd-11", 11, 1)                # prevLogIdx = 10 = the last entry: all confirmed
    assert [j[i][1] for i in range(len(j))] == list(range(1, 12))
    assert j.unverified_index() is None
    j.sync()
    assert [e[1] for e in DurableJournal(str(tmp_path))._entries] == list(range(1, 12))


def test_the_commit_index_kept_for_a_restart_never_covers_unconfirmed_entries(tmp_path):
    """A deposed leader's tail (7..10, term 1) is kept by a deferred cut while the new leader
    resends 5..6; pysyncobj hands over its follower commit index (the new leader's, 10) before
    MetadataRaft caps it. Remembered as is, a restart would apply 7..10 — entries no majority
    holds — before hearing from any leader, and never apply the committed 7..10 replacing them."""
    j = journal_with_a_pending_cut(tmp_path)
    j.setRaftCommitIndex(10)
    j.onOneSecondTimer()
    assert DurableJournal(str(tmp_path)).getRaftCommitIndex() == 6
    j.add(b"new-7", 7, 2)                  # the conflict: 7..10 go
    j.setRaftCommitIndex(7)
    j.sync()
    j.onOneSecondTimer()
    assert DurableJournal(str(tmp_path)).getRaftCommitIndex() == 7


def test_a_heartbeat_that_matches_the_last_entry_confirms_the_log(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(10):
        j.add(*e)
    j.deleteEntriesFrom(4)
    j.leader_matched(9, 1)                 # not the last entry: proves nothing about 10
    assert j.unverified_index() == 5
    j.leader_matched(10, 2)                # the wrong term: proves nothing either
    assert j.unverified_index() == 5
    j.leader_matched(10, 1)
    assert j.unverified_index() is None


def test_an_entry_that_would_leave_a_hole_is_refused(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(3):
        j.add(*e)
    with pytest.raises(RuntimeError, match="does not follow"):
        j.add(b"x", 5, 1)
    assert len(j) == 3


def test_confirm_all_clears_the_unverified_tail(tmp_path):
    j = DurableJournal(str(tmp_path))
    for e in entries(5):
        j.add(*e)
    j.deleteEntriesFrom(2)
    assert j.unverified_index() == 3
    j.confirm_all()
    assert j.unverified_index() is None


def test_a_failed_sync_acknowledges_nothing_and_the_next_one_rewrites_from_memory(
        tmp_path, monkeypatch):
    """A write or fdatasync that fails (EIO, ENOSPC) must not let a later sync succeed without
    the bytes: the queue was taken and, after a failed fdatasync, Linux may drop dirty pages."""
    j = DurableJournal(str(tmp_path))
    j.add(b"a", 1, 1)
    j.sync()
    j.add(b"b", 2, 1)
    real_pwrite = os.pwrite

    def failing_pwrite(fd, data, offset):
        os.pwrite = real_pwrite
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(OSError):
        j.sync()
    assert j.sync()                                     # retried: the whole file rewritten
    entries, _, _, _ = read_records(str(tmp_path / "journal.log"))
    assert [e[0] for e in entries] == [b"a", b"b"]

    def failing_fdatasync(fd):
        raise OSError(5, "Input/output error")

    j.add(b"c", 3, 1)
    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(OSError):
        j.sync()
    monkeypatch.undo()
    written = []
    monkeypatch.setattr(os, "replace", lambda a, b, _r=os.replace: (written.append(b), _r(a, b)))
    assert j.sync()
    assert written, "the retry rewrote the file rather than trusting the failed fdatasync"
    entries, _, _, _ = read_records(str(tmp_path / "journal.log"))
    assert [e[0] for e in entries] == [b"a", b"b", b"c"]
