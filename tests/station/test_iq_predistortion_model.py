"""The IQ modulator role's predistortion is the one transfer model (qslab.analysis.modulator_transfer).

The role writes the parent phasor and the null-biased leak in closed form (instruments/optical/modulators.py
says why); these tests hold that closed form to the model, so the two cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis import modulator_transfer as mt
from qslab.instruments.optical import AwgChannels, AwgIQModulator, Limit, ModulatorCalibration
from qslab.instruments.optical.awg_channels import codes_to_volts
from qslab.instruments.optical.modulators import LEAK_BLOCK_SYMBOLS

RNG = np.random.default_rng(12)
CALIBRATION = ModulatorCalibration(vpi_v=3.5, driver_gain=7.0, iq_gain_imbalance=0.04, iq_phase_error_rad=-0.03,
                                   extinction_ratio_db=22.0)


def _iq(calibration: ModulatorCalibration = CALIBRATION) -> AwgIQModulator:
    return AwgIQModulator(AwgChannels(None, (1, 2), amplitude_max=Limit(1.0, "Vpp", "test"), name="test"), calibration)


def _model_output(codes_i, codes_q, amplitude_vpp: float, calibration: ModulatorCalibration) -> np.ndarray:
    """Twice the model's IQ output for children biased exactly at null, driven by the codes."""
    vpi = calibration.vpi_at_awg_v
    theta_i, theta_q = (np.pi + np.pi * codes_to_volts(c, amplitude_vpp) / vpi for c in (codes_i, codes_q))
    return 2.0 * mt.iq_field(theta_i, theta_q, calibration.extinction_ratio_db, calibration.iq_gain_imbalance,
                             calibration.iq_phase_error_rad)


@pytest.mark.parametrize("calibration", [CALIBRATION, ModulatorCalibration(3.0, 6.0, extinction_ratio_db=35.0),
                                         ModulatorCalibration(3.0, 6.0, 0.1, 0.2, extinction_ratio_db=18.0)])
def test_played_fields_are_the_models_output(calibration):
    codes_i, codes_q = (RNG.integers(-127, 128, 300).astype(np.int8) for _ in range(2))
    played = _iq(calibration).played_fields(codes_i, codes_q, 0.8)
    np.testing.assert_allclose(played, _model_output(codes_i, codes_q, 0.8, calibration), rtol=0, atol=1e-14)


def test_the_leak_compensated_drives_give_the_fields_through_the_model():
    iq = _iq()
    shape = (3, LEAK_BLOCK_SYMBOLS // 2 + 7)  # more symbols than a block of the compensation, and not a multiple
    fields = 0.8 * (RNG.uniform(-1, 1, shape) + 1j * RNG.uniform(-1, 1, shape))
    i_child, q_child = iq.leak_compensated_children(fields)
    theta_i, theta_q = (np.pi + 2.0 * np.arcsin(child) for child in (i_child, q_child))
    output = 2.0 * mt.iq_field(theta_i, theta_q, CALIBRATION.extinction_ratio_db, CALIBRATION.iq_gain_imbalance,
                               CALIBRATION.iq_phase_error_rad)
    np.testing.assert_allclose(output, fields, rtol=0, atol=1e-4)  # four iterations: far below an int8 code step
    # without the compensation the leak (1/sqrt(ER) = 8 % of a child's field at zero drive) is plainly visible
    plain_i, plain_q = (np.pi + 2.0 * np.arcsin(child) for child in iq.child_fields(fields))
    plain = 2.0 * mt.iq_field(plain_i, plain_q, CALIBRATION.extinction_ratio_db, CALIBRATION.iq_gain_imbalance,
                              CALIBRATION.iq_phase_error_rad)
    assert np.max(np.abs(plain - fields)) > 0.01
