"""The client's optical amplifier role over the generic SCPI amplifier driver.

The declared gain limit (and, if declared, the output-power limit) is checked before a set, and
on the values read back before the output is switched on. Constant-current mode is refused: no
declared limit bounds the gain it gives.
"""

from __future__ import annotations

import math
from typing import Any

from qslab.analysis.units import linear_to_db
from qslab.instruments.optical.limits import Limit, LimitError, check_settable


class ScpiAmplifier:
    """``amplifier``: a ScpiOpticalAmplifier (``mode``, ``gain_db``, ``output_power_setpoint_dbm``, ``output_enabled``)."""

    def __init__(self, amplifier: Any, *, gain_max: Limit, output_power_max: Limit | None = None,
                 name: str = "amplifier"):
        self.amplifier, self.name = amplifier, name
        self.gain_max, self.output_power_max = gain_max, output_power_max

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
