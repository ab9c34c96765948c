"""A measured value with its one-sigma standard uncertainty and unit: the one model of a calibrated number.

It lives in `analysis` so that the calibration procedures (which produce it), the session (which
records it) and the analysis and replay (which read it back) share one type; `calibration` and
`sequences` import it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def upper(self, k: float) -> float:
        """The conservative upper limit value + k sigma (photon numbers, excess noise); k: the coverage factor."""
        return self.value + k * self.uncertainty

    def lower(self, k: float) -> float:
        """The conservative lower limit value - k sigma (transmittance, efficiency); k: the coverage factor."""
        return self.value - k * self.uncertainty
