"""Synthetic verified samples shared by the tests of the verification's summed estimates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qslab.analysis import verification


def layer_samples(rng, size: int, t: float, b: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 samples as recorded: y = t q + b q_prev + heavy-tailed noise."""
    q = rng.normal(0.0, 3.4, size)
    previous = np.concatenate([[0.0], q[:-1]])
    y = t * q + b * previous + noise * rng.standard_t(6, size)
    return q.astype(np.float32), y.astype(np.float32)


def chunked(samples, sizes):
    """chunks(layer): the layer's samples cut at the given chunk sizes (cycled)."""
    def chunks(layer):
        sent, returned = samples[layer]
        start, k = 0, 0
        while start < sent.size:
            stop = min(start + sizes[k % len(sizes)], sent.size)
            yield sent[start:stop], returned[start:stop]
            start, k = stop, k + 1
    return chunks


def assert_estimates_close(a_estimate: verification.ChannelEstimate, b_estimate: verification.ChannelEstimate,
                           rel: float) -> None:
    """Every field within ``rel`` (relative), the sample count exactly."""
    for field in dataclasses.fields(verification.ChannelEstimate):
        a, b = getattr(a_estimate, field.name), getattr(b_estimate, field.name)
        if field.name == "n_samples":
            assert a == b
        else:
            assert float(a) == pytest.approx(float(b), rel=rel, abs=0.0), field.name
