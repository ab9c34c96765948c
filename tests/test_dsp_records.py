"""A record kept as ADC words (dsp.AdcRecord): its tail in volts is bit for bit the whole record's in float64 volts
(the digitizer's volts, less the centre, less the tail's mean), and the quadratures filtered from its words a piece at
a time (record_quadratures_snu) are the matched filter of those volts to float64 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis import dsp


def _whole_record_route(words, volts_per_count, origin_v, centre_v, tail_start, template, sps, offset, s2, n):
    """What the acquisition did before: the driver's volts, minus the centre, minus the tail's mean, the filter."""
    volts = np.multiply(words, volts_per_count, dtype=np.float64)
    if origin_v:
        volts += origin_v
    volts = volts - centre_v
    dsp.minus_tail_dc(volts, tail_start, out=volts)
    return dsp.quadratures_snu(volts, template, sps, offset, s2, n_symbols=n), volts[tail_start:]


@pytest.mark.parametrize("seed", range(6))
def test_quadratures_from_the_words_are_the_whole_records_to_rounding(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        sps = int(rng.choice([4, 8, 16]))
        symbols = int(rng.integers(2, 30_000))
        words = rng.integers(-30_000, 30_000, size=symbols * sps + int(rng.integers(0, 3 * sps)), dtype=np.int16)
        volts_per_count, centre_v = float(rng.uniform(1e-6, 1e-3)), float(rng.normal())
        origin_v = float(rng.choice([0.0, rng.normal()]))
        template, offset = rng.normal(size=sps), int(rng.integers(0, sps))
        s2 = float(rng.uniform(1e-6, 1e-2))
        n = int(rng.integers(1, (words.size - offset) // sps + 1))
        start = int(rng.integers(0, words.size))
        expected, expected_tail = _whole_record_route(words, volts_per_count, origin_v, centre_v, start, template,
                                                      sps, offset, s2, n)
        record = dsp.AdcRecord(words, volts_per_count, origin_v, centre_v)
        tail = record.volts(start)
        dc_v = float(np.mean(tail))
        np.testing.assert_array_equal(np.subtract(tail, dc_v, out=tail), expected_tail)
        # each quadrature sums sps terms of |g_n| |v_n| at most: float64 rounding of those, with room to spare
        unit = template / np.linalg.norm(template)
        largest_v = 30_000 * volts_per_count + abs(origin_v) + abs(centre_v) + abs(dc_v)
        tolerance = 1e-13 * np.abs(unit).sum() * largest_v / np.sqrt(s2)
        # a chunk of one or three symbols on the shorter records only (one loop step per chunk: on 30,000 symbols they
        # were most of this test's CPU), an odd chunk on the longer ones
        for chunk in ((1, 3) if n <= 2_000 else (97,)) + (64, 4096, n + 8):
            got = dsp.record_quadratures_snu(record, template, sps, offset, s2, n, dc_v, chunk_symbols=chunk)
            assert got.shape == expected.shape
            assert np.max(np.abs(got - expected)) <= tolerance, (sps, n, chunk)


def test_quadratures_of_a_volts_record_are_its_matched_filter():
    """A digitizer without words (volts_per_count 1, no origin): the filter of its volts less centre and DC."""
    rng = np.random.default_rng(4)
    volts, template = rng.normal(size=8 * 500 + 3), rng.normal(size=8)
    record = dsp.AdcRecord(volts, 1.0, 0.0, 0.25)
    got = dsp.record_quadratures_snu(record, template, 8, 3, 2.0, 500, dc_v=0.125, chunk_symbols=7)
    expected = dsp.quadratures_snu(volts - 0.375, template, 8, 3, 2.0, n_symbols=500)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_extremes_and_clipping_from_the_words_equal_the_volts():
    rng = np.random.default_rng(9)
    for _ in range(200):
        words = rng.integers(-2048, 2048, size=int(rng.integers(1, 500)), dtype=np.int16)
        record = dsp.AdcRecord(words, float(rng.uniform(1e-4, 1e-2)), float(rng.choice([0.0, rng.normal()])),
                               float(rng.normal(scale=0.1)))
        volts = record.volts()
        assert record.extremes_v() == (volts.min(), volts.max())
        full_scale_v = float(rng.uniform(0.5, 1.5) * np.abs(volts).max())
        assert dsp.count_clipped_record(record, full_scale_v, 12) == dsp.count_clipped(volts, full_scale_v, 12)


def test_a_volts_record_is_its_volts_less_the_centre():
    """A digitizer without words hands its volts over as words with volts_per_count 1: the same values."""
    volts = np.random.default_rng(3).normal(size=1000)
    record = dsp.AdcRecord(volts, 1.0, 0.0, 0.25)
    np.testing.assert_array_equal(record.volts(), volts - 0.25)
    np.testing.assert_array_equal(record.volts(10, 20), volts[10:20] - 0.25)


def test_bad_arguments_are_refused_naming_them():
    record = dsp.AdcRecord(np.zeros(80, np.int16), 1e-3)
    with pytest.raises(ValueError, match="n_symbols must be in"):
        dsp.record_quadratures_snu(record, np.ones(8), 8, 0, 1.0, 11)
    with pytest.raises(ValueError, match="shot_noise_variance_v2"):
        dsp.record_quadratures_snu(record, np.ones(8), 8, 0, 0.0, 10)
    with pytest.raises(ValueError, match="template length"):
        dsp.record_quadratures_snu(record, np.ones(4), 8, 0, 1.0, 10)
