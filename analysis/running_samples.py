"""The verified samples' estimates kept up to date batch by batch, in O(batch) work: the session's checkpoints and
its leakage-cap check.

Why: a session tests everything verified so far after batches 1, 2, 4, 8, ..., and one with a cap on its cumulative
weight leakage checks the cap before every batch. `StreamedSamples` (verified_samples.py) reads the whole file back
for each: O(N) per checkpoint, O(N^2) over a capped session. Here nothing is read back. The estimates need the
residuals r = y - b q_prev - t q at the final fit (b, t), unknown until the end, so each layer keeps power sums of
the residuals r0 = y - b0 q_prev - t0 q at a reference fit (b0, t0: its first chunk's), and of q_prev and q:
sum r0^i q_prev^j q^k for i + j + k in {2, 4, 8}. Any (b, t) then gives sum r^d exactly by the multinomial expansion
of r = r0 - (b - b0) q_prev - (t - t0) q (d = 2, 4, 8; the spread of r^4 is sum r^8 - (sum r^4)^2 / n). Because
(b, t) stays close to (b0, t0), the expansion's correction terms are small and nothing large cancels: the estimates
equal StreamedSamples' to rounding (1e-12 relative in tests/test_running_samples.py; the session's decisions are the
same at every batch).

A session's batch sends the same verified rows to every image: its sent samples [images, rows, modes] repeat image
after image, and so do their previous symbols (but the batch's very first, the last sample before it). Such a batch
is summed per column first (sum over images of r0^i, i <= 8, a block of images at a time in cache), and the 66 power
sums are then dot products over one image's columns: about 20 passes over the batch instead of some 150.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from qslab.analysis import verification
from qslab.analysis.verified_samples import _estimate, _FitSums, _ResidualSums, _sum
from qslab.analysis.workers import OrderedTasks

DEGREES = (2, 4, 8)
BLOCK_VALUES = 1 << 16  # the per-column route's float64 work per step: 512 KiB a buffer, within L2
_TERMS = {d: [(i, j, d - i - j) for i in range(d + 1) for j in range(d + 1 - i)] for d in DEGREES}
_COEFFICIENTS = {d: [math.factorial(d) // (math.factorial(i) * math.factorial(j) * math.factorial(k))
                     for i, j, k in _TERMS[d]] for d in DEGREES}


class _LayerSums:
    """One layer: the fit's sums (as StreamedSamples' first pass) and the reference residuals' power sums."""

    def __init__(self):
        self.fit = _FitSums()
        self.reference: tuple[float, float] | None = None  # (b0, t0)
        self.powers = {d: np.zeros(len(_TERMS[d])) for d in DEGREES}

    def add(self, q: np.ndarray, y: np.ndarray) -> None:
        """Samples in capture order (float32, of any shape: flattened); a 2-D [images, K] pair whose sent rows are all
        alike is summed per column (module docstring)."""
        if not q.size:
            return
        if q.ndim == 2 and q.shape[0] > 1 and np.array_equal(q, np.broadcast_to(q[0], q.shape)):
            self._add_rows(q[0].astype(np.float64), y)
        else:
            self._add_samples(q.astype(np.float64).ravel(), y.astype(np.float64).ravel())

    def _reference(self) -> tuple[float, float]:
        """(b0, t0): the fit of the first samples added."""
        if self.reference is None:
            b0 = self.fit.previous_symbol()
            self.reference = (b0, self.fit.qy_after(b0) / self.fit.qq if self.fit.qq > 0.0 else 0.0)
        return self.reference

    def _add_samples(self, q: np.ndarray, y: np.ndarray) -> None:
        """Flat samples, product by product."""
        previous = np.empty_like(q)
        previous[0], previous[1:] = self.fit.last, q[:-1]
        self.fit.add(q, y)
        b0, t0 = self._reference()
        r_pow, p_pow, q_pow = _powers(y - b0 * previous - t0 * q), _powers(previous), _powers(q)
        for d in DEGREES:
            self.powers[d] += [_sum(r_pow[i] * p_pow[j] * q_pow[k]) for i, j, k in _TERMS[d]]

    def _add_rows(self, q_row: np.ndarray, y: np.ndarray) -> None:
        """y [images, K] (float32) under one sent row q_row [K] repeated for every image: r0's powers summed per column
        (each column's previous symbol is the same in every image, column 0's the row's last sample), then over the
        columns. The first image's first sample follows ``last``, not the row's last: its column-0 term is swapped
        for its own."""
        last, p_row = self.fit.last, np.roll(q_row, 1)
        y_first = float(y[0, 0])
        self.fit.add_rows(q_row, y.sum(axis=0, dtype=np.float64), y.shape[0], y_first)
        b0, t0 = self._reference()
        columns = _column_power_sums(y, b0 * p_row + t0 * q_row)
        wrong, right = y_first - (b0 * p_row[0] + t0 * q_row[0]), y_first - (b0 * last + t0 * q_row[0])
        columns[1:, 0] -= np.array(_powers(wrong)[1:])
        columns[0, 0] -= 1.0
        p_pow, q_pow = np.array(_powers(p_row)), np.array(_powers(q_row))
        for d in DEGREES:
            self.powers[d] += [float(np.dot(columns[i] * p_pow[j], q_pow[k])) + right**i * last**j * q_row[0]**k
                               for i, j, k in _TERMS[d]]

    def residual_power(self, d: int, b: float, t: float) -> float:
        """sum r^d for r = y - b q_prev - t q."""
        if self.reference is None:
            return 0.0
        db, dt = -(b - self.reference[0]), -(t - self.reference[1])
        return float(sum(c * db**j * dt**k * s for c, (_, j, k), s in zip(_COEFFICIENTS[d], _TERMS[d], self.powers[d])))

    def residuals(self, b: float, t: float) -> _ResidualSums:
        n = self.fit.n
        r2, r4, r8 = (self.residual_power(d, b, t) for d in DEGREES)
        return _residual_sums(n, r2, r4, r8)


