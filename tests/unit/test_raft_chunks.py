"""master/raft_chunks.py against the chunk labels pysyncobj 0.3.17 sends a large entry with."""
import pysyncobj.pickle as sopickle
import pytest

from master.raft_chunks import LargeEntryChunks

BATCH = 1 << 16          # pysyncobj's default appendEntriesBatchSizeBytes


def leader_chunks(command: bytes, idx: int = 7, term: int = 3) -> list[dict]:
    """The messages a 0.3.17 leader sends for one large entry: the pickled entry cut into
    BATCH-sized chunks, 'finish' as soon as a chunk's end passes len(command)."""
    entry = sopickle.dumps((command, idx, term))
    out = []
    for pos in range(0, len(entry), BATCH):
        label = ("start" if pos == 0 else
                 "finish" if pos + BATCH >= len(command) else "process")
        out.append({"type": "append_entries", "transmission": label,
                    "data": entry[pos:pos + BATCH], "term": term, "prevLogIdx": idx - 1})
    return out


def follower_gathers(messages: list[dict]) -> list[tuple]:
    """What pysyncobj's follower does with the labels: gather, unpickle at each 'finish'."""
    got, gathered = [], b""
    for m in messages:
        if m["transmission"] == "start":
            gathered = m["data"]
            continue
        gathered += m["data"]
        if m["transmission"] == "finish":
            got.append(sopickle.loads(gathered))
            gathered = b""
    return got


@pytest.mark.parametrize("size", [BATCH, 2 * BATCH - 10, 2 * BATCH + 5, 3 * BATCH - 1, 200_000])
def test_every_large_entry_arrives_whole(size):
    command = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    messages = leader_chunks(command)
    guard = LargeEntryChunks()
    for m in messages:
        guard.see("leader", m)
    assert follower_gathers(messages) == [(command, 7, 3)]


def test_the_bug_it_guards_against_is_real():
    """Without the guard, a command just under two batches is unpickled one chunk early."""
    messages = leader_chunks(b"y" * (2 * BATCH - 10))
    assert [m["transmission"] for m in messages] == ["start", "finish", "finish"]
    with pytest.raises(Exception):
        follower_gathers(messages)


def test_chunks_of_another_connection_and_plain_messages_are_left_alone():
    guard = LargeEntryChunks()
    plain = {"type": "append_entries", "entries": [], "prevLogIdx": 1, "prevLogTerm": 1}
    guard.see("leader", plain)
    assert "transmission" not in plain
    orphan = {"transmission": "finish", "data": b"abc"}
    guard.see("other", orphan)                     # no start seen: not ours to judge
    assert orphan["transmission"] == "finish"
