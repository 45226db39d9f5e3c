"""gfs.validate: request fields the services check before acting."""
from __future__ import annotations

import pytest

from gfs.errors import InvalidArgument
from gfs.validate import address, addresses, label, non_negative, positive


@pytest.mark.parametrize("value", ["127.0.0.1:7000", "cs-1.example:1", "[::1]:65535",
                                   "localhost:1"])
def test_good_addresses(value):
    assert address(value, "address") == value


@pytest.mark.parametrize("value", ["", "host", ":80", "127.0.0.1:", "127.0.0.1:0",
                                   "127.0.0.1:65536", "127.0.0.1:-1", "a b:1", "/x:1",
                                   "-host:1", "::1:80", "h:８０", "x" * 300 + ":1",
                                   "unix:/tmp/sock"])
def test_bad_addresses_name_the_field(value):
    with pytest.raises(InvalidArgument, match="^sources"):
        address(value, "sources")


def test_address_lists_are_bounded():
    assert addresses(["a:1", "b:2"], "chain") == ["a:1", "b:2"]
    with pytest.raises(InvalidArgument, match="more than 64"):
        addresses(["a:1"] * 65, "chain")


def test_labels_numbers_and_ids():
    assert label("rack-1", "rack") == "rack-1"
    for bad in ["x" * 201, "a\nb", "\x00"]:
        with pytest.raises(InvalidArgument, match="^rack"):
            label(bad, "rack")
    assert non_negative(0.0, "io_load") == 0.0
    for bad in [float("nan"), float("inf"), -0.1]:
        with pytest.raises(InvalidArgument, match="io_load"):
            non_negative(bad, "io_load")
    assert positive(1, "handle") == 1
    with pytest.raises(InvalidArgument, match="handle must be > 0"):
        positive(0, "handle")
