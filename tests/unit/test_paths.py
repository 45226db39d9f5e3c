"""Path rules: gfs/paths.py."""
import pytest

from gfs import paths
from gfs.errors import InvalidArgument

GOOD = ["/", "/a", "/a/b/c", "/with space/ünïcödé", "/.hidden/..dots/...", "/a" * 100,
        "/" + "x" * 255, "/" + "é" * 127]


@pytest.mark.parametrize("path", GOOD)
def test_good_paths_are_returned_unchanged(path):
    assert paths.normalize(path) == path


@pytest.mark.parametrize("path, fragment", [
    (None, "must be a str, not NoneType"),
    (b"/a", "must be a str, not bytes"),
    (1, "must be a str, not int"),
    ("", "must not be empty"),
    ("a/b", "not absolute"),
    ("./a", "not absolute"),
    ("//", "empty name"),
    ("/a//b", "empty name"),
    ("/a/", "empty name"),
    ("/.", "'.' component"),
    ("/a/./b", "'.' component"),
    ("/..", "'..' component"),
    ("/a/../b", "'..' component"),
    ("/a\0b", "NUL byte"),
    ("/" + "x" * 256, "name longer than 255"),
    ("/" + "é" * 128, "name longer than 255"),        # 256 UTF-8 bytes in 128 characters
    ("/" + "/".join(["x" * 200] * 21), "longer than 4096"),
    ("/\ud800", "not valid UTF-8"),
])
def test_bad_paths_are_rejected_with_a_precise_message(path, fragment):
    with pytest.raises(InvalidArgument) as info:
        paths.normalize(path)
    assert fragment in info.value.message
    assert "\n" not in info.value.message
    assert info.value.code == "INVALID_ARGUMENT"


def test_path_of_exactly_4096_bytes_is_valid():
    path = "/" + "/".join(["x" * 255] * 15)        # 3840 bytes
    path += "/" + "y" * (4096 - len(path) - 1)
    assert len(path.encode()) == 4096
    assert paths.normalize(path) == path
    with pytest.raises(InvalidArgument):
        paths.normalize(path + "y")


def test_long_paths_are_shortened_in_messages():
    with pytest.raises(InvalidArgument) as info:
        paths.normalize("relative/" + "x" * 5000)
    assert len(info.value.message) < 200


@pytest.mark.parametrize("path, expected", [
    ("/", ("/", "")), ("/a", ("/", "a")), ("/a/b", ("/a", "b")), ("/a/b/c", ("/a/b", "c"))])
def test_split(path, expected):
    assert paths.split(path) == expected


@pytest.mark.parametrize("path, expected", [
    ("/", []), ("/a", ["a"]), ("/a/b/c", ["a", "b", "c"])])
def test_components(path, expected):
    assert paths.components(path) == expected


@pytest.mark.parametrize("parent, name, expected", [
    ("/", "a", "/a"), ("/a", "b", "/a/b"), ("/a/b", "c d", "/a/b/c d")])
def test_join(parent, name, expected):
    assert paths.join(parent, name) == expected
    assert paths.split(expected) == (parent, name)


@pytest.mark.parametrize("parent, name", [
    ("/", ""), ("/", "."), ("/", ".."), ("/", "a/b"), ("/", "a\0"), ("/", "x" * 256),
    ("/", 3), ("a", "b"), ("/a/", "b")])
def test_join_rejects_bad_input(parent, name):
    with pytest.raises(InvalidArgument):
        paths.join(parent, name)


def test_join_rejects_a_result_over_4096_bytes():
    parent = "/" + "/".join(["x" * 255] * 16)
    with pytest.raises(InvalidArgument, match="4096"):
        paths.join(parent, "y" * 10)


@pytest.mark.parametrize("a, b, expected", [
    ("/", "/", True), ("/", "/a/b", True), ("/a", "/a", True), ("/a", "/a/b", True),
    ("/a", "/a/b/c", True), ("/a/b", "/a", False), ("/a", "/ab", False), ("/a", "/b/a", False),
    ("/ab", "/a", False)])
def test_is_same_or_ancestor(a, b, expected):
    assert paths.is_same_or_ancestor(a, b) is expected


@pytest.mark.parametrize("fn, args", [
    (paths.split, ("a",)), (paths.components, ("/a/",)), (paths.is_same_or_ancestor, ("/", "x"))])
def test_helpers_validate_their_input(fn, args):
    with pytest.raises(InvalidArgument):
        fn(*args)


@pytest.mark.parametrize("typed, expected", [
    ("/", ("/", True)), ("//", ("/", True)), ("/d/", ("/d", True)), ("/d//", ("/d", True)),
    ("/p/q/", ("/p/q", True)), ("/f", ("/f", False))])
def test_paths_as_typed_drop_trailing_slashes(typed, expected):
    assert paths.as_typed(typed) == expected


@pytest.mark.parametrize("typed, fragment", [
    ("d/", "not absolute"), ("/a//b/", "empty name"), ("/\udcff/", r"'/\xff' is not valid UTF-8"),
    ("", "must not be empty")])
def test_paths_as_typed_are_otherwise_validated(typed, fragment):
    with pytest.raises(InvalidArgument) as info:
        paths.as_typed(typed, what="destination path")
    assert fragment in info.value.message
    assert "destination path" in info.value.message


def test_bytes_that_are_not_utf8_show_as_escapes():
    with pytest.raises(InvalidArgument) as info:
        paths.normalize("/caf\udce9/x")
    assert info.value.message.startswith(r"path '/caf\xe9/x' is not valid UTF-8")
