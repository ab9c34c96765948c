"""Electro-optic modulator transfer functions (docs/PHYSICS.md 15): pure math, one copy.

The calibration fits (calibration/modulator_fits.py) and the virtual bench's truth use these functions.

An MZM with arm phase difference theta transmits the field
    t(theta) = -(exp(i theta/2) + gamma exp(-i theta/2)) / (1 + gamma),   ER = ((1 + gamma)/(1 - gamma))^2,
so |t|^2 = (1 + gamma^2 + 2 gamma cos theta)/(1 + gamma)^2: 1 at the peak (theta = 0), 1/ER at the null
(theta = pi), and at the null t(pi + x) = sin(x/2) - i cos(x/2)/sqrt(ER): the familiar sin(pi u/(2 Vpi))
field of a child biased at null, plus a constant carrier leakage in quadrature. The global sign makes
that field +sin, so a positive drive gives a positive field.

A nested IQ modulator combines its children as (1 + g/2) t_I + exp(i(pi/2 + delta)) (1 - g/2) t_Q
(gain imbalance g, parent phase error delta), and its output is half of that.
"""

from __future__ import annotations

import math

import numpy as np


def extinction_gamma(extinction_ratio_db: float) -> float:
    """Arm imbalance gamma in (0, 1] from the power extinction ratio ER = ((1 + gamma)/(1 - gamma))^2."""
    root = math.sqrt(10.0 ** (extinction_ratio_db / 10.0))
    return (root - 1.0) / (root + 1.0)


def mzm_field(theta_rad, extinction_ratio_db: float):
    """Complex field transmission t(theta) of a push-pull MZM (lossless; multiply by the insertion loss)."""
    gamma = extinction_gamma(extinction_ratio_db)
    half = 0.5 * np.asarray(theta_rad, dtype=float)
    return -(np.exp(1j * half) + gamma * np.exp(-1j * half)) / (1.0 + gamma)


def mzm_power(theta_rad, extinction_ratio_db: float):
    """|t(theta)|^2 = (1 + gamma^2 + 2 gamma cos theta)/(1 + gamma)^2 (1 at the peak, 1/ER at the null)."""
    gamma = extinction_gamma(extinction_ratio_db)
    return (1.0 + gamma**2 + 2.0 * gamma * np.cos(theta_rad)) / (1.0 + gamma) ** 2


def mzm_power_w(volts, power_scale_w: float, vpi_v: float, phase_rad: float, extinction_ratio_db: float):
    """The same |t|^2 against a port's volts: P(V) = (P0/2)[1 + M cos(pi V/V_pi + phi)], M = (ER - 1)/(ER + 1)
    (P0 = twice the mean power; M = 2 gamma/(1 + gamma^2))."""
    er = 10.0 ** (extinction_ratio_db / 10.0)
    depth = (er - 1.0) / (er + 1.0)
    return 0.5 * power_scale_w * (1.0 + depth * np.cos(np.pi * np.asarray(volts) / vpi_v + phase_rad))


def iq_children_field(t_i, t_q, gain_imbalance: float = 0.0, phase_error_rad: float = 0.0):
    """The children's fields combined by the parent: (1 + g/2) t_I + exp(i(pi/2 + delta)) (1 - g/2) t_Q."""
    parent = np.exp(1j * (0.5 * np.pi + phase_error_rad))
    return (1.0 + 0.5 * gain_imbalance) * t_i + parent * (1.0 - 0.5 * gain_imbalance) * t_q


def iq_field(theta_i_rad, theta_q_rad, extinction_ratio_db: float, gain_imbalance: float = 0.0,
             phase_error_rad: float = 0.0):
    """Output field of a nested IQ modulator: half the children's combination (docs/PHYSICS.md 15)."""
    t_i = mzm_field(theta_i_rad, extinction_ratio_db)
    t_q = mzm_field(theta_q_rad, extinction_ratio_db)
    return 0.5 * iq_children_field(t_i, t_q, gain_imbalance, phase_error_rad)
