"""The BiasController role over one Thorlabs MBX bias loop (its ``mzm`` channel; the MBX has one loop).

Why an adapter: the MBX starts a lock when its mode is set (``MZM:MODE: null``) and reports the lock on
``MZM:SETPOINT?``; the sequences say ``lock("null")`` and ``wait_locked(timeout_s)`` instead, so a controller
with another command set, or a three-loop IQ controller (issue 15), is another adapter.
"""

from __future__ import annotations

import time
from typing import Any

LOCK_POLL_S = 0.05


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
        """Poll the loop's lock flag every LOCK_POLL_S until it is set; TimeoutError after ``timeout_s``."""
        deadline = self._clock() + timeout_s
        while not self.driver.mzm.is_locked():
            if self._clock() >= deadline:
                mode = self.driver.mzm.bias_mode()
                raise TimeoutError(f"{self.name}: the bias loop did not lock within {timeout_s:g} s (mode {mode!r})")
            self._sleep(LOCK_POLL_S)

    def set_point_v(self, bias_v: float) -> None:
        """Sent in integer millivolts (the MBX quantises to 1 mV)."""
        self.driver.mzm.manual_bias_v(bias_v)

    def hold(self) -> None:
        self.driver.mzm.bias_mode("manual")

    def bias_v(self) -> float:
        return float(self.driver.mzm.bias_v())
