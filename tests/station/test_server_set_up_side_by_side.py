"""A layer's server set-up loads its gate while the attenuator moves (sequences/protocol/acquisition.py
``_set_up_server``): two instruments on their own connections. It returns only once both are done, and an error of
either is the set-up's (the gate's first)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from qslab.sequences.protocol.acquisition import LinkAcquisition
from qslab.sequences.protocol.layers import LayerPlan


class StubLink(LinkAcquisition):
    """Only the server's set-up: the gate load and the attenuation are the test's."""

    def __init__(self, load_gate, set_attenuation):
        self.layers = [SimpleNamespace(segment_id=1, modes=4, rows=5)]
        self._load_gate, self._set_attenuation = load_gate, set_attenuation


PLAN = LayerPlan(0, np.array([2]), np.array([True]))


def test_the_gate_is_loaded_while_the_attenuator_moves_and_the_set_up_waits_for_both():
    moving, done = threading.Event(), []

    def set_attenuation(layer):
        moving.set()
        done.append(("attenuation", threading.current_thread().name))

    def load_gate(segment, rows, measure_p, modes, n_rows):
        assert moving.wait(timeout=60)  # the attenuator moves meanwhile (one after the other: it never would)
        done.append(("gate", threading.current_thread().name))

    StubLink(load_gate, set_attenuation)._set_up_server(PLAN)
    assert sorted(step for step, _ in done) == ["attenuation", "gate"]
    threads = dict(done)
    assert threads["gate"] == threading.current_thread().name and threads["attenuation"] != threads["gate"]


def test_a_failed_gate_is_raised_once_the_attenuator_is_done():
    release, finished = threading.Event(), []

    def set_attenuation(layer):
        release.wait(timeout=60)
        finished.append("attenuation")

    def load_gate(*args):
        threading.Timer(0.05, release.set).start()
        raise RuntimeError("awg: gate refused")

    with pytest.raises(RuntimeError, match="gate refused"):
        StubLink(load_gate, set_attenuation)._set_up_server(PLAN)
    assert finished == ["attenuation"]  # the attenuator was idle again before the error left


def test_a_failed_attenuation_is_the_set_ups_error_and_the_gate_error_comes_first():
    def refused(layer):
        raise RuntimeError("attenuator: setting refused")

    with pytest.raises(RuntimeError, match="setting refused"):
        StubLink(lambda *args: None, refused)._set_up_server(PLAN)

    def gate_refused(*args):
        raise RuntimeError("awg: gate refused")

    with pytest.raises(RuntimeError, match="gate refused"):
        StubLink(gate_refused, refused)._set_up_server(PLAN)
