"""cli/localcluster.py: daemons, which run in the cluster's directory, get the PYTHONPATH the
caller meant (a checkout's `PYTHONPATH=.` names that checkout, not the cluster directory)."""
from __future__ import annotations

import os

from cli.localcluster import absolute_search_path


def test_relative_and_empty_entries_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    value = os.pathsep.join([".", "/opt/lib", "", "src/x"])
    assert absolute_search_path(value).split(os.pathsep) == [
        str(tmp_path), "/opt/lib", str(tmp_path), str(tmp_path / "src" / "x")]


def test_absolute_entries_are_left_as_they_are():
    assert absolute_search_path("/a:/b/c") == "/a:/b/c"
