"""Generic SCPI optical amplifier against instruments/drivers/sims/scpi_optical_amplifier.yaml."""

from __future__ import annotations

import pytest

from qslab.instruments.drivers.scpi_optical_amplifier import InstrumentError, ScpiOpticalAmplifier

SIM = "qslab.instruments.drivers.sims:scpi_optical_amplifier.yaml"


@pytest.fixture
def amplifier():
    instrument = ScpiOpticalAmplifier("amplifier", "GPIB::1::INSTR", pyvisa_sim_file=SIM)
    yield instrument
    instrument.close()


def test_idn(amplifier):
    assert amplifier.get_idn()["vendor"] == "qslab"


def test_mode_round_trip(amplifier, record_writes):
    sent = record_writes(amplifier)
    for mode, word in [("power", b"POW"), ("current", b"CURR"), ("gain", b"GAIN")]:
        amplifier.mode(mode)
        assert amplifier.mode() == mode
        assert sent[-3:] == [b"SOUR:MODE " + word + b"\n", b"SYST:ERR?\n", b"SOUR:MODE?\n"]


def test_setpoints_round_trip(amplifier, record_writes):
    sent = record_writes(amplifier)
    amplifier.gain_db(1.14)
    amplifier.output_power_setpoint_dbm(5.0)
    amplifier.pump_current_a(0.35)
    amplifier.output_enabled(True)
    assert sent[::2] == [b"SOUR:GAIN 1.1400\n", b"SOUR:POW 5.0000\n", b"SOUR:CURR 0.350000\n", b"OUTP:STAT 1\n"]
    assert amplifier.gain_db() == pytest.approx(1.14)
    assert amplifier.output_power_setpoint_dbm() == pytest.approx(5.0)
    assert amplifier.pump_current_a() == pytest.approx(0.35)
    assert amplifier.output_enabled() is True
    amplifier.safe_state()
    assert amplifier.output_enabled() is False


def test_measured_powers_in_watt(amplifier):
    gain = amplifier.output_power_w() / amplifier.input_power_w()
    assert amplifier.input_power_w() == pytest.approx(1e-5)
    assert gain == pytest.approx(1.3, rel=1e-6)


def test_limits_are_configurable_and_reject_before_sending(record_writes):
    amplifier = ScpiOpticalAmplifier("amplifier", "GPIB::1::INSTR", pyvisa_sim_file=SIM,
                                     gain_limits_db=(0.0, 3.0), output_power_limits_dbm=(-5.0, 10.0))
    try:
        sent = record_writes(amplifier)
        for parameter, value in [(amplifier.gain_db, 3.5), (amplifier.gain_db, -0.1),
                                 (amplifier.output_power_setpoint_dbm, 11.0),
                                 (amplifier.pump_current_a, 1.5), (amplifier.mode, "AGC")]:
            with pytest.raises(ValueError):
                parameter(value)
        assert sent == []
    finally:
        amplifier.close()


def test_refusal_raises_with_code_and_text(amplifier):
    # 28 dB passes the default validator (0-30 dB) but this amplifier stops at 25 dB
    with pytest.raises(InstrumentError) as refused:
        amplifier.gain_db(28.0)
    assert (refused.value.code, refused.value.text) == (-113, "Undefined header")
    assert "SOUR:GAIN 28.0000" in str(refused.value)
    assert amplifier.gain_db() == pytest.approx(1.1394)
    amplifier.check_errors()  # drained


def test_long_form_mode_reply_is_understood(amplifier, monkeypatch):
    monkeypatch.setattr(amplifier, "ask_raw", lambda cmd: "POWER\n")
    assert amplifier.mode() == "power"
    monkeypatch.setattr(amplifier, "ask_raw", lambda cmd: "BOOST")
    with pytest.raises(ValueError, match="GAIN, POW or CURR"):
        amplifier.mode()


# --- byte-exact protocol and identification (issue 15, item 8) ------------------------------------------

PROFILE_IDN = b"qslab,SCPI optical amplifier (simulated),0001,1.0\n"
NO_ERROR = b'0,"No error"\n'


def _amplifier(address):
    return ScpiOpticalAmplifier("amp_protocol", address, visalib="@py", timeout=2, device_clear=False,
                                gain_limits_db=(0.0, 3.0))


def test_protocol_identifies_first_then_sets_with_error_checks():
    from tests.drivers.expected_protocol import expected_protocol

    pairs = [
        (b"*IDN?\n", PROFILE_IDN),                      # before anything else: is this the profile's instrument?
        (b"*CLS\n", None),
        (b"*IDN?\n", PROFILE_IDN),                      # qcodes' greeting
        (b"SOUR:MODE GAIN\n", None), (b"SYST:ERR?\n", NO_ERROR),
        (b"SOUR:GAIN 1.1394\n", None), (b"SYST:ERR?\n", NO_ERROR),
        (b"OUTP:STAT 1\n", None), (b"SYST:ERR?\n", NO_ERROR),
        (b"MEAS:POW:INP?\n", b"-2.00000000E+01\n"),
        (b"OUTP:STAT?\n", b"1\n"),
        (b"OUTP:STAT 0\n", None), (b"SYST:ERR?\n", NO_ERROR),
    ]
    with expected_protocol(_amplifier, pairs) as amplifier:
        amplifier.mode("gain")
        amplifier.gain_db(1.1394)
        amplifier.output_enabled(True)
        assert amplifier.input_power_w() == pytest.approx(1e-5)
        assert amplifier.output_enabled() is True
        amplifier.safe_state()


@pytest.mark.parametrize("identity", [
    b"Keysight Technologies,N7744A,DE00000005,V1.0\n",     # a meter at the amplifier's address
    b"ACME,EDFA-100,123,2.0\n",                            # a real amplifier: needs its own subclass
])
def test_a_foreign_idn_is_refused_and_nothing_else_is_sent(identity):
    from tests.drivers.expected_protocol import ProtocolServer

    server = ProtocolServer([(b"*IDN?\n", identity)])
    try:
        with pytest.raises(InstrumentError, match=r"not as the generic SCPI optical amplifier profile.*Nothing else"):
            _amplifier(server.address_visa)
    finally:
        server.close()
    server.check()  # exactly *IDN? was sent: no *CLS, no OUTP:STAT 0
