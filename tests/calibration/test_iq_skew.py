"""IQ skew: the bench's late Q drive, the role's model of it, and the pilots' estimate and compensation."""

from __future__ import annotations

import numpy as np
import pytest
from cal_bench_helpers import bench_config
from qcodes.instrument import Instrument

import qslab.sequences.protocol.setup as link_setup
from qslab.sequences.protocol import SecureLink
from qslab.sequences.station_calibration import load_station_calibration
from qslab.calibration.records import RecordStore
from qslab.calibration.result import Estimate
from qslab.instruments.optical.modulators import deskewed, skewed
from qslab.instruments.sim.bench import Drive
from qslab.sequences.session import ensure_calibrations
from qslab.sequences.station import LabStation

SKEW_S = -60e-12  # Q early, five times the default's size and of the other sign


def test_the_role_model_is_the_bench_drive_averaged_over_each_symbol():
    """Independent route: the bench's sample-level delayed drive, averaged per symbol, against skewed()."""
    sps, rng = 16, np.random.default_rng(3)
    levels = rng.integers(-127, 128, 500).astype(np.int8)
    for delay_samples in (0.3, 2.7, -1.4):
        drive = Drive(np.repeat(levels, sps), scale_v=1.0, offset_v=0.0, delay_samples=delay_samples)
        per_symbol = drive.volts().reshape(-1, sps).mean(axis=1)
        assert np.allclose(per_symbol, skewed(levels.astype(float), delay_samples / sps), atol=1e-9)


@pytest.mark.parametrize("delay", [0.012, -0.3, 0.49, 0.4999, 0.0])
@pytest.mark.parametrize("symbols", [1, 2, 3, 777, 4096])
def test_deskewed_inverts_skewed_round_the_period(delay, symbols):
    field = np.random.default_rng(symbols).uniform(-1, 1, symbols)
    assert np.allclose(skewed(deskewed(field, delay), delay), field, atol=1e-12)
    # a second route: skewed multiplies the harmonic at w by (1 - s) + s e^(-+iw); divide by it
    s = abs(delay)
    turn = np.exp((-2j if delay > 0 else 2j) * np.pi * np.fft.fftfreq(symbols))
    fourier = np.fft.ifft(np.fft.fft(field) / ((1.0 - s) + s * turn)).real
    np.testing.assert_allclose(deskewed(field, delay), fourier, rtol=0, atol=1e-9 if s > 0.49 else 1e-12)


def test_deskewed_keeps_the_shape_and_refuses_half_a_symbol():
    field = np.random.default_rng(1).uniform(-1, 1, (7, 11))
    assert deskewed(field, 0.2).shape == (7, 11)
    np.testing.assert_allclose(deskewed(field, 0.2), deskewed(field.ravel(), 0.2).reshape(7, 11), rtol=0, atol=0)
    with pytest.raises(ValueError, match="within"):
        deskewed(field, 0.5)


def _played_error(station, link) -> float:
    """rms |true symbol - reference| / rms |reference| over the pilot segment, the true symbols from the bench
    (the modulator's field averaged over each slot) scaled onto the reference by least squares."""
    link.awg.run()
    truth = station.bench.state.modulation().symbol_fields
    reference = link.layers[0].reference.ravel()
    scale = np.vdot(truth, reference) / np.vdot(truth, truth)
    return float(np.linalg.norm(scale * truth - reference) / np.linalg.norm(reference))


@pytest.fixture(scope="module")
def links(tmp_path_factory):
    """The skew the pilots measured, and how far the played symbols are from the server's reference with the
    compensation (the stack) and without it."""
    directory = tmp_path_factory.mktemp("records")
    store = RecordStore(directory)
    station = LabStation(bench_config(**{"bench.server_iq.iq_skew_s": SKEW_S}))
    with station:
        ensure_calibrations(station, store, directory)
        calibration = load_station_calibration(store, 7.0, channel=False)

        def pilots() -> SecureLink:
            link = SecureLink(station, calibration, gain=1.3, laser_power_dbm=10.0, verify_fraction=0.01)
            link.prepare_pilots(6.0, 392)
            return link

        link = pilots()
        skew, errors = link.iq_skew_s(), {"on": _played_error(station, link)}
        with pytest.MonkeyPatch.context() as patch:  # the server neither measures nor compensates it
            patch.setattr(link_setup, "iq_skew", lambda *a: Estimate(0.0, 0.0))
            errors["off"] = _played_error(station, pilots())
    Instrument.close_all()
    return skew, errors


def test_the_pilots_measure_the_skew_within_3_sigma_to_a_few_picoseconds(links):
    skew, _ = links
    assert abs(skew.value - SKEW_S) <= 3 * skew.uncertainty, skew
    assert skew.uncertainty < 4e-12


def test_the_compensation_makes_the_played_symbols_what_the_server_verifies_against(links):
    """Bench truth: uncompensated, a 60 ps skew puts the symbols ~5 % off the reference; compensated, only the
    drives' 8-bit steps and the bias residual remain."""
    _, errors = links
    assert errors["off"] > 0.03, errors
    assert errors["on"] < errors["off"] / 3, errors
