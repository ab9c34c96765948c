"""The one MZM/IQ field-transfer model (qslab.analysis.modulator_transfer) against closed forms derived
independently of it (docs/PHYSICS.md 15), and the calibration fit's IQ model built on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qslab.analysis import modulator_transfer as mt
from qslab.calibration import modulator_fits as fits


@pytest.mark.parametrize("er_db", [15.0, 25.0, 40.0])
def test_peak_null_and_the_null_biased_field(er_db):
    er = 10 ** (er_db / 10)
    assert abs(mt.mzm_field(0.0, er_db)) ** 2 == pytest.approx(1.0)
    assert abs(mt.mzm_field(math.pi, er_db)) ** 2 == pytest.approx(1.0 / er)
    x = np.linspace(-2.0, 2.0, 9)
    expected = np.sin(x / 2) - 1j * np.cos(x / 2) / math.sqrt(er)   # t(pi + x)
    assert np.allclose(mt.mzm_field(math.pi + x, er_db), expected, atol=1e-12)
    assert np.allclose(mt.mzm_power(math.pi + x, er_db), np.abs(expected) ** 2)


def test_power_against_volts_is_the_same_transfer():
    volts = np.linspace(-6, 6, 25)
    theta = math.pi * volts / 3.0 + 0.4
    assert np.allclose(mt.mzm_power_w(volts, 2e-3, 3.0, 0.4, 25.0), 2e-3 * 0.5 * (1 + (10**2.5 - 1) / (10**2.5 + 1)
                                                                                   * np.cos(theta)))
    # with P0 the mean's twice: |t|^2 of the field model, scaled to 1 at the peak, is the same curve
    scale = mt.mzm_power_w(-0.4 * 3.0 / math.pi, 1.0, 3.0, 0.4, 25.0)  # at the peak (theta = 0)
    assert np.allclose(mt.mzm_power_w(volts, 1.0, 3.0, 0.4, 25.0) / scale, mt.mzm_power(theta, 25.0))


def test_iq_output_and_the_calibration_model():
    # an ideal IQ at null with drives giving child fields a, b: output (a + i b)/2
    a, b = 0.3, -0.6
    theta_i, theta_q = math.pi + 2 * math.asin(a), math.pi + 2 * math.asin(b)
    assert mt.iq_field(theta_i, theta_q, 200.0) == pytest.approx(0.5 * (a + 1j * b), abs=1e-9)
    drives = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    power = fits.iq_power(drives, 1.0, 0.04, 0.02, 0.0, vpi_v=3.0, extinction_ratio_db=25.0)
    t = mt.mzm_field(np.pi + np.pi * drives / 3.0, 25.0)
    assert np.allclose(power, np.abs(4 * mt.iq_field(np.pi + np.pi * drives[:, 0] / 3.0,
                                                      np.pi + np.pi * drives[:, 1] / 3.0, 25.0, 0.04, 0.02)) ** 2 / 4)
    assert np.allclose(power, np.abs(1.02 * t[:, 0] + 1j * np.exp(0.02j) * 0.98 * t[:, 1]) ** 2)
