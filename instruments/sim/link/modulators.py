"""The bench's side of its modulators: drive and bias volts to arm phase, and where a bias loop settles.

The field transfer itself (MZM and nested IQ, docs/PHYSICS.md 15) is qslab.analysis.modulator_transfer,
the one copy the calibration fits use too. Why one model and not an independent bench truth: both
would be the same closed form typed twice, so a second copy checks nothing but the typing, and two
copies drift apart. The independence that matters is kept by tests: the model against closed forms
derived on their own (tests/test_modulator_transfer.py), and the fits recovering known bench truths
from data the bench generated (tests/calibration/). What stays here is what only the bench needs.
"""

from __future__ import annotations

import numpy as np

from qslab.analysis.modulator_transfer import extinction_gamma


def arm_phase_rad(drive_v, bias_v: float, vpi_v: float, bias_vpi_v: float, bias_phase_rad: float):
    """theta = pi u/Vpi (RF port) + pi V_b/Vpi_bias (DC port) + the bias phase at 0 V."""
    return np.pi * np.asarray(drive_v) / vpi_v + np.pi * bias_v / bias_vpi_v + bias_phase_rad


def bias_for_phase_v(target_theta_rad: float, bias_vpi_v: float, bias_phase_rad: float,
                     limit_v: float = 10.0) -> float:
    """The bias voltage closest to 0 V that puts theta (without RF drive) at the target, mod 2 pi.

    What an automatic bias controller converges to; clipped to its output range.
    """
    offset_rad = (target_theta_rad - bias_phase_rad + np.pi) % (2.0 * np.pi) - np.pi  # in [-pi, pi)
    volts = offset_rad * bias_vpi_v / np.pi
    return float(np.clip(volts, -limit_v, limit_v))


def theta_for_power_fraction(fraction: float, extinction_ratio_db: float, positive_slope: bool) -> float:
    """theta where |t|^2 (analysis.modulator_transfer.mzm_power) equals ``fraction`` of the peak, on the
    rising (dP/dV > 0) or falling slope.

    Clipped to the reachable range [1/ER, 1]. Rising slope: theta in [-pi, 0] (quadrature+ is -pi/2).
    """
    gamma = extinction_gamma(extinction_ratio_db)
    cosine = ((1.0 + gamma) ** 2 * fraction - 1.0 - gamma**2) / (2.0 * gamma)
    theta = float(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return -theta if positive_slope else theta
