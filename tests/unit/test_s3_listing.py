"""The S3 listing walk (gateway/s3/listing.py) against a brute-force model: random trees of
awkward names (characters below and above `/`, non-ASCII), random prefixes, delimiters, start
points and page sizes — over a fake of the masters' paged List (names in UTF-8 byte order,
`start_after`, `limit`), read a few entries at a time."""
from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3 import listing
from gateway.s3.readahead import ReadAhead
from gfs.client import FileInfo

TOP = "/u/b"
NAMES = st.text(alphabet="ab-.0+ ~é/", min_size=1, max_size=3).filter(lambda n: "/" not in n)


def trees(depth: int = 3):
    """A directory: {name: None (a file) or a directory}."""
    leaf = st.none()
    if depth == 0:
        return st.dictionaries(NAMES, leaf, max_size=4)
    return st.dictionaries(NAMES, st.one_of(leaf, trees(depth - 1)), max_size=5)


def info(path: str, is_dir: bool) -> FileInfo:
    return FileInfo(path=path, inode=1, type="dir" if is_dir else "file", size=0, mode=0,
                    owner="", ctime_ms=0, mtime_ms=0, replication=1, storage_class="",
                    chunk_size=0)


class FakeMasters:
    """List pages of a tree, as the masters give them; counts the entries handed out."""

    def __init__(self, tree: dict):
        self.tree = tree
        self.handed = 0

    def _find(self, path: str):
        node = self.tree
        for name in path[len(TOP):].split("/")[1:]:
            if not isinstance(node, dict) or name not in node:
                raise listing.NotADirectory(path)
            node = node[name]
        return node

    async def read_page(self, path: str, start_after: str, limit: int):
        node = self._find(path)
        if node is None:
            return [info(path, False)], ""
        names = sorted(node, key=lambda n: n.encode())
        after = [n for n in names if n.encode() > start_after.encode("utf-8", "surrogatepass")]
        page = after[:limit]
        self.handed += len(page)
        last = page[-1] if len(after) > limit else ""
        return [info(f"{path}/{n}", node[n] is not None) for n in page], last


def keys_of(tree: dict, at: str = "") -> list[str]:
    """Every S3 key of the tree: its files, and its empty directories as folder markers."""
    out = []
    for name, node in tree.items():
        if node is None:
            out.append(at + name)
        elif not node:
            out.append(at + name + "/")
        else:
            out += keys_of(node, at + name + "/")
    return out


def model(tree: dict, prefix: str, delimiter: str, after: str) -> list[tuple[str, bool]]:
    """(key, is a common prefix) in S3 order, by brute force."""
    out: list[tuple[str, bool]] = []
    for key in sorted(keys_of(tree), key=lambda k: k.encode()):
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            common = key[:cut + len(delimiter)]
            if common > after and (common, True) not in out:
                out.append((common, True))
        elif key > after:
            out.append((key, False))
    return out


async def walk_with(read_page, prefix: str, delimiter: str, after: str,
                    max_keys: int | None = None, page: int = 2) -> list[tuple[str, bool]]:
    """What list_objects takes from the walker for one page."""
    got: list[tuple[str, bool]] = []
    walker = listing.Walker(read_page, TOP, prefix, delimiter, after, page)
    async for entry in walker.entries():
        item = (entry.key, entry.info is None)
        if item[1] and item in got:
            continue
        if max_keys is not None and len(got) >= max_keys:
            break
        got.append(item)
    return got


def walk(masters: FakeMasters, prefix: str, delimiter: str, after: str,
         max_keys: int | None = None, page: int = 2) -> list[tuple[str, bool]]:
    return asyncio.run(walk_with(masters.read_page, prefix, delimiter, after, max_keys, page))


@settings(max_examples=300, deadline=None)
@given(tree=trees(), prefix=st.text(alphabet="ab-.0/", max_size=3),
       delimiter=st.sampled_from(["", "/", "-", "a", "b/", "-."]),
       after=st.one_of(st.just(""), st.text(alphabet="ab-.0+ ~é/", max_size=5)),
       page=st.integers(1, 4))
