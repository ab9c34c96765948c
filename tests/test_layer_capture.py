"""LayerCapture.settled: a capture whose server quadratures are still being worked out (run_layer(...,
returned_later=True)) becomes one holding them; their computation's error comes out there."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest

from qslab.sequences.protocol.layers import LayerCapture


def capture(returned) -> LayerCapture:
    return LayerCapture(np.zeros((2, 3), np.float32), np.array([1]), np.zeros((2, 1), bool),
                        np.ones((2, 1, 4), np.float32), returned)


def test_a_pending_capture_settles_to_its_quadratures():
    quadratures = np.arange(8, dtype=np.float32).reshape(2, 1, 4)
    pending = Future()
    pending.set_result(quadratures)
    settled = capture(pending).settled()
    assert settled.returned_snu is quadratures
    assert settled.settled() is settled  # nothing left to wait for


def test_the_error_of_the_pending_quadratures_comes_out_when_it_settles():
    pending = Future()
    pending.set_exception(ValueError("n_symbols must be in [1, 3]"))
    with pytest.raises(ValueError, match="n_symbols"):
        capture(pending).settled()
