"""The detector's Butterworth low-pass as second-order sections: the bench's detector and the DSP's model of it.

Why not scipy.signal throughout: importing it costs about 1.4 s of CPU per process (it imports scipy.stats), and
every session, bench and test process paid that for the first-order filter of the lab's config. The first order
has a closed form, the bilinear transform with the cut-off pre-warped (what scipy.signal.butter designs; the tests
compare the two), and so have its impulse response and its recursion. Higher orders import scipy.signal when
they are asked for.
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


class RecordFilter:
    """The low-pass over consecutive pieces of one record along the last axis (float64), its state carried, from
    a zero state (as scipy.signal.sosfilt starts).

    First order: y[n] = p y[n-1] + b (x[n] + x[n-1]), unrolled by doubling (y += p^d y shifted by d for d = 1, 2,
    4, ... up to H terms, one vector operation each), with the impulse response's tail dropped below
    TRUNCATION (below float64's rounding) and the previous piece's last H + 1 inputs kept, so each piece is
    exact whatever the pieces' sizes. Other orders: scipy.signal.sosfilt with its state carried."""

    TRUNCATION = 2.0 ** -60
    PIECE_SAMPLES = 16384  # longer pieces are filtered this many samples at a time: the passes stay in cache

    def __init__(self, sos: np.ndarray):
        self.sos = np.asarray(sos, dtype=float)
        self.state = None
        self.first_order = _first_order(self.sos) and self.sos[0, 0] == self.sos[0, 1]
        pole = -float(self.sos[0, 4])
        steps = math.ceil(math.log2(max(math.log(self.TRUNCATION) / math.log(abs(pole)), 1.0))) if pole else 0
        self.powers = [pole ** (2**i) for i in range(steps)]
        self.terms = 2**steps

    def __call__(self, samples) -> np.ndarray:
        x = np.asarray(samples, dtype=float)
        if not self.first_order:
            if self.state is None:
                self.state = np.zeros((self.sos.shape[0], *x.shape[:-1], 2))
            y, self.state = sosfilt(self.sos, x, axis=-1, zi=self.state)
            return y
        if x.shape[-1] > self.PIECE_SAMPLES:
            return np.concatenate([self(x[..., start:start + self.PIECE_SAMPLES])
                                   for start in range(0, x.shape[-1], self.PIECE_SAMPLES)], axis=-1)
        kept = self.terms + 1
        if self.state is None:
            self.state = np.zeros((*x.shape[:-1], kept))
        work = np.concatenate([self.state, x], axis=-1)
        self.state = work[..., -kept:]
        summed = work[..., 1:] + work[..., :-1]  # summed[i] belongs to work[i + 1]
        scratch = np.empty_like(summed)
        for d, power in zip((2**i for i in range(len(self.powers))), self.powers):
            np.multiply(summed[..., :-d], power, out=scratch[..., :-d])
            summed[..., d:] += scratch[..., :-d]
        summed = summed[..., self.terms:]
        summed *= self.sos[0, 0]
        return summed


def sosfilt(sos: np.ndarray, samples, **options):
    """scipy.signal.sosfilt, imported on the first call (for filters without a closed form here)."""
    from scipy import signal

    return signal.sosfilt(sos, samples, **options)
