"""What every calibration procedure returns: estimates with uncertainties, raw data, conditions.

Parameter keys are the dotted paths the same quantities have under the config's `[bench]` table
(`server_iq.vpi_v`, `client_receiver.efficiency`, `server.photons_per_symbol`, ...), so estimates
and the bench's hidden truths can be compared by name. The record store turns a result into an
immutable, versioned record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A fitted value, its one-sigma standard uncertainty, and its unit ('' if dimensionless)."""

    value: float
    uncertainty: float
    unit: str = ""

    def __post_init__(self):
        if not (np.isfinite(self.value) and np.isfinite(self.uncertainty) and self.uncertainty >= 0):
            raise ValueError(f"estimate {self.value!r} +- {self.uncertainty!r}: expected finite values and uncertainty >= 0")

    def upper(self, k: float = 3.0) -> float:
        """The conservative upper limit value + k sigma (photon numbers, excess noise)."""
        return self.value + k * self.uncertainty

    def lower(self, k: float = 3.0) -> float:
        """The conservative lower limit value - k sigma (transmittance, efficiency)."""
        return self.value - k * self.uncertainty


@dataclass(frozen=True)
class CalibrationResult:
    """One procedure's outcome, before it is stored.

    kind: which calibration ("modulators", "homodyne", "photons", "channel", "amplifier", "processor");
    instrument: the role or instrument it characterises; parameters: dotted key -> Estimate;
    raw: the measured arrays the fit used (stored with the record, so it can be refitted);
    conditions: settings during the measurement (laser power, LO power, attenuation, ...);
    figure_png: the PNG of data and fit, if drawn; round_trips: instrument queries it took.
    """

    kind: str
    instrument: str
    parameters: dict[str, Estimate]
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    conditions: dict = field(default_factory=dict)
    figure_png: str | None = None
    round_trips: int | None = None


class CalibrationError(RuntimeError):
    """A calibration that failed: says which one and why; no record is written."""

    def __init__(self, calibration: str, reason: str):
        super().__init__(f"calibration {calibration!r} failed: {reason}")
        self.calibration = calibration
        self.reason = reason
