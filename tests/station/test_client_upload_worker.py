"""Each layer's set-up sends the client's processor upload on its own thread while the server's set-up (gate,
attenuator) runs on this one (sequences/protocol/acquisition.py): the two AWGs have their own connections. The
acquisition starts only once both are done, and an error of either is the layer's."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from qslab.sequences.protocol.acquisition import LinkAcquisition

IMAGES, MODES, ROWS = 3, 4, 5


class Acquired(Exception):
    """Raised by the stub acquisition: the set-up is over."""


class StubLink(LinkAcquisition):
    """LinkAcquisition's set-up over stub roles: the server's set-up and the acquisition only note that they ran."""

    def __init__(self, load_batch, load_gate):
        self.events: list[str] = []
        self.layers = [SimpleNamespace(reference=np.ones(ROWS, complex), modes=MODES, rows=ROWS, segment_id=1)]
        self.verify_fraction, self.client_samples_per_symbol = 0.5, 16
        self._attenuator_fastest, self._server_ahead, self._client_ahead = True, None, None
        self.processor = SimpleNamespace(load_batch=load_batch)
        self._load_gate = load_gate

    def _set_attenuation(self, layer) -> None:
        self.events.append("attenuation")

    def _acquire(self, *args):
        self.events.append("acquire")
        raise Acquired


def stub_link(load_batch, load_gate) -> tuple[StubLink, list[str]]:
    link = StubLink(load_batch, load_gate)
    return link, link.events


def run(link) -> None:
    data = np.arange(1, IMAGES * 2 * MODES + 1, dtype=float).reshape(IMAGES, 2 * MODES)
    link.run_plan(link.plan_layer(0, np.random.default_rng(0)), data)


def test_the_client_upload_runs_beside_the_servers_set_up_and_the_acquisition_waits_for_both():
    gate_started, uploaded, threads = threading.Event(), [], []

    def load_batch(x_hat, sps, segment):
        threads.append(threading.current_thread().name)
        assert gate_started.wait(timeout=60)  # the server's set-up runs meanwhile (sequential: it never would)
        uploaded.append(x_hat.shape)

    def load_gate(*args):
        gate_started.set()

    link, events = stub_link(load_batch, load_gate)
    with pytest.raises(Acquired):
        run(link)
    assert threads[0].startswith("qslab-client-upload") and uploaded == [(IMAGES, MODES)]
    assert events == ["attenuation", "acquire"]


def test_a_failed_client_upload_is_the_layers_error_once_the_servers_set_up_is_over():
    def load_batch(*args):
        raise RuntimeError("client_awg: -222 data out of range")

    link, events = stub_link(load_batch, lambda *args: None)
    with pytest.raises(RuntimeError, match="-222"):
        run(link)
    assert events == ["attenuation"]  # no acquisition


def test_when_both_fail_the_servers_error_is_raised_after_the_client_upload_ended():
    ended = []

    def load_batch(*args):
        ended.append(True)
        raise RuntimeError("client upload failed too")

    def load_gate(*args):
        raise TimeoutError("awg: no reply")

    link, events = stub_link(load_batch, load_gate)
    with pytest.raises(TimeoutError, match="no reply"):
        run(link)
    assert ended == [True] and events == ["attenuation"]  # (set beside the gate: no acquisition)
