import random
from datetime import datetime, timedelta, timezone

from swarmlet.ca import renewal_delay

ISSUED = datetime(2030, 1, 1, tzinfo=timezone.utc)
VALIDITY = timedelta(days=90)
EXPIRES = ISSUED + VALIDITY


class FixedDraw:
    """An rng whose uniform(a, b) returns a or b, to pin the window's edges."""

    def __init__(self, pick_upper: bool):
        self.pick_upper = pick_upper

    def uniform(self, lower, upper):
        return upper if self.pick_upper else lower


def test_window_edges_are_50_and_80_percent():
    assert renewal_delay(ISSUED, EXPIRES, ISSUED, FixedDraw(False)) == (VALIDITY * 0.5).total_seconds()
    assert renewal_delay(ISSUED, EXPIRES, ISSUED, FixedDraw(True)) == (VALIDITY * 0.8).total_seconds()


def test_random_delays_fall_inside_the_window_and_spread():
    rng = random.Random(7)
    delays = [renewal_delay(ISSUED, EXPIRES, ISSUED, rng) for _ in range(200)]
    assert all(VALIDITY.total_seconds() * 0.5 <= delay <= VALIDITY.total_seconds() * 0.8 for delay in delays)
    assert len(set(delays)) > 100


def test_delay_counts_from_now():
    now = ISSUED + timedelta(days=10)
    assert renewal_delay(ISSUED, EXPIRES, now, FixedDraw(False)) == timedelta(days=35).total_seconds()


def test_delay_is_zero_once_the_moment_has_passed():
    assert renewal_delay(ISSUED, EXPIRES, ISSUED + timedelta(days=80), FixedDraw(True)) == 0.0
    assert renewal_delay(ISSUED, EXPIRES, EXPIRES + timedelta(days=1), FixedDraw(False)) == 0.0
