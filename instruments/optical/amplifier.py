"""The client's optical amplifier role over the generic SCPI amplifier driver.

The declared gain limit (and, if declared, the output-power limit) is checked before a set, and
on the values read back before the output is switched on. Constant-current mode is refused: no
declared limit bounds the gain it gives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qslab.analysis.units import linear_to_db
from qslab.instruments.optical.limits import Limit, LimitError, check_settable


class ScpiAmplifier:
    """``amplifier``: a ScpiOpticalAmplifier (``mode``, ``gain_db``, ``output_power_setpoint_dbm``, ``output_enabled``)."""

    def __init__(self, amplifier: Any, *, gain_max: Limit, output_power_max: Limit | None = None,
                 name: str = "amplifier"):
        self.amplifier, self.name = amplifier, name
        self.gain_max, self.output_power_max = gain_max, output_power_max

    @classmethod
    def from_driver(cls, driver: Any, unit: int | None = None, **options: Any) -> ScpiAmplifier:
        return cls(driver, **options)

    @staticmethod
    def driver_options(limits: Mapping[str, float], visa_library: str) -> dict[str, Any]:
        """The driver's validators from the declared limits (from the fixed lower ends up to them)."""
        options: dict[str, Any] = {"gain_limits_db": (0.0, limits["gain_max_db"])}
        if "output_power_max_dbm" in limits:
            options["output_power_limits_dbm"] = (-10.0, limits["output_power_max_dbm"])
        return options

    @staticmethod
    def safe_state(driver: Any) -> dict[str, Any]:
        """Output off; what reads back."""
        driver.safe_state()
        return ScpiAmplifier.read_safe_state(driver)

    @staticmethod
    def read_safe_state(driver: Any) -> dict[str, Any]:
        """The output as it reads back (nothing is sent but queries)."""
        return {"output_enabled": bool(driver.output_enabled())}

    def check_gain_db(self, gain_db: float) -> None:
        if not math.isfinite(gain_db):
            raise LimitError(self.name, f"gain {gain_db!r} dB is not a finite number")
        self.gain_max.check_at_most(self.name, "gain", gain_db)
        check_settable(self.name, getattr(self.amplifier, "gain_db", None), "gain", gain_db, "dB")

    def check_output_power_dbm(self, power_dbm: float) -> None:
        if self.output_power_max is None:
            raise LimitError(self.name, "no output-power limit is declared, so power mode is refused")
        self.output_power_max.check_at_most(self.name, "output power set-point", power_dbm)

    def set_gain_db(self, gain_db: float) -> None:
        """Constant-gain mode at ``gain_db``."""
        self.check_gain_db(gain_db)
        self.amplifier.mode("gain")
        self.amplifier.gain_db(gain_db)

    def set_gain(self, gain: float) -> None:
        """Linear power gain G (>= 1)."""
        if not gain >= 1.0:
            raise ValueError(f"{self.name}: gain must be >= 1 (a phase-insensitive amplifier), got {gain!r}")
        self.set_gain_db(float(linear_to_db(gain)))

    def set_output_power_dbm(self, power_dbm: float) -> None:
        """Constant-output-power mode at ``power_dbm``."""
        self.check_output_power_dbm(power_dbm)
        self.amplifier.mode("power")
        self.amplifier.output_power_setpoint_dbm(power_dbm)

    def gain_db(self) -> float:
        return float(self.amplifier.gain_db())

    def on(self) -> None:
        mode = self.amplifier.mode()
        if mode == "gain":
            self.check_gain_db(self.gain_db())
        elif mode == "power":
            self.check_output_power_dbm(float(self.amplifier.output_power_setpoint_dbm()))
        else:
            raise LimitError(self.name, f"mode {mode!r} is not bounded by a declared limit (use gain or power mode)")
        self.amplifier.output_enabled(True)

    def off(self) -> None:
        self.amplifier.output_enabled(False)
