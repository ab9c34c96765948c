"""The running sums of the session's checkpoints and leakage cap (analysis/running_samples.py) against the
file-reading route (StreamedSamples), batch after batch: the same estimates to rounding, so the same decisions, without
reading anything back; batches of repeated sent rows (a session's) by their per-column route."""

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


def test_the_two_routes_continue_each_other():
    """Batches of repeated rows after flat samples and flat samples after them, on one layer: each route starts from
    the previous symbol the other left (the first image's first sample follows it), as the file route does."""
    parts = list(session_batches(8, 6))
    running, recorded = RunningSamples(1), []
    for index, ((sent, returned),) in enumerate(parts):
        flat = index in (0, 3, 4)
        running.add(0, sent.ravel() if flat else sent, returned.ravel() if flat else returned)
        recorded.append([(sent.ravel(), returned.ravel())])
        assert close(running.pooled_estimate(DETECTOR), streamed(recorded).pooled_estimate(DETECTOR))


def session_batches(seed: int, count: int, images: int = 40, modes: int = 7):
    """Verified samples per batch as a session takes them: [images, rows, modes], the same sent rows for every image
    of a batch (other rows each batch, none in one), returned light with a previous-symbol tail and heavy tails."""
    rng = np.random.default_rng(seed)
    last = 0.0
    for batch in range(count):
        rows = 0 if batch == 2 else int(rng.integers(1, 4))
        sent_rows = (2.5 * rng.standard_normal((rows, modes))).astype(np.float32)
        sent = np.broadcast_to(sent_rows, (images, rows, modes)).astype(np.float32)
        flat = sent.ravel().astype(np.float64)
        previous = np.concatenate([[last], flat[:-1]]) if flat.size else flat
        y = 0.74 * flat + 0.01 * previous + 1.02 * rng.standard_normal(flat.size) + 0.05 * rng.standard_t(5, flat.size)
        last = float(flat[-1]) if flat.size else last
        yield [(sent, y.astype(np.float32).reshape(sent.shape))]


@pytest.mark.parametrize("seed", [4, 5])
def test_batches_with_repeated_rows_are_summed_per_column_and_equal_the_file_route(seed, monkeypatch):
    """The fast route (per column, then over one image's columns) against StreamedSamples on the same samples as a
    file holds them (flat chunks): the same estimates after every batch, and the product-by-product route unused."""
    from qslab.analysis import running_samples

    def refused(*args):
        raise AssertionError("a batch of repeated rows was summed product by product")

    monkeypatch.setattr(running_samples._LayerSums, "_add_samples", refused)
    running, recorded = RunningSamples(1), []
    for samples in session_batches(seed, 7):
        running.add_batch(samples)
        recorded.append([(sent.ravel(), returned.ravel()) for sent, returned in samples])
        reference = streamed(recorded)
        assert running.sizes == reference.sizes
        assert close(running.pooled_estimate(DETECTOR), reference.pooled_estimate(DETECTOR))
        assert close(running.layer_estimate(0, DETECTOR), reference.layer_estimate(0, DETECTOR))


def test_the_two_routes_give_the_same_power_sums():
    """One batch of repeated rows summed per column and, flattened, product by product: the 66 sums agree."""
    per_column, per_product = RunningSamples(1), RunningSamples(1)
    for (sent, returned), in session_batches(6, 4, images=25, modes=11):
        per_column.add(0, sent, returned)
        per_product.add(0, sent.ravel(), returned.ravel())
    a, b = per_column._summed()[0], per_product._summed()[0]
    for degree in (2, 4, 8):
        np.testing.assert_allclose(a.powers[degree], b.powers[degree], rtol=1e-12, atol=1e-9)


def test_a_sum_that_failed_on_the_worker_is_raised_by_the_next_estimate():
    """Sent samples without modulation: the reference fit cannot be solved on the worker; the next estimate says so."""
    running = RunningSamples(1)
    running.add(0, np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32))
    with pytest.raises(np.linalg.LinAlgError):
        running.pooled_estimate(DETECTOR)
    with pytest.raises(ValueError, match="expected the same shape"):
        running.add(0, np.ones((2, 3)), np.ones((3, 2)))
