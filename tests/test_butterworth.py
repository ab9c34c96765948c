"""analysis/butterworth.py against scipy.signal (an independent implementation): the first order's closed-form
design, impulse response and recursion, and the higher orders passed through; and that neither the bench nor a
session imports scipy.signal for the lab config's first-order filter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import signal

from qslab.analysis import butterworth

RATIOS = (1e-3, 0.01, 0.125, 0.2, 0.25, 0.33, 0.49)  # cut-off / sample rate


@pytest.mark.parametrize("ratio", RATIOS)
def test_the_first_order_design_is_scipys(ratio):
    sample_rate_hz = 2e9
    ours = butterworth.lowpass_sos(1, ratio * sample_rate_hz, sample_rate_hz)
    theirs = signal.butter(1, ratio * sample_rate_hz, fs=sample_rate_hz, output="sos")
    assert ours.shape == theirs.shape == (1, 6)
    assert np.allclose(ours, theirs, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("order", [2, 3, 5])
def test_higher_orders_are_scipys_design(order):
    assert np.array_equal(butterworth.lowpass_sos(order, 3e8, 2e9), signal.butter(order, 3e8, fs=2e9, output="sos"))


@pytest.mark.parametrize("cutoff_hz", [0.0, 1e9, 1.5e9, -1.0])
def test_a_cutoff_outside_the_nyquist_band_is_refused(cutoff_hz):
    with pytest.raises(ValueError, match="cutoff_hz"):
        butterworth.lowpass_sos(1, cutoff_hz, 2e9)


@pytest.mark.parametrize(("order", "ratio"), [(1, 0.01), (1, 0.2), (1, 0.25), (2, 0.2), (4, 0.05)])
def test_the_impulse_response_is_sosfilts(order, ratio):
    sos = butterworth.lowpass_sos(order, ratio, 1.0)
    impulse = np.zeros(500)
    impulse[0] = 1.0
    assert np.allclose(butterworth.impulse_response(sos, 500), signal.sosfilt(sos, impulse), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize(("order", "ratio"), [(1, 0.003), (1, 0.125), (1, 0.2), (1, 0.33), (2, 0.2), (3, 0.1)])
def test_a_record_filtered_in_pieces_is_sosfilt_of_the_whole(order, ratio):
    """Pieces of any size (one sample, a piece shorter than the history, the rest) give the same bits as the record
    filtered at once, and sosfilt's values to float64 rounding, on two channels at once (leading axes)."""
    sos = butterworth.lowpass_sos(order, ratio, 1.0)
    record = np.random.default_rng(7).standard_normal((2, 20_000)) * 100.0
    pieces = np.split(record, [1, 5, 40, 9000], axis=-1)
    lowpass = butterworth.RecordFilter(sos)
    in_pieces = np.concatenate([lowpass(piece) for piece in pieces], axis=-1)
    at_once = butterworth.RecordFilter(sos)(record)
    assert np.array_equal(in_pieces, at_once)
    reference = signal.sosfilt(sos, record, axis=-1)
    assert np.max(np.abs(at_once - reference)) <= 1e-13 * np.max(np.abs(reference))


PROBE = """
import sys
import numpy as np
from qslab.instruments.sim.link import waveform as wf
config = wf.WaveformConfig(detector_bandwidth_hz=2e8, filter_order=1)
wf.digitized_record(np.ones(100), 800, config, np.random.default_rng(0))
wf.matched_filter_response(config)
from qslab.analysis.dsp import temporal_mode_efficiency
temporal_mode_efficiency(2e8, 1, config.sample_rate_hz, np.ones(8), 8)
print("scipy.signal" in sys.modules)
"""


def test_the_first_order_paths_do_not_import_scipy_signal():
    """Why it matters: importing scipy.signal costs about 1.4 s of CPU in each session and bench process."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
