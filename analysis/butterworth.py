"""The detector's Butterworth low-pass as second-order sections: the bench's detector and the DSP's model of it.

Why not scipy.signal throughout: importing it costs about 1.4 s of CPU per process (it imports scipy.stats), and
every session, bench and test process paid that for the first-order filter of the lab's config. The first order
has a closed form, the bilinear transform with the cut-off pre-warped (what scipy.signal.butter designs; the tests
compare the two), and so has its impulse response. Higher orders, and filtering a record (the reference
renderer's route, instruments/sim/link/waveform.py), import scipy.signal when they are asked for.
"""

from __future__ import annotations

import math

import numpy as np


def lowpass_sos(order: int, cutoff_hz: float, sample_rate_hz: float) -> np.ndarray:
    """Second-order sections [b0, b1, b2, 1, a1, a2] (one row per section) of the digital Butterworth low-pass."""
    if order != 1:
        from scipy import signal

        return signal.butter(order, cutoff_hz, fs=sample_rate_hz, output="sos")
    if not 0.0 < cutoff_hz < sample_rate_hz / 2.0:
        raise ValueError(f"cutoff_hz must be in (0, {sample_rate_hz / 2:g}) Hz, got {cutoff_hz!r}")
    warped = math.tan(math.pi * cutoff_hz / sample_rate_hz)  # the analog pole -1 scaled by the pre-warped cut-off
    gain = warped / (1.0 + warped)
    return np.array([[gain, gain, 0.0, 1.0, (warped - 1.0) / (warped + 1.0), 0.0]])


def _first_order(sos: np.ndarray) -> bool:
    return sos.shape[0] == 1 and sos[0, 2] == 0.0 and sos[0, 5] == 0.0


def impulse_response(sos: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` samples of the filter's response to a unit impulse at sample 0."""
    if not _first_order(sos):
        impulse = np.zeros(length)
        impulse[0] = 1.0
        return sosfilt(sos, impulse)
    b0, b1, _, _, a1, _ = sos[0]
    pole = -a1  # y[n] = b0 x[n] + b1 x[n-1] + pole y[n-1]: h[0] = b0, h[n] = (b0 pole + b1) pole^(n-1)
    response = np.empty(length)
    response[0] = b0
    response[1:] = (b0 * pole + b1) * pole ** np.arange(length - 1)
    return response


def sosfilt(sos: np.ndarray, samples, **options):
    """scipy.signal.sosfilt, imported on the first call (for filters without a closed form here)."""
    from scipy import signal

    return signal.sosfilt(sos, samples, **options)
