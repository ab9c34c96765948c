"""The server record's quadratures come from a worker thread (sequences/protocol/acquisition.py), so a batch is taken
only once every layer's are in: run_batch waits for each, inside the guard's take, and a failure there is the batch's.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from qslab.sequences.protocol.layers import LayerCapture
from qslab.sequences.protocol.acquisition import LinkAcquisition
from qslab.sequences.session import run_batch

IMAGES, ROWS = 3, 4


def capture(returned) -> LayerCapture:
    client = np.arange(IMAGES * ROWS, dtype=np.float32).reshape(IMAGES, ROWS) + 1.0
    return LayerCapture(client, np.array([1]), np.zeros((IMAGES, 1), bool), np.zeros((IMAGES, 1, 2), np.float32),
                        returned)


def test_a_captures_returned_quadratures_are_an_array_or_what_its_future_gives():
    array = np.ones((IMAGES, 1, 2), np.float32)
    assert capture(array).returned_snu is array
    future = Future()
    future.set_result(array)
    assert capture(future).returned_snu is array
    failed = Future()
    failed.set_exception(ValueError("n_symbols must be in [1, 8]"))
    with pytest.raises(ValueError, match="n_symbols"):
        capture(failed).returned_snu  # noqa: B018


class WorkerLink:
    """A link whose layers return at once, their server quadratures still being computed on another thread."""

    def __init__(self, fail_layer: int | None = None):
        self.release = threading.Event()
        self.finished: list[int] = []
        self.pool = ThreadPoolExecutor(2)
        self.fail_layer = fail_layer

    def plan_layer(self, index, rng):
        return index

    def run_layers(self, plans, data, between, next_data=None, next_plan=None):
        captures = []
        for index in plans:
            captures.append(self.run_plan(index, data))
            data = between(captures[-1].client_quadratures_snu)
        return captures

    def run_plan(self, index, data):
        def quadratures():
            self.release.wait(5.0)
            self.finished.append(index)
            if index == self.fail_layer:
                raise ValueError(f"layer {index + 1}: unreadable record")
            return np.full((IMAGES, 1, 2), float(index), np.float32)

        return capture(self.pool.submit(quadratures))


def test_run_batch_returns_only_once_every_layers_server_quadratures_are_in():
    link = WorkerLink()
    threading.Timer(0.05, link.release.set).start()
    captures, guess = run_batch(link, 2, np.zeros((IMAGES, 784), np.uint8), seed=0, batch=0)
    assert sorted(link.finished) == [0, 1]  # both computed before run_batch returned
    assert all(c.returned.done() for c in captures) and guess.shape == (IMAGES,)
    np.testing.assert_array_equal(captures[1].returned_snu, np.ones((IMAGES, 1, 2), np.float32))


def test_a_failure_on_the_worker_is_raised_by_run_batch():
    link = WorkerLink(fail_layer=0)
    link.release.set()
    with pytest.raises(ValueError, match="layer 1: unreadable record"):
        run_batch(link, 2, np.zeros((IMAGES, 784), np.uint8), seed=0, batch=0)


def test_a_layer_that_fails_leaves_no_set_up_started_ahead_running_when_run_layers_raises():
    """The next layer's set-ups may be under way on their workers (LinkAcquisition.run_layers): the batch's failure
    leaves only once they are over (settle_ahead), so that the cure talks to idle instruments."""

    class FailingLink(LinkAcquisition):
        def __init__(self):
            self.settled, self.ran = 0, []

        def _run_plan(self, plan, data, following=None, between=None):
            self.ran.append(plan)
            if plan == 1:
                raise TimeoutError("digitizer: no reply")
            return capture(np.zeros((IMAGES, 1, 2), np.float32)), between(np.ones((IMAGES, ROWS), np.float32))

        def settle_ahead(self):
            self.settled += 1

    link = FailingLink()
    with pytest.raises(TimeoutError, match="no reply"):
        link.run_layers([0, 1], np.ones((IMAGES, 4)), lambda client: client)
    assert link.ran == [0, 1] and link.settled == 1
