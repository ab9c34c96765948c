"""The server laser role over one port of a Keysight N771xA (or any object with the same parameters).

Two kinds of declared limit bound the power: the laser's own (``power_max_dbm``) and, because
both homodyne LOs are fixed shares of this laser (DECISIONS I), each receiver's LO limit divided
by its LO fraction. Both are checked before a set and again, on the power read back from the
instrument, before the output is switched on (a leftover setting must not light the bench).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qslab.analysis.units import w_to_dbm
from qslab.instruments.optical.limits import Limit, LimitError, check_settable


@dataclass(frozen=True)
class LoLimit:
    """A receiver whose LO is ``lo_fraction`` of the laser power, with its declared LO power limit."""

    receiver: str
    lo_fraction: float
    lo_power_max: Limit  # unit "W"

    @property
    def laser_power_max_dbm(self) -> float:
        return float(w_to_dbm(self.lo_power_max.value / self.lo_fraction))


class LaserPort:
    """``port``: an N771xA port channel (``power_dbm``, ``wavelength_m``, ``output_enabled``)."""

    def __init__(self, port: Any, *, power_max: Limit, lo_limits: Sequence[LoLimit] = (), name: str = "laser"):
        self.port, self.name = port, name
        self.power_max, self.lo_limits = power_max, tuple(lo_limits)

    @classmethod
    def from_driver(cls, driver: Any, unit: int, **options: Any) -> LaserPort:
        """Port ``unit`` of an N771xA (sequences/config.py DriverSpec.adapter)."""
        return cls(getattr(driver, f"port{unit}"), **options)

    @staticmethod
    def safe_state(driver: Any) -> dict[str, Any]:
        """Every port's output off; what reads back."""
        for port in driver.ports:
            port.output_enabled(False)
        return LaserPort.read_safe_state(driver)

    @staticmethod
    def read_safe_state(driver: Any) -> dict[str, Any]:
        """Every port's output as it reads back (nothing is sent but queries)."""
        return {f"{port.short_name}.output_enabled": bool(port.output_enabled()) for port in driver.ports}

    @property
    def power_max_dbm(self) -> float:
        """The binding limit: the laser's own or the tightest LO limit."""
        return min([self.power_max.value] + [lo.laser_power_max_dbm for lo in self.lo_limits])

    def check_power_dbm(self, power_dbm: float) -> None:
        if not math.isfinite(power_dbm):
            raise LimitError(self.name, f"power {power_dbm!r} dBm is not a finite number")
        self.power_max.check_at_most(self.name, "power", power_dbm)
        for lo in self.lo_limits:
            if power_dbm > lo.laser_power_max_dbm:
                lo_w = lo.lo_fraction * 1e-3 * 10 ** (power_dbm / 10)
                raise LimitError(self.name, f"power {power_dbm:g} dBm would put {lo_w:.3g} W of LO on {lo.receiver} "
                                            f"(LO fraction {lo.lo_fraction:g}), above its declared limit "
                                            f"{lo.lo_power_max.describe()}")
        check_settable(self.name, getattr(self.port, "power_dbm", None), "power", power_dbm, "dBm")

    def set_power_dbm(self, power_dbm: float) -> None:
        self.check_power_dbm(power_dbm)
        self.port.power_dbm(power_dbm)

    def power_dbm(self) -> float:
        return float(self.port.power_dbm())

    def set_wavelength_m(self, wavelength_m: float) -> None:
        self.port.wavelength_m(wavelength_m)

    def on(self) -> None:
        """Switch the output on after checking the power the instrument is actually set to."""
        self.check_power_dbm(self.power_dbm())
        self.port.output_enabled(True)

    def off(self) -> None:
        self.port.output_enabled(False)

    def is_on(self) -> bool:
        return bool(self.port.output_enabled())
