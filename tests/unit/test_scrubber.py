"""Scrubber: finds every damaged block, paces itself, serves requests first, stops promptly;
and the heartbeat side of corruption (corrupt list out, delete/verify lists in)."""
from __future__ import annotations

import random
import threading
import time

import pytest
from prometheus_client import REGISTRY

from chunkserver.heartbeat import Heartbeater
from gfs.auth.daemon import DaemonAuth
from grpc_node import CLUSTER_SECRET
from chunkserver.scrubber import Scrubber
from chunkserver.store import ChunkStore
from gfs.checksum import BLOCK_SIZE
from gfs.errors import InvalidArgument
from proto import master_pb2 as pb

BS = BLOCK_SIZE
FAST = 1 << 40          # bytes/s: effectively unpaced


def write(store: ChunkStore, handle: int, size: int, version: int = 1) -> bytes:
    data = random.Random(handle).randbytes(size)
    w = store.begin_write(handle, version)
    w.write(data)
    w.commit()
    return data


def flip_bit(store: ChunkStore, handle: int, offset: int) -> None:
    meta = store.get(handle)
    path = store._path(handle, meta.version, "chunk")
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.slept = 0.0
        self.on_sleep = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        if self.on_sleep:
            self.on_sleep()


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def store(tmp_path):
    return ChunkStore(str(tmp_path / "cs"))


@pytest.fixture
def scrubbers():
    made: list[Scrubber] = []
    yield made
    for s in made:
        s.stop()


def test_a_pass_finds_every_flipped_bit(store):
    rng = random.Random(7)
    sizes = {h: rng.randrange(1, 24 * BS) for h in range(1, 11)}
    for h, size in sizes.items():
        write(store, h, size)
    damaged = {}
    for h in rng.sample(sorted(sizes), 5):
        offset = rng.randrange(sizes[h])
        flip_bit(store, h, offset)
        damaged[h] = offset // BS
    calls = []
    scrub = Scrubber(store, FAST, 3600, on_corrupt=lambda: calls.append(1))
    assert scrub.run_pass() == len(damaged)
    assert store.corrupt() == {h: 1 for h in damaged}
    assert len(calls) == len(damaged)
    st = scrub.stats()
    assert st["passes"] == 1 and st["corrupt_found"] == len(damaged)
    # Every healthy chunk whole, every damaged one up to its bad block.
    expected = sum(size for h, size in sizes.items() if h not in damaged) + \
        sum(damaged[h] * BS for h in damaged)
    assert st["scrubbed_bytes"] == expected
    # The next pass leaves the known-corrupt replicas alone and finds nothing new.
    assert scrub.run_pass() == 0
    assert scrub.stats()["passes"] == 2 and scrub.stats()["corrupt_found"] == len(damaged)
    assert scrub.stats()["scrubbed_bytes"] == expected + sum(
        size for h, size in sizes.items() if h not in damaged)


def test_rate_is_respected_with_an_injected_clock(store):
    for h in range(1, 6):
        write(store, h, 8 * BS + h * 1000)
    total = sum(m.length for m in store.chunks())
    fake = FakeTime()
    rate = 1 << 20
    scrub = Scrubber(store, rate, 3600, clock=fake.clock, sleep=fake.sleep)
    scrub.run_pass()
    assert scrub.stats()["scrubbed_bytes"] == total
    assert scrub.stats()["last_pass_s"] == pytest.approx(total / rate, rel=0.02)


def test_rate_is_respected_in_real_time(store, scrubbers):
    for h in range(1, 5):
        write(store, h, 4 * BS)                  # 1 MiB in all
    scrub = Scrubber(store, 4 << 20, 3600)       # 4 MiB/s: about 0.25 s
    scrubbers.append(scrub)
    started = time.monotonic()
    scrub.run_pass()
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed <= 1.0
    assert scrub.stats()["scrubbed_bytes"] == 1 << 20


def test_never_verified_first_then_oldest_verified(store):
    for h in range(1, 6):
        write(store, h, BS)
    fake = FakeTime()
    scrub = Scrubber(store, FAST, 3600, clock=fake.clock, sleep=fake.sleep)
    order = []
    real_read = store.read

    def spy(handle, *args, **kw):
        order.append(handle)
        return real_read(handle, *args, **kw)

    store.read = spy
    scrub.request(4)
    scrub.serve_requests()
    fake.now += 10
    scrub.request(2)
    scrub.serve_requests()
    fake.now += 10
    write(store, 4, BS, version=2)               # a new version counts as never verified
    assert order == [4, 2]
    order.clear()
    scrub.run_pass()
    assert order == [1, 3, 4, 5, 2]


def test_a_request_goes_ahead_of_the_pass(store):
    for h in range(1, 9):
        write(store, h, 4 * BS)
    flip_bit(store, 8, 2 * BS + 3)               # the last one a pass would reach
    fake = FakeTime()
    found_at = []
    scrub = Scrubber(store, 1 << 20, 3600, clock=fake.clock, sleep=fake.sleep,
                     on_corrupt=lambda: found_at.append(scrub.stats()["scrubbed_bytes"]))
    # The master's request arrives while the first chunk of the pass is being read.
    fake.on_sleep = lambda: (scrub.request(8, 1), setattr(fake, "on_sleep", None))
    scrub.run_pass()
    assert store.corrupt() == {8: 1}
    assert found_at == [4 * BS + 2 * BS]         # chunk 1, then chunk 8 up to its bad block
    assert scrub.stats()["pending_requests"] == 0


