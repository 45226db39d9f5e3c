"""A follower with a long tail of entries the leader does not have still catches up.

pysyncobj's follower answers an append it cannot take with `next_node_idx` (reset): the entry
before the new ones has another term here (`prevLogIdx`: "go back one"), or it is past this
log's end ("start from my last entry + 1"). Its leader sends a lagging follower everything it
is missing in one turn, 64 KiB batches one after another, each naming the entry before it.
When the follower's log ends in entries the leader does not have — a leader that went on
taking commands while cut off from the others, then rejoined under a new leader — the first
batch is refused with "go back one", and every later batch, past this log's end, with "start
from my last entry + 1": the leader's next index goes back one and straight up again. The
follower never catches up (seen in the chaos suite: a rejoined old leader 380 entries behind,
stuck for minutes; a membership change that needed its vote could not commit).

`CatchUpHints.reply` rewrites those refusals on their way out:
- "go back one" becomes "go back to the first entry not applied here": applied entries are
  committed, so the leader has every one of them and the next turn's first batch fits; one
  turn instead of one per entry (or per term, as in the Raft paper's optimisation, §5.3);
- "start from my last + 1" becomes the lowest point asked for since this follower last accepted
  an append from that leader, so the later batches' refusals do not undo the first one's.

Asking the leader to start earlier than needed is always safe: entries it resends that this
log already has are recognised as the same and kept (master/journal.py, the deferred cut); it
costs resending what came after the last applied entry, which is what this follower has not
made its own yet anyway. Kept entries stay unconfirmed until the leader's entries reach them:
the commit index is held below them, also the one remembered for a restart, and pysyncobj's
view of the group is not rolled back over them (docs/raft.md).
"""
from __future__ import annotations

from typing import Callable, Protocol


class _Log(Protocol):
    first_index: int
    last_index: int


class CatchUpHints:
    def __init__(self, log: _Log, applied: Callable[[], int]):
        self.log = log
        self.applied = applied
        self._floor: dict[object, int] = {}     # leader -> lowest index asked for since

    def reply(self, leader, message: dict) -> dict:
        """The `next_node_idx` message to send `leader` instead of `message`."""
        if message.get("type") != "next_node_idx":
            return message
        if message.get("success"):
            self._floor.pop(leader, None)
            return message
        if not message.get("reset"):             # a piece of a large entry taken
            return message
        asked = message["next_node_idx"]
        floor = self._floor.get(leader)
        if asked <= self.log.last_index:        # the entry at `asked` has another term here
            asked = min(asked, max(self.applied() + 1, self.log.first_index + 1))
        if floor is not None and floor < asked:
            asked = floor
        self._floor[leader] = asked
        if asked == message["next_node_idx"]:
            return message
        return {**message, "next_node_idx": asked}
