"""The bench's sense of time: instruments take the time real ones take, in scaled time.

A real instrument averages, settles, locks and arms in seconds; an emulator that answers in a
millisecond lets code pass that would time out on hardware. Each emulator asks the bench clock
for the instrument time an operation takes (``spend``) and reads elapsed instrument time
(``now_s``). ``time_scale`` is real seconds per instrument second: 1 for a rehearsal against
``qslab bench serve``, small in tests so that a 2 s lock costs 20 ms. Instrument time only ever
moves forward with real time, so a loaded machine makes the bench slower, never faster than its
instruments, and no outcome depends on how fast the host is.
"""

from __future__ import annotations

import threading
import time


class BenchClock:
    """Instrument seconds since the bench started, running ``1 / time_scale`` times real time."""

    def __init__(self, time_scale: float = 1.0):
        if not time_scale > 0.0:
            raise ValueError(f"time_scale: expected real seconds per instrument second > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._start_real_s = time.monotonic()
        self._charged_lock = threading.Lock()
        self._charged_s = 0.0

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
        return (time.monotonic() - self._start_real_s) / self.time_scale

    def spend(self, instrument_s: float) -> None:
        """Block the calling connection for ``instrument_s`` of instrument time (an averaging, a settling)."""
        if instrument_s > 0.0:
            self.charge(instrument_s)
            time.sleep(instrument_s * self.time_scale)

    def until(self, instrument_s: float) -> float:
        """The instrument time at which something taking ``instrument_s`` from now is done."""
        return self.now_s() + instrument_s
