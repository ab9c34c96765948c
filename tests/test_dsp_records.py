"""A record kept as ADC words and filtered a piece at a time (dsp.AdcRecord, record_quadratures_snu) gives bit for bit
what the whole record in float64 volts gives (the digitizer's volts, less the centre, less the tail's mean, the
matched filter): the session's recorded quadratures must not move in their last bit."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis import dsp
from qslab.analysis.blas_threads import one_blas_thread


def _whole_record_route(words, volts_per_count, origin_v, centre_v, tail_start, template, sps, offset, s2, n):
    """What the acquisition did before: the driver's volts, minus the centre, minus the tail's mean, the filter."""
    volts = np.multiply(words, volts_per_count, dtype=np.float64)
    if origin_v:
        volts += origin_v
    volts = volts - centre_v
    dsp.minus_tail_dc(volts, tail_start, out=volts)
    return dsp.quadratures_snu(volts, template, sps, offset, s2, n_symbols=n), volts[tail_start:]


@pytest.mark.parametrize("seed", range(6))
def test_pieces_of_a_word_record_give_the_whole_records_quadratures_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    with one_blas_thread():  # as the session's acquisitions run (a threaded BLAS splits rows where it likes)
        for _ in range(40):
            sps = int(rng.choice([4, 8, 16]))
            symbols = int(rng.integers(2, 30_000))
            words = rng.integers(-30_000, 30_000, size=symbols * sps + int(rng.integers(0, 3 * sps)), dtype=np.int16)
            volts_per_count, centre_v = float(rng.uniform(1e-6, 1e-3)), float(rng.normal())
            origin_v = float(rng.choice([0.0, rng.normal()]))
            template, offset = rng.normal(size=sps), int(rng.integers(0, sps))
            s2 = float(rng.uniform(1e-6, 1e-2))
            n = int(rng.integers(1, (words.size - offset) // sps + 1))
            n = n - n % 4 + 1 if rng.random() < 0.3 and n % 4 != 1 and n > 8 else n  # a last piece of one symbol
            start = int(rng.integers(0, words.size))
            expected, expected_tail = _whole_record_route(words, volts_per_count, origin_v, centre_v, start, template,
                                                          sps, offset, s2, n)
            record = dsp.AdcRecord(words, volts_per_count, origin_v, centre_v)
            tail = record.volts(start)
            dc_v = float(np.mean(tail))
            np.testing.assert_array_equal(np.subtract(tail, dc_v, out=tail), expected_tail)
            for chunk in (4, 64, 4096, n + 8):
                got = dsp.record_quadratures_snu(record, template, sps, offset, s2, n, dc_v, chunk_symbols=chunk)
                assert np.array_equal(got, expected), (sps, n, chunk, np.max(np.abs(got - expected)))


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
