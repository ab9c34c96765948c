"""analysis/butterworth.py against scipy.signal (an independent implementation): the first order's closed-form
design and impulse response, and the higher orders passed through; and that the bench's renderer and the DSP's
model of the detector do not import scipy.signal for the lab config's first-order filter."""

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


PROBE = """
import sys
import numpy as np
from qslab.instruments.sim.link import waveform as wf
config = wf.WaveformConfig(detector_bandwidth_hz=2e8, filter_order=1)
wf.digitized_words(np.ones(100), 800, config, np.random.default_rng(0))
wf.matched_filter_response(config)
from qslab.analysis.dsp import temporal_mode_efficiency
temporal_mode_efficiency(2e8, 1, config.sample_rate_hz, np.ones(8), 8)
print("scipy.signal" in sys.modules)
"""


def test_the_first_order_paths_do_not_import_scipy_signal():
    """Why it matters: importing scipy.signal costs about 1.4 s of CPU in each session and bench process."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
