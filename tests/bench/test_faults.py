"""Fault injection on the virtual bench, met by the real drivers over the real transports.

For each kind: inject it, drive the instrument as a session would, and check what the stack sees
(a retry that succeeds, one clear exception, an error-queue entry, a reset the driver detects, a
physical change a meter reads) and what the bench recorded in ``faults.fired``.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pytest

from qslab.instruments.drivers._scpi import InstrumentError, InstrumentFault, detect_reset
from qslab.instruments.optical.bias_controller import MbxBiasController
from qslab.instruments.sim.faults_attacks import faults
from qslab.instruments.sim.emulators.keysight_infiniium import RANGE_LIMITS_V
from qslab.instruments.sim.faults_attacks.faults import DEFAULT_AFTER_MESSAGES, Fault
from qslab.instruments.sim.server import Bench

TIMEOUT_S = 0.3          # the drivers of the tests whose fault is a timeout: each attempt waits this long
ANSWERED_TIMEOUT_S = 10.0  # every other driver: what is answered is never turned into a timeout by a slow host


@pytest.fixture
def visa(connect):
    """A VISA driver on the bench (its instrument answers: a generous timeout)."""
    return lambda name: connect(name, timeout=ANSWERED_TIMEOUT_S, device_clear=False)


@pytest.fixture
def visa_timing_out(connect):
    """A VISA driver on the bench with a short timeout, for a fault that ends in one (a silence, a dropped line)."""
    return lambda name: connect(name, timeout=TIMEOUT_S, device_clear=False)


@pytest.fixture
def mbx(connect):
    return lambda name="bias_iq": connect(name, timeout_s=ANSWERED_TIMEOUT_S)


def locked(controller, point: str) -> None:
    """The MBX's loop locked at ``point`` and waited for (the light must be on)."""
    loop = MbxBiasController(controller)
    loop.lock(point)
    loop.wait_locked(20.0)


def laser_port(laser, bench):
    return getattr(laser, f"port{bench.params.server_laser.port}")


def tap_channel(meter, bench):
    channel = getattr(meter, f"ch{bench.params.server_power_meter.channel}")
    channel.averaging_time_s(1.0)  # the least noisy reading
    return channel


def attempts(bench, instrument, command, kind):
    return sum(1 for fired in bench.faults.fired_on(instrument, kind) if fired.message == command)


# --- specs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ("timeout", Fault("timeout")),
    ("timeout@laser", Fault("timeout", "laser")),
    ("timeout@laser:persistent", Fault("timeout", "laser", persistent=True)),
    ("garbled@power_meter:after=5,count=2", Fault("garbled", "power_meter", after_messages=5, count=2)),
    ("power-drop:db=6", Fault("power-drop", power_drop_db=6.0)),
    ("bias-drift@bias_carver:rad=-0.2,after=0",
     Fault("bias-drift", "bias_carver", bias_drift_rad=-0.2, after_messages=0)),
    ("overrange:ch=2,v=3,gain=20", Fault("overrange", channel=2, adc_offset_v=3.0, adc_gain=20.0)),
    ("scpi-error@attenuator:code=-221", Fault("scpi-error", "attenuator", error_code=-221)),
])
def test_specs_parse_and_print_back(spec, expected):
    fault = Fault.parse(spec)
    assert fault == expected
    assert Fault.parse(str(fault)) == Fault(fault.kind, fault.target, **{
        name: getattr(fault, name) for name in ("after_messages", "count", "persistent", "power_drop_db",
                                                "bias_drift_rad", "adc_offset_v", "adc_gain", "channel",
                                                "error_code")})


def test_default_targets_and_trigger():
    assert Fault.parse("timeout").target == "laser"
    assert Fault.parse("overrange").target == "digitizer"
    assert Fault.parse("bias-drift").target == "bias_iq"
    assert Fault.parse("reset").after_messages == DEFAULT_AFTER_MESSAGES
    assert faults.FaultPlan.parse("timeout@laser") == Fault("timeout", "laser")


