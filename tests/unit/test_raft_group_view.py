"""pysyncobj's own view of the group (who gets vote requests and appends, what a majority is)
follows the latest configuration in the log, also when a leader resends entries a follower
already has (master/raft.py `_follow_members`). A MetadataRaft in this process, not started:
appends are handed to it as they would arrive from a leader."""
from __future__ import annotations

from pysyncobj.transport import TCPNode

from cli.localcluster import free_port
from master.journal import DurableJournal
from master.membership import ADD, REMOVE, encode_change
from master.raft import MetadataRaft, RaftConfig
from master.raft_private import PrivateRaftState

NO_OP = bytes([1])


def addresses(n: int) -> list[str]:
    return [f"127.0.0.1:{free_port()}" for _ in range(n)]


def group_seen(raft: MetadataRaft) -> set[str]:
    return {n.address for n in PrivateRaftState.followers(raft)}


def test_a_resend_short_of_the_log_end_keeps_the_group_the_log_holds(tmp_path):
    """The log: entries 1..4, then C removed (5) and D added (6) — the group is A, B, D. The
    leader B resends only entry 4 (its next index went back): pysyncobj undoes 5 and 6 before
    it cuts what follows 3, but the journal keeps them (they are not conflicts, nothing was
    cut), and A must still count its majority over B and D — not over B and C."""
    a, b, c, d = addresses(4)
    raft_dir = tmp_path / "raft"
    journal = DurableJournal(str(raft_dir))
    for idx in range(1, 5):
        journal.add(NO_OP, idx, 1)
    journal.add(encode_change(REMOVE, c, "127.0.0.1:1"), 5, 1)
    journal.add(encode_change(ADD, d, "127.0.0.1:1"), 6, 1)
    journal.sync()
    journal.close()

    raft = MetadataRaft(a, {a: "", b: "", c: ""}, str(tmp_path),
                        RaftConfig(election_min=5, election_max=6), cluster_secret=b"k" * 32)
    try:
        assert group_seen(raft) == {b, d}
        raft._on_message(TCPNode(b), {"type": "append_entries", "term": 1, "commit_index": 1,
                                      "prevLogIdx": 3, "prevLogTerm": 1,
                                      "entries": [(NO_OP, 4, 1)]})
        assert raft.journal.last_index == 6             # nothing was cut
        assert group_seen(raft) == {b, d}
        assert set(raft.members.current()) == {a, b, d}

        # A real conflict: entry 5 comes back in term 2 — 5 and 6 leave the log, and with them
        # the change they made: the group is A, B, C again.
        raft._on_message(TCPNode(b), {"type": "append_entries", "term": 2, "commit_index": 1,
                                      "prevLogIdx": 4, "prevLogTerm": 1,
                                      "entries": [(NO_OP, 5, 2)]})
        assert raft.journal.last_index == 5
        assert group_seen(raft) == {b, c}
    finally:
        raft.stop()
