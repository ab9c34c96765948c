"""The server's verified samples as the results use them: one ChannelEstimate per layer and one for every layer pooled.

Two routes give the same estimates. `PooledSamples` holds the (sent, returned) arrays and runs the array code
(verification.remove_previous_symbol, then verification.estimate_channel): the reference. `StreamedSamples` reads
the samples in chunks (a session file's, analysis/recording/reader.py) and keeps sums only, so a session's memory
does not grow with its length. The fit over the previous symbol (y - b q_prev, b fitted jointly with t) comes
before the residuals' moments, so the streamed route takes two passes: the first sums the Gram matrix of
(q, q_prev) and its right-hand sides, which give b and t in closed form; the second sums the residuals' powers
(<r^4>'s spread merged block by block, Chan et al., so no large sums cancel; blocks of RESIDUAL_BLOCK_VALUES, so
its float64 work stays in cache). Every chunk of pass 1 and block of pass 2 is summed in float64, pairwise as np.sum
does: the two routes differ only in the order of the additions (tests/test_verified_samples.py and the session
tests: 1e-12 relative).

`Float32Samples` takes the same two passes over samples held in memory as float32 chunks (a simulation's records,
tens of millions of samples per run), in cache-sized blocks with float32 products and block sums and float64
totals; it also gives the estimate without the fit over the previous symbol (`raw_estimate`, verification.verify's
route). Its rounding (~1e-7 relative, tests: 1e-6) is far below the estimates' statistical spread (sqrt(2/n)).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from qslab.analysis import verification
from qslab.analysis.workers import OrderedTasks

Chunks = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]  # layer -> its (sent, returned) in capture order


class PooledSamples:
    """The verified samples in memory, per layer (sent, returned) in capture order: the array route."""

    def __init__(self, samples: list[tuple[np.ndarray, np.ndarray]]):
        self._samples = [(np.asarray(s, dtype=np.float64).ravel(), np.asarray(r)) for s, r in samples]

    @property
    def sizes(self) -> list[int]:
        return [sent.size for sent, _ in self._samples]

    def layer_estimate(self, layer: int, detector: verification.ServerDetector) -> verification.ChannelEstimate:
        sent, returned = self._samples[layer]
        return verification.estimate_channel(sent, verification.remove_previous_symbol(sent, returned)[0], detector)

    def pooled_estimate(self, detector: verification.ServerDetector) -> verification.ChannelEstimate:
        sent = np.concatenate([s for s, _ in self._samples])
        returned = np.concatenate([verification.remove_previous_symbol(s, r)[0] for s, r in self._samples])
        return verification.estimate_channel(sent, returned, detector)


RESIDUAL_BLOCK_VALUES = 1 << 16  # pass 2's float64 work per step: 512 KiB a buffer, so the few it uses stay in L2


def _sum(values: np.ndarray) -> float:
    """numpy's pairwise sum (error ~ log n eps, as the pooled code's np.sum), not a BLAS dot (~ n eps)."""
    return float(np.sum(values))


class _Scratch:
    """Float64 work buffers reused chunk after chunk: the passes' element-wise products and residuals written into
    them (``out=``) instead of fresh arrays, the same operations on the same values, so the same bits, without a
    page-faulting allocation per intermediate. ``shifted(n, first, q)``: one buffer holding [first, q...], whose
    [1:] is q and [:-1] q_prev, so q_prev costs no copy."""

    def __init__(self):
        self._buffers: dict[int, np.ndarray] = {}

    def get(self, slot: int, n: int) -> np.ndarray:
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.size < n:
            buffer = self._buffers[slot] = np.empty(max(n, 1), dtype=np.float64)
        return buffer[:n]

    def shifted(self, n: int, first: float, values) -> tuple[np.ndarray, np.ndarray]:
        """(q, q_prev) as float64 views of one buffer: q the values (cast from any float dtype), q_prev = first, q[:-1]."""
        buffer = self.get(0, n + 1)
        buffer[0] = first
        np.copyto(buffer[1:], values, casting="same_kind")
        return buffer[1:], buffer[:n]


@dataclass
class _FitSums:
    """Pass 1 of one layer: the Gram matrix of (q, q_prev) and its right-hand sides with y."""

    n: int = 0
    qq: float = 0.0
    qp: float = 0.0
    pp: float = 0.0
    qy: float = 0.0
    py: float = 0.0
    last: float = 0.0    # the last sent sample so far: the next chunk's first q_prev (0 before the first)
    low: float = math.inf
    high: float = -math.inf

    def add(self, q: np.ndarray, y: np.ndarray, scratch: _Scratch | None = None) -> float:
        """One chunk (flat q and y, summed in float64); returns its sum q y (RunningFits keeps it to check pass 2's
        reading)."""
        if not q.size:
            return 0.0
        scratch = _Scratch() if scratch is None else scratch
        q, previous = scratch.shifted(q.size, self.last, q)
        product = scratch.get(1, q.size)
        qy = _sum(np.multiply(q, y, out=product))
        self.n += q.size
        self.qq += _sum(np.multiply(q, q, out=product))
        self.qp += _sum(np.multiply(q, previous, out=product))
        self.pp += _sum(np.multiply(previous, previous, out=product))
        self.qy += qy
        self.py += _sum(np.multiply(previous, y, out=product))
        self.last = float(q[-1])
        self.low, self.high = min(self.low, float(q.min())), max(self.high, float(q.max()))
        return qy

    def add_rows(self, q_row: np.ndarray, column_sums_y: np.ndarray, images: int, y_first: float) -> None:
        """``images`` samples of y after one another, each under the same sent row q_row [K] (float64), from y's sums
        per column and its very first sample: the sums ``add`` takes of the flattened samples, to rounding. Each
        column's previous symbol is the same in every image (column 0's: the row's last) but the first image's first,
        which follows ``last``."""
        p_row = np.roll(q_row, 1)
        p_first, q_first = p_row[0], q_row[0]
        self.n += images * q_row.size
        self.qq += images * _sum(q_row * q_row)
        self.qp += images * _sum(q_row * p_row) + q_first * (self.last - p_first)
        self.pp += images * _sum(p_row * p_row) + self.last * self.last - p_first * p_first
        self.qy += _sum(q_row * column_sums_y)
        self.py += _sum(p_row * column_sums_y) + y_first * (self.last - p_first)
        self.last = float(q_row[-1])
        self.low, self.high = min(self.low, float(q_row.min())), max(self.high, float(q_row.max()))

    def previous_symbol(self) -> float:
        """b of verification.remove_previous_symbol (0 below three samples, as there)."""
        if self.n < 3:
            return 0.0
        gram = np.array([[self.qq, self.qp], [self.qp, self.pp]])
        return float(np.linalg.solve(gram, np.array([self.qy, self.py]))[1])

    def qy_after(self, b: float) -> float:
        """sum q (y - b q_prev)."""
        return self.qy - b * self.qp


@dataclass
class _ResidualSums:
    """Pass 2: sum r^2, sum r^4 and the spread of r^4 (count, mean, sum of squared deviations, merged per chunk)."""

    n: int = 0
    r2: float = 0.0
    r4: float = 0.0
    mean4: float = 0.0
    m2_4: float = 0.0

    def add(self, r: np.ndarray) -> None:
        if r.size:
            self.merge(*self.chunk(r))

    @staticmethod
    def chunk(r: np.ndarray) -> tuple[int, float, float, float]:
        """One chunk's (count, sum r^2, sum r^4, sum of squared deviations of r^4 from its mean), `merge`'s arguments."""
        return _ResidualSums.chunk_in_place(np.array(r))

    @staticmethod
    def chunk_in_place(r: np.ndarray) -> tuple[int, float, float, float]:
        """`chunk` of ``r``, overwriting it (r^2, r^4 and the deviations computed in its place)."""
        powers = np.multiply(r, r, out=r)
        sum2 = _sum(powers)
        np.multiply(powers, powers, out=powers)
        sum4 = _sum(powers)
        deviations = np.subtract(powers, sum4 / r.size, out=powers)
        return r.size, sum2, sum4, _sum(np.multiply(deviations, deviations, out=deviations))

    def merge(self, n: int, r2: float, r4: float, m2_4: float) -> None:
        """Add a block's count, sum r^2, sum r^4 and sum of squared deviations of r^4 from its own mean (Chan)."""
        if not n:
            return
        total = self.n + n
        mean = r4 / n
        delta = mean - self.mean4
        self.m2_4 += m2_4 + delta * delta * self.n * n / total
        self.mean4 += delta * n / total
        self.n = total
        self.r2 += r2
        self.r4 += r4