def test_the_walk_lists_what_the_model_lists(tree, prefix, delimiter, after, page):
    assert walk(FakeMasters(tree), prefix, delimiter, after, page=page) == \
        model(tree, prefix, delimiter, after)


@settings(max_examples=150, deadline=None)
@given(tree=trees(), prefix=st.text(alphabet="ab-./", max_size=2),
       delimiter=st.sampled_from(["", "/", "-", "a", "b/"]), max_keys=st.integers(1, 4))
def test_pages_continued_from_their_last_key_add_up_to_the_listing(tree,
                                                                    prefix, delimiter,
                                                                    max_keys):
    masters = FakeMasters(tree)
    pages, after = [], ""
    while True:
        got = walk(masters, prefix, delimiter, after, max_keys + 1)
        pages += got[:max_keys]
        if len(got) <= max_keys:
            break
        after = got[max_keys - 1][0]
    assert pages == model(tree, prefix, delimiter, "")


def test_a_page_of_a_large_flat_directory_reads_about_a_page():
    tree = {f"{i:06d}": None for i in range(20_000)}
    tree["000500-x"] = None                  # sorts before "000500/"...
    tree["000500"] = {"inside": None}        # ...which must wait for it
    masters = FakeMasters(tree)
    got = walk(masters, "", "", "000499", max_keys=1000, page=1001)   # as list_objects reads
    assert got[:4] == [("000500-x", False), ("000500/inside", False), ("000501", False),
                       ("000502", False)]
    assert masters.handed < 3_100            # not the 20,000 names before and after
    masters.handed = 0
    assert walk(masters, "0199", "", "", page=101) == [(f"0199{i:02d}", False) for i in range(100)]
    assert masters.handed <= 101             # the names starting with the prefix, and one more


def test_a_common_prefix_group_is_read_past_not_through():
    """A delimiter other than '/' groups names of one directory: once the group's common
    prefix is listed, the rest of the group is not read (before: every name of it, on every
    page that continued after it)."""
    tree = {f"x-{i:06d}": None for i in range(20_000)}
    tree.update({"x": {"in": None}, "w": None, "y-1": None, "y-2": None, "z": None})
    masters = FakeMasters(tree)
    want = [("w", False), ("x-", True), ("x/in", False), ("y-", True), ("z", False)]
    assert walk(masters, "", "-", "", page=1001) == want
    assert masters.handed < 2_100
    masters.handed = 0                        # a page continuing after the group's prefix
    assert walk(masters, "", "-", "x-", page=1001) == want[2:]
    assert masters.handed < 2_100


def test_a_missing_bucket_directory_or_a_file_lists_nothing():
    masters = FakeMasters({"f": None})
    assert walk(masters, "f/", "", "") == []
    assert walk(masters, "nope/", "/", "") == []
    empty = FakeMasters({"0": {}})             # its key is "0/", nothing starts with "0//"
    assert walk(empty, "0//", "", "") == [] and walk(empty, "/0", "", "") == []
    assert walk(empty, "0/", "", "") == [("0/", False)]


def test_seek_lists_from_the_name_itself():
    assert listing._seek("") == ""
    for name in ("b", "000500", "é", "a\ue000"):
        before = listing._seek(name)
        assert before.encode("utf-8") < name.encode("utf-8")
        assert name[:-1].encode() <= before.encode()


async def page_through(masters: FakeMasters, ahead: ReadAhead, prefix: str, delimiter: str,
                       max_keys: int, page: int = 2) -> list[tuple[str, bool]]:
    """A client paging through a listing, continuing each page from its last key, with the
    pages read ahead while it takes in each one."""
    pages, after = [], ""
    while True:
        reads = ahead.reader(masters.read_page, b"caller", continuing=bool(after))
        got = await walk_with(reads, prefix, delimiter, after, max_keys + 1, page)
        pages += got[:max_keys]
        if len(got) <= max_keys:
            return pages
        reads.read_ahead()
        await asyncio.sleep(0)
        after = got[max_keys - 1][0]