@pytest.mark.parametrize(("spec", "message"), [
    ("melt@laser", "unknown fault kind 'melt'"),
    ("timeout@laser:after=-1", "after_messages must be an integer >= 0"),
    ("timeout@laser:count=0", "count must be an integer >= 1"),
    ("timeout@laser:after=soon", "after= needs an integer, got 'soon'"),
    ("timeout@laser:forever", "unknown option 'forever'"),
    ("power-drop:db=nan", "power_drop_db must be finite"),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message) as error:
        Fault.parse(spec)
    assert spec in str(error.value) or "unknown fault kind" in str(error.value)


def test_a_fault_needs_a_fitting_instrument(bench):
    with pytest.raises(ValueError, match="no instrument 'tls' on the bench"):
        bench.inject("timeout@tls")
    with pytest.raises(ValueError, match="power-drop@power_meter: needs a keysight_n7714a"):
        bench.inject("power-drop@power_meter")
    with pytest.raises(ValueError, match="overrange@laser: needs a keysight_infiniium"):
        bench.inject("overrange@laser")


def test_faults_given_to_the_bench_are_armed():
    with Bench(faults=["timeout@laser:after=0", Fault("garbled", "power_meter")]) as served:
        assert [str(f) for f in served.faults.armed] == ["timeout@laser:after=0", "garbled@power_meter"]


# --- timeout ---------------------------------------------------------------------------------------

def test_a_timeout_once_is_retried_and_logged(bench, visa_timing_out, caplog):
    laser = visa_timing_out("laser")
    bench.inject("timeout@laser:after=0")
    with caplog.at_level(logging.WARNING):
        assert laser_port(laser, bench).wavelength_m() == pytest.approx(1550e-9)
    command = f"SOUR{bench.params.server_laser.port}:WAV?"
    assert attempts(bench, "laser", command, "timeout") == 1
    assert any("retrying" in r.getMessage() and command in r.getMessage() for r in caplog.records)
    assert bench.faults.armed == []


def test_a_persistent_timeout_stops_after_exactly_three_attempts(bench, visa_timing_out):
    laser = visa_timing_out("laser")
    bench.inject("timeout@laser:after=0,persistent")
    command = f"SOUR{bench.params.server_laser.port}:WAV?"
    with pytest.raises(InstrumentFault) as fault:
        laser_port(laser, bench).wavelength_m()
    assert attempts(bench, "laser", command, "timeout") == 3
    assert str(fault.value) == (f"laser at {laser.address}: '{command}' failed after 3 attempts: no reply within "
                                f"{TIMEOUT_S:g} s. The instrument was left as is.")
    bench.faults.clear()
    assert laser_port(laser, bench).wavelength_m() == pytest.approx(1550e-9)  # answers again


def test_a_timeout_waits_for_its_trigger(bench, visa_timing_out):
    laser = visa_timing_out("laser")
    port = laser_port(laser, bench)
    bench.inject("timeout@laser:after=2")
    port.output_enabled()
    port.wavelength_m()
    assert bench.faults.fired == []
    port.power_unit()  # the third message after injection
    assert [f.message for f in bench.faults.fired] == [f"SOUR{port.port}:POW:UNIT?"]


def test_an_upload_that_times_out_is_never_repeated(bench, visa_timing_out):
    awg = visa_timing_out("awg")
    bench.inject("timeout@awg:after=0,persistent")
    with pytest.raises(InstrumentFault, match=r"'SYST:ERR\? \(the check after :TRAC1:DATA 1,0,<block of 1280 "
                                              r"values>\)' failed after 3 attempts"):
        awg.ch1.upload_segment(1, np.zeros(1280, dtype=np.int8))
    uploads = [f for f in bench.faults.fired if f.message.startswith(":TRAC1:DATA")]
    assert len(uploads) == 1


# --- disconnect ------------------------------------------------------------------------------------

def test_a_dropped_connection_is_reopened_and_the_query_retried(bench, visa_timing_out):
    meter = visa_timing_out("power_meter")  # pyvisa-py reads a socket closed mid-reply until its timeout
    bench.inject("disconnect@power_meter:after=0")
    assert meter.ch2.wavelength_m() == pytest.approx(1550e-9)
    [fired] = bench.faults.fired
    assert (fired.instrument, fired.kind, fired.message) == ("power_meter", "disconnect", "SENS2:POW:WAV?")
    assert meter.ch2.power_unit() == "W"  # the new connection keeps working


def test_the_mbx_reopens_its_port_after_a_disconnect(bench, mbx):
    controller = mbx()
    bench.inject("disconnect@bias_iq:after=0")
    assert controller.mzm.bias_mode() == "off"
    assert len(bench.faults.fired_on("bias_iq", "disconnect")) == 1


# --- garbled ---------------------------------------------------------------------------------------

def test_a_garbled_reply_is_retried(bench, visa):
    meter = visa("power_meter")
    bench.inject("garbled@power_meter:after=0")
    assert meter.ch1.wavelength_m() == pytest.approx(1550e-9)
    assert len(bench.faults.fired_on("power_meter", "garbled")) == 1


def test_a_reply_garbled_every_time_names_the_junk(bench, visa):
    meter = visa("power_meter")
    bench.inject("garbled@power_meter:after=0,persistent")
    junk = faults.garble(b"+1.55000000E-006\n").decode().strip()
    assert junk == "+@.&&######E-##*"
    with pytest.raises(InstrumentFault, match=rf"'SENS1:POW:WAV\?' failed after 3 attempts: reply "
                                              rf"'{re.escape(junk)}' is not a number"):
        meter.ch1.wavelength_m()


def test_the_mbx_retries_a_garbled_reply(bench, visa, mbx):
    controller = mbx()
    laser_port(visa("laser"), bench).output_enabled(True)
    locked(controller, "quadrature+")
    bench.inject("garbled@bias_iq:after=0")
    assert controller.mzm.bias_v() == pytest.approx(bench.state.truth("bias_iq.bias_v"), abs=1e-3)


# --- scpi-error ------------------------------------------------------------------------------------

def test_an_injected_scpi_error_names_instrument_command_and_error(bench, visa):
    attenuator = visa("attenuator")
    bench.inject("scpi-error@attenuator:after=0")
    with pytest.raises(InstrumentError) as refused:
        attenuator.att1.attenuation_db(12.0)
    error = refused.value
    assert (error.instrument, error.command, error.code, error.text) == (
        "attenuator", "INP1:ATT 12.0000", -222, "Data out of range")
    assert str(error).startswith("attenuator: 'INP1:ATT 12.0000' was refused: -222,\"Data out of range\"")
    attenuator.check_errors()  # drained: nothing is blamed on the next command


def test_an_injected_scpi_error_reaches_the_error_check_in_the_commands_own_message(bench, visa):
    """A driver that sends a set and its SYST:ERR? as one message (write_batch: every M8195A upload and stop) reads the
    refusal in that message's reply, as from an instrument that refused the command; a message of queries only is
    not one the fault acts on."""
    awg = visa("awg")
    bench.inject("scpi-error@awg:after=0")
    assert awg.write_batch([":TRAC1:CAT?"]) == ["0,0"]  # queries only (no segment defined): answered, nothing queued
    with pytest.raises(InstrumentError) as refused:
        awg.write_batch([":ABOR", ":TRAC1:SEL 1"])
    error = refused.value
    assert (error.instrument, error.code, error.text) == ("awg", -222, "Data out of range")
    assert error.command.startswith(":ABOR;:TRAC1:SEL 1")
    assert [fired.kind for fired in bench.faults.fired] == ["scpi-error"]
    awg.check_errors()  # the one entry was read by the message's own check: nothing is left for the next command


def test_the_mbx_refuses_the_command_under_an_scpi_error(bench, mbx):
    controller = mbx()
    bench.inject("scpi-error@bias_iq:after=0,code=-221")
    with pytest.raises(InstrumentError, match=r"bias_iq: 'MZM:MODE: 3' was refused: Err: Settings conflict"):
        controller.mzm.bias_mode("quadrature+")
    assert controller.mzm.bias_mode() == "off"  # refused, so not applied


# --- reset -----------------------------------------------------------------------------------------

def test_a_reset_turns_the_laser_off_and_the_driver_detects_it(bench, visa):
    laser = visa("laser")
    port = laser_port(laser, bench)
    port.power_dbm(12.0)
    port.output_enabled(True)
    assert detect_reset(laser) == []
    bench.inject("reset@laser:after=0")
    evidence = detect_reset(laser)
    assert bench.state.server_laser.enabled is False and bench.state.laser_power_w() == 0.0
    assert evidence[0] == "*ESR? power-on bit set: the instrument was switched off and on"
    assert f"laser_port{port.port}_output_enabled reads False, was True" in evidence
    assert f"laser_port{port.port}_power_dbm reads 10.0, was 12.0" in evidence
    assert detect_reset(laser) == []  # the read-back refreshed the cache; *ESR? was cleared


def test_a_reset_stops_the_awg_and_turns_its_outputs_off(bench, visa):
    awg = visa("awg")
    awg.ch1.output_enabled(True)
    awg.run()
    bench.inject("reset@awg:after=0")
    assert awg.is_running() is False
    assert bench.state.awg.running is False and not bench.state.awg.channels[1].output_enabled


def test_a_reset_mbx_is_off_and_detected_by_its_read_back(bench, mbx):
    controller = mbx()
    controller.mzm.bias_mode("quadrature+")
    bench.inject("reset@bias_iq:after=0")
    assert detect_reset(controller) == ["bias_iq_mzm_bias_mode reads 'off', was 'quadrature+'"]
    assert bench.state.truth("bias_iq.bias_v") == 0.0


# --- overrange -------------------------------------------------------------------------------------

def test_overrange_pushes_the_digitizer_input_past_full_scale(bench):
    volts = np.array([-0.01, 0.0, 0.02])
    assert faults.adc_input_v(bench.state, 1, volts) is volts  # no fault: untouched
    bench.inject("overrange:after=0,ch=1,gain=50")
    distorted = faults.adc_input_v(bench.state, 1, volts)
    assert np.all(np.abs(distorted) > RANGE_LIMITS_V[1] / 2)  # beyond the largest full scale: clips
    np.testing.assert_allclose(distorted, 50 * volts + 10.0)
    assert faults.adc_input_v(bench.state, 2, volts) is volts
    assert [(f.instrument, f.kind) for f in bench.faults.fired] == [("digitizer", "overrange")]
    bench.faults.clear()
    assert faults.adc_input_v(bench.state, 1, volts) is volts


def test_overrange_waits_for_the_digitizers_messages(bench):
    bench.inject("overrange:after=2")
    digitizer = bench.instruments["digitizer"].emulator
    assert faults.adc_input_v(bench.state, 1, 0.0) == 0.0
    for message in (b"*IDN?", b"*OPC?"):
        bench.faults.exchange(digitizer, message, digitizer.handle)
    assert faults.adc_input_v(bench.state, 1, 0.0) == 10.0


# --- power-drop ------------------------------------------------------------------------------------

def test_a_power_drop_reads_that_much_less_on_the_power_meter(bench, visa):
    laser, meter = visa("laser"), visa("power_meter")
    port = laser_port(laser, bench)
    port.output_enabled(True)
    tap = tap_channel(meter, bench)
    before_w = tap.read_power_w()
    bench.inject("power-drop:after=0,db=3")
    after_w = tap.read_power_w()
    assert 10 * math.log10(after_w / before_w) == pytest.approx(-3.0, abs=0.01)
    assert port.power_dbm() == pytest.approx(10.0)  # the laser still says it emits what it was set to
    bench.faults.clear()
    assert tap.read_power_w() == pytest.approx(before_w, rel=1e-3)


# --- bias-drift ------------------------------------------------------------------------------------

def test_a_bias_drift_changes_the_modulator_output_and_a_relock_cures_it(bench, visa, mbx):
    laser, meter, controller = visa("laser"), visa("power_meter"), mbx()
    laser_port(laser, bench).output_enabled(True)
    locked(controller, "quadrature+")
    tap = tap_channel(meter, bench)
    locked_w, monitor_w = tap.read_power_w(), controller.mzm.tap_power_w()
    bench.inject("bias-drift:after=0,rad=0.3")
    drifted_w = tap.read_power_w()
    assert abs(drifted_w / locked_w - 1) > 0.1  # at quadrature 0.3 rad moves the power by ~30 %
    assert abs(controller.mzm.tap_power_w() / monitor_w - 1) > 0.1  # the MBX's own monitor sees it
    controller.mzm.recalibrate()
    MbxBiasController(controller).wait_locked(20.0)
    assert tap.read_power_w() == pytest.approx(locked_w, rel=0.05)
