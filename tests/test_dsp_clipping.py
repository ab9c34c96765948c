"""The clipping count the acquisition runs on every record (analysis/dsp.py): its shortcut (no sample near a rail,
read from the record's min and max) against counting the samples on the rails one by one."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis import dsp

FULL_SCALE_V, BITS = 0.2, 8


def _on_rails(samples_v: np.ndarray) -> int:
    low, high = dsp.adc_rails_v(FULL_SCALE_V, BITS)
    half_lsb = 0.5 * FULL_SCALE_V / 2 ** (BITS - 1)
    return sum(1 for v in np.ravel(samples_v) if v >= high - half_lsb or v <= low + half_lsb)


@pytest.mark.parametrize("case", ["inside", "upper rail", "lower rail", "both", "just inside", "nan", "empty", "2-D"])
def test_the_clipping_count_equals_the_samples_on_the_rails(case):
    rng = np.random.default_rng(4)
    low, high = dsp.adc_rails_v(FULL_SCALE_V, BITS)
    half_lsb = 0.5 * FULL_SCALE_V / 2 ** (BITS - 1)
    samples = np.clip(rng.normal(0.0, 0.03, 10_000), low + 2 * half_lsb, high - 2 * half_lsb)
    if case == "upper rail":
        samples[[5, 77]] = high
    elif case == "lower rail":
        samples[9_999] = low - 1.0
    elif case == "both":
        samples[[0, 1, 2]] = [high, low, high - half_lsb]
    elif case == "just inside":
        samples[[3, 4]] = [np.nextafter(high - half_lsb, 0.0), np.nextafter(low + half_lsb, 0.0)]
    elif case == "nan":
        samples[[10, 11]] = [np.nan, high]
    elif case == "empty":
        samples = samples[:0]
    elif case == "2-D":
        samples = samples.reshape(100, 100)
        samples[7, 7] = low
    expected = _on_rails(samples)
    assert dsp.count_clipped(samples, FULL_SCALE_V, BITS) == expected
    assert expected == {"inside": 0, "upper rail": 2, "lower rail": 1, "both": 3, "just inside": 0, "nan": 1,
                        "empty": 0, "2-D": 1}[case]
