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


def first_order_section(sos: np.ndarray) -> tuple[float, float] | None:
    """(b, p) when ``sos`` is one first-order low-pass section, y[n] = p y[n-1] + b (x[n] + x[n-1]); else None."""
    if sos.shape[0] == 1 and sos[0, 2] == 0.0 and sos[0, 5] == 0.0 and np.isclose(sos[0, 0], sos[0, 1]):
        return float(sos[0, 0]), -float(sos[0, 4])
    return None


def impulse_response(sos: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` samples of the filter's response to a unit impulse at sample 0."""
    section = first_order_section(sos)
    if section is None:
        impulse = np.zeros(length)
        impulse[0] = 1.0
        return sosfilt(sos, impulse)
    gain, pole = section  # h[0] = b, h[n] = b (p + 1) p^(n-1)
    response = np.empty(length)
    response[0] = gain
    response[1:] = gain * (pole + 1.0) * pole ** np.arange(length - 1)
    return response


def sosfilt(sos: np.ndarray, samples, **options):
    """scipy.signal.sosfilt, imported on the first call (for filters without a closed form here)."""
    from scipy import signal

    return signal.sosfilt(sos, samples, **options)
