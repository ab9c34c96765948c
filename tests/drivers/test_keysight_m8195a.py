"""Keysight M8195A driver: settings against instruments/drivers/sims/keysight_m8195a.yaml, waveform
uploads byte for byte against a raw-SCPI socket fake (pyvisa-sim cannot carry binary blocks)."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.instruments.drivers.keysight_m8195a import InstrumentError, KeysightM8195A, as_int8_samples

SIM = "qslab.instruments.drivers.sims:keysight_m8195a.yaml"
NO_ERROR = '0,"No error"'


@pytest.fixture
def awg():
    instrument = KeysightM8195A("awg", "GPIB::1::INSTR", pyvisa_sim_file=SIM)
    yield instrument
    instrument.close()


def test_idn_and_channels(awg):
    assert awg.get_idn()["model"] == "M8195A"
    assert [channel.channel for channel in awg.channels] == [1, 2, 3, 4]


def test_sample_rate_round_trip_and_limits(awg, record_writes):
    awg.sample_rate_hz(60e9)
    assert awg.sample_rate_hz() == pytest.approx(60e9)
    sent = record_writes(awg)
    for rate_hz in (50e9, 66e9):
        with pytest.raises(ValueError):
            awg.sample_rate_hz(rate_hz)
    assert sent == []


def test_channel_amplitude_offset_output(awg, record_writes):
    sent = record_writes(awg)
    awg.ch2.amplitude_vpp(0.8)
    awg.ch2.offset_v(0.25)
    awg.ch2.output_enabled(True)
    assert sent[::2] == [b":VOLT2 0.800000\n", b":VOLT2:OFFS 0.250000\n", b":OUTP2 1\n"]
    assert awg.ch2.amplitude_vpp() == pytest.approx(0.8)
    assert awg.ch2.offset_v() == pytest.approx(0.25)
    assert awg.ch2.output_enabled() is True
    assert awg.ch1.amplitude_vpp() == pytest.approx(0.5)
    awg.ch3.function_mode("STS")
    assert awg.ch3.function_mode() == "STS"


def test_channel_limits_reject_before_sending(awg, record_writes):
    sent = record_writes(awg)
    for parameter, value in [(awg.ch1.amplitude_vpp, 0.05), (awg.ch1.amplitude_vpp, 2.5),
                             (awg.ch1.offset_v, -0.1), (awg.ch1.offset_v, 1.1),
                             (awg.ch1.function_mode, "SEQ"), (awg.dac_mode, "QUAD")]:
        with pytest.raises(ValueError):
            parameter(value)
    assert sent == []


@pytest.mark.parametrize(("mode", "continuous", "gated"),
                         [("continuous", 1, 0), ("triggered", 0, 0), ("gated", 0, 1)])
def test_trigger_modes(awg, record_writes, mode, continuous, gated):
    sent = record_writes(awg)
    awg.trigger_mode(mode)
    assert sent[::2] == [f":INIT:CONT:STAT {continuous}\n".encode(), f":INIT:GATE:STAT {gated}\n".encode()]
    assert awg.trigger_mode() == mode


def test_run_stop_trigger_messages(awg, record_writes):
    sent = record_writes(awg)
    awg.run()
    awg.send_trigger()
    awg.stop()
    assert sent[::2] == [b":INIT:IMM\n", b":TRIG:BEG\n", b":ABOR\n"]
    assert awg.is_running() is False


def test_divider_sets_the_granularity(awg):
    assert awg.granularity_samples() == 256
    awg.memory_divider(4)
    assert awg.memory_divider() == 4
    assert awg.granularity_samples() == 64
    awg.ch1.define_segment(1, 1280 + 64)  # legal only at DIV4


def test_define_select_delete_segment(awg, record_writes):
    awg.ch1.memory_mode("EXT")
    sent = record_writes(awg)
    awg.ch1.define_segment(3, 2560)
    awg.ch1.define_segment(4, 1280, init_value=-5)
    awg.ch1.select_segment(3)
    awg.ch1.delete_all_segments()
    assert sent[::2] == [b":TRAC1:DEF 3,2560\n", b":TRAC1:DEF 4,1280,-5\n", b":TRAC1:SEL 3\n",
                         b":TRAC1:DEL:ALL\n"]


@pytest.mark.parametrize("length", [1024, 1279, 1300, 2560 + 128])
def test_segment_length_rules_reject_before_sending(awg, record_writes, length):
    sent = record_writes(awg)
    with pytest.raises(ValueError, match="segment length"):
        awg.ch1.define_segment(1, length)
    assert sent == []


def test_refused_command_raises_clear_error(awg):
    with pytest.raises(InstrumentError) as refused:
        awg.write(":VOLT1 5")  # bypasses the validator; the sim refuses it
    assert refused.value.code == -113
    assert ":VOLT1 5" in str(refused.value)
    assert awg.ch1.amplitude_vpp() == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [[0, 128], [-129, 0], [0.5, 1.0], [[1, 2], [3, 4]], [np.nan]])
def test_samples_must_be_int8(bad):
    with pytest.raises(ValueError):
        as_int8_samples(bad)


def test_samples_accept_integers_in_range():
    samples = as_int8_samples(np.array([-128, 0, 127], dtype=np.int64))
    assert samples.dtype == np.int8
    assert samples.tolist() == [-128, 0, 127]
    assert as_int8_samples([1.0, -2.0]).tolist() == [1, -2]


# --- uploads over a raw socket, byte for byte ------------------------------------------------


def _awg_answers(refuse_data_at_offset: int | None = None):
    pending: list[str] = []

    def answer(message: bytes) -> str | None:
        if message == b"*IDN?":
            return "Keysight Technologies,M8195A,MY00000002,4.1.0.0"
        if message == b":INST:MEM:EXT:RDIV?":
            return "DIV1"
        if message == b"*OPT?":
            return "004,16G,SEQ"
        if message.startswith(b":TRAC") and message.endswith(b":MMOD?"):
            return "EXT"
        if message == b"SYST:ERR?":
            return pending.pop(0) if pending else NO_ERROR
        if refuse_data_at_offset is not None and message.startswith(
                f":TRAC1:DATA 1,{refuse_data_at_offset},".encode()):
            pending.append('-223,"Too much data"')
        return None

    return answer


def test_upload_sends_ascending_chunks_as_definite_length_blocks(scpi_socket):
    fake = scpi_socket(_awg_answers())
    awg = KeysightM8195A("socket_awg", fake.address, visalib="@py")
    # values that a line-based parser would trip over: LF (10), '#' (35), ';' (59), and extremes
    samples = np.resize(np.array([10, 35, 59, -128, 127, 0, -1], dtype=np.int8), 2560)
    awg.ch1.define_segment(1, 2560)
    awg.ch1.upload_segment(1, samples, chunk_samples=1280)
    first, second = samples[:1280].tobytes(), samples[1280:].tobytes()
    assert fake.messages[-6:] == [
        b":TRAC1:DEF 1,2560", b"SYST:ERR?",
        b":TRAC1:DATA 1,0,#41280" + first, b"SYST:ERR?",
        b":TRAC1:DATA 1,1280,#41280" + second, b"SYST:ERR?",
    ]


def test_load_waveform_defines_uploads_and_selects(scpi_socket):
    fake = scpi_socket(_awg_answers())
    awg = KeysightM8195A("socket_awg", fake.address, visalib="@py")
    samples = np.zeros(1280, dtype=np.int8)
    awg.ch2.load_waveform(7, samples)
    assert fake.messages[-6::2] == [b":TRAC2:DEF 7,1280", b":TRAC2:DATA 7,0,#41280" + samples.tobytes(),
                                    b":TRAC2:SEL 7"]


def test_upload_stops_at_the_first_refused_chunk(scpi_socket):
    fake = scpi_socket(_awg_answers(refuse_data_at_offset=1280))
    awg = KeysightM8195A("socket_awg", fake.address, visalib="@py")
    with pytest.raises(InstrumentError) as refused:
        awg.ch1.upload_segment(1, np.zeros(3840, dtype=np.int8), chunk_samples=1280)
    assert (refused.value.code, refused.value.text) == (-223, "Too much data")
    assert ":TRAC1:DATA 1,1280," in str(refused.value)
    data_messages = [m for m in fake.messages if m.startswith(b":TRAC1:DATA")]
    assert len(data_messages) == 2  # the third chunk was never sent


def test_upload_checks_before_the_first_byte(scpi_socket):
    fake = scpi_socket(_awg_answers())
    awg = KeysightM8195A("socket_awg", fake.address, visalib="@py")
    awg.ch1.define_segment(1, 1280)
    sent_before = len(fake.messages)
    with pytest.raises(ValueError, match="overflow"):
        awg.ch1.upload_segment(1, np.zeros(2560, dtype=np.int8))
    with pytest.raises(ValueError, match="chunk_samples"):
        awg.ch1.upload_segment(1, np.zeros(1280, dtype=np.int8), chunk_samples=1000)
    with pytest.raises(ValueError, match="offset_samples"):
        awg.ch1.upload_segment(1, np.zeros(256, dtype=np.int8), offset_samples=100)
    with pytest.raises(ValueError, match="-128..127"):
        awg.ch1.upload_segment(1, np.full(1280, 200))
    assert len(fake.messages) == sent_before
