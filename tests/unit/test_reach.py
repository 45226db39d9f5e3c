"""Telling unreachable masters (fail fast) from masters without a leader (wait)."""
from __future__ import annotations

import pytest

from gfs.errors import InvalidArgument
from gfs.reach import FAIL_FAST_S, Reachability, check_address, unreachable_reason

REFUSED = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
           "Failed to connect to remote host: Connection refused")
UNKNOWN_HOST = ("errors resolving nosuch:7100: [field:hostname lookup error:address lookup "
                "failed for nosuch:7100: Domain name not found]")
NO_LEADER = "this master is not the leader; no leader is known yet"


@pytest.mark.parametrize("address", ["127.0.0.1:7100", "master1.lan:1", "[::1]:65535",
                                     "my_host-2:80"])
def test_good_addresses(address):
    assert check_address(address) == address


@pytest.mark.parametrize("address", ["garbage", "host:", ":7100", "host:0", "host:65536",
                                     "host:port", "::1:7100", "http://host:7100", "a b:1"])
def test_bad_addresses_are_refused_at_once(address):
    with pytest.raises(InvalidArgument, match="is not HOST:PORT"):
        check_address(address)


def test_reasons_in_a_few_words():
    assert unreachable_reason(REFUSED) == "connection refused (nothing listens there)"
    assert unreachable_reason(UNKNOWN_HOST) == "unknown host (Domain name not found)"
    assert unreachable_reason(NO_LEADER) is None


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_gives_up_only_when_every_master_was_unreachable_for_a_while():
    clock = Clock()
    r = Reachability(["a:1", "b:1"], clock)
    r.failed("a:1", REFUSED)
    clock.now = 5
    assert r.give_up() is None                  # b not tried yet
    r.failed("b:1", UNKNOWN_HOST)
    assert r.give_up() is None                  # all down only just now
    clock.now += FAIL_FAST_S
    err = r.give_up()
    assert err.code == "UNAVAILABLE" and err.message == (
        "no master can be reached: a:1: connection refused (nothing listens there); "
        "b:1: unknown host (Domain name not found)")


def test_waits_while_a_master_answers_and_once_any_has_answered():
    clock = Clock()
    r = Reachability(["a:1", "b:1"], clock)
    r.failed("a:1", REFUSED)
    r.failed("b:1", NO_LEADER)                  # an election, or no quorum: wait
    clock.now = 10
    assert r.give_up() is None
    assert "masters answer but none is the leader, and 1 cannot be reached (a:1)" in \
        r.timeout_message(30, "b:1: " + NO_LEADER)
    r.failed("b:1", REFUSED)                    # both down now, but b answered before
    clock.now = 20
    assert r.give_up() is None
    assert "no master can be reached now" in r.timeout_message(30, "b:1: refused")
    only_no_leader = Reachability(["a:1"], clock)
    only_no_leader.failed("a:1", NO_LEADER)
    assert "none is the leader (an election is under way)" in \
        only_no_leader.timeout_message(30, NO_LEADER)
