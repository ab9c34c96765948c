"""The link model's fast normal samplers against closed forms, and the streams' reproducibility.

box_muller_32bit_f32 (LinkEngine's shared stream, i.e. `qslab simulate`'s physics mode) is checked by three
independent routes: its moments against N(0, 1)'s, its distribution by Kolmogorov-Smirnov and by a chi-square
over normal-quantile bins reaching |z| > 4, and its values against the Box-Muller formula evaluated in float64
from the same raw words.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import stats

from qslab.analysis.encoding import unit_vectors
from qslab.instruments.sim.link import model as ph
from qslab.instruments.sim.link import random_streams as streams

Z = 5.0  # standard errors allowed for a moment (a false failure once in ~3.5 million runs)
SAMPLES = 2_000_001  # odd: the last sine is dropped


def _close(measured, expected, standard_error, what):
    assert abs(measured - expected) <= Z * standard_error, (
        f"{what}: measured {measured}, expected {expected}, |diff|/SE = {abs(measured - expected) / standard_error}")


@pytest.fixture(scope="module")
def fast_normals() -> np.ndarray:
    return streams.box_muller_32bit_f32(np.random.SFC64(30), np.empty(SAMPLES, dtype=np.float32)).astype(np.float64)


def test_fast_normals_have_standard_normal_moments(fast_normals):
    x, m = fast_normals, fast_normals.size
    _close(x.mean(), 0.0, np.sqrt(1 / m), "mean")
    _close(x.var(), 1.0, np.sqrt(2 / m), "variance")
    _close(stats.skew(x), 0.0, np.sqrt(6 / m), "skewness")
    _close(stats.kurtosis(x), 0.0, np.sqrt(24 / m), "excess kurtosis")
    half = (m + 1) // 2  # the cosine half and the sine half of each pair are independent
    _close(np.corrcoef(x[:half - 1], x[half:])[0, 1], 0.0, np.sqrt(1 / half), "cos-sin correlation")
    _close(np.corrcoef(x[:half - 1] ** 2, x[half:] ** 2)[0, 1], 0.0, np.sqrt(1 / half), "cos^2-sin^2 correlation")


def test_fast_normals_pass_ks_and_tail_chi_square(fast_normals):
    # KS at alpha = 1e-4 on 2e6 samples: the critical distance is sqrt(ln(2/alpha)/(2 m)) = 1.6e-3, so a sampler
    # whose CDF is off by 3e-3 anywhere fails with power > 0.99.
    assert stats.kstest(fast_normals, "norm").pvalue > 1e-4
    # chi-square over 40 equiprobable bins plus two tail bins beyond |z| = 4 (126 expected samples each), at
    # p > 1e-4 (critical 83.5 for chi2(41)): tails 60 % too heavy (or light) beyond 4 sigma, and nothing else
    # wrong, add a noncentrality of 91 and fail with power 0.99; tails cut at 4 sigma add 252 (power 1).
    edges = np.concatenate([[-np.inf, -4.0], stats.norm.ppf(np.linspace(0, 1, 41)[1:-1]), [4.0, np.inf]])
    counts = np.histogram(fast_normals, bins=edges)[0]
    expected = np.diff(stats.norm.cdf(edges)) * fast_normals.size
    assert counts[0] > 60 and counts[-1] > 60
    assert stats.chi2.sf(np.sum((counts - expected) ** 2 / expected), len(counts) - 1) > 1e-4


def test_fast_normals_follow_the_box_muller_formula():
    raw = np.random.SFC64(31).random_raw(1000)
    low, high = (raw & 0xFFFFFFFF).astype(np.float64), (raw >> np.uint64(32)).astype(np.float64)
    radius = np.sqrt(-2.0 * np.log((high + 0.5) * 2.0**-32))
    angle = 2.0 * np.pi * low * 2.0**-32
    out = streams.box_muller_32bit_f32(np.random.SFC64(31), np.empty(2000, dtype=np.float32))
    # float32 rounding of u (6e-8 relative) moves -2 ln u by at most 1.2e-7 absolute, i.e. r by 1.2e-7/r
    tolerance = 1e-5 + 2e-7 / np.minimum(radius, 1.0) + 3e-6 * radius
    assert np.all(np.abs(out[:1000] - radius * np.cos(angle)) <= tolerance)
    assert np.all(np.abs(out[1000:] - radius * np.sin(angle)) <= tolerance)
    with pytest.raises(ValueError, match="float32"):
        streams.box_muller_32bit_f32(np.random.SFC64(0), np.empty(4))


@pytest.mark.parametrize("sampler", sorted(streams.BLOCK_SAMPLERS))
def test_each_sampler_stream_is_independent_of_threads_and_request_sizes(sampler):
    total = 2 * streams.NORMAL_STREAM_BLOCK + 777
    reference = streams.NormalStream([5, 6, 7, 8], threads=0, sampler=sampler).fill(np.empty(total, np.float32))
    threaded = streams.NormalStream([5, 6, 7, 8], threads=2, prefetch=2, sampler=sampler)
    pieces, rng = [], np.random.default_rng(1)
    while sum(p.size for p in pieces) < total:
        size = min(int(rng.integers(1, streams.NORMAL_STREAM_BLOCK // 2)), total - sum(p.size for p in pieces))
        pieces.append(threaded.fill(np.empty(size, dtype=np.float32)))
    threaded.close()
    assert np.array_equal(np.concatenate(pieces), reference)
    # the layout: block k from the k-th spawned child seed
    children = np.random.SeedSequence([5, 6, 7, 8]).spawn(3)
    for k, child in enumerate(children):
        block = streams.BLOCK_SAMPLERS[sampler](child, np.empty(streams.NORMAL_STREAM_BLOCK, np.float32))
        assert np.array_equal(reference[k * streams.NORMAL_STREAM_BLOCK:][:block.size][:total - k * block.size],
                              block[:total - k * block.size])


def test_streams_share_the_process_workers_and_a_closed_stream_draws_no_more():
    """Streams made one after another (one per acquisition on the bench) start no thread of their own, interleaved
    fills still read each stream's own values, and a closed stream's queued blocks are cancelled, not drawn."""
    total = streams.NORMAL_STREAM_BLOCK + 99
    references = [streams.NormalStream([k], threads=0).fill(np.empty(total, np.float32)) for k in (1, 2)]
    first = [streams.NormalStream([k], threads=1, prefetch=2) for k in (1, 2)]
    pieces = [[], []]
    for part in (total // 3, total - total // 3):
        for k, stream in enumerate(first):
            pieces[k].append(stream.fill(np.empty(part, np.float32)))
    for k in (0, 1):
        assert np.array_equal(np.concatenate(pieces[k]), references[k])
    threads_after_first = threading.active_count()
    later = [streams.NormalStream([k], threads=1, prefetch=2) for k in range(3, 8)]
    for stream in later:
        stream.fill(np.empty(10, np.float32))
    assert threading.active_count() == threads_after_first
    assert {stream._pool for stream in first + later} == {streams.shared_workers(1)}
    gate = threading.Event()
    blocker = streams.shared_workers(1).submit(gate.wait)  # holds the worker: the next stream's blocks stay queued
    queued = streams.NormalStream([9], threads=1, prefetch=3)
    queued.prefetch()
    pending = list(queued._pending)
    queued.close()
    gate.set()
    blocker.result()
    assert pending and all(future.cancelled() for future in pending)


def test_samplers_differ_and_unknown_sampler_is_refused():
    a = streams.NormalStream([1], threads=0, sampler="pcg64").fill(np.empty(100, np.float32))
    b = streams.NormalStream([1], threads=0, sampler="sfc64").fill(np.empty(100, np.float32))
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="sampler"):
        streams.NormalStream([1], threads=0, sampler="mt19937")
    with pytest.raises(ValueError, match="sampler"):
        streams.LazyNormalStream(np.random.default_rng(0), sampler="")


def test_link_engine_and_secure_products_use_the_fast_stream(monkeypatch):
    """LinkEngine's shared stream and secure_products' own (the bench's acquisitions) draw SFC64 blocks."""
    monkeypatch.setattr(streams, "VERIFY_THREADS", 0)
    params = ph.LinkParameters(mu_photons=5.0, gain=1.3)
    x = np.random.default_rng(2).standard_normal((20, 16))
    weights = np.random.default_rng(3).standard_normal((30, 16))
    engine = ph.LinkEngine(params, verify_fraction=1.0)
    assert engine.normal_sampler == "sfc64"
    engine(0, weights, x, np.random.default_rng(4))
    returned = engine.outputs[0].verification.returned_quadratures_snu
    # the same call with the stream's sampler switched back to pcg64 draws other samples
    monkeypatch.setattr(ph.LinkEngine, "normal_sampler", "pcg64")
    other = ph.LinkEngine(params, verify_fraction=1.0)
    other(0, weights, x, np.random.default_rng(4))
    assert not np.array_equal(returned, other.outputs[0].verification.returned_quadratures_snu)
    made = []
    original = streams.NormalStream.__init__

    def spy(self, *args, **kwargs):
        made.append(kwargs.get("sampler", args[4] if len(args) > 4 else "pcg64"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(streams.NormalStream, "__init__", spy)
    ph.secure_products(ph.SecureLayer(weights, params).symbols, unit_vectors(x), params, np.random.default_rng(5), 1.0)
    assert made == ["sfc64"]


class _GivenWords:
    """A bit generator stand-in that hands box_muller_32bit_f32 chosen raw words."""

    def __init__(self, words: np.ndarray):
        self.words = words

    def random_raw(self, size: int) -> np.ndarray:
        assert size == self.words.size
        return self.words


def test_fast_normals_variance_is_unbiased_to_a_millionth():
    """The excess noise a verification estimates is ~1e-3 SNU from 3e7 samples (SE 3e-4), so the sampler's variance
    must be 1 far better than sampling can show: over 2^20 strata of the radius word (one word drawn in each) the
    float32 pipeline's E[z^2] equals the float64 Box-Muller formula's on the same words to 1e-6, and that to 1 - 2e-6
    (closed form: E[-2 ln u] = 2 for u uniform on (0, 1])."""
    n, width = 2**20, 2**12
    rng = np.random.default_rng(32)
    high = np.arange(n, dtype=np.uint64) * np.uint64(width) + rng.integers(0, width, n).astype(np.uint64)
    low = rng.integers(0, 2**32, n).astype(np.uint64)
    out = streams.box_muller_32bit_f32(_GivenWords((high << np.uint64(32)) | low), np.empty(2 * n, np.float32))
    z2 = out.astype(np.float64) ** 2
    reference = -2.0 * np.log((high.astype(np.float64) + 0.5) * 2.0**-32)  # r^2 on the same words, in float64
    assert abs(np.mean(z2[:n] + z2[n:]) / np.mean(reference) - 1.0) < 1e-6  # cos^2 + sin^2 = 1: r^2 per pair
    assert abs(np.mean(reference) / 2.0 - 1.0) < 2e-6
