"""The bench's sense of time: instruments take the time real ones take, in scaled time.

A real instrument averages, settles, locks and arms in seconds; an emulator that answers in a
millisecond lets code pass that would time out on hardware. Each emulator asks the bench clock
for the instrument time an operation takes (``spend``) and reads elapsed instrument time
(``now_s``). ``time_scale`` is real seconds per instrument second: 1 for a rehearsal against
``qslab bench serve``, small in tests so that a 2 s lock costs 20 ms. Instrument time only ever
moves forward with real time, so a loaded machine makes the bench slower, never faster than its
instruments, and no outcome depends on how fast the host is.

A host's sleep overshoots: Linux wakes a thread 50-400 us after the time asked (timer slack, a busy core),
ten times a 10 us averaging at time_scale 0.01. A connection keeps what it overslept as credit that its next
waits use up first (at most OVERSLEPT_CREDIT_S), so that its instruments' time adds up to their scaled time
instead of to the host's wake-up latencies, and never to less.
"""

from __future__ import annotations

import threading
import time

OVERSLEPT_CREDIT_S = 1e-3  # real seconds of oversleeping a connection may carry: wake-up latencies, not a stall


class BenchClock:
    """Instrument seconds since the bench started, running ``1 / time_scale`` times real time."""

    def __init__(self, time_scale: float = 1.0, *, sleep=time.sleep, monotonic=time.monotonic):
        if not time_scale > 0.0:
            raise ValueError(f"time_scale: expected real seconds per instrument second > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._sleep, self._monotonic = sleep, monotonic
        self._start_real_s = monotonic()
        self._charged_lock = threading.Lock()
        self._charged_s = 0.0
        self._overslept = threading.local()  # per connection thread: real seconds slept beyond what was asked

    def charged_s(self) -> float:
        """Instrument seconds every operation so far took (``spend`` and ``charge``), whatever ran in parallel:
        what the commands sent asked of the instruments (calibration cost, docs/DECISIONS.md)."""
        with self._charged_lock:
            return self._charged_s

    def charge(self, instrument_s: float) -> None:
        """Count ``instrument_s`` that an operation took without blocking its connection (a bias-lock sweep that
        runs while the host polls)."""
        if instrument_s > 0.0:
            with self._charged_lock:
                self._charged_s += instrument_s

    def now_s(self) -> float:
        """Instrument seconds elapsed since the bench started."""
        return (self._monotonic() - self._start_real_s) / self.time_scale

    def spend(self, instrument_s: float) -> None:
        """Block the calling connection for ``instrument_s`` of instrument time (an averaging, a settling), less what
        it overslept before (module docstring): from its first wait on, a connection has been blocked at least as
        long as its instruments' scaled time."""
        if instrument_s > 0.0:
            self.charge(instrument_s)
            wanted_s = instrument_s * self.time_scale
            credit_s = getattr(self._overslept, "s", 0.0)
            if credit_s >= wanted_s:
                self._overslept.s = credit_s - wanted_s
                return
            start_s = self._monotonic()
            self._sleep(wanted_s - credit_s)
            overslept_s = (self._monotonic() - start_s) - (wanted_s - credit_s)
            self._overslept.s = min(max(overslept_s, 0.0), OVERSLEPT_CREDIT_S)

    def until(self, instrument_s: float) -> float:
        """The instrument time at which something taking ``instrument_s`` from now is done."""
        return self.now_s() + instrument_s
