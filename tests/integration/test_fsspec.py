"""`gfs://` through fsspec with real daemons, driven by the real data libraries (pandas, pyarrow):
ranged reads fetch only the bytes asked for (counted by the chunkservers), writes appear whole at
close, permissions are the identity's."""
from __future__ import annotations

import io
import os
import urllib.request

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from gfs.filesystem import GfsFileSystem
from small_cluster import cluster_with_people

CHUNK = 1 << 20


@pytest.fixture(scope="module")
def cluster(make_module_cluster):
    return cluster_with_people(make_module_cluster, "fsspec")


@pytest.fixture
def fs(cluster):
    """alice's file system, addressed as the CLI would be: $GFS_MASTERS and $GFS_TOKEN."""
    GfsFileSystem.clear_instance_cache()
    os.environ["GFS_MASTERS"] = ",".join(cluster.master_addresses())
    os.environ["GFS_TOKEN"] = cluster.alice
    yield fsspec.filesystem("gfs")
    GfsFileSystem.clear_instance_cache()


def bytes_served(cluster) -> float:
    """Chunk bytes all chunkservers sent to readers, from their /metrics."""
    total = 0.0
    for d in cluster.spec["chunkservers"]:
        body = urllib.request.urlopen(f"http://{d['metrics']}/metrics", timeout=5).read().decode()
        for line in body.splitlines():
            if line.startswith('gfs_chunkserver_bytes_total{direction="out"}'):
                total += float(line.split()[-1])
    return total


def test_the_gfs_protocol_is_registered_and_urls_name_path_and_cluster(cluster, fs):
    assert isinstance(fs, GfsFileSystem)
    assert GfsFileSystem._strip_protocol("gfs://alice/data/x.csv") == "/alice/data/x.csv"
    host = cluster.master_addresses()[0]
    assert GfsFileSystem._strip_protocol(f"gfs://{host}/alice/x") == "/alice/x"
    fs.pipe_file("gfs://alice/hello.txt", b"hello")
    # The cluster named in the URL, the token given as an argument:
    other, path = fsspec.core.url_to_fs(f"gfs://{host}/alice/hello.txt", token=cluster.alice)
    assert other.masters == host and path == "/alice/hello.txt"
    assert other.cat_file(path) == b"hello"
    with fsspec.open(f"gfs://{host}/alice/hello.txt", "rb", token=cluster.alice) as f:
        assert f.read() == b"hello"


def test_namespace_operations(fs):
    fs.mkdir("gfs://alice/ns/sub")
    fs.pipe_file("/alice/ns/a.bin", b"a" * 10)
    fs.pipe_file("/alice/ns/sub/b.bin", b"b" * 20)
    names = fs.ls("/alice/ns", detail=False)
    assert names == ["/alice/ns/a.bin", "/alice/ns/sub"]
    info = fs.info("/alice/ns/a.bin")
    assert (info["type"], info["size"], info["owner"]) == ("file", 10, "alice")
    assert fs.info("/alice/ns/sub")["type"] == "directory"
    assert fs.find("/alice/ns") == ["/alice/ns/a.bin", "/alice/ns/sub/b.bin"]
    assert fs.glob("/alice/ns/**/*.bin") == ["/alice/ns/a.bin", "/alice/ns/sub/b.bin"]
    assert fs.du("/alice/ns") == 30
    fs.mv("/alice/ns/sub", "/alice/ns/moved")            # a directory, in one atomic rename
    assert fs.cat_file("/alice/ns/moved/b.bin") == b"b" * 20
    assert not fs.exists("/alice/ns/sub")
    with pytest.raises(FileNotFoundError):
        fs.info("/alice/ns/nope")
    with pytest.raises(FileNotFoundError):
        fs.open("/alice/ns/nope", "rb")
    with pytest.raises(IsADirectoryError):
        fs.open("/alice/ns/moved", "rb")
    fs.rm("/alice/ns", recursive=True)
    assert not fs.exists("/alice/ns")


def test_ranged_reads_across_chunks(fs):
    data = os.urandom(3 * CHUNK + 12345)                  # four chunks
    fs.pipe_file("/alice/ranges.bin", data)
    for start, end in [(0, 10), (CHUNK - 5, CHUNK + 5), (2 * CHUNK, 3 * CHUNK + 100),
                       (len(data) - 7, None), (-100, None), (5, 5), (10, 3), (None, 20),
                       (5, -3), (len(data) + 5, None), (CHUNK + 1, 10 * CHUNK)]:
        assert fs.cat_file("/alice/ranges.bin", start=start, end=end) == data[start:end]
    with fs.open("/alice/ranges.bin", "rb", block_size=64 << 10) as f:
        f.seek(CHUNK * 2 - 3)
        assert f.read(6) == data[CHUNK * 2 - 3:CHUNK * 2 + 3]
        f.seek(-4, 2)
        assert f.read() == data[-4:]


