"""gfs/filesystem.py without servers: URL forms, range bounds, error mapping."""
import errno

import pytest

from gfs.errors import FailedPrecondition, NotFound, PermissionDenied, ResourceExhausted
from gfs.filesystem import GfsFileSystem, _bounds, os_errors


@pytest.mark.parametrize("url, path, kwargs", [
    ("gfs://alice/data/x.parquet", "/alice/data/x.parquet", {}),
    ("gfs:///alice/x", "/alice/x", {}),
    ("/alice//x/", "/alice/x", {}),
    ("gfs://127.0.0.1:7000/alice/x", "/alice/x", {"masters": "127.0.0.1:7000"}),
    ("gfs://h1:7000,h2:7000/a", "/a", {"masters": "h1:7000,h2:7000"}),
    ("gfs://", "/", {}),
])
def test_urls(url, path, kwargs):
    assert GfsFileSystem._strip_protocol(url) == path
    assert GfsFileSystem._get_kwargs_from_urls(url) == kwargs


@pytest.mark.parametrize("start, end, expect", [
    (None, None, (0, 100)), (10, 20, (10, 20)), (-10, None, (90, 100)), (50, -10, (50, 90)),
    (150, None, (100, 100)), (30, 10, (30, 30)), (None, 500, (0, 100)), (-500, None, (0, 100)),
])
def test_bounds(start, end, expect):
    assert _bounds(100, start, end) == expect


@pytest.mark.parametrize("error, kind, code", [
    (NotFound("/a: no such file or directory"), FileNotFoundError, errno.ENOENT),
    (PermissionDenied("token 't' (bob) lacks ..."), PermissionError, errno.EACCES),
    (FailedPrecondition("/a is a directory"), IsADirectoryError, errno.EISDIR),
    (FailedPrecondition("/a: directory not empty"), OSError, errno.ENOTEMPTY),
    (ResourceExhausted("chunkserver full"), OSError, errno.ENOSPC),
])
def test_errors_become_the_oserror_data_tools_expect(error, kind, code):
    with pytest.raises(kind) as caught:
        with os_errors("/a"):
            raise error
    assert caught.value.errno == code and str(error) in str(caught.value)
