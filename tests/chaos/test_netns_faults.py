"""The chaos lab's network faults on real namespaces: packet loss, one-way partitions and delay
through the relay (needs root; skipped otherwise)."""
import subprocess
import sys
import time

import pytest

from bench.chaos.netns import NetLab, NetLabUnavailable

UDP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999)); s.settimeout(1.5)
print("ready", flush=True)
n = 0
try:
    while True:
        s.recv(100); n += 1
except socket.timeout:
    print(n)
"""
UDP_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    try:
        s.sendto(b"x", (sys.argv[1], 9999))
    except PermissionError:      # dropped by the output filter
        pass
    time.sleep(0.0005)
"""
ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen()
while True:
    c, _ = s.accept()
    while (d := c.recv(100)):
        c.sendall(d)
    c.close()
"""
ROUND_TRIP = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], 7000), timeout=10)
t = time.monotonic(); c.sendall(b"ping"); c.recv(100); print(time.monotonic() - t)
"""


@pytest.fixture
def lab():
    try:
        lab = NetLab(2)
    except NetLabUnavailable as err:
        pytest.skip(str(err))
    yield lab
    lab.teardown()


def py(lab, host, code, *args, **kw):
    return subprocess.Popen([*lab.exec_prefix(host), sys.executable, "-c", code, *args],
                            stdout=subprocess.PIPE, text=True, **kw)


def datagrams(lab, src, dst, count=1000) -> int:
    sink = py(lab, dst, UDP_SINK, lab.addresses[dst])
    assert sink.stdout.readline().strip() == "ready"      # bound: no datagram is sent too early
    py(lab, src, UDP_SEND, lab.addresses[dst], str(count)).wait(30)
    return int(sink.communicate(timeout=30)[0])


def test_loss_drops_about_the_fraction_asked(lab):
    assert datagrams(lab, 0, 1) == 1000
    lab.lose(0, 1, 0.5)
    assert 300 < datagrams(lab, 0, 1) < 700
    assert 300 < datagrams(lab, 1, 0) < 700
    lab.heal()
    assert datagrams(lab, 0, 1) == 1000


def test_one_way_partition(lab):
    lab.one_way(0, [1], heard=False)          # host 0 hears host 1 but is not heard
    assert datagrams(lab, 0, 1, 200) == 0
    assert datagrams(lab, 1, 0, 200) == 200
    lab.heal()
    lab.one_way(0, [1], heard=True)           # host 0 is heard but hears nothing
    assert datagrams(lab, 0, 1, 200) == 200
    assert datagrams(lab, 1, 0, 200) == 0
    lab.heal()
    assert datagrams(lab, 1, 0, 200) == 200


def round_trip(lab) -> float:
    return float(py(lab, 0, ROUND_TRIP, lab.addresses[1]).communicate(timeout=30)[0])


def test_delay_through_the_relay(lab):
    server = py(lab, 1, ECHO, lab.addresses[1])
    try:
        time.sleep(0.3)
        assert round_trip(lab) < 0.2
        lab.delay(0, 1, 7000, 0.25)
        assert round_trip(lab) >= 0.5              # 0.25 s each way
        lab.heal()
        assert round_trip(lab) < 0.2
    finally:
        server.kill()
        server.wait()
