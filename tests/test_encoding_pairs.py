"""The client's complex packing written as one copy gives the values of the complex-arithmetic formula."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis import encoding


def _by_complex_arithmetic(rows: np.ndarray) -> np.ndarray:
    """The packing as written before: v_2i + 1j * v_2i+1, an odd length padded with one zero."""
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], 1))], axis=1)
    return rows[:, 0::2] + 1j * rows[:, 1::2]


@pytest.mark.parametrize("features", [1, 7, 784])
def test_pairs_equal_the_complex_formula_bit_for_bit(features):
    rows = np.random.default_rng(features).standard_normal((40, features))
    rows[0] = 0.0
    rows[1, ::3] = -0.0  # signed zeros: the formula keeps -0.0 in places and makes it +0.0 in others
    rows[2, 1::4] = -0.0
    rows[3, 0::4] = -0.0
    packed, reference = encoding._complex_pairs(rows), _by_complex_arithmetic(rows)
    assert packed.dtype == np.complex128 and packed.shape == reference.shape == (40, -(-features // 2))
    assert np.array_equal(packed.view(np.uint64), reference.view(np.uint64))  # the same bits, signs of zeros too
    assert not np.shares_memory(packed, rows)


@pytest.mark.parametrize("features", [3, 7, 784])
def test_pairs_of_rows_divided_by_their_norms_equal_the_formula_bit_for_bit(features):
    """unit_vectors' route (the division written straight into the pairs) against v / n + 1j * (w / n): signed zeros
    in the data and a tiny negative value whose quotient underflows to -0.0 included."""
    rows = np.random.default_rng(features + 1).standard_normal((40, features))
    rows[1, ::3] = -0.0
    rows[2, 1::4] = -0.0
    rows[3, 0:features - 1:2] = 0.0  # the last value left: no row of zeros
    rows[4, 0] = -1e-320  # / its row's norm (> 1): -0.0
    norms = np.sqrt(np.matmul(rows[:, None, :], rows[:, :, None])[:, 0, 0])
    packed, reference = encoding._complex_pairs(rows, norms), _by_complex_arithmetic(rows / norms[:, None])
    assert np.array_equal(packed.view(np.uint64), reference.view(np.uint64))
    rows = np.abs(rows) + 0.5  # no zero anywhere: the values as divided, untouched
    norms = np.linalg.norm(rows, axis=1)
    assert np.array_equal(encoding._complex_pairs(rows, norms).view(np.uint64),
                          _by_complex_arithmetic(rows / norms[:, None]).view(np.uint64))


def test_unit_vectors_refuse_non_finite_and_zero_rows_and_are_unit():
    data = np.random.default_rng(3).standard_normal((5, 9))
    x_hat = encoding.unit_vectors(data)
    np.testing.assert_allclose(np.sum(np.abs(x_hat) ** 2, axis=1), 1.0, rtol=1e-14)
    norms = np.array([np.linalg.norm(row) for row in data])  # a vector's norm: its BLAS dot, as unit_vectors
    np.testing.assert_array_equal(x_hat, _by_complex_arithmetic(data / norms[:, None]))
    for bad in (np.nan, np.inf, -np.inf):
        broken = data.copy()
        broken[2, 4] = bad
        with pytest.raises(ValueError, match="data must be finite"):
            encoding.unit_vectors(broken)
    data[3] = 0.0
    with pytest.raises(ValueError, match=r"data rows \[3\] have zero norm"):
        encoding.unit_vectors(data)
