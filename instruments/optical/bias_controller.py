"""The BiasController role over one Thorlabs MBX bias loop (its ``mzm`` channel; the MBX has one loop).

Why an adapter: the MBX starts a lock when its mode is set (``MZM:MODE: null``) and reports the lock on
``MZM:SETPOINT?``; the sequences say ``lock("null")`` and ``wait_locked(timeout_s)`` instead, so a controller
with another command set is another adapter. A dither lock takes time and needs light on the loop's
photodiode, so ``lock`` only starts it and ``wait_locked`` polls until the loop reports its point.
"""

from __future__ import annotations

import time
from typing import Any

LOCK_POLL_S = 0.05         # the longest wait between two polls of the lock flag, s
LOCK_POLL_FRACTION = 0.2   # each poll waits this fraction of the time the lock has taken so far (at least LOCK_POLL_MIN_S)
LOCK_POLL_MIN_S = 0.001    # the first polls: a fast loop (a bench at a small time_scale) is seen within a ms or so
SWEEP_START_S = 1.0  # a loop neither sweeping (MZM:CALIBRATING? 0) nor locked this long after lock() has given up


def poll_interval_s(waited_s: float) -> float:
    """The wait before the next poll after ``waited_s`` seconds: proportional to it, between the two limits."""
    return min(LOCK_POLL_S, max(LOCK_POLL_MIN_S, LOCK_POLL_FRACTION * waited_s))


class BiasLockError(TimeoutError):
    """A bias loop that did not report its point in time (a TimeoutError: callers that wait may catch either)."""


class MbxBiasController:
    """``driver``: a ThorlabsMBX; the role drives its one modulator bias loop."""

    def __init__(self, driver: Any, *, name: str | None = None, clock=time.monotonic, sleep=time.sleep):
        self.driver, self.name = driver, name or driver.name
        self._clock, self._sleep = clock, sleep

    @classmethod
    def from_driver(cls, driver: Any, unit: int | None = None, **_: Any) -> MbxBiasController:
        return cls(driver)

    def lock(self, point: str) -> None:
        self.driver.mzm.bias_mode(point)

    def wait_locked(self, timeout_s: float) -> None:
        """Poll the loop's lock flag until it is set, each wait a LOCK_POLL_FRACTION of the time waited so far (from
        LOCK_POLL_MIN_S up to LOCK_POLL_S): the wait follows the loop's own acquisition time, so a lock reported
        in t seconds is seen within about 20 % of t whatever the loop's speed, without a constant tuned to one
        controller, and a slow loop is asked at most every LOCK_POLL_S. BiasLockError, naming the controller, its mode
        and the light its photodiode reads (a dark tap is the usual cause), after ``timeout_s``, or sooner when the
        loop has stopped sweeping without a lock (SWEEP_START_S after the wait began: the sweep found no curve)."""
        started = self._clock()
        mzm = self.driver.mzm
        while not mzm.is_locked():
            now = self._clock()
            gave_up = now - started >= SWEEP_START_S and not mzm.is_calibrating()
            if gave_up or now - started >= timeout_s:
                mode, tap_w = mzm.bias_mode(), mzm.tap_power_w()
                when = ": its sweep ended without one" if gave_up else f" within {timeout_s:g} s"
                why = ("still sweeping" if not gave_up and mzm.is_calibrating() else
                       f"its tap reads {tap_w:.3g} W: is the light on and the modulator before it passing light?")
                raise BiasLockError(f"{self.name}: the bias loop did not lock at {mode}{when} (MZM:SETPOINT? 0; {why})")
            self._sleep(poll_interval_s(now - started))

    def set_point_v(self, bias_v: float) -> None:
        """Sent in integer millivolts (the MBX quantises to 1 mV)."""
        self.driver.mzm.manual_bias_v(bias_v)

    def hold(self) -> None:
        self.driver.mzm.bias_mode("manual")

    def bias_v(self) -> float:
        return float(self.driver.mzm.bias_v())
