"""The group membership derived from the durable journal (master/membership.py): what a
restarted master comes back with after appends, conflicts, compaction and snapshots."""
from __future__ import annotations

import pytest

from gfs.errors import NotFound
from master.journal import DurableJournal
from master.members import GroupAdmin
from master.membership import (ADD, REMOVE, MembershipLog, decode_change, encode_change, fold,
                               parse_members)

START = {"a:1": "a:2", "b:1": "b:2", "c:1": "c:2"}
REGULAR = b"\x00regular"


def open_log(tmp_path, start=START):
    members = MembershipLog(str(tmp_path), start)
    return members, DurableJournal(str(tmp_path), members)


def test_a_change_round_trips_with_its_grpc_address():
    assert decode_change(encode_change(ADD, "d:1", "d:2")) == (ADD, "d:1", "d:2")
    assert decode_change(REGULAR) is None
    with pytest.raises(ValueError):
        encode_change("swap", "d:1", "")


def test_fold_follows_pysyncobj_rules():
    assert fold(START, ADD, "a:1", "x") == START              # already a member
    assert fold(START, REMOVE, "z:1", "") == START            # not a member
    assert "a:1" not in fold(START, REMOVE, "a:1", "")
    assert parse_members("a:1@a:2, b:1") == {"a:1": "a:2", "b:1": ""}


def test_restart_comes_back_with_the_membership_in_the_log_not_the_flags(tmp_path):
    members, j = open_log(tmp_path)
    j.add(REGULAR, 1, 1)
    j.add(encode_change(ADD, "d:1", "d:2"), 2, 1)
    j.add(encode_change(REMOVE, "a:1", ""), 3, 1)
    j.sync()
    assert set(members.current()) == {"b:1", "c:1", "d:1"}
    assert set(members.at(2)) == {"a:1", "b:1", "c:1", "d:1"}
    assert members.last_change_index() == 3
    again, _ = open_log(tmp_path, start={"a:1": "", "zzz:1": ""})   # stale flags ignored
    assert again.current() == {"b:1": "b:2", "c:1": "c:2", "d:1": "d:2"}
    assert not again.from_flags


def test_a_conflicting_tail_takes_its_change_with_it(tmp_path):
    members, j = open_log(tmp_path)
    j.add(REGULAR, 1, 1)
    j.add(encode_change(ADD, "d:1", "d:2"), 2, 1)
    j.sync()
    j.deleteEntriesFrom(1)                  # a new leader's entry 2 has another term
    j.add(REGULAR, 2, 2)
    j.sync()
    assert members.current() == START
    assert open_log(tmp_path)[0].current() == START


def test_compaction_folds_changes_into_the_durable_base(tmp_path):
    members, j = open_log(tmp_path)
    for i in range(1, 6):
        j.add(encode_change(ADD, f"n{i}:1", f"n{i}:2") if i == 3 else REGULAR, i, 1)
    j.add(encode_change(REMOVE, "b:1", ""), 6, 1)
    j.sync()
    j.deleteEntriesTo(4)                    # entries 1..4 (with the add) leave the journal
    assert members.last_change_index() == 6
    again, j2 = open_log(tmp_path)
    assert j2.first_index == 5
    assert set(again.current()) == {"a:1", "c:1", "n3:1"}
    assert set(again.at(5)) == {"a:1", "b:1", "c:1", "n3:1"}


def test_a_snapshot_replaces_the_base(tmp_path):
    members, j = open_log(tmp_path)
    j.add(encode_change(ADD, "d:1", "d:2"), 1, 1)
    j.sync()
    members.reset(40, {"x:1": "x:2", "y:1": "y:2", "z:1": "z:2"})
    j.clear()
    j.add(REGULAR, 39, 3)
    j.add(REGULAR, 40, 3)
    j.sync()
    assert set(open_log(tmp_path)[0].current()) == {"x:1", "y:1", "z:1"}


def test_members_are_named_by_raft_or_grpc_address():
    assert GroupAdmin.resolve("b:2", START) == "b:1"
    assert GroupAdmin.resolve("b:1", START) == "b:1"
    with pytest.raises(NotFound):
        GroupAdmin.resolve("q:1", START)