def test_writes_appear_whole_at_close_and_an_exception_discards_them(fs):
    fs.pipe_file("/alice/atomic.bin", b"old")
    big = os.urandom(2 * CHUNK + 1)
    with fs.open("/alice/atomic.bin", "wb", block_size=256 << 10) as f:
        f.write(big[:CHUNK])
        assert fs.cat_file("/alice/atomic.bin") == b"old"          # not yet
        f.write(big[CHUNK:])
    assert fs.cat_file("/alice/atomic.bin") == big
    with pytest.raises(RuntimeError):
        with fs.open("/alice/atomic.bin", "wb") as f:
            f.write(b"half")
            raise RuntimeError("writer failed")
    assert fs.cat_file("/alice/atomic.bin") == big                 # untouched
    with pytest.raises(FileExistsError):
        fs.open("/alice/atomic.bin", "xb")


def test_writes_spill_to_disk_past_the_memory_bound(cluster):
    small = GfsFileSystem(masters=cluster.master_addresses(), token=cluster.alice,
                          spool_memory=256 << 10, skip_instance_cache=True)
    data = os.urandom(CHUNK + 7)
    with small.open("/alice/spilled.bin", "wb", block_size=64 << 10) as f:
        for i in range(0, len(data), 100_000):
            f.write(data[i:i + 100_000])
        assert not isinstance(f._spool, io.BytesIO)                # on disk, not in memory
    assert small.cat_file("/alice/spilled.bin") == data


def test_permissions_are_the_identitys(cluster, fs):
    fs.pipe_file("/alice/private.txt", b"mine")
    bob = GfsFileSystem(masters=cluster.master_addresses(), token=cluster.bob,
                        skip_instance_cache=True)
    with pytest.raises(FileNotFoundError):                         # private: hidden from bob
        bob.cat_file("/alice/private.txt")
    with pytest.raises(FileNotFoundError):
        bob.pipe_file("/alice/intruder.txt", b"x")
    fs.pipe_file("/alice/pub/readme.txt", b"hello")
    fs.client.set_visibility("/alice/pub", "public")
    assert bob.cat_file("/alice/pub/readme.txt") == b"hello"       # public: readable ...
    with pytest.raises(PermissionError):                           # ... not writable
        bob.pipe_file("/alice/pub/intruder.txt", b"x")
    anonymous = GfsFileSystem(masters=cluster.master_addresses(), token="",
                              skip_instance_cache=True)
    assert anonymous.cat_file("/alice/pub/readme.txt") == b"hello"
    with pytest.raises(PermissionError):
        anonymous.rm("/alice/pub/readme.txt")
    assert not fs.exists("/alice/intruder.txt") and not fs.exists("/alice/pub/intruder.txt")
    assert fs.cat_file("/alice/pub/readme.txt") == b"hello"


def test_pandas_csv_and_parquet_round_trip(fs):
    frame = pd.DataFrame({"id": range(1000), "name": [f"n{i}" for i in range(1000)],
                          "value": [i * 0.5 for i in range(1000)]})
    frame.to_csv("gfs://alice/pd/frame.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv("gfs://alice/pd/frame.csv"), frame)
    frame.to_parquet("gfs://alice/pd/frame.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet("gfs://alice/pd/frame.parquet"), frame)
    files = fsspec.open_files("gfs://alice/pd/*.csv", "rb")
    assert [f.path for f in files] == ["/alice/pd/frame.csv"]


def test_parquet_column_reads_fetch_byte_ranges_not_whole_files(cluster, fs):
    rows = 200_000
    table = pa.table({"small": pa.array(range(rows), pa.int32()),
                      "big": pa.array([os.urandom(16).hex() for _ in range(rows)])})
    for part in range(3):
        with fs.open(f"/alice/dataset/part-{part}.parquet", "wb") as f:
            pq.write_table(table, f, row_group_size=50_000, compression="none")
    size = fs.info("/alice/dataset/part-0.parquet")["size"]
    assert size > 4 * CHUNK                          # several chunks, several row groups

    dataset = ds.dataset("/alice/dataset", filesystem=fs, format="parquet")
    before = bytes_served(cluster)
    column = dataset.to_table(columns=["small"])
    fetched = bytes_served(cluster) - before
    assert column.num_rows == 3 * rows
    assert column.column("small").to_pylist()[:3] == [0, 1, 2]
    # One int32 column is ~800 KB of a ~8.6 MB file (~29 % fetched here, footers and the
    # readahead of each column chunk included; the whole files would be 100 %).
    assert fetched < 0.4 * 3 * size, f"read {fetched:.0f} bytes of {3 * size} for one column"

    before = bytes_served(cluster)
    with fs.open("/alice/dataset/part-1.parquet", "rb", block_size=64 << 10) as f:
        group = pq.ParquetFile(f).read_row_group(2, columns=["big"])
    fetched = bytes_served(cluster) - before
    assert group.num_rows == 50_000
    assert fetched < 0.35 * size, f"read {fetched:.0f} bytes of {size} for one row group"