def _estimate(t_hat: float, sent: _FitSums | list[_FitSums], residuals: _ResidualSums,
              detector: verification.ServerDetector) -> verification.ChannelEstimate:
    """The ChannelEstimate verification.estimate_channel gives on the same samples (its validation included)."""
    parts = sent if isinstance(sent, list) else [sent]
    n, qq = sum(p.n for p in parts), sum(p.qq for p in parts)
    if n < 2:
        raise ValueError(f"sent_quadratures_snu needs at least 2 samples along axis -1, got {n}")
    if not qq > 0.0:
        raise ValueError("sent_quadratures_snu carries no modulation (sum q^2 = 0)")
    t = np.float64(t_hat)
    s2 = np.float64(residuals.r2 / (n - 1))
    return verification.ChannelEstimate(
        amplitude_transmittance=t, residual_variance_snu=s2, sum_sq_sent_snu2=np.float64(qq), n_samples=int(n),
        mean_sq_residual_snu2=np.float64(residuals.r2 / n), mean_fourth_residual_snu4=np.float64(residuals.r4 / n),
        se_fourth_residual_snu4=np.float64(math.sqrt(residuals.m2_4 / (n - 1)) / math.sqrt(n)),
        transmittance=verification.referred_transmittance(t, detector),
        excess_noise_snu=verification.referred_excess_noise_snu(s2, detector))


