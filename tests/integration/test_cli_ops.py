"""The `gfs` CLI as people type it, against one real cluster (3 masters, 3 chunkservers, 1 MiB
chunks): output to every kind of stdout, paths with trailing slashes, mv into directories,
validation messages, fail-fast on bad --masters."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest

from gfs.client import Client
from gfs.errors import GfsError
from gfs.units import parse_size
from tests.page_cache import cached_pages, needs_o_direct

CHUNK = 1 << 20
OPTS = {"master": {"election-timeout": 0.3, "chunk-size": "1MiB", "dead-after": 3},
        "chunkserver": {"heartbeat-interval": 0.3}}
A = os.urandom(2 * CHUNK + CHUNK // 2)      # three chunks: downloaded in parallel into files
B = b"the second file\n"


@pytest.fixture(scope="module")
def cluster(make_module_cluster):
    c = make_module_cluster(masters=3, options=OPTS, start=False)
    for _ in range(3):
        c.add_chunkserver()
    c.up()
    with c.client() as client:
        client.put(io.BytesIO(A), "/A")
        client.put(io.BytesIO(B), "/B")
    return c


@pytest.fixture
def env(cluster):
    return cluster.cli_env()


def gfs(*args, env, stdin=None, stdout=subprocess.PIPE, check=True):
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], input=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"gfs {' '.join(args)}: {proc.stderr.decode()}")
    return proc


def shell(script: str, env) -> None:
    """Run `script` in bash with `gfs` as a function running this checkout's CLI."""
    prelude = f'gfs() {{ "{sys.executable}" -m cli.main "$@"; }}\n'
    proc = subprocess.run(["bash", "-ec", prelude + script], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()


def error_line(proc) -> str:
    """The one-line error of a failed command (never a traceback)."""
    err = proc.stderr.decode()
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


# --- output lands as if written in order ---------------------------------------------------------

@pytest.mark.parametrize("before, script, expected", [
    (None, "gfs cat /A /B > OUT", A + B),                                 # a regular file
    (None, "(echo before; gfs cat /A; echo after) > OUT", b"before\n" + A + b"after\n"),
    (None, "(gfs get /A -; gfs get /B -) > OUT", A + B),                 # one shared offset
    (None, "gfs cat /A /B | cat > OUT", A + B),                           # a pipe
    (b"existing\n", "gfs cat /A >> OUT; gfs cat /B >> OUT; gfs get /A - >> OUT",
     b"existing\n" + A + B + A)])                                        # O_APPEND
def test_stdout_ends_up_as_if_written_in_order(env, tmp_path, before, script, expected):
    out = tmp_path / "out"
    if before is not None:
        out.write_bytes(before)
    shell(script.replace("OUT", str(out)), env)
    assert out.read_bytes() == expected


def test_stdout_with_bytes_before_and_after_the_offset(env, tmp_path):
    out = tmp_path / "out"
    tail = b"T" * (len(A) + 100)
    out.write_bytes(b"HEAD" + tail)
    with open(out, "r+b", buffering=0) as f:
        f.seek(4)
        gfs("cat", "/B", "/A", env=env, stdout=f)
        # The shared file offset moved past what was written, as sequential writes move it.
        assert f.tell() == 4 + len(B) + len(A)
    assert out.read_bytes() == b"HEAD" + B + A + tail[len(B) + len(A):]


def test_client_get_into_file_objects(cluster, tmp_path):
    path = tmp_path / "f"
    with cluster.client() as c:
        with open(path, "wb") as f:               # buffered bytes of the caller come first
            f.write(b"x" * 10)
            c.get("/A", f)
            f.write(b"y")
            assert f.tell() == 10 + len(A) + 1
        assert path.read_bytes() == b"x" * 10 + A + b"y"
        with open(path, "ab") as f:               # O_APPEND: pwrite would ignore offsets
            c.get("/B", f)
            c.get("/A", f, offset=5, length=CHUNK)
        assert path.read_bytes() == b"x" * 10 + A + b"y" + B + A[5:5 + CHUNK]
        path.write_bytes(b"0123456789" * 3)
        with open(path, "r+b") as f:              # a reader with read-ahead in its buffer
            assert f.read(3) == b"012"
            c.get("/B", f)
            assert f.read(2) == (b"0123456789" * 3)[3 + len(B):][:2]
        assert path.read_bytes()[:3 + len(B)] == b"012" + B
        buf = io.BytesIO(b"keep")                 # no descriptor at all
        buf.seek(4)
        c.get("/A", buf)
        assert buf.getvalue() == b"keep" + A


def test_large_downloads_into_files_land_exactly_around_the_page_cache(cluster, env, tmp_path,
                                                                        monkeypatch):
    """A download of 8 MiB or more writes its chunks' ranges around the page cache
    (gfs/direct_io.py): aligned parts directly, heads and tails before and after them through
    the cache. Whatever the file offset the caller left, the bytes land exactly, the bytes
    around them stay, and the offset ends after them."""
    needs_o_direct(tmp_path)
    big = os.urandom(9 * CHUNK + 12_345)
    path = tmp_path / "big"
    with cluster.client() as c:
        c.put(io.BytesIO(big), "/BIG")
        c.get("/BIG", str(path))
        assert cached_pages(path) <= 9 + 1          # a tail page at most per range
        assert path.read_bytes() == big
        with open(path, "wb") as f:               # unaligned: 10 bytes the caller buffered
            f.write(b"x" * 10)
            c.get("/BIG", f)
            f.write(b"y")
        assert path.read_bytes() == b"x" * 10 + big + b"y"
        path.write_bytes(b"T" * (len(big) + 5000))
        with open(path, "r+b") as f:              # bytes after the range stay
            f.seek(3)
            c.get("/BIG", f, offset=777)
            assert f.tell() == 3 + len(big) - 777
        assert path.read_bytes() == b"TTT" + big[777:] + b"T" * (5000 + 777 - 3)
        monkeypatch.setenv("GFS_DIRECT_DOWNLOADS", "0")
        path.unlink()
        c.get("/BIG", str(path))                  # the contrast: the same bytes, cached
        assert cached_pages(path) > len(big) // 4096 // 2
        assert path.read_bytes() == big
    out = tmp_path / "out"
    shell(f"(echo before; gfs get /BIG -; gfs cat /B) > {out}", env)
    assert out.read_bytes() == b"before\n" + big + B


def test_in_order_sinks_get_chunks_read_ahead_in_order_and_a_reader_that_stops_frees_them(
        cluster, env, tmp_path):
    """A pipe or a file object without a descriptor takes bytes only in order: the chunks after
    the one being written are read ahead in parallel (bounded), and come out in order; a
    reader that stops early (`head`) ends the download at once, nothing left hanging."""
    big = os.urandom(9 * CHUNK + 4321)
    with cluster.client() as c:
        c.put(io.BytesIO(big), "/BIG2")
        buf = io.BytesIO()
        c.get("/BIG2", buf)
        assert buf.getvalue() == big
        buf = io.BytesIO()
        c.get("/BIG2", buf, offset=CHUNK + 5, length=5 * CHUNK)
        assert buf.getvalue() == big[CHUNK + 5:6 * CHUNK + 5]
    out = tmp_path / "out"
    shell(f"gfs get /BIG2 - | cat > {out}", env)
    assert out.read_bytes() == big
    started = time.monotonic()
    shell(f"(gfs get /BIG2 - || true) | head -c 1000 > {out}", env)
    assert out.read_bytes() == big[:1000]
    assert time.monotonic() - started < 30


# --- paths as people type them -------------------------------------------------------------------

def test_trailing_slashes_name_directories(env, tmp_path):
    gfs("mkdir", "-p", "/p/q/", env=env)
    assert gfs("ls", "/p/", env=env).stdout == b"q/\n"
    assert gfs("ls", "/p/q/", env=env).stdout == b""
    assert b"type:          dir" in gfs("stat", "/p/q/", env=env).stdout
    (tmp_path / "f").write_bytes(b"x")
    gfs("put", str(tmp_path / "f"), "/p/q/", env=env)
    assert gfs("cat", "/p/q/f", env=env).stdout == b"x"
    assert error_line(gfs("put", "-", "/p/q/", env=env, stdin=b"x", check=False)) == (
        "gfs: invalid argument: standard input has no name to put into a directory: give the "
        "new file's full path, e.g. /p/q/NAME")
    gfs("tier", "set", "/p/", "cold", env=env)
    gfs("tier", "status", "/p/q/", env=env)
    gfs("rm", "-r", "/p/", env=env)
    assert b"p/" not in gfs("ls", "/", env=env).stdout
    for args in (("ls", "/B/"), ("stat", "/B/"), ("rm", "/B/"), ("tier", "status", "/B/")):
        assert error_line(gfs(*args, env=env, check=False)) == \
            "gfs: failed precondition: /B/ is not a directory", args
    assert gfs("cat", "/B", env=env).stdout == B       # still there


def test_path_errors_speak_the_users_terms(env):
    for args, expected in [
            (("ls", "/a//b"), "gfs: invalid argument: path '/a//b' has an empty name "
                              "('//' or a trailing '/')"),
            (("mkdir", "relative"), "gfs: invalid argument: path 'relative' is not absolute "
                                    "(must start with '/')"),
            (("mv", "/B", "/x/../y"), "gfs: invalid argument: destination path '/x/../y' has "
                                      "a '..' component")]:
        line = error_line(gfs(*args, env=env, check=False))
        assert line == expected and "field" not in line


def test_mv_into_an_existing_directory_as_gnu_mv(env, cluster):
    for p in ("/mv/f", "/mv/g", "/mv/h"):
        gfs("put", "-p", "-", p, env=env, stdin=p.encode())
    gfs("mkdir", "-p", "/mv/dir/sub", "/mv/empty", env=env)
    gfs("mv", "/mv/f", "/mv/dir", env=env)                   # into the directory
    gfs("mv", "/mv/g", "/mv/h", "/mv/dir/", env=env)         # several sources
    gfs("mv", "/mv/dir/sub/", "/mv/empty", env=env)          # a directory into a directory
    with cluster.client() as c:
        assert [e.path for e in c.list("/mv/dir")] == ["/mv/dir/f", "/mv/dir/g", "/mv/dir/h"]
        assert c.exists("/mv/empty/sub")
        assert error_line(gfs("mv", "-T", "/mv/dir/f", "/mv/dir", env=env, check=False)) == \
            "gfs: already exists: /mv/dir already exists"
        gfs("mv", "-T", "/mv/dir/f", "/mv/renamed", env=env)   # -T: DEST is the new name
        assert c.read("/mv/renamed") == b"/mv/f"
        gfs("mv", "-T", "-f", "/mv/dir/g", "/mv/renamed", env=env)
        assert c.read("/mv/renamed") == b"/mv/g"
    for args, expected in [
            (("mv", "/mv/renamed", "/mv/nodir/"), "gfs: not found: directory /mv/nodir does "
                                                   "not exist"),
            (("mv", "/mv/dir/h", "/mv/renamed", "/mv/renamed"), "gfs: failed precondition: "
                                                               "/mv/renamed is not a directory"),
            (("mv", "-T", "/mv/dir/h", "/mv/renamed", "/x"), "gfs: invalid argument: "
                                                           "-T/--no-target-directory takes one "
                                                           "source")]:
        assert error_line(gfs(*args, env=env, check=False)) == expected


def test_put_into_a_missing_directory_suggests_parents(env, cluster, tmp_path):
    (tmp_path / "big.iso").write_bytes(b"iso")
    p = gfs("put", str(tmp_path / "big.iso"), "/isos/big.iso", env=env, check=False)
    assert error_line(p) == ("gfs: not found: directory /isos does not exist "
                             "(-p/--parents creates it)")
    gfs("put", "-p", str(tmp_path / "big.iso"), "/isos/2026/", env=env)
    with cluster.client() as c:
        assert c.read("/isos/2026/big.iso") == b"iso"


def test_tier_set_on_a_directory_says_what_happens_to_existing_files(env, cluster):
    gfs("put", "-p", "-", "/archive/old.log", env=env, stdin=b"old")
    gfs("mkdir", "/archive-empty", env=env)
    out = gfs("tier", "set", "/archive", "cold", env=env).stdout.decode()
    assert out == ("/archive: new files and directories created in it are cold (1 changed)\n"
                   "files already in it keep their class: `gfs tier set -r /archive cold` "
                   "changes them too\n")
    assert gfs("tier", "set", "/archive-empty/", "cold", env=env).stdout.decode() == (
        "/archive-empty: new files and directories created in it are cold (1 changed)\n")
    with cluster.client() as c:
        assert c.stat("/archive/old.log").storage_class == "hot"
        out = gfs("tier", "set", "-r", "/archive", "cold", env=env).stdout.decode()
        assert out.startswith("/archive: cold, with everything below it (1 changed)")
        assert c.stat("/archive/old.log").storage_class == "cold"


# --- validation ----------------------------------------------------------------------------------

def test_put_with_more_replicas_than_chunkservers_is_refused_even_when_empty(env, cluster):
    for stdin in (b"", b"data"):
        assert error_line(gfs("put", "-r", "5", "-", "/r5", env=env, stdin=stdin,
                              check=False)) == ("gfs: failed precondition: not enough "
                                                "chunkservers for replication 5: 3 alive")
    with cluster.client() as c:
        assert not c.exists("/r5")
    gfs("put", "-r", "3", "-", "/r3", env=env, stdin=b"")


def test_length_and_chunk_size_are_validated_in_the_users_units(env, cluster):
    p = gfs("get", "--length", "-5", "/A", "-", env=env, check=False)
    assert p.returncode == 2 and b"-5 is not in the range x>=-1" in p.stderr
    assert gfs("get", "--length", "-1", "--offset", "7", "/B", "-", env=env).stdout == B[7:]
    assert gfs("get", "--length", "0", "/B", "-", env=env).stdout == b""
    with cluster.client() as c:
        with pytest.raises(Exception, match="length must be -1 .to the end. or at least 0"):
            c.read("/B", length=-5)
    for size in ("1000", "100KiB"):
        assert error_line(gfs("put", "--chunk-size", size, "-", "/cs", env=env, stdin=b"x",
                              check=False)) == (
            "gfs: invalid argument: chunk size must be a multiple of 64 KiB, at least 64 KiB "
            f"(e.g. 1MiB, 64MiB), not {parse_size(size)} bytes")


def test_ls_json_and_stat_json_describe_chunks_alike(env):
    import json
    listed = json.loads(gfs("ls", "--json", "/A", env=env).stdout)
    stat = json.loads(gfs("stat", "--json", "/A", env=env).stdout)
    for info in listed + [stat]:        # replicas: healthy ones first, in no fixed order
        for chunk in info["chunks"]:
            chunk["replicas"].sort()
    assert listed == [stat] and len(stat["chunks"]) == 3
    assert isinstance(stat["chunks"][0], dict) and stat["chunks"][0]["length"] == CHUNK


# --- fail fast, explain why ----------------------------------------------------------------------

def test_trash_purge_without_a_terminal_says_use_yes(env, cluster):
    gfs("put", "-", "/trashed", env=env, stdin=b"t")
    gfs("rm", "/trashed", env=env)
    p = subprocess.run([sys.executable, "-m", "cli.main", "trash", "purge"], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert p.returncode == 2 and p.stderr.decode() == (
        "gfs: deleting everything in your trash for good needs confirmation and standard input "
        "is not a terminal: use --yes\n")
    assert b"/trashed" in gfs("trash", "ls", env=env).stdout
    assert gfs("trash", "purge", "--yes", env=env).stdout.startswith(b"purged ")
    assert b"/trashed" not in gfs("trash", "ls", env=env).stdout


def test_usage_errors_are_one_line_and_a_hint(env):
    p = gfs("ls", "--bogus", env=env, check=False)
    assert p.returncode == 2
    assert p.stderr.decode() == "gfs: No such option '--bogus'.\nTry 'gfs ls --help'.\n"
    help_text = gfs("--help", env=env).stdout.decode()
    assert "Exit status:" in help_text and "2    a usage error" in help_text


def test_names_that_are_not_utf8_are_refused_naming_them(env, cluster, tmp_path):
    latin1 = os.fsdecode(b"caf\xe9.txt")
    (tmp_path / latin1).write_bytes(b"coffee")
    local = str(tmp_path / latin1)
    for args, expected in [
            (("mkdir", "-p", os.fsdecode(b"/\xff")),
             r"gfs: invalid argument: path '/\xff' is not valid UTF-8 (gfs names are UTF-8 text)"),
            (("ls", os.fsdecode(b"/d\xff/")),
             r"gfs: invalid argument: path '/d\xff' is not valid UTF-8 (gfs names are UTF-8 text)"),
            (("mv", "/B", os.fsdecode(b"/\xe9")), r"gfs: invalid argument: destination path "
                                                  r"'/\xe9' is not valid UTF-8 (gfs names are "
                                                  r"UTF-8 text)"),
            (("put", local, "/"), r"gfs: invalid argument: local file name 'caf\xe9.txt' is not "
                                  r"valid UTF-8 (gfs names are UTF-8 text): give the remote "
                                  r"file's full path instead of a directory")]:
        assert error_line(gfs(*args, env=env, check=False)) == expected, args
    gfs("put", local, "/cafe.txt", env=env)               # the local name itself is fine
    assert gfs("cat", "/cafe.txt", env=env).stdout == b"coffee"
    gfs("get", "/cafe.txt", str(tmp_path / os.fsdecode(b"back\xff")), env=env)
    assert (tmp_path / os.fsdecode(b"back\xff")).read_bytes() == b"coffee"


@pytest.mark.parametrize("masters, expected", [
    ("garbage", "gfs: invalid argument: master address 'garbage' is not HOST:PORT (e.g. "
                "10.0.0.1:7100, master1.lan:7100, [::1]:7100)"),
    ("127.0.0.1:1,[::1]:1", "gfs: unavailable: no master can be reached: 127.0.0.1:1: connection "
                            "refused (nothing listens there); [::1]:1: connection refused "
                            "(nothing listens there)"),
    ("no-such-host.invalid:7100", "gfs: unavailable: no master can be reached: "
                                  "no-such-host.invalid:7100: unknown host")])
def test_bad_masters_fail_fast_with_the_address_and_why(masters, expected):
    env = {**os.environ, "GFS_MASTERS": masters}
    started = time.monotonic()
    line = error_line(gfs("ls", "/", env=env, check=False))       # --timeout is 30 s
    assert time.monotonic() - started < 20                         # interpreter start included
    assert line.startswith(expected), line
    if "," in masters:                                             # the client alone
        started = time.monotonic()
        with pytest.raises(GfsError, match="no master can be reached"):
            with Client(masters) as c:
                c.stat("/")
        assert time.monotonic() - started < 3


def test_masters_that_answer_without_a_leader_are_waited_for(make_cluster):
    c = make_cluster(masters=3, options=OPTS, start=False)
    c.start("master-1")                                            # no majority: no leader
    deadline = time.monotonic() + 30
    while c.master_status(c.daemon("master-1")) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    env = c.cli_env()
    started = time.monotonic()
    line = error_line(gfs("--timeout", "3", "ls", "/", env=env, check=False))
    assert time.monotonic() - started >= 3
    assert line.startswith("gfs: unavailable: no master leader answered within 3s: masters "
                           "answer but none is the leader, and 2 cannot be reached ("), line
    assert "without a majority no leader is elected" in line


def test_identity_commands_take_directories_with_a_trailing_slash(env):
    gfs("mkdir", "-p", "/shared/", env=env)
    assert gfs("visibility", "set", "/shared/", "public", env=env).stdout == b"/shared: public\n"
    assert gfs("du", "/shared/", env=env).stdout.split()[-1] == b"/shared"
    assert error_line(gfs("du", "/B/", env=env, check=False)) == \
        "gfs: failed precondition: /B/ is not a directory"
