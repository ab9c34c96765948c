"""The homodyne receivers' common-mode rejection, measured by the homodyne calibration on a bench whose
imbalance differs from the defaults: the DC level of each record against P_LO (the laser sweep's steps as
the LO intensity tone) gives CMRR = 20 log10(G_det / (2 |slope|)); each estimate within 3 of its stated
uncertainties of the truth, the uncertainty useful; a negligible imbalance gives an honest lower limit;
and the quadratic term k2 of the shot-noise fit agrees with what the CMRR and the laser's RIN predict."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from cal_bench_helpers import bench_config
from qcodes.instrument import Instrument

from qslab.calibration.homodyne import HomodyneSettings, calibrate_homodyne
from qslab.instruments.optical.homodyne_receiver import ReceiverDigitizer
from qslab.sequences.station import RECEIVERS, LabStation

Z = 3.0
POINTS = 2**20
TRUTH = {"bench.client_receiver.common_mode_rejection_db": 22.0, "bench.server_receiver.common_mode_rejection_db": 35.0,
         "bench.client_receiver.imbalance_sign": -1, "bench.server_receiver.imbalance_sign": 1,
         "bench.client_receiver.output_offset_v": -3e-3, "bench.server_receiver.output_offset_v": 0.5e-3,
         "bench.client_receiver.efficiency": 0.72}


@pytest.fixture(autouse=True)
def _close_all_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


def _calibrate(tmp_path, truth: dict, **changes):
    with LabStation(bench_config(**truth)) as station:
        receivers = [station.receiver(name) for name in RECEIVERS]
        digitizer = ReceiverDigitizer(station.digitizer("digitizer"), receivers)
        settings = HomodyneSettings(station.config.protocol.symbol_rate_hz, points=POINTS, **changes)
        results = calibrate_homodyne(station.laser(), station.attenuator(), station.amplifier(), digitizer,
                                     receivers, settings, str(tmp_path))
        offsets = [rx.offset_v() for rx in receivers]
        return station.bench.params, {r.instrument: r for r in results}, offsets


def test_cmrr_of_both_receivers_within_3_sigma_and_useful(tmp_path, figures_drawn):
    params, results, offsets = _calibrate(tmp_path, TRUTH)
    assert offsets == [0.0, 0.0]  # the channels are centred at 0 V again for whatever runs next
    for name in RECEIVERS:
        truth, result = params.get(name), results[name]
        cmrr = result.parameters[f"{name}.common_mode_rejection_db"]
        assert abs(cmrr.value - truth.common_mode_rejection_db) < Z * cmrr.uncertainty, (name, cmrr)
        assert cmrr.uncertainty < 0.5 and cmrr.unit == "dB"
        assert result.conditions["cmrr_is_lower_limit"] is False
        assert result.conditions["stronger_photodiode"] == ("+" if truth.imbalance_sign > 0 else "-")
        offset = result.parameters[f"{name}.dc_offset_v"]  # the intercept: the electronics' own offset
        assert abs(offset.value - truth.output_offset_v) < Z * offset.uncertainty + 1e-5, (name, offset)
        # the fit's points are the records' means; the channel followed them (22 dB: 0.25 V at the top LO)
        assert result.raw["mean_v"].size == 5 and abs(result.raw["channel_offset_v"][-1]) > (
            0.1 if name == "client_receiver" else 0.01)
        assert (tmp_path / f"homodyne-{name}.png").is_file()
    # the rest of the calibration is unchanged by the DC levels: the efficiency still within 3 sigma
    eta = results["client_receiver"].parameters["client_receiver.efficiency"]
    assert abs(eta.value - 0.72) < Z * eta.uncertainty


def test_a_negligible_imbalance_gives_a_lower_limit(tmp_path):
    params, results, _ = _calibrate(tmp_path, {"bench.client_receiver.common_mode_rejection_db": 150.0})
    result = results["client_receiver"]
    cmrr = result.parameters["client_receiver.common_mode_rejection_db"]
    assert result.conditions["cmrr_is_lower_limit"] is True and "lower limit" in result.conditions["cmrr"]
    assert 90.0 < cmrr.value < 150.0  # a true statement about the detector, at what the records can resolve
    assert results["server_receiver"].conditions["cmrr_is_lower_limit"] is False


def test_the_quadratic_term_is_the_lasers_rin_through_the_imbalance(tmp_path):
    """k2 = (k / s) (G eps / 2)^2 RIN f_s / 2, eps = 10^(-CMRR/20) from the DC fit: an independent route to k2."""
    rin_db = -140.0
    truth = {**TRUTH, "bench.server_laser.relative_intensity_noise_db_per_hz": rin_db}
    _, results, _ = _calibrate(tmp_path, truth, laser_rin_db_per_hz=rin_db)
    result = results["client_receiver"]  # 22 dB: RIN noise ~7 % of the shot noise at the top of the sweep
    k2 = result.parameters["client_receiver.shot_noise_quadratic_v2_per_w2"]
    cmrr = result.parameters["client_receiver.common_mode_rejection_db"]
    predicted = result.conditions["quadratic_term_predicted_v2_per_w2"]
    assert k2.value > 4 * k2.uncertainty and result.conditions["quadratic_term_significant"] in (True, False)
    predicted_u = predicted * math.log(10.0) / 10.0 * cmrr.uncertainty
    assert abs(k2.value - predicted) < Z * math.hypot(k2.uncertainty, predicted_u), (k2, predicted)
    # and with the shipped RIN (-165 dB/Hz) the prediction is far below what the sweep resolves
    shipped = result.conditions["quadratic_term_per_rin_v2_per_w2_hz"] * 10 ** (-165 / 10)
    assert shipped < 0.5 * k2.uncertainty