def _powers(values: np.ndarray) -> list[np.ndarray]:
    powers = [np.ones_like(values), values]
    for _ in range(2, 9):
        powers.append(powers[-1] * values)
    return powers


def _column_power_sums(y: np.ndarray, offset_row: np.ndarray) -> np.ndarray:
    """[9, K]: row i the sum over axis 0 of (y - offset_row)^i (y [n, K], any float dtype, taken as float64), a block of
    rows at a time so that the eight powers of a block stay in cache."""
    n, columns = y.shape
    sums = np.zeros((9, columns))
    sums[0] = n
    rows = max(1, BLOCK_VALUES // max(columns, 1))
    base, power = np.empty((min(rows, n), columns)), np.empty((min(rows, n), columns))
    for first in range(0, n, rows):
        r, p = base[:min(rows, n - first)], power[:min(rows, n - first)]
        np.subtract(y[first:first + rows], offset_row, out=r)
        sums[1] += r.sum(axis=0)
        np.multiply(r, r, out=p)
        sums[2] += p.sum(axis=0)
        for i in range(3, 9):
            np.multiply(p, r, out=p)
            sums[i] += p.sum(axis=0)
    return sums


def _residual_sums(n: int, r2: float, r4: float, r8: float) -> _ResidualSums:
    """What _ResidualSums holds after its chunks, from the power sums (m2_4 = sum (r^4 - mean)^2)."""
    mean4 = r4 / n if n else 0.0
    return _ResidualSums(n=n, r2=r2, r4=r4, mean4=mean4, m2_4=max(r8 - n * mean4 * mean4, 0.0))


class RunningSamples:
    """The verified samples of `layers` layers, added batch by batch; estimates as StreamedSamples gives them on the
    same samples (the same interface: sizes, layer_estimate, pooled_estimate).

    A batch is summed on a worker thread, in the order the batches were added, so the session's next batch does not
    wait for it; every estimate waits for the batches added before (and raises what failed there). The arrays added
    are kept until summed: do not modify them."""

    def __init__(self, layers: int, background: bool = False):
        """``background``: summed on a thread that yields the CPU (analysis/workers.py: a session's)."""
        self._layers = [_LayerSums() for _ in range(layers)]
        self._summing = OrderedTasks("qslab-running-samples", background)

    @classmethod
    def from_session(cls, session, background: bool = False) -> RunningSamples:
        """From a session file's committed batches (a resumed session's), each batch as it was added."""
        running = cls(len(session.layers), background)
        for batch in range(session.batches_written):
            running.add_batch([(part.sent_snu, part.returned_snu) for part in
                               (session.layer_batch(batch, layer) for layer in range(len(session.layers)))])
        return running

    def add(self, layer: int, sent, returned) -> None:
        """The next verified samples of `layer`, in capture order, as the file stores them (float32): flat, or
        [images, ...] as a batch holds them (its sent rows alike for every image: the fast route)."""
        q, y = np.asarray(sent, dtype=np.float32), np.asarray(returned, dtype=np.float32)
        if q.shape != y.shape:
            raise ValueError(f"layer {layer}: sent {q.shape} and returned {y.shape} samples; expected the same shape")
        shape = (q.shape[0], -1) if q.ndim >= 2 and q.shape[0] else (-1,)
        self._summing.submit(self._layers[layer].add, q.reshape(shape), y.reshape(shape))

    def add_batch(self, samples: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """One batch: (sent, returned) of every layer."""
        for layer, (sent, returned) in enumerate(samples):
            self.add(layer, sent, returned)

    def _summed(self) -> list[_LayerSums]:
        """Every layer's sums once the batches added so far are summed."""
        self._summing.wait()
        return self._layers

    @property
    def sizes(self) -> list[int]:
        return [layer.fit.n for layer in self._summed()]

    def _fit(self, layer: _LayerSums) -> tuple[float, float]:
        b = layer.fit.previous_symbol()
        return b, (layer.fit.qy_after(b) / layer.fit.qq if layer.fit.qq > 0.0 else 0.0)

    def layer_estimate(self, layer: int, detector: verification.ServerDetector) -> verification.ChannelEstimate:
        sums = self._summed()[layer]
        b, t = self._fit(sums)
        return _estimate(t, sums.fit, sums.residuals(b, t), detector)

    def pooled_estimate(self, detector: verification.ServerDetector) -> verification.ChannelEstimate:
        fits = [self._fit(layer) for layer in self._summed()]
        qq = sum(layer.fit.qq for layer in self._layers)
        t = sum(layer.fit.qy_after(b) for layer, (b, _) in zip(self._layers, fits)) / qq if qq > 0.0 else 0.0
        n = sum(layer.fit.n for layer in self._layers)
        r2, r4, r8 = (sum(layer.residual_power(d, b, t) for layer, (b, _) in zip(self._layers, fits)) for d in DEGREES)
        return _estimate(t, [layer.fit for layer in self._layers], _residual_sums(n, r2, r4, r8), detector)
