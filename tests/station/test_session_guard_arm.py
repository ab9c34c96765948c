"""BatchGuard.arm tells its observers (session_guard.observing_arms): after the faults are injected, and also
in a session without faults, which is when a benchmark arms a cheating client."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qslab.instruments.sim.faults_attacks.faults import Fault
from qslab.instruments.sim.server import Bench
from qslab.sequences.session_guard import BatchGuard, FaultReport, SessionStopped, observing_arms


def test_arm_without_faults_tells_the_observers_and_reports_nothing():
    station, heard = SimpleNamespace(bench=None), []
    guard = BatchGuard(None, station, FaultReport([]))
    with observing_arms(lambda s, batch: heard.append((s, batch))):
        guard.arm(1)
    guard.arm(2)  # no longer observing
    assert heard == [(station, 1)]
    assert guard.report.armed_before_batch is None and guard.report.plan is None


def test_the_observers_hear_the_arm_after_the_faults_are_injected():
    bench = Bench.from_config()  # injecting needs no served instruments
    station, seen = SimpleNamespace(bench=bench), []
    guard = BatchGuard(None, station, FaultReport(["timeout@laser"]), [Fault("timeout", "laser")])
    with observing_arms(lambda s, batch: seen.append([f.kind for f in s.bench.faults.armed])):
        guard.arm(1)
    assert seen == [["timeout"]] and guard.report.armed_before_batch == 2


def test_faults_without_a_bench_stop_the_session_before_any_observer():
    heard = []
    guard = BatchGuard(None, SimpleNamespace(bench=None), FaultReport(["timeout"]), [Fault("timeout")])
    with observing_arms(lambda s, batch: heard.append(batch)), pytest.raises(SessionStopped):
        guard.arm(1)
    assert heard == []
