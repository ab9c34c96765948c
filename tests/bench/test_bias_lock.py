"""The bench's MBX lock takes its time and needs light, and the stack waits for it (issue 15, item 2).

Times are instrument seconds on the bench clock, so no assertion depends on the host's speed: a lock
reported at all must have been reported at least ``acquisition_time_s`` after the mode was set, and a
reply read before that time must be "not locked".
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from qcodes.instrument import Instrument

from qslab.instruments.optical.bias_controller import BiasLockError, MbxBiasController
from qslab.instruments.sim.bench_parameters import defaults_table
from qslab.instruments.sim.link import modulators as mod
from qslab.instruments.sim.server import Bench

ACQUISITION_S = 2.0   # instrument seconds
TIME_SCALE = 0.05     # real seconds per instrument second: a lock costs 0.1 s here
Z = 5.0


@pytest.fixture
def slow_bench() -> Iterator[Bench]:
    table = defaults_table()
    table["time_scale"] = TIME_SCALE
    table["bias_lock"] = {**table["bias_lock"], "acquisition_time_s": ACQUISITION_S}
    with Bench.from_table(table) as served:
        yield served
    Instrument.close_all()


def _driver(bench: Bench, name: str):
    instrument = bench.instruments[name]
    kwargs = {} if instrument.address.startswith("socket://") else {"visalib": "@py"}
    return instrument.driver_class()(name, instrument.address, **kwargs)


def _laser_on(bench: Bench, power_dbm: float = 10.0):
    laser = _driver(bench, "laser")
    laser.port1.power_dbm(power_dbm)
    laser.port1.output_enabled(True)
    return laser


def test_a_lock_is_reported_only_after_its_acquisition_time(slow_bench):
    _laser_on(slow_bench)
    mbx = _driver(slow_bench, "bias_carver")
    clock = slow_bench.state.clock
    before_v = mbx.mzm.bias_v()
    sent_s = clock.now_s()
    mbx.mzm.bias_mode("peak")
    sweeping, volts = mbx.mzm.is_calibrating(), mbx.mzm.bias_v()
    if clock.now_s() - sent_s < ACQUISITION_S:   # still within the sweep (always, unless the host stalled 0.1 s)
        assert sweeping and volts == before_v      # the previous voltage stays until the lock
    replies = []
    while True:
        locked = mbx.mzm.is_locked()
        replies.append((clock.now_s(), locked))
        if locked:
            break
        assert clock.now_s() - sent_s < 10 * ACQUISITION_S, "the loop never locked"
    assert all(answered_s - sent_s >= ACQUISITION_S for answered_s, locked in replies if locked)
    assert not mbx.mzm.is_calibrating()
    truth, lock = slow_bench.params.server_carver, slow_bench.params.bias_lock
    assert mbx.mzm.bias_v() == pytest.approx(mod.bias_for_phase_v(0.0, truth.bias_vpi_v, truth.bias_phase_rad),
                                           abs=Z * lock.residual_rad * truth.bias_vpi_v / 3.14159 + 1e-3)


def test_a_lock_without_light_fails_and_names_the_controller(slow_bench):
    mbx = _driver(slow_bench, "bias_iq")
    loop = MbxBiasController(mbx)
    loop.lock("null")
    with pytest.raises(BiasLockError, match=r"^bias_iq: the bias loop did not lock at null within 0\.5 s .*tap"):
        loop.wait_locked(0.5)
    assert not mbx.mzm.is_calibrating() and mbx.mzm.bias_v() == 0.0


def test_a_lock_started_in_the_dark_stays_unlocked_when_the_light_comes(slow_bench):
    """The sweep ran without light: it found no transfer curve, and the loop waits for a new lock."""
    mbx = _driver(slow_bench, "bias_carver")
    mbx.mzm.bias_mode("peak")
    _laser_on(slow_bench)
    slow_bench.state.clock.spend(2 * ACQUISITION_S)
    assert not mbx.mzm.is_locked() and not mbx.mzm.is_calibrating()
    mbx.mzm.recalibrate()   # MZM:RESET: a new sweep, now with light
    MbxBiasController(mbx).wait_locked(20.0)


def test_the_iq_loop_needs_the_light_the_carver_passes(slow_bench):
    """The IQ's photodiode sees what the carver passes: with the carver held at its null the loop is dark."""
    _laser_on(slow_bench, power_dbm=6.0)  # the least the laser's limit allows
    carver, iq = _driver(slow_bench, "bias_carver"), _driver(slow_bench, "bias_iq")
    p = slow_bench.params.server_carver
    carver.mzm.manual_bias_v(mod.bias_for_phase_v(3.14159265, p.bias_vpi_v, p.bias_phase_rad))
    carver.mzm.bias_mode("manual")
    with pytest.raises(BiasLockError, match="bias_iq"):
        iq_loop = MbxBiasController(iq)
        iq_loop.lock("null")
        iq_loop.wait_locked(0.5)
    MbxBiasController(carver).lock("peak")
    MbxBiasController(carver).wait_locked(20.0)
    MbxBiasController(iq).lock("null")
    MbxBiasController(iq).wait_locked(20.0)


def test_a_locked_loop_reads_unlocked_while_its_light_is_gone(slow_bench):
    laser = _laser_on(slow_bench)
    mbx = _driver(slow_bench, "bias_carver")
    loop = MbxBiasController(mbx)
    loop.lock("peak")
    loop.wait_locked(20.0)
    held_v = mbx.mzm.bias_v()
    laser.port1.output_enabled(False)
    assert not mbx.mzm.is_locked() and mbx.mzm.bias_v() == held_v
    laser.port1.output_enabled(True)
    assert mbx.mzm.is_locked()


def test_one_loop_on_two_children_locks_their_mean():
    """The IQ's children share one MBX loop (DECISIONS T): with bias phases Delta apart, the loop puts their mean at
    null, so the I child sits Delta/2 below it and the Q child Delta/2 above."""
    table = defaults_table()
    table["time_scale"] = TIME_SCALE
    table["bias_lock"] = {**table["bias_lock"], "residual_rad": 0.0}
    offset = 0.2
    table["server_iq"] = {**table["server_iq"], "q_bias_phase_offset_rad": offset}
    with Bench.from_table(table) as bench:
        try:
            _laser_on(bench)
            for name, point in (("bias_carver", "peak"), ("bias_iq", "null")):
                loop = MbxBiasController(_driver(bench, name))
                loop.lock(point)
                loop.wait_locked(20.0)
            q = bench.params.server_iq
            theta_i = math.pi * bench.state.truth("bias_iq.bias_v") / q.bias_vpi_v + q.bias_phase_rad
            for theta, expected in ((theta_i, -0.5 * offset), (theta_i + offset, 0.5 * offset)):
                off_null = (theta - math.pi + math.pi) % (2 * math.pi) - math.pi
                assert off_null == pytest.approx(expected, abs=1e-3 * math.pi / q.bias_vpi_v * 2)  # 1 mV steps
        finally:
            Instrument.close_all()
