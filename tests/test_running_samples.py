"""The leakage cap's running sums (analysis/running_samples.py) against the file-reading route (StreamedSamples),
batch after batch: the same estimates to rounding, so the same cap decisions, without reading anything back."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis.estimate import Estimate
from qslab.analysis.measured_values import server_detector
from qslab.analysis.running_samples import RunningSamples
from qslab.analysis.verified_samples import StreamedSamples

DETECTOR = server_detector(Estimate(0.8, 0.01), Estimate(0.01, 0.001), 3.0)
FIELDS = ("amplitude_transmittance", "residual_variance_snu", "sum_sq_sent_snu2", "mean_sq_residual_snu2",
          "mean_fourth_residual_snu4", "se_fourth_residual_snu4", "transmittance", "excess_noise_snu")


def batches(seed: int, count: int, layers: int = 2):
    """Verified samples per batch and layer as a session records them: float32, a channel with a previous-symbol
    tail, batch sizes that vary (one batch with no verified sample on layer 2)."""
    rng = np.random.default_rng(seed)
    for batch in range(count):
        samples = []
        for layer in range(layers):
            size = 0 if (layer == 1 and batch == 2) else int(rng.integers(50, 3000))
            q = (2.5 * rng.standard_normal(size)).astype(np.float32)
            previous = np.concatenate([[0.0], q[:-1]])
            y = 0.74 * q + 0.01 * previous + 1.02 * rng.standard_normal(size) + 0.05 * rng.standard_t(5, size)
            samples.append((q, y.astype(np.float32)))
        yield samples


def streamed(recorded: list) -> StreamedSamples:
    """The reference: StreamedSamples over everything so far, chunked as a file read would (batch by batch)."""
    return StreamedSamples(lambda layer: [batch[layer] for batch in recorded], len(recorded[0]))


def close(a, b) -> bool:
    return all(np.isclose(float(getattr(a, f)), float(getattr(b, f)), rtol=1e-12, atol=1e-15) for f in FIELDS)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_running_estimates_equal_the_streamed_ones_after_every_batch(seed):
    running, recorded = RunningSamples(2), []
    for samples in batches(seed, 8):
        running.add_batch(samples)
        recorded.append(samples)
        reference = streamed(recorded)
        assert running.sizes == reference.sizes
        for layer in range(2):
            if reference.sizes[layer] >= 2:
                assert close(running.layer_estimate(layer, DETECTOR), reference.layer_estimate(layer, DETECTOR))
        assert close(running.pooled_estimate(DETECTOR), reference.pooled_estimate(DETECTOR))


def test_from_chunks_continues_where_a_resumed_file_left_off():
    all_batches = list(batches(5, 6))
    running = RunningSamples.from_chunks(lambda layer: [b[layer] for b in all_batches[:3]], 2)
    for samples in all_batches[3:]:
        running.add_batch(samples)
    reference = streamed(all_batches)
    assert close(running.pooled_estimate(DETECTOR), reference.pooled_estimate(DETECTOR))
