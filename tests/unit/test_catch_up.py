"""master/catch_up.py: a follower whose log ends in entries the leader does not have catches
up, against the way pysyncobj's leader sends (every missing batch in one turn) and its follower
answers (the same rules as pysyncobj 0.3.x's append_entries handler, modelled below on a real
DurableJournal)."""
import pytest

from master.catch_up import CatchUpHints
from master.journal import DurableJournal

BATCH = 50                       # entries per append message (pysyncobj: 64 KiB of commands)


def follower_log(tmp_path, common: int, tail: list[int]) -> DurableJournal:
    """Entries 1..common in term 1 (shared with the leader), then one entry per term in `tail`
    (entries only this follower has)."""
    log = DurableJournal(str(tmp_path))
    for i in range(1, common + 1):
        log.add(b"c%d" % i, i, 1)
    for n, term in enumerate(tail, start=common + 1):
        log.add(b"x%d" % n, n, term)
    return log


def follower_answer(log: DurableJournal, prev_idx: int, prev_term: int,
                    entries: list[tuple]) -> dict:
    """pysyncobj's follower: refuse (reset) when the entry before is missing or of another
    term; else drop what follows it and append (kept simple: every entry after prev goes)."""
    last = log.last_index
    if prev_idx > last:
        return {"type": "next_node_idx", "next_node_idx": last + 1, "reset": True,
                "success": False}
    if log[prev_idx - log.first_index][2] != prev_term:
        return {"type": "next_node_idx", "next_node_idx": prev_idx, "reset": True,
                "success": False}
    if last > prev_idx:
        log.deleteEntriesFrom(prev_idx + 1 - log.first_index)
    for command, idx, term in entries:
        log.add(command, idx, term)
    return {"type": "next_node_idx", "next_node_idx": (entries[-1][1] if entries else prev_idx)
            + 1, "reset": False, "success": True}


def rounds_to_catch_up(log: DurableJournal, leader: list[tuple], hints, limit: int = 200):
    """Turns of the leader (each: every batch from its next index for this follower, one after
    another, then the follower's answers in order) until the follower's log is the leader's;
    None if it is not after `limit` turns."""
    next_index = len(leader) + 1                 # a new leader starts at its own last + 1
    for turn in range(1, limit + 1):
        sends, at = [], next_index
        while True:                              # the batches of one turn, pipelined
            prev = at - 1
            batch = leader[at - 1:at - 1 + BATCH]
            sends.append((prev, leader[prev - 1][2], batch))
            if not batch:
                break
            at += len(batch)
            if at > len(leader):
                break
        answers = [follower_answer(log, *send) for send in sends]
        if hints is not None:
            answers = [hints.reply("leader", a) for a in answers]
        for a in answers:                        # the leader's next_node_idx handler
            if a["reset"]:
                next_index = a["next_node_idx"]
            if a["success"]:
                next_index = max(next_index, a["next_node_idx"])
        if [e[1:] for e in log] == [e[1:] for e in leader]:
            return turn
    return None


def leader_log(common: int, new: int, term: int = 9) -> list[tuple]:
    return [(b"c%d" % i, i, 1) for i in range(1, common + 1)] + \
        [(b"n%d" % i, i, term) for i in range(common + 1, common + new + 1)]


def test_without_the_hints_a_long_conflicting_tail_never_catches_up(tmp_path):
    """The bug guarded against: the first batch's "go back one" is undone by the later
    batches' "start from my last + 1", turn after turn."""
    log = follower_log(tmp_path, common=100, tail=[5] * 300)
    assert rounds_to_catch_up(log, leader_log(100, 380), hints=None) is None


@pytest.mark.parametrize("tail", [[5] * 300, [4] * 120 + [5] * 180,
                                  [t for t in range(2, 52) for _ in range(6)], [5]],
                         ids=["one-term", "two-terms", "fifty-terms", "one-entry"])
@pytest.mark.parametrize("applied", [100, 60])
def test_with_the_hints_it_catches_up_in_three_turns(tmp_path, tail, applied):
    """A new leader starts past this log's end: one turn to learn where it ends, one to be
    told where to start (the first entry not applied here), one to send."""
    log = follower_log(tmp_path, common=100, tail=tail)
    leader = leader_log(100, 380)
    assert rounds_to_catch_up(log, leader, CatchUpHints(log, lambda: applied)) == 3


def test_never_asks_below_what_is_applied_here_nor_past_the_log_start(tmp_path):
    log = follower_log(tmp_path, common=10, tail=[5] * 30)
    hints = CatchUpHints(log, lambda: 25)        # 11..25 applied: committed, the leader has them
    refusal = {"type": "next_node_idx", "next_node_idx": 40, "reset": True, "success": False}
    assert hints.reply("leader", refusal)["next_node_idx"] == 26
    log.deleteEntriesTo(5)                                            # compacted: starts at 6
    hints = CatchUpHints(log, lambda: 0)
    assert hints.reply("leader", refusal)["next_node_idx"] == 7       # after the first entry
    near = {**refusal, "next_node_idx": 5}                            # never asks for more
    assert hints.reply("leader", near)["next_node_idx"] == 5


def test_the_floor_is_per_leader_and_forgotten_after_an_accepted_append(tmp_path):
    log = follower_log(tmp_path, common=10, tail=[5] * 30)
    hints = CatchUpHints(log, lambda: 0)
    refuse = {"type": "next_node_idx", "next_node_idx": 30, "reset": True, "success": False}
    past_end = {**refuse, "next_node_idx": 41}
    assert hints.reply("a", refuse)["next_node_idx"] == 2            # after the log's first
    assert hints.reply("a", past_end)["next_node_idx"] == 2
    assert hints.reply("b", past_end) == past_end                     # another leader
    ok = {"type": "next_node_idx", "next_node_idx": 41, "reset": False, "success": True}
    assert hints.reply("a", ok) is ok
    assert hints.reply("a", past_end) == past_end                     # floor forgotten
    chunk = {"type": "next_node_idx", "next_node_idx": 41, "reset": False, "success": False}
    assert hints.reply("a", chunk) is chunk                           # a large entry's piece
