"""TableSamples (the simulation's verification from the sent table, never writing the sent samples out) against the
pooled array route (verification.remove_previous_symbol then estimate_channel, float64) and Float32Samples.

The samples are built as a simulation's records are: per record, each slot j of J sends row choice[i, j] of a small
table for every image i, and y = t q + b q_prev + heavy-tailed noise in capture order (C order over [i, j, m]), the
previous symbol running on across slots, images and records. Float32 rounding: estimates within 1e-6 relative.
"""

from __future__ import annotations

import numpy as np
import pytest

from channel_samples import assert_estimates_close

from qslab.analysis import verification
from qslab.analysis.verified_samples import (TABLE_BLOCK_SAMPLES, Float32Samples, PooledSamples, TableRecord,
                                             TableSamples)

DETECTOR = verification.ServerDetector(efficiency=0.7, electronic_noise_snu=0.02)
CLOSE = 1e-6


def table_records(rng, shapes, table_rows: int, t: float, b: float, noise: float) -> list[TableRecord]:
    """Records of shapes (images, slots, modes) sharing the modes; slot j draws from table rows j and j + slots
    (as a simulation's X or P) or, with table_rows > 2 slots, from any row."""
    records, last = [], 0.0
    for images, slots, modes in shapes:
        table = rng.normal(0.0, 3.4, (table_rows, modes)).astype(np.float32)
        if table_rows == 2 * slots:
            choice = np.arange(slots) + slots * (rng.random((images, slots)) < 0.5)
        else:
            choice = rng.integers(0, table_rows, (images, slots))
        q = table[choice].astype(np.float64).ravel()
        previous = np.concatenate([[last], q[:-1]])
        last = q[-1] if q.size else last
        y = t * q + b * previous + noise * rng.standard_t(6, q.size)
        records.append(TableRecord(table, choice, y.astype(np.float32).reshape(images, slots, modes)))
    return records


def pooled(records: list[TableRecord]) -> tuple[np.ndarray, np.ndarray]:
    if not records:
        return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.float32)
    return (np.concatenate([r.sent().ravel() for r in records]),
            np.concatenate([r.returned.ravel() for r in records]))


@pytest.mark.parametrize("table_rows", [16, 5])
def test_table_sums_give_the_pooled_estimates(table_rows):
    rng = np.random.default_rng(21)
    # layer 0: three records (one of them larger than a work block), layer 1: one small record
    layers = [table_records(rng, [(40, 8, 97), (TABLE_BLOCK_SAMPLES // (8 * 97) + 7, 8, 97), (1, 8, 97)],
                            table_rows, 0.74, 0.05, 1.02),
              table_records(rng, [(30, 8, 61)], table_rows, 0.71, -0.03, 1.1)]
    samples = [pooled(records) for records in layers]
    reference = PooledSamples(samples)
    summed = TableSamples(lambda layer: iter(layers[layer]), 2, raw=True)
    assert summed.sizes == reference.sizes == [s.size for s, _ in samples]
    for layer in range(2):
        assert_estimates_close(summed.layer_estimate(layer, DETECTOR), reference.layer_estimate(layer, DETECTOR), CLOSE)
    assert_estimates_close(summed.pooled_estimate(DETECTOR), reference.pooled_estimate(DETECTOR), CLOSE)
    sent = np.concatenate([s for s, _ in samples])
    returned = np.concatenate([r for _, r in samples])
    assert_estimates_close(summed.raw_estimate(DETECTOR), verification.estimate_channel(sent, returned, DETECTOR),
                           CLOSE)
    # and Float32Samples, which writes every sent sample out, on the same samples
    written = Float32Samples(lambda layer: iter([samples[layer]]), 2, raw=True)
    assert_estimates_close(summed.raw_estimate(DETECTOR), written.raw_estimate(DETECTOR), CLOSE)
    assert_estimates_close(summed.layer_estimate(0, DETECTOR), written.layer_estimate(0, DETECTOR), CLOSE)


def test_a_layer_without_records_and_an_empty_record_are_skipped():
    rng = np.random.default_rng(22)
    records = table_records(rng, [(20, 4, 50), (0, 4, 50), (15, 4, 50)], 8, 0.9, 0.02, 1.0)
    summed = TableSamples(lambda layer: iter(records if layer == 0 else []), 2, raw=True, pooled=False)
    assert summed.sizes == [35 * 4 * 50, 0]
    sent, returned = pooled(records)
    assert_estimates_close(summed.raw_estimate(DETECTOR), verification.estimate_channel(sent, returned, DETECTOR),
                           CLOSE)
    assert_estimates_close(summed.layer_estimate(0, DETECTOR), PooledSamples([(sent, returned)]).layer_estimate(
        0, DETECTOR), CLOSE)


def test_a_residual_too_large_for_float32_powers_is_summed_in_float64():
    rng = np.random.default_rng(23)
    records = table_records(rng, [(50, 4, 30)], 8, 0.8, 0.0, 1.0)
    records[0].returned[3, 1, 7] = 2e5
    sent, returned = pooled(records)
    summed = TableSamples(lambda _: iter(records), 1, raw=True, pooled=False).raw_estimate(DETECTOR)
    assert np.isfinite(float(summed.se_fourth_residual_snu4))
    assert_estimates_close(summed, verification.estimate_channel(sent, returned, DETECTOR), CLOSE)


def test_nan_samples_mismatched_shapes_and_bad_choices_are_refused_in_one_line():
    rng = np.random.default_rng(24)
    record = table_records(rng, [(10, 4, 30)], 8, 0.8, 0.0, 1.0)[0]
    returned = record.returned.copy()
    returned[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="contains NaN or inf"):
        TableSamples(lambda _: iter([TableRecord(record.table, record.choice, returned)]), 1)
    with pytest.raises(ValueError, match="must match"):
        TableSamples(lambda _: iter([TableRecord(record.table, record.choice, record.returned[:, :, :29])]), 1)
    with pytest.raises(ValueError, match="must index its table of 8 rows"):
        TableSamples(lambda _: iter([TableRecord(record.table, record.choice + 8, record.returned)]), 1)
