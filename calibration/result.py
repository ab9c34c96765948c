"""What every calibration procedure returns: estimates with uncertainties, raw data, conditions.

Parameter keys are the dotted paths the same quantities have under the config's `[bench]` table
(`server_iq.vpi_v`, `client_receiver.efficiency`, `server.photons_per_symbol`, ...), so estimates
and the bench's hidden truths can be compared by name. The record store turns a result into an
immutable, versioned record. Estimate is qslab.analysis.estimate.Estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qslab.analysis.estimate import Estimate  # the one value-with-uncertainty type (re-exported here)


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