@settings(max_examples=150, deadline=None)
@given(tree=trees(), prefix=st.text(alphabet="ab-./", max_size=2),
       delimiter=st.sampled_from(["", "/", "-", "a"]), max_keys=st.integers(1, 4),
       entries=st.integers(1, 5), keep=st.integers(1, 12))
def test_pages_read_ahead_add_up_to_the_listing(tree, prefix, delimiter, max_keys, entries,
                                                keep):
    ahead = ReadAhead(entries=entries, keep_entries=keep)
    got = asyncio.run(page_through(FakeMasters(tree), ahead, prefix, delimiter, max_keys))
    assert got == model(tree, prefix, delimiter, "")


def test_continuing_pages_take_what_was_read_ahead_and_fresh_listings_read_now():
    tree = {f"{i:04d}": None for i in range(50)}
    masters = FakeMasters(tree)

    async def run():
        ahead = ReadAhead(entries=10)
        listed = await page_through(masters, ahead, "", "", 10, page=11)
        assert listed == [(f"{i:04d}", False) for i in range(50)]
        assert ahead.used >= 4                 # every page after the first...
        assert ahead.missed == 0               # ...takes all it needs from what was read ahead
        used = ahead.used
        tree["0000a"] = None                   # a write after the listing...
        reads = ahead.reader(masters.read_page, b"caller", continuing=False)
        fresh = await walk_with(reads, "", "", "", 3, page=4)
        assert fresh == [("0000", False), ("0000a", False), ("0001", False)]   # ...is seen
        other = ahead.reader(masters.read_page, b"someone else", continuing=True)
        assert await walk_with(other, "", "", "0040", 2, page=3) == [("0041", False),
                                                                      ("0042", False)]
        assert ahead.used == used              # not another caller's pages
    asyncio.run(run())


def test_pages_read_ahead_expire():
    tree = {f"{i:04d}": None for i in range(30)}
    masters = FakeMasters(tree)

    async def run():
        ahead = ReadAhead(keep_s=0.0, entries=10)
        listed = await page_through(masters, ahead, "", "", 10, page=11)
        assert len(listed) == 30 and ahead.used == 0
    asyncio.run(run())


@settings(max_examples=100, deadline=None)
@given(key=st.text(alphabet="a&<>'\"/é ]", min_size=1, max_size=8),
       owner=st.one_of(st.none(), st.text(alphabet="a&<>é", min_size=1, max_size=4)),
       size=st.integers(0, 1 << 40), etag=st.sampled_from(['"0a"', '"&<>"', ""]))
def test_contents_render_as_the_generic_writer_does(key, owner, size, etag):
    """Entries rendered directly (listing._contents) are the bytes the generic writer makes,
    and parse back to their key, size, ETag and owner."""
    import xml.etree.ElementTree as ET
    from gateway.s3 import attributes, xmldoc
    file = FileInfo(path=f"{TOP}/{key}", inode=7, type="file", size=size, mode=0, owner="",
                    ctime_ms=0, mtime_ms=1_764_900_000_123, replication=1, storage_class="",
                    chunk_size=0, xattrs={attributes.ETAG: etag} if etag else {})
    entry = listing.Entry(key, file)
    fields = [("Key", key), ("LastModified", xmldoc.iso_time(file.mtime_ms)),
              ("ETag", attributes.etag(file)), ("Size", size), ("StorageClass", "STANDARD")]
    if owner is not None:
        fields.append(("Owner", [("ID", owner), ("DisplayName", owner)]))
    generic = xmldoc.document("R", [("Contents", fields)])
    direct = xmldoc.document("R", listing._contents([entry], lambda s: s, owner))
    assert direct == generic
    parsed = ET.fromstring(direct)[0]
    ns = "{" + xmldoc.NS + "}"
    assert parsed.find(ns + "Key").text == key and parsed.find(ns + "Size").text == str(size)
    assert parsed.find(ns + "ETag").text == attributes.etag(file)
