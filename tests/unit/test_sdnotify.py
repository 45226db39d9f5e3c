"""sd_notify over a real unix datagram socket, as systemd's Type=notify receives it."""
from __future__ import annotations

import os
import socket

import pytest

from gfs import sdnotify


@pytest.fixture
def listener(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def test_ready_sends_ready_mainpid_and_status(listener):
    assert sdnotify.ready("serving on 10.0.0.1:7100")
    assert fields(listener.recv(4096)) == {"READY": "1", "MAINPID": str(os.getpid()),
                                           "STATUS": "serving on 10.0.0.1:7100"}


def test_stopping(listener):
    assert sdnotify.stopping()
    assert fields(listener.recv(4096)) == {"STOPPING": "1"}


def test_abstract_namespace_socket(monkeypatch):
    name = f"gfs-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert fields(sock.recv(4096))["READY"] == "1"


def test_without_a_supervisor_nothing_happens(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))     # nobody listening
    assert sdnotify.ready() is False                                      # and no exception
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.ready() is False
