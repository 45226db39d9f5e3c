"""gfs/clock.py: the steady wall clock (slews, never steps or goes back) and the test offset."""
import logging

from gfs.clock import SteadyClock, TestClockOffset, system_wall, write_test_offset


class Fake:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self):
        self.wall = 1_000_000.0
        self.mono = 50.0

    def tick(self, s: float) -> None:
        self.wall += s
        self.mono += s


def steady(fake: Fake) -> SteadyClock:
    return SteadyClock(lambda: fake.wall, lambda: fake.mono, max_slew=0.01, jump_warn_s=1.0)


def test_follows_an_undisturbed_wall_clock_exactly():
    f = Fake()
    c = steady(f)
    assert c.now() == f.wall
    for _ in range(100):
        f.tick(0.37)
        assert abs(c.now() - f.wall) < 1e-6


def test_a_forward_jump_is_followed_at_most_one_percent_faster(caplog):
    f = Fake()
    c = steady(f)
    start = c.now()
    f.wall += 600                              # the wall clock jumps 10 minutes ahead
    with caplog.at_level(logging.WARNING, logger="gfs.clock"):
        f.tick(60)
        t = c.now()
    assert t - start <= 60 * 1.01 + 1e-9       # 60.6 s of gfs time, not 660 s
    assert t - start >= 60
    assert "jumped forward by 600" in caplog.text
    # a deadline 5 minutes ahead does not fire for at least 5 / 1.01 minutes of real time
    deadline = start + 300
    real = 60.0
    while c.now() < deadline:
        f.tick(1)
        real += 1
    assert real >= 300 / 1.01 - 1


def test_a_backward_jump_never_moves_time_back():
    f = Fake()
    c = steady(f)
    last = c.now()
    f.wall -= 120                              # two minutes back
    for _ in range(1000):
        f.tick(0.5)
        t = c.now()
        assert t >= last
        last = t
    # it runs at 99 % meanwhile: the gap closes at 1 % of elapsed time
    assert abs((last - f.wall) - (120 - 500 * 0.01)) < 1e-6


def test_the_jump_is_absorbed_and_the_warning_cleared(caplog):
    f = Fake()
    c = steady(f)
    c.now()
    f.wall += 5
    with caplog.at_level(logging.WARNING, logger="gfs.clock"):
        for _ in range(700):
            f.tick(1)
            c.now()
    assert abs(c.now() - f.wall) < 1e-6        # 5 s absorbed within 500 s at 1 %
    assert not c.jumped
    assert "within 1 s of the wall clock again" in caplog.text


def test_a_stalled_monotonic_reading_never_goes_back():
    f = Fake()
    c = steady(f)
    t = c.now()
    f.wall -= 10
    assert c.now() == t                         # no monotonic time passed: no movement


def test_test_offset_file(tmp_path, monkeypatch):
    path = tmp_path / "clock"
    off = TestClockOffset(str(path), recheck_s=0)
    assert off() == 0.0                         # no file: no offset
    write_test_offset(path, 600.5)
    assert off() == 600.5
    write_test_offset(path, -30)
    assert off() == -30
    path.write_text("garbage")
    assert off() == -30                         # unreadable: the last offset stays
    path.unlink()
    assert off() == 0.0
    monkeypatch.setenv("GFS_TEST_CLOCK_FILE", str(path))
    write_test_offset(path, 3600)
    import time
    assert abs(system_wall()() - time.time() - 3600) < 1


def test_off_unless_set(monkeypatch):
    import time
    monkeypatch.delenv("GFS_TEST_CLOCK_FILE", raising=False)
    assert system_wall() is time.time
