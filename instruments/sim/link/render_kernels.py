"""The steps of a receiver's render that follow the noise (waveform.digitized_words), compiled by numba.

Why compiled: in NumPy the signal along the temporal mode, the detector's first-order filter and the ADC took 14
passes over every chunk, 2.5 ns a sample next to the noise's 2.4, and between those calls a render held the
interpreter lock, so the bench's two receivers, rendered on two threads, could not use both cores. Here each step is
one loop that LLVM vectorizes, run without the interpreter lock (``nogil``), about 0.5 ns a sample in all.

No ``fastmath``: IEEE float32 in the order written, nothing contracted into fused multiply-adds, so a record has the
same bits on every host (docs/DECISIONS.md V). ``cache``: compiled once per machine into __pycache__ (about a second);
later processes load them in milliseconds. Indices are kept non-negative (shifted views): a negative index makes
numba check for wrap-around at every access, which stops LLVM vectorizing a loop.
"""

from __future__ import annotations

import numba
import numpy as np

TAP_GROUP = 8  # the filter's taps are applied eight at a time (one vectorized pass per group)
_COMPILE = {"nogil": True, "cache": True, "error_model": "numpy"}


@numba.njit(**_COMPILE)
def add_along_mode(samples, quadratures, template, white_gain, signal_gain):  # pragma: no cover - compiled
    """Slot k of ``samples`` (S = template.size samples each, k < quadratures.size) += (X_k + white_gain f.slot_k)
    signal_gain, in place: the signal in the slot's mode, with the white noise's part along f rescaled."""
    sps = template.size
    for k in range(quadratures.size):
        slot = samples[k * sps:(k + 1) * sps]
        along = np.float32(0.0)
        for j in range(sps):
            along += slot[j] * template[j]
        along = quadratures[k] + white_gain * along
        for j in range(sps):
            slot[j] += along * signal_gain[j]


@numba.njit(**_COMPILE)
def first_order_fir(work, taps, pairs, out):  # pragma: no cover - compiled
    """out[i] = sum_k taps[k] (w[i+H-k] + w[i+H-k-1]) for the H = taps.size (a multiple of TAP_GROUP) samples of
    history and the chunk in ``work`` (H + out.size); ``pairs`` (work.size - 1) is scratch.

    The first-order low-pass y[n] = p y[n-1] + (x[n] + x[n-1]) with its impulse response cut after H taps
    (taps[k] = p^k, zeros after the cut)."""
    history = taps.size
    for i in range(pairs.size):
        pairs[i] = work[i + 1] + work[i]
    for first in range(0, history, TAP_GROUP):
        c0, c1, c2, c3 = taps[first], taps[first + 1], taps[first + 2], taps[first + 3]
        c4, c5, c6, c7 = taps[first + 4], taps[first + 5], taps[first + 6], taps[first + 7]
        top = history - 1 - first  # pairs[i + top] meets tap `first`
        p0, p1, p2, p3 = pairs[top:], pairs[top - 1:], pairs[top - 2:], pairs[top - 3:]
        p4, p5, p6, p7 = pairs[top - 4:], pairs[top - 5:], pairs[top - 6:], pairs[top - 7:]
        if first == 0:
            for i in range(out.size):
                out[i] = (c0 * p0[i] + c1 * p1[i] + c2 * p2[i] + c3 * p3[i]
                          + c4 * p4[i] + c5 * p5[i] + c6 * p6[i] + c7 * p7[i])
        else:
            for i in range(out.size):
                out[i] += (c0 * p0[i] + c1 * p1[i] + c2 * p2[i] + c3 * p3[i]
                           + c4 * p4[i] + c5 * p5[i] + c6 * p6[i] + c7 * p7[i])


@numba.njit(**_COMPILE)
def quantize(values, offset_codes, low, high, code_scale, out):  # pragma: no cover - compiled
    """out = code_scale x (values - offset_codes rounded half to even, clipped to [low, high]) as int16 words; the
    number of values that were beyond the range (the ADC's clipping count)."""
    clipped = 0
    for i in range(values.size):
        code = np.rint(values[i] - offset_codes)
        clipped += (code < low) + (code > high)
        out[i] = np.int16(min(max(code, low), high) * code_scale)
    return clipped