def scatter_indices(total: int, points: int, seed: int) -> np.ndarray:
    """Up to `points` of `total` sample indices, uniformly without replacement, sorted (a figure's scatter)."""
    return np.sort(np.random.default_rng(seed).choice(total, size=min(total, points), replace=False))


class RunningFits:
    """Pass 1 of StreamedSamples kept up to date as a session records its batches (`add`, the float32 arrays as
    stored), so that the estimates after a batch read the file once (pass 2), not twice.

    The samples are cut into the same chunks of `chunk_values` that the file is read in, and each chunk is
    summed as pass 1 sums it: the sums are the file route's, bit for bit. Each chunk's sum q y is kept (two
    floats a chunk) so that pass 2 checks the file holds exactly the samples summed here. Memory: one chunk per
    layer, whatever the session's length. The sums are taken on a worker thread, in the order the batches were
    added, so a session's next batch does not wait for them (~5 ms a batch); `snapshot` waits for them."""

    def __init__(self, layers: int, chunk_values: int, background: bool = False):
        """``background``: summed on a thread that yields the CPU (analysis/workers.py: a session's)."""
        self.chunk_values = int(chunk_values)
        self._fits = [_FitSums() for _ in range(layers)]
        self._pending: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(layers)]
        self._qy: list[list[float]] = [[] for _ in range(layers)]
        self._scratch = _Scratch()
        self._summing = OrderedTasks("qslab-running-fits", background)

    def add(self, layer: int, sent_snu, returned_snu) -> None:
        """One batch of one layer's verified samples, in capture order (cast to float32, as the file stores them;
        the arrays are kept until summed: do not modify them)."""
        sent = np.asarray(sent_snu).astype(np.float32, copy=False).ravel()
        returned = np.asarray(returned_snu).astype(np.float32, copy=False).ravel()
        if sent.shape != returned.shape:
            raise ValueError(f"layer {layer}: {sent.size} sent and {returned.size} returned samples; expected as many")
        self._summing.submit(self._sum, layer, sent, returned)

    def _sum(self, layer: int, sent: np.ndarray, returned: np.ndarray) -> None:
        """`add`'s work, on the worker: every whole chunk of the layer's samples so far summed."""
        pending = self._pending[layer]
        pending.append((sent, returned))
        while sum(part.size for part, _ in pending) >= self.chunk_values:
            q, y = self._take(pending, self.chunk_values)
            self._qy[layer].append(self._fit(self._fits[layer], q, y))

    @staticmethod
    def _take(pending: list, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `count` samples of `pending` (removed from it)."""
        q, y = pending[0]
        if q.size >= count:  # within one batch's samples: no concatenation
            pending[0] = (q[count:], y[count:])
            if q.size == count:
                pending.pop(0)
            return q[:count], y[:count]
        sent, returned, left = [], [], count
        while left:
            q, y = pending[0]
            sent.append(q[:left])
            returned.append(y[:left])
            if q.size > left:
                pending[0] = (q[left:], y[left:])
            else:
                pending.pop(0)
            left -= min(left, q.size)
        return np.concatenate(sent), np.concatenate(returned)

    def _fit(self, fit: _FitSums, q: np.ndarray, y: np.ndarray) -> float:
        """Pass 1 of one chunk (float32 as stored; summed in float64: every float32 is a float64 exactly)."""
        return fit.add(q, y, self._scratch)

    def snapshot(self) -> tuple[list[_FitSums], list[list[float]]]:
        """(pass 1's sums over every sample added, each chunk's sum q y): the chunk in progress counted as the file's
        last, shorter chunk; the running sums are left as they are. Waits for the batches added to be summed (and
        raises what failed there)."""
        self._summing.wait()
        fits, qy = [], []
        for fit, pending, chunks in zip(self._fits, self._pending, self._qy):
            fit = replace(fit)
            chunks = list(chunks)
            count = sum(part.size for part, _ in pending)
            if count:
                chunks.append(self._fit(fit, *self._take(list(pending), count)))
            fits.append(fit)
            qy.append(chunks)
        return fits, qy


def _check_chunk(expected: list[float], index: int, layer: int, qy: float) -> None:
    if index >= len(expected) or qy != expected[index]:
        raise ValueError(f"layer {layer}: the verified samples read back (chunk {index + 1}) are not those recorded "
                         f"(sum q y {qy!r}, recorded {expected[index] if index < len(expected) else None!r})")


class _SummedEstimates:
    """The estimates from two passes of sums (StreamedSamples, Float32Samples): per layer fits ``_fits`` and slopes
    ``_t``, residual sums per layer ``_own`` and pooled ``_pooled`` at the pooled slope ``_t_pooled``, and (Float32Samples,
    TableSamples) ``_raw`` at ``_t_raw``, the pooled slope without the fit over the previous symbol."""

    _raw: _ResidualSums | None = None

    def _slopes(self, fits: list[_FitSums], pooled: bool = True, raw: bool = False) -> None:
        """Each layer's slopes (b over the previous symbol, then t), the pooled slope and the raw one from pass 1's
        sums, with empty residual sums for pass 2 to fill."""
        self._fits = fits
        self._b = [fit.previous_symbol() for fit in fits]
        self._t = [fit.qy_after(b) / fit.qq if fit.qq > 0.0 else 0.0 for fit, b in zip(fits, self._b)]
        qq = sum(fit.qq for fit in fits)
        self._t_pooled = (sum(f.qy_after(b) for f, b in zip(fits, self._b)) / qq if qq > 0.0 else 0.0) \
            if pooled else None
        self._t_raw = (sum(f.qy for f in fits) / qq if qq > 0.0 else 0.0) if raw else None
        self._own = [_ResidualSums() for _ in fits]
        self._pooled = _ResidualSums() if pooled else None
        self._raw = _ResidualSums() if raw else None

    @property
    def sizes(self) -> list[int]:
        return [fit.n for fit in self._fits]

    def layer_estimate(self, layer: int, detector: verification.ServerDetector) -> verification.ChannelEstimate:
        """The layer's estimate after the fit over the previous symbol (PooledSamples.layer_estimate's)."""
        return _estimate(self._t[layer], self._fits[layer], self._own[layer], detector)

    def pooled_estimate(self, detector: verification.ServerDetector) -> verification.ChannelEstimate:
        """Every layer pooled after each layer's fit over the previous symbol (PooledSamples.pooled_estimate's)."""
        if self._pooled is None:
            raise ValueError(f"pooled_estimate needs {type(self).__name__}(..., pooled=True)")
        return _estimate(self._t_pooled, list(self._fits), self._pooled, detector)

    def raw_estimate(self, detector: verification.ServerDetector) -> verification.ChannelEstimate:
        """Every layer pooled, no fit over the previous symbol: estimate_channel on the concatenated arrays."""
        if self._raw is None:
            raise ValueError(f"raw_estimate needs {type(self).__name__}(..., raw=True)")
        return _estimate(self._t_raw, list(self._fits), self._raw, detector)


class StreamedSamples(_SummedEstimates):
    """The verified samples of `layers` layers read through `chunks` (twice, both passes here); only sums are kept.

    `running`: pass 1 already summed as the samples were recorded (RunningFits.snapshot()): the chunks are read
    once, and each chunk's sum q y must equal the one recorded (ValueError otherwise: the file does not hold the
    samples that were summed). `scatter`: (points, layer, seed): pass 2 also keeps that many (sent, returned)
    samples of `layer` drawn uniformly without replacement (`scattered`, a figure's), so no third read is needed."""

    pass_2_threads = 2  # pass 2's blocks summed on this many workers; merged in order, so the bits do not depend on it

    def __init__(self, chunks: Chunks, layers: int, running: tuple[list[_FitSums], list[list[float]]] | None = None,
                 scatter: tuple[int, int, int] | None = None):
        scratch = _Scratch()
        if running is None:
            fits = [_FitSums() for _ in range(layers)]
            for layer, fit in enumerate(fits):
                for sent, returned in chunks(layer):
                    fit.add(np.asarray(sent).ravel(), np.asarray(returned, dtype=np.float64).ravel(), scratch)
            expected_qy = None
        else:
            fits, expected_qy = running
            if len(fits) != layers:
                raise ValueError(f"running sums of {len(fits)} layers given for {layers} layers")
        self._slopes(fits)
        self.scatter_request, picked = scatter, ([], [])
        pick = None if scatter is None else scatter_indices(fits[scatter[1]].n, scatter[0], scatter[2])
        with ThreadPoolExecutor(self.pass_2_threads, thread_name_prefix="qslab-pass-2") as workers:
            local = threading.local()
            for layer in range(layers):
                scattered = pick if scatter is not None and layer == scatter[1] else None
                self._pass_2(layer, chunks, expected_qy, scratch, workers, local, scattered, picked)
        self.scattered = ((np.concatenate(picked[0]), np.concatenate(picked[1])) if picked[0]
                          else (np.empty(0), np.empty(0)))

    def _pass_2(self, layer: int, chunks: Chunks, expected_qy: list[list[float]] | None, scratch: _Scratch,
                workers: ThreadPoolExecutor, local: threading.local, pick: np.ndarray | None,
                picked: tuple[list, list]) -> None:
        """One layer's residual sums: each chunk's blocks summed on the workers while this thread checks the chunk's
        sum q y; `pick`: the chunk-spanning indices of the scatter's samples."""
        last, read, start = 0.0, 0, 0
        for sent, returned in chunks(layer):
            sent, returned = np.asarray(sent).ravel(), np.asarray(returned).ravel()
            n = sent.size
            if not n:
                continue
            if returned.size != n:
                raise ValueError(f"layer {layer}: a chunk of {n} sent and {returned.size} returned samples")
            if pick is not None:
                inside = pick[(pick >= start) & (pick < start + n)] - start
                picked[0].append(sent[inside])
                picked[1].append(returned[inside])
            start += n
            blocks = [(layer, sent[first:first + RESIDUAL_BLOCK_VALUES], returned[first:first + RESIDUAL_BLOCK_VALUES],
                       float(sent[first - 1]) if first else last, local) for first in range(0, n, RESIDUAL_BLOCK_VALUES)]
            # a chunk of one block is summed here, after the check: handing it to a worker would only add the hand-over
            summing = [workers.submit(self._block_residuals, *block) for block in blocks] if len(blocks) > 1 else None
            if expected_qy is not None:  # sum q y over the chunk, as pass 1 summed it (a float32 product is exact)
                qy = _sum(np.multiply(sent, returned, out=scratch.get(1, n), dtype=np.float64))
                _check_chunk(expected_qy[layer], read, layer, qy)
            read += 1
            sums = [self._block_residuals(*blocks[0])] if summing is None else [block.result() for block in summing]
            for own, pooled in sums:  # merged in the blocks' order, whichever worker finished first
                self._own[layer].merge(*own)
                self._pooled.merge(*pooled)
            last = float(sent[-1])
        if expected_qy is not None and read != len(expected_qy[layer]):
            raise ValueError(f"layer {layer}: {read} chunks of verified samples read back, "
                             f"{len(expected_qy[layer])} were recorded")

    def _block_residuals(self, layer: int, sent: np.ndarray, returned: np.ndarray, last: float,
                         local: threading.local) -> tuple[tuple, tuple]:
        """Pass 2 over one block, on a worker: the sums (_ResidualSums.merge's arguments) of y - b q_prev - t q at the
        layer's t and at the pooled t, computed in the worker's own scratch buffers (the
        operations of the array expressions, in their order)."""
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = _Scratch()
        q, previous = scratch.shifted(sent.size, last, sent)
        y, work = scratch.get(2, sent.size), scratch.get(3, sent.size)
        np.copyto(y, returned, casting="same_kind")
        np.subtract(y, np.multiply(previous, self._b[layer], out=work), out=y)
        same = self._t_pooled == self._t[layer]  # one layer with samples: its t and residuals are the pooled ones
        own = _ResidualSums.chunk_in_place(np.subtract(y, np.multiply(q, self._t[layer], out=work), out=work))
        if same:
            return own, own
        return own, _ResidualSums.chunk_in_place(np.subtract(y, np.multiply(q, self._t_pooled, out=work), out=work))

    def figure_line(self, layer: int = 0) -> tuple[float, float, float] | None:
        """(slope sum q y / sum q^2 before the previous symbol is removed, least and largest q) of `layer`, or None."""
        fit = self._fits[layer] if layer < len(self._fits) else None
        if fit is None or not fit.n or not fit.qq > 0.0:
            return None
        return fit.qy / fit.qq, fit.low, fit.high


FLOAT32_BLOCK_SAMPLES = 2**15  # Float32Samples' work block: 128 kB per float32 buffer, the few it uses stay in L2


def _add_float32_moments(r: np.ndarray, sums: _ResidualSums, work: np.ndarray) -> None:
    """One float32 block of residuals into `sums`: float32 powers and pairwise sums (np.add.reduce), float64 totals;
    sum r^2 accumulated in float64 (the excess noise is <r^2> - 1 - v_el, which magnifies the sum's rounding ~1e3-fold:
    a float32 pairwise sum left ~1e-9 of <r^2>, i.e. ~1e-6 of the excess noise). A block whose r^8 overflows float32
    (or holds a NaN) is summed in float64 instead. `work`: >= r.size floats."""
    powers = work[:r.size]
    r2 = float(np.add.reduce(np.multiply(r, r, out=powers), dtype=np.float64))
    r4 = float(np.add.reduce(np.multiply(powers, powers, out=powers)))
    r8 = float(np.add.reduce(np.multiply(powers, powers, out=powers)))
    if not math.isfinite(r8):
        sums.add(r.astype(np.float64))
        return
    sums.merge(r.size, r2, r4, max(r8 - r4 * r4 / r.size, 0.0))


class Float32Samples(_SummedEstimates):
    """The verified samples of `layers` layers as float32 chunks in memory, read through `chunks` twice; sums only kept.

    The estimates of StreamedSamples (two passes: the fit over the previous symbol, then the residuals' moments),
    summed in blocks of FLOAT32_BLOCK_SAMPLES: products and their pairwise sums (np.sum) in float32, block totals
    merged in float64. No BLAS call: a float32 BLAS dot of positive terms drifts (3e-7 relative on a simulation's
    q^2), and its result would depend on OpenBLAS's thread count; these sums are the same in any thread under any
    setting. The estimates agree with the pooled float64 route to ~1e-8 relative (tests allow 1e-6), far below
    their statistical spread (sqrt(2/n): 2.5e-4 for the 3e7 samples of a 10k-image simulation). A block whose r^8
    overflows float32 (a residual beyond ~6e4 SNU: an attack, never the honest link) is summed in float64 instead.

    `raw=True` also sums the residuals of the fit without the previous symbol pooled over every layer
    (`raw_estimate`: what verification.verify computes on the pooled arrays); `pooled=False` skips the pooled fit
    with the previous symbol (`pooled_estimate`). `chunks(layer)` yields (sent, returned) pairs of equal size, any
    shape (flattened in C order) and float dtype; a pair may reuse the previous pair's buffers.
    """

    def __init__(self, chunks: Chunks, layers: int, raw: bool = False, pooled: bool = True):
        self._block = np.empty(FLOAT32_BLOCK_SAMPLES + 1, dtype=np.float32)  # [q_prev of the block, q ...]
        self._work = [np.empty(FLOAT32_BLOCK_SAMPLES, dtype=np.float32) for _ in range(4)]
        self._fits = [_FitSums() for _ in range(layers)]
        for layer, fit in enumerate(self._fits):
            self._fit_pass(fit, chunks(layer))
        self._slopes(self._fits, pooled, raw)
        with np.errstate(over="ignore"):  # a float32 r^8 that overflows is summed again in float64 (_add_moments)
            for layer in range(layers):
                self._residual_pass(layer, chunks(layer))

    def _fit_pass(self, fit: _FitSums, chunks) -> None:
        """Pass 1 of one layer: the sums of _FitSums."""
        for q, previous, y in self._blocks(chunks):
            product = self._work[0][:q.size]
            fit.n += q.size
            fit.qq += float(np.add.reduce(np.multiply(q, q, out=product)))
            fit.qp += float(np.add.reduce(np.multiply(q, previous, out=product)))
            fit.qy += float(np.add.reduce(np.multiply(q, y, out=product)))
            fit.py += float(np.add.reduce(np.multiply(previous, y, out=product)))
            fit.last = float(q[-1])
        fit.pp = fit.qq - fit.last * fit.last  # q_prev is q shifted by one sample behind a leading 0
        if not all(math.isfinite(value) for value in (fit.qq, fit.qp, fit.qy, fit.py)):  # the pooled route refuses them
            raise ValueError("sent_quadratures_snu or returned_quadratures_snu contains NaN or inf")

    def _blocks(self, chunks):
        """(q, q_prev, y) float32 views per block, in capture order (q_prev of the first sample: 0)."""
        last = 0.0
        for sent, returned in chunks:
            sent, returned = np.asarray(sent).reshape(-1), np.asarray(returned).reshape(-1)
            if sent.size != returned.size:
                raise ValueError(f"returned_quadratures_snu has {returned.size} samples, sent_quadratures_snu "
                                 f"{sent.size}: they must match")
            for start in range(0, sent.size, FLOAT32_BLOCK_SAMPLES):
                stop = min(start + FLOAT32_BLOCK_SAMPLES, sent.size)
                n = stop - start
                self._block[0] = last
                np.copyto(self._block[1:n + 1], sent[start:stop], casting="same_kind")
                y = returned[start:stop]
                if y.dtype != np.float32:
                    y = self._work[3][:n]
                    np.copyto(y, returned[start:stop], casting="same_kind")
                last = self._block[n]
                yield self._block[1:n + 1], self._block[:n], y

    def _residual_pass(self, layer: int, chunks) -> None:
        """Pass 2 of one layer: its residuals' moments at each fit that uses them."""
        b = np.float32(self._b[layer])
        fits = [(np.float32(self._t[layer]), self._own[layer])]
        if self._pooled is not None:
            fits.append((np.float32(self._t_pooled), self._pooled))
        base_work, r_work = self._work[0], self._work[1]
        for q, previous, y in self._blocks(chunks):
            n = q.size
            base = np.multiply(previous, b, out=base_work[:n])
            np.subtract(y, base, out=base)  # y - b q_prev
            for t, sums in fits:
                self._add_moments(np.subtract(base, np.multiply(q, t, out=r_work[:n]), out=r_work[:n]), sums)
            if self._raw is not None:
                r = np.multiply(q, np.float32(self._t_raw), out=r_work[:n])
                self._add_moments(np.subtract(y, r, out=r), self._raw)

    def _add_moments(self, r: np.ndarray, sums: _ResidualSums) -> None:
        _add_float32_moments(r, sums, self._work[2])




TABLE_BLOCK_SAMPLES = 2**17  # TableSamples' work block (512 kB per float32 buffer, in L3): a quarter of the Python-level
# iterations of FLOAT32_BLOCK_SAMPLES, which matters on its thread (each holds the GIL the inference thread needs), and
# ~15 % less time


@dataclass(frozen=True)
class TableRecord:
    """Verified samples whose sent quadratures are rows of a small table (a simulation's records: each verified row
    sends its X or its P, the same values for every image): sample [i, j, m] was sent as table[choice[i, j], m] and
    came back as returned[i, j, m]; capture order is C order over [i, j, m]."""

    table: np.ndarray     # float [rows of the table, M]
    choice: np.ndarray    # int [I, J], indices into the table
    returned: np.ndarray  # float32 [I, J, M]

    def sent(self) -> np.ndarray:
        """The sent quadratures [I, J, M] written out (float32), as the returned ones are laid out."""
        return np.asarray(self.table, dtype=np.float32)[self.choice]


class TableSamples(_SummedEstimates):
    """Float32Samples' estimates for samples given as TableRecords, without writing the sent samples out.

    Pass 1 needs of the sent side only the table: sum q^2 and sum q q_prev come from how often each table row was
    sent (float64, exact but for the table's own rounding), and sum q y, sum q_prev y from one dot product of each
    returned row with the two table rows its slot can send and their shifts (np.einsum, float32 over M values, no
    BLAS: the same in any thread under any setting). Pass 2 subtracts t q + b q_prev as one gathered table row per
    (image, slot) and sums the residuals' powers as Float32Samples does (float32 blocks of TABLE_BLOCK_SAMPLES,
    float64 totals). Against Float32Samples: the sent samples are never written (twice per pass there) nor
    multiplied sample by sample in pass 1, about half the work; the estimates agree to ~1e-8 relative (tests: 1e-6).

    `records(layer)` yields that layer's TableRecords in capture order (q_prev runs on across records); `raw`,
    `pooled` as for Float32Samples. Efficient while each slot j draws from few table rows (a simulation's: 2).
    """

    def __init__(self, records: Callable[[int], Iterable[TableRecord]], layers: int, raw: bool = False,
                 pooled: bool = True):
        self._work = [np.empty(TABLE_BLOCK_SAMPLES, dtype=np.float32) for _ in range(2)]
        self._fits = [_FitSums() for _ in range(layers)]
        for layer, fit in enumerate(self._fits):
            for record in records(layer):
                self._fit_record(fit, record)
            fit.pp = fit.qq - fit.last * fit.last  # q_prev is q shifted by one sample behind a leading 0
            if not all(math.isfinite(value) for value in (fit.qq, fit.qp, fit.qy, fit.py)):
                raise ValueError("sent_quadratures_snu or returned_quadratures_snu contains NaN or inf")
        self._slopes(self._fits, pooled, raw)
        with np.errstate(over="ignore"):  # a float32 r^8 that overflows is summed again in float64
            for layer in range(layers):
                fits = [(self._t[layer], self._b[layer], self._own[layer])]
                if self._pooled is not None:
                    fits.append((self._t_pooled, self._b[layer], self._pooled))
                if self._raw is not None:
                    fits.append((self._t_raw, 0.0, self._raw))
                last = 0.0
                for record in records(layer):
                    last = self._residual_record(record, fits, last)

    @staticmethod
    def _checked(record: TableRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(table float64 [K, M], choice intp [I, J], returned [I, J, M]) of a record, its shapes checked."""
        table = np.asarray(record.table, dtype=np.float32).astype(np.float64)
        choice = np.asarray(record.choice, dtype=np.intp)
        returned = np.asarray(record.returned)
        if table.ndim != 2 or choice.ndim != 2 or returned.shape != choice.shape + table.shape[1:]:
            raise ValueError(f"returned_quadratures_snu has shape {returned.shape}, the sent ones "
                             f"{choice.shape + table.shape[1:]}: they must match")
        if choice.size and (choice.min() < 0 or choice.max() >= table.shape[0]):
            raise ValueError(f"a TableRecord's choices must index its table of {table.shape[0]} rows")
        return table, choice, returned

    @staticmethod
    def _previous(table: np.ndarray, choice: np.ndarray, last: float) -> np.ndarray:
        """q_prev of each (image, slot)'s first sample: the previous (image, slot)'s last sent value, `last` before."""
        flat = choice.ravel()
        previous = np.empty(flat.size)
        if flat.size:
            previous[0] = last
            previous[1:] = table[flat[:-1], -1]
        return previous

    def _fit_record(self, fit: _FitSums, record: TableRecord) -> None:
        table, choice, returned = self._checked(record)
        if not returned.size:
            return
        flat = choice.ravel()
        counts = np.bincount(flat, minlength=table.shape[0]).astype(np.float64)
        previous = self._previous(table, choice, fit.last)
        fit.n += returned.size
        fit.qq += float(counts @ np.einsum("km,km->k", table, table))
        fit.qp += float(counts @ np.einsum("km,km->k", table[:, 1:], table[:, :-1]) + table[flat, 0] @ previous)
        # each returned row against the table rows its slot sends and their shifts (q_prev inside a row)
        shifted = np.zeros_like(table)
        shifted[:, 1:] = table[:, :-1]
        rows32 = np.concatenate([table, shifted]).astype(np.float32)
        qy = py = 0.0
        for slot in range(choice.shape[1]):
            used, position = np.unique(choice[:, slot], return_inverse=True)
            dots = np.einsum("im,km->ik", returned[:, slot, :], rows32[np.concatenate([used, used + table.shape[0]])])
            picked = np.arange(choice.shape[0])
            qy += float(np.sum(dots[picked, position], dtype=np.float64))
            py += float(np.sum(dots[picked, position + used.size], dtype=np.float64))
        fit.qy += qy
        fit.py += py + float(previous @ returned[:, :, 0].ravel().astype(np.float64))
        fit.last = float(table[flat[-1], -1])

    def _residual_record(self, record: TableRecord, fits, last: float) -> float:
        """Pass 2 over one record: each fit's residuals y - t q - b q_prev into its sums; returns the last q sent."""
        table, choice, returned = self._checked(record)
        if not returned.size:
            return last
        images, slots, modes = returned.shape
        previous = self._previous(table, choice, last).astype(np.float32)
        shifted = np.zeros_like(table)
        shifted[:, 1:] = table[:, :-1]
        subtracted = [((t * table + b * shifted).astype(np.float32), np.float32(b), sums) for t, b, sums in fits]
        step = max(1, TABLE_BLOCK_SAMPLES // (slots * modes))
        residual_work, power_work = self._work
        for first in range(0, images, step):
            stop = min(first + step, images)
            index = choice[first:stop].ravel()
            y = returned[first:stop].reshape(index.size, modes)
            r = residual_work[:y.size].reshape(index.size, modes)
            for rows, b, sums in subtracted:
                np.take(rows, index, axis=0, out=r)
                np.subtract(y, r, out=r)
                if b:  # the first sample of each row: q_prev is the previous row's last value
                    r[:, 0] -= b * previous[first * slots:stop * slots]
                _add_float32_moments(r.reshape(-1), sums, power_work)
        return float(table[choice.ravel()[-1], -1])
