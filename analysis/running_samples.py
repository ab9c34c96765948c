"""The verified samples' estimates kept up to date batch by batch, in O(batch) work: the session's leakage-cap check.

Why: a session with a cap on its cumulative weight leakage checks it before every batch, on everything verified so
far. `StreamedSamples` (verified_samples.py) reads the whole file back for that, twice, every batch: O(N^2) over a
session. Here nothing is read back. The estimates need the residuals r = y - b q_prev - t q at the final fit (b, t),
unknown until the end, so each layer keeps power sums of the residuals r0 = y - b0 q_prev - t0 q at a reference
fit (b0, t0: its first chunk's), and of q_prev and q: sum r0^i q_prev^j q^k for i + j + k in {2, 4, 8}. Any (b, t)
then gives sum r^d exactly by the multinomial expansion of r = r0 - (b - b0) q_prev - (t - t0) q (d = 2, 4, 8;
the spread of r^4 is sum r^8 - (sum r^4)^2 / n). Because (b, t) stays close to (b0, t0), the expansion's correction
terms are small and nothing large cancels: the estimates equal StreamedSamples' to rounding (1e-12 relative in
tests/test_running_samples.py; the session's cap decision is the same at every batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from qslab.analysis import verification
from qslab.analysis.verified_samples import _estimate, _FitSums, _ResidualSums, _sum

DEGREES = (2, 4, 8)
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
        if not q.size:
            return
        previous = np.empty_like(q)
        previous[0], previous[1:] = self.fit.last, q[:-1]
        self.fit.add(q, y)
        if self.reference is None:
            b0 = self.fit.previous_symbol()
            self.reference = (b0, self.fit.qy_after(b0) / self.fit.qq if self.fit.qq > 0.0 else 0.0)
        b0, t0 = self.reference
        r0 = y - b0 * previous - t0 * q
        r_pow, p_pow, q_pow = _powers(r0), _powers(previous), _powers(q)
        for d in DEGREES:
            self.powers[d] += [_sum(r_pow[i] * p_pow[j] * q_pow[k]) for i, j, k in _TERMS[d]]

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


def _residual_sums(n: int, r2: float, r4: float, r8: float) -> _ResidualSums:
    """What _ResidualSums holds after its chunks, from the power sums (m2_4 = sum (r^4 - mean)^2)."""
    mean4 = r4 / n if n else 0.0
    return _ResidualSums(n=n, r2=r2, r4=r4, mean4=mean4, m2_4=max(r8 - n * mean4 * mean4, 0.0))


class RunningSamples:
    """The verified samples of `layers` layers, added batch by batch; estimates as StreamedSamples gives them on the
    same samples (the same interface: sizes, layer_estimate, pooled_estimate)."""

    def __init__(self, layers: int):
        self._layers = [_LayerSums() for _ in range(layers)]

    @classmethod
    def from_chunks(cls, chunks, layers: int) -> RunningSamples:
        """From samples already recorded (a resumed session's file: SessionFile.verification_chunks)."""
        running = cls(layers)
        for layer in range(layers):
            for sent, returned in chunks(layer):
                running.add(layer, sent, returned)
        return running

    def add(self, layer: int, sent, returned) -> None:
        """The next verified samples of `layer`, in capture order, as the file stores them (float32)."""
        q = np.asarray(sent, dtype=np.float32).astype(np.float64).ravel()
        y = np.asarray(returned, dtype=np.float32).astype(np.float64).ravel()
        self._layers[layer].add(q, y)

    def add_batch(self, samples: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """One batch: (sent, returned) of every layer."""
        for layer, (sent, returned) in enumerate(samples):
            self.add(layer, sent, returned)

    @property
    def sizes(self) -> list[int]:
        return [layer.fit.n for layer in self._layers]

    def _fit(self, layer: _LayerSums) -> tuple[float, float]:
        b = layer.fit.previous_symbol()
        return b, (layer.fit.qy_after(b) / layer.fit.qq if layer.fit.qq > 0.0 else 0.0)

    def layer_estimate(self, layer: int, detector: verification.ServerDetector) -> verification.ChannelEstimate:
        sums = self._layers[layer]
        b, t = self._fit(sums)
        return _estimate(t, sums.fit, sums.residuals(b, t), detector)

    def pooled_estimate(self, detector: verification.ServerDetector) -> verification.ChannelEstimate:
        fits = [self._fit(layer) for layer in self._layers]
        qq = sum(layer.fit.qq for layer in self._layers)
        t = sum(layer.fit.qy_after(b) for layer, (b, _) in zip(self._layers, fits)) / qq if qq > 0.0 else 0.0
        n = sum(layer.fit.n for layer in self._layers)
        r2, r4, r8 = (sum(layer.residual_power(d, b, t) for layer, (b, _) in zip(self._layers, fits)) for d in DEGREES)
        return _estimate(t, [layer.fit for layer in self._layers], _residual_sums(n, r2, r4, r8), detector)