def test_requests_are_served_even_with_scrubbing_off(store, scrubbers):
    write(store, 1, 3 * BS)
    write(store, 2, 3 * BS)
    flip_bit(store, 2, BS)
    found = threading.Event()
    scrub = Scrubber(store, 0, 3600, on_corrupt=found.set)
    scrubbers.append(scrub)
    scrub.start()
    time.sleep(0.1)
    assert scrub.stats()["scrubbed_bytes"] == 0  # no pass: scrubbing is off
    scrub.request(2, 0)
    assert found.wait(5)
    assert store.corrupt() == {2: 1}
    assert scrub.stats()["passes"] == 0
    scrub.request(2, 7)                           # another version: nothing to check
    scrub.request(99, 0)                          # not stored
    wait_for(lambda: scrub.stats()["pending_requests"] == 0)


def test_the_thread_runs_passes_on_its_interval(store, scrubbers):
    for h in range(1, 4):
        write(store, h, 2 * BS)
    flip_bit(store, 3, 5)
    calls = []
    scrub = Scrubber(store, FAST, 0.25, on_corrupt=lambda: calls.append(1))
    scrubbers.append(scrub)
    scrub.start()
    wait_for(lambda: scrub.stats()["passes"] >= 1)
    assert store.corrupt() == {3: 1} and calls == [1]
    time.sleep(1.0)
    assert 3 <= scrub.stats()["passes"] <= 7      # one every 0.25 s
    assert calls == [1]                            # the known-corrupt replica is not re-read


def test_a_long_pass_is_followed_by_the_next_at_once(store, scrubbers):
    for h in range(1, 5):
        write(store, h, 4 * BS)                   # 1 MiB: 0.125 s at 8 MiB/s
    scrub = Scrubber(store, 8 << 20, 0.01)
    scrubbers.append(scrub)
    scrub.start()
    time.sleep(0.8)
    assert 3 <= scrub.stats()["passes"] <= 7


def test_stop_is_prompt_mid_chunk_and_when_idle(store, scrubbers):
    write(store, 1, 32 * BS)
    slow = Scrubber(store, BS, 3600)              # one block per second
    idle = Scrubber(store, 0, 3600)               # waits for requests forever
    scrubbers += [slow, idle]
    slow.start()
    idle.start()
    wait_for(lambda: slow.stats()["scrubbed_bytes"] > 0)
    for scrub in (slow, idle):
        started = time.monotonic()
        scrub.stop()
        assert time.monotonic() - started < 1.0
        assert not scrub._thread.is_alive()
    assert slow.stats()["passes"] == 0            # cut short: not counted


def test_metrics(store):
    write(store, 1, 2 * BS)
    write(store, 2, 2 * BS)
    flip_bit(store, 2, 0)

    def value(name):
        return REGISTRY.get_sample_value(name) or 0.0

    before = (value("gfs_chunkserver_scrub_bytes_total"),
              value("gfs_chunkserver_scrub_corrupt_total"))
    scrub = Scrubber(store, FAST, 3600)
    scrub.run_pass()
    assert value("gfs_chunkserver_scrub_bytes_total") - before[0] == 2 * BS
    assert value("gfs_chunkserver_scrub_corrupt_total") - before[1] == 1
    assert value("gfs_chunkserver_corrupt_replicas") == 1


@pytest.mark.parametrize("rate, interval", [(-1, 10), (1.5, 10), (10, 0), (10, -1)])
def test_bad_settings(store, rate, interval):
    with pytest.raises(InvalidArgument):
        Scrubber(store, rate, interval)


# -- heartbeats --------------------------------------------------------------------------------


class FakeMasterClient:
    leader = "m1:1"

    def __init__(self, responses):
        self.requests = []
        self.responses = list(responses)

    def call(self, method, request):
        assert method == "Heartbeat"
        self.requests.append(request)
        return self.responses.pop(0) if self.responses else pb.HeartbeatResponse()

    def learn_masters(self, addresses):
        self.learned = list(addresses)

    def close(self):
        pass


def test_heartbeat_reports_corrupt_replicas_and_obeys_delete_and_verify(store):
    for h in (1, 2, 3, 4):
        write(store, h, 1000, version=h)
    store.mark_corrupt(2, 2, "test")
    requested = []
    hb = Heartbeater(store, "cs:1", "r1", ["127.0.0.1:1"], daemon_auth=DaemonAuth(CLUSTER_SECRET),
                     on_verify=lambda h, v: requested.append((h, v)))
    hb.client.close()
    hb.client = FakeMasterClient([pb.HeartbeatResponse(
        delete=[pb.ChunkRef(handle=1, version=0),        # any version
                pb.ChunkRef(handle=3, version=2),        # not the stored version: kept
                pb.ChunkRef(handle=4, version=4)],       # exactly this version
        verify=[pb.ChunkRef(handle=2, version=2), pb.ChunkRef(handle=3, version=0)])])
    hb.beat()
    first = hb.client.requests[0]
    assert first.full_report
    assert [(r.handle, r.version) for r in first.corrupt] == [(2, 2)]
    assert [m.handle for m in store.chunks()] == [2, 3]
    assert requested == [(2, 2), (3, 0)]

    store.mark_corrupt(3, 3, "test")
    hb.beat()
    second = hb.client.requests[1]
    assert not second.full_report
    assert sorted((r.handle, r.version) for r in second.removed) == [(1, 1), (4, 4)]
    assert [(r.handle, r.version) for r in second.corrupt] == [(2, 2), (3, 3)]   # complete list
