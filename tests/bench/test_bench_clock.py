"""The bench clock's waits: what a connection overslept is repaid by its next waits, never below the scaled time.

A fake host clock stands in for the OS: each sleep wakes a fixed latency late, as Linux's timer slack and a busy core
make it (50-400 us, against the 10 us a meter's 1 ms averaging takes at time_scale 0.01)."""

from __future__ import annotations

import threading

import pytest

from qslab.instruments.sim.clock import OVERSLEPT_CREDIT_S, BenchClock


class LateHost:
    """monotonic() and sleep(s): a sleep takes s plus ``late_s``."""

    def __init__(self, late_s: float):
        self.late_s, self.now_s, self.sleeps = late_s, 0.0, []

    def monotonic(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds + self.late_s


def test_waits_add_up_to_the_scaled_time_not_to_the_wake_up_latencies():
    host = LateHost(late_s=100e-6)
    clock = BenchClock(0.01, sleep=host.sleep, monotonic=host.monotonic)
    for _ in range(1000):
        clock.spend(1e-3)  # a meter's 1 ms averaging: 10 us of real time each
    assert clock.charged_s() == pytest.approx(1.0)
    assert host.now_s >= 1000 * 10e-6  # never faster than the instruments
    assert host.now_s == pytest.approx(1000 * 10e-6, abs=100e-6 + 10e-6)  # late by one wake-up at most
    assert 1000 / 12 <= len(host.sleeps) <= 1000 / 10  # about one in eleven: its lateness pays for the next ten


def test_a_host_that_wakes_on_time_sleeps_each_wait_in_full():
    host = LateHost(late_s=0.0)
    clock = BenchClock(0.5, sleep=host.sleep, monotonic=host.monotonic)
    for instrument_s in (0.2, 1.0, 0.004):
        clock.spend(instrument_s)
    assert host.sleeps == pytest.approx([0.1, 0.5, 0.002])


def test_a_stall_is_not_repaid_beyond_the_credit():
    """A host that stalls for a second does not make the instruments' next second free: at most
    OVERSLEPT_CREDIT_S of it is repaid."""
    host = LateHost(late_s=1.0)
    clock = BenchClock(1.0, sleep=host.sleep, monotonic=host.monotonic)
    clock.spend(0.01)
    host.late_s = 0.0
    clock.spend(0.5)
    assert host.sleeps == pytest.approx([0.01, 0.5 - OVERSLEPT_CREDIT_S])


def test_each_connection_repays_only_its_own_oversleeping():
    host = LateHost(late_s=100e-6)
    lock = threading.Lock()

    def sleep(seconds):
        with lock:
            host.sleep(seconds)

    clock = BenchClock(0.01, sleep=sleep, monotonic=host.monotonic)
    clock.spend(1e-3)  # this thread is now owed 100 us
    other = threading.Thread(target=clock.spend, args=(1e-3,))
    other.start()
    other.join()
    assert host.sleeps == pytest.approx([10e-6, 10e-6])  # the other connection owed nothing: it slept in full
    clock.spend(1e-3)
    assert len(host.sleeps) == 2  # this one's credit paid for its next wait
