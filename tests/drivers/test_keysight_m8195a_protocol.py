"""Byte-exact protocol of the Keysight M8195A driver and its Awg role: the exact bytes sent, terminations
included, and the replies parsed, for the constructor, every parameter, the segment commands, binary uploads
and the one-message batches of the role.

Commands checked against the M8195A user's guide (Revision 2): :FREQ:RAST, :INST:MEM:EXT:RDIV, :INST:DACM,
:INIT:CONT/:INIT:GATE, :INIT:IMM, :ABOR, :TRIG:BEG, :STAT:OPER:RUN:COND? (section 6 "General Programming"),
:VOLT<n>, :VOLT<n>:OFFS, :OUTP<n>, :FUNC<n>:MODE, the :TRACe subsystem from p. 239 (:TRAC<n>:DEF, :DATA in
ascending offsets as IEEE 488.2 definite blocks of signed 8-bit samples, :SEL, :DEL p. 254, :DEL:ALL, :MMOD),
*OPT? (IEEE 488.2).
"""

from __future__ import annotations

import numpy as np
import pytest

from qslab.instruments.drivers._scpi import InstrumentError
from qslab.instruments.drivers.keysight_m8195a import KeysightM8195A
from qslab.instruments.optical.awg_channels import AwgChannels
from qslab.instruments.optical.limits import Limit
from tests.drivers.expected_protocol import expected_protocol, parameter

NO_ERROR = b'0,"No error"\n'
IDN = b"Keysight Technologies,M8195A,MY00000001,4.1.0.0\n"


def connect_pairs(options: bytes = b"004,16G,SEQ", modes: tuple[str, ...] = ("INT",) * 4) -> list:
    return ([(b"*CLS\n", None), (b"*OPT?\n", options + b"\n"), (b":INST:MEM:EXT:RDIV?\n", b"DIV1\n")]
            + [(f":TRAC{n}:MMOD?\n".encode(), f"{mode}\n".encode()) for n, mode in enumerate(modes, 1)]
            + [(b"*IDN?\n", IDN)])


CONNECT = connect_pairs()


def written(command: bytes, error: bytes = NO_ERROR) -> list:
    """A write and the error check that follows every one."""
    return [(command + b"\n", None), (b"SYST:ERR?\n", error)]


def awg(address: str, device_clear: bool = False) -> KeysightM8195A:
    """The driver on a transcript. qcodes' device clear sends no bytes over a socket (pyvisa-py drains the socket,
    waiting 0.1 s for replies nobody asked for): left out except where the constructor itself is under test."""
    return KeysightM8195A("awg", address, visalib="@py", timeout=2, device_clear=device_clear)


def test_the_constructor_clears_reads_options_divider_memory_modes_and_identity():
    with expected_protocol(lambda address: awg(address, device_clear=True), connect_pairs(b"004,SEQ", ("EXT", "EXT", "INT", "EXT"))) as driver:
        assert driver.options == ("004", "SEQ") and driver.has_sequencing
        assert [c.memory_mode.get_latest() for c in driver.channels] == ["EXT", "EXT", "INT", "EXT"]
        assert driver.granularity_samples() == 256


GETS = [  # (parameter path, sent, reply, parsed)
    ("sample_rate_hz", b":FREQ:RAST?\n", b"6.40000000E+10\n", 64e9),
    ("memory_divider", b":INST:MEM:EXT:RDIV?\n", b"DIV4\n", 4),
    ("dac_mode", b":INST:DACM?\n", b"FOUR\n", "FOUR"),
    ("is_running", b":STAT:OPER:RUN:COND?\n", b"1\n", True),
    ("ch2.amplitude_vpp", b":VOLT2?\n", b"0.800000\n", 0.8),
    ("ch2.offset_v", b":VOLT2:OFFS?\n", b"0.250000\n", 0.25),
    ("ch2.output_enabled", b":OUTP2?\n", b"1\n", True),
    ("ch2.function_mode", b":FUNC2:MODE?\n", b"ARB\n", "ARB"),
    ("ch2.memory_mode", b":TRAC2:MMOD?\n", b"EXT\n", "EXT"),
]


@pytest.mark.parametrize(("path", "sent", "reply", "parsed"), GETS, ids=[g[0] for g in GETS])
def test_every_get_sends_its_query_and_parses_the_reply(path, sent, reply, parsed):
    with expected_protocol(awg, CONNECT + [(sent, reply)]) as driver:
        assert parameter(driver, path)() == parsed


SETS = [  # (parameter path, value, command)
    ("sample_rate_hz", 60e9, b":FREQ:RAST 6.00000000E+10"),
    ("memory_divider", 2, b":INST:MEM:EXT:RDIV DIV2"),
    ("dac_mode", "MARK", b":INST:DACM MARK"),
    ("ch3.amplitude_vpp", 0.8, b":VOLT3 0.800000"),
    ("ch3.offset_v", 0.25, b":VOLT3:OFFS 0.250000"),
    ("ch3.output_enabled", True, b":OUTP3 1"),
    ("ch3.function_mode", "STS", b":FUNC3:MODE STS"),
    ("ch3.memory_mode", "EXT", b":TRAC3:MMOD EXT"),
]


@pytest.mark.parametrize(("path", "value", "command"), SETS, ids=[s[0] for s in SETS])
def test_every_set_sends_its_command_and_checks_the_error_queue(path, value, command):
    with expected_protocol(awg, CONNECT + written(command)) as driver:
        parameter(driver, path)(value)


def test_a_refusal_in_the_error_queue_raises_naming_the_command():
    pairs = written(b":VOLT1 0.500000", b'-222,"Data out of range"\n') + [(b"SYST:ERR?\n", NO_ERROR)]
    with expected_protocol(awg, CONNECT + pairs) as driver:
        with pytest.raises(InstrumentError, match=r"':VOLT1 0.500000' was refused: -222,\"Data out of range\""):
            driver.ch1.amplitude_vpp(0.5)


@pytest.mark.parametrize(("mode", "continuous", "gated"), [("continuous", 1, 0), ("triggered", 0, 0), ("gated", 0, 1)])
def test_trigger_mode_is_two_writes_and_two_queries(mode, continuous, gated):
    pairs = (written(f":INIT:CONT:STAT {continuous}".encode()) + written(f":INIT:GATE:STAT {gated}".encode())
             + [(b":INIT:CONT:STAT?\n", f"{continuous}\n".encode()), (b":INIT:GATE:STAT?\n", f"{gated}\n".encode())])
    with expected_protocol(awg, CONNECT + pairs) as driver:
        driver.trigger_mode(mode)
        assert driver.trigger_mode() == mode


def test_run_stop_trigger_and_safe_state():
    pairs = (written(b":INIT:IMM") + written(b":TRIG:BEG") + written(b":ABOR")
             + written(b":ABOR") + [p for n in range(1, 5) for p in written(f":OUTP{n} 0".encode())])
    with expected_protocol(awg, CONNECT + pairs) as driver:
        driver.run()
        driver.send_trigger()
        driver.stop()
        driver.safe_state()


def test_segments_define_upload_select_delete_on_extended_memory():
    samples = np.resize(np.array([10, 35, 59, -128, 127, 0, -1], dtype=np.int8), 2560)  # LF, '#', ';' inside
    pairs = (written(b":TRAC1:DEF 2,2560") + written(b":TRAC1:DATA 2,0,#41280" + samples[:1280].tobytes())
             + written(b":TRAC1:DATA 2,1280,#41280" + samples[1280:].tobytes()) + written(b":TRAC1:SEL 2")
             + written(b":TRAC1:DEF 3,1280,-5") + written(b":TRAC1:DEL 3") + written(b":TRAC1:DEL:ALL"))
    with expected_protocol(awg, connect_pairs(modes=("EXT", "EXT", "INT", "INT")) + pairs) as driver:
        driver.ch1.define_segment(2, 2560)
        driver.ch1.upload_segment(2, samples, chunk_samples=1280)
        driver.ch1.select_segment(2)
        driver.ch1.define_segment(3, 1280, init_value=-5)
        driver.ch1.delete_segment(3)
        driver.ch1.delete_all_segments()


def test_segment_ids_are_checked_against_the_memory_before_sending():
    with expected_protocol(awg, connect_pairs(b"004,16G", ("INT", "EXT", "INT", "INT"))) as driver:
        with pytest.raises(ValueError, match="internal memory"):
            driver.ch1.define_segment(2, 1280)
        with pytest.raises(ValueError, match="without option SEQ"):
            driver.ch2.define_segment(2, 1280)


def test_load_waveform_defines_uploads_and_selects():
    samples = np.zeros(1280, dtype=np.int8)
    pairs = (written(b":TRAC2:DEF 1,1280") + written(b":TRAC2:DATA 1,0,#41280" + samples.tobytes())
             + written(b":TRAC2:SEL 1"))
    with expected_protocol(awg, CONNECT + pairs) as driver:
        driver.ch2.load_waveform(1, samples)


def named(driver: KeysightM8195A, *names: str) -> KeysightM8195A:
    """The driver naming its uploads ``names`` in turn (its own are random)."""
    driver.upload_names = iter(names).__next__
    return driver


def test_the_roles_load_is_one_message_with_memory_mode_name_and_one_error_check():
    codes = np.arange(1280, dtype=np.int64) % 256 - 128
    data = codes.astype(np.int8).tobytes()
    message = (b':ABOR;:TRAC1:MMOD EXT;:VOLT1 0.500000;:VOLT1:OFFS 0.000000;:TRAC1:DEF 1,1280;:TRAC1:NAME 1,"up1";'
               b":TRAC1:DATA 1,0,#41280" + data + b";:TRAC1:SEL 1;:OUTP1 1;:INIT:IMM;:SYST:ERR?\n")
    with expected_protocol(awg, CONNECT + [(message, NO_ERROR)]) as driver:
        role = AwgChannels(named(driver, "up1"), (1,), amplitude_max=Limit(1.0, "Vpp", "test"), name="carver")
        role.load([(1, [codes])], [0.5], run=True)
        assert driver.ch1.memory_mode.get_latest() == "EXT"
        assert driver.ch1.output_enabled.cache.get(get_if_invalid=False) is True
        assert driver.ch1.loaded_samples(1)[1] == "up1"


GATE = np.zeros(16384, dtype=np.int8)   # 64 granules of 256 samples at DIV1


def _first_load(name: bytes) -> tuple:
    return (b":ABOR;:VOLT4 0.500000;:VOLT4:OFFS 0.000000;:TRAC4:DEF 1,16384;:TRAC4:NAME 1,\"" + name + b"\";"
            b":TRAC4:DATA 1,0,#516384" + GATE.tobytes() + b";:TRAC4:SEL 1;:OUTP4 1;:SYST:ERR?\n", NO_ERROR)


def test_a_reload_that_changes_few_granules_is_confirmed_by_the_instrument_then_sends_only_them():
    """The catalogue and the name say the segment is still the driver's last upload: only granules 2 and 58-59
    (the ones that changed) go out, after naming it anew; unchanged, nothing but the name (M8195A user's guide:
    :TRAC:CAT?, :TRAC:NAME, :TRAC:DATA at a granularity-aligned offset)."""
    changed = GATE.copy()
    changed[600], changed[15000:15300] = 32, -32
    confirm = (b':TRAC4:CAT?;:TRAC4:NAME? 1;:SYST:ERR?\n', b'1,16384;"up1";' + NO_ERROR)
    pieces = (b':ABOR;:VOLT4 0.500000;:VOLT4:OFFS 0.000000;:TRAC4:NAME 1,"up2";:TRAC4:DATA 1,512,#3256'
              + changed[512:768].tobytes() + b";:TRAC4:DATA 1,14848,#3512" + changed[14848:15360].tobytes()
              + b";:TRAC4:SEL 1;:OUTP4 1;:SYST:ERR?\n", NO_ERROR)
    again = (b':TRAC4:CAT?;:TRAC4:NAME? 1;:SYST:ERR?\n', b'1,16384;"up2";' + NO_ERROR)
    nothing = (b':ABOR;:VOLT4 0.500000;:VOLT4:OFFS 0.000000;:TRAC4:NAME 1,"up3";:TRAC4:SEL 1;:OUTP4 1;:SYST:ERR?\n',
               NO_ERROR)
    pairs = [_first_load(b"up1"), confirm, pieces, again, nothing]
    with expected_protocol(awg, connect_pairs(modes=("EXT",) * 4) + pairs) as driver:
        gate = AwgChannels(named(driver, "up1", "up2", "up3"), (4,), amplitude_max=Limit(1.0, "Vpp", "t"), name="gate")
        gate.load([(1, [GATE])], [0.5])
        gate.load([(1, [changed])], [0.5])
        np.testing.assert_array_equal(driver.ch4.loaded_samples(1)[0], changed)
        gate.load([(1, [changed.copy()])], [0.5])


@pytest.mark.parametrize("catalog, name", [(b"0,0", b'""'),                 # reset or deleted: nothing there
                                           (b"1,8192", b'""'),               # defined anew at another length
                                           (b"1,16384", b'"someone else"')])  # another upload since
def test_a_reload_the_instrument_does_not_confirm_is_a_whole_upload(catalog, name):
    changed = GATE.copy()
    changed[0] = 1
    confirm = (b':TRAC4:CAT?;:TRAC4:NAME? 1;:SYST:ERR?\n', catalog + b";" + name + b";" + NO_ERROR)
    whole = (b":ABOR;:VOLT4 0.500000;:VOLT4:OFFS 0.000000;:TRAC4:DEF 1,16384;:TRAC4:NAME 1,\"up2\";"
             b":TRAC4:DATA 1,0,#516384" + changed.tobytes() + b";:TRAC4:SEL 1;:OUTP4 1;:SYST:ERR?\n", NO_ERROR)
    with expected_protocol(awg, connect_pairs(modes=("EXT",) * 4) + [_first_load(b"up1"), confirm, whole]) as driver:
        gate = AwgChannels(named(driver, "up1", "up2"), (4,), amplitude_max=Limit(1.0, "Vpp", "t"), name="gate")
        gate.load([(1, [GATE])], [0.5])
        gate.load([(1, [changed])], [0.5])


def test_a_reload_that_changes_much_and_a_refused_load_are_whole_uploads_without_asking():
    """Over a quarter changed: the whole segment, no catalogue round trip. A refused load leaves what the segment
    holds unknown: the next one is whole too."""
    changed = np.full(16384, 5, dtype=np.int8)
    refused = (b":ABOR;:VOLT4 0.500000;:VOLT4:OFFS 0.000000;:TRAC4:DEF 1,16384;:TRAC4:NAME 1,\"up2\";"
               b":TRAC4:DATA 1,0,#516384" + changed.tobytes() + b";:TRAC4:SEL 1;:OUTP4 1;:SYST:ERR?\n",
               b'-221,"Settings conflict;not allowed while running"\n')
    whole = (refused[0].replace(b"up2", b"up3"), NO_ERROR)
    pairs = [_first_load(b"up1"), refused, (b"SYST:ERR?\n", NO_ERROR), whole]
    with expected_protocol(awg, connect_pairs(modes=("EXT",) * 4) + pairs) as driver:
        gate = AwgChannels(named(driver, "up1", "up2", "up3"), (4,), amplitude_max=Limit(1.0, "Vpp", "t"), name="gate")
        gate.load([(1, [GATE])], [0.5])
        with pytest.raises(InstrumentError):
            gate.load([(1, [changed])], [0.5])
        assert driver.ch4.loaded_samples(1) is None
        gate.load([(1, [changed])], [0.5])


def test_the_roles_select_run_and_stop_are_one_message_each():
    pairs = [(b":TRAC1:SEL 2;:TRAC2:SEL 2;:SYST:ERR?\n", NO_ERROR), (b":INIT:IMM;:SYST:ERR?\n", NO_ERROR),
             (b":ABOR;:SYST:ERR?\n", NO_ERROR)]
    with expected_protocol(awg, connect_pairs(modes=("EXT", "EXT", "INT", "INT")) + pairs) as driver:
        role = AwgChannels(driver, (1, 2), amplitude_max=Limit(1.0, "Vpp", "test"), name="iq")
        role.select(2)
        role.run()
        role.stop()
        with pytest.raises(ValueError, match="segment id"):
            role.select(0)   # refused before anything is sent


def test_playing_a_segment_on_two_roles_of_one_awg_is_one_message():
    """Stop, both roles' selections and the start: the units the upload's message already sends in this order."""
    pairs = [(b":ABOR;:TRAC1:SEL 2;:TRAC2:SEL 2;:TRAC4:SEL 2;:INIT:IMM;:SYST:ERR?\n", NO_ERROR)]
    with expected_protocol(awg, connect_pairs(modes=("EXT", "EXT", "INT", "INT")) + pairs) as driver:
        iq = AwgChannels(driver, (1, 2), amplitude_max=Limit(1.0, "Vpp", "test"), name="iq")
        gate = AwgChannels(driver, (4,), amplitude_max=Limit(1.0, "Vpp", "test"), name="gate")
        iq.play_segment(2, gate)
        with pytest.raises(ValueError, match="segment id"):
            iq.play_segment(0, gate)   # refused before anything is sent


def test_playing_a_segment_with_a_role_on_another_instrument_takes_a_message_per_step():
    class OtherAwg:  # a role on another instrument: it selects on its own
        def __init__(self):
            self.selected = []

        def select(self, segment_id):
            self.selected.append(segment_id)

    pairs = [(b":ABOR;:SYST:ERR?\n", NO_ERROR), (b":TRAC1:SEL 2;:TRAC2:SEL 2;:SYST:ERR?\n", NO_ERROR),
             (b":INIT:IMM;:SYST:ERR?\n", NO_ERROR)]
    with expected_protocol(awg, connect_pairs(modes=("EXT", "EXT", "INT", "INT")) + pairs) as driver:
        other = OtherAwg()
        AwgChannels(driver, (1, 2), amplitude_max=Limit(1.0, "Vpp", "test"), name="iq").play_segment(2, other)
        assert other.selected == [2]


def test_the_roles_stop_and_rate_and_switch_are_one_message_each():
    pairs = [(b":ABOR;:OUTP2 0;:FREQ:RAST?;:INST:MEM:EXT:RDIV?;:SYST:ERR?\n",
              b"6.40000000E+10;DIV1;" + NO_ERROR),
             (b":TRAC1:SEL 3;:OUTP1 1;:TRAC2:SEL 3;:SYST:ERR?\n", NO_ERROR)]
    with expected_protocol(awg, connect_pairs(modes=("EXT", "EXT", "INT", "INT")) + pairs) as driver:
        role = AwgChannels(driver, (1, 2), amplitude_max=Limit(1.0, "Vpp", "test"), name="iq")
        assert role.stop_and_rate(1e9, outputs_off=[2]) == 64
        role.switch([(1, 3, True), (2, 3, None)])
        with pytest.raises(ValueError, match="selected at once"):
            role.switch([(1, 1, None), (2, 2, None)])   # refused before anything is sent


def test_a_load_of_megabytes_arrives_byte_for_byte_in_one_send():
    """Messages of 64 kB and more leave in one sendall on pyvisa-py's socket (visa_connection.send_message), not in
    its 4 kB pieces: the instrument receives the same bytes."""
    codes = (np.arange(1 << 21) * 7 % 255 - 127).astype(np.int8)   # 2 MiB: two 1 MiB blocks
    message = (b':ABOR;:TRAC1:MMOD EXT;:VOLT1 0.500000;:VOLT1:OFFS 0.000000;:TRAC1:DEF 1,2097152;:TRAC1:NAME 1,"big";'
               b":TRAC1:DATA 1,0,#71048576" + codes[:1 << 20].tobytes() + b";:TRAC1:DATA 1,1048576,#71048576"
               + codes[1 << 20:].tobytes() + b";:TRAC1:SEL 1;:OUTP1 1;:SYST:ERR?\n")
    with expected_protocol(awg, CONNECT + [(message, NO_ERROR)]) as driver:
        role = AwgChannels(named(driver, "big"), (1,), amplitude_max=Limit(1.0, "Vpp", "test"), name="carver")
        role.load([(1, [codes])], [0.5])


def test_a_sent_message_is_answered_only_when_its_reply_is_read():
    """run_sent, play_segment_sent and stop_sent send the very bytes of run, play_segment and stop and leave the reply
    to ``replies()``: a refusal is raised there (with the rest of the error queue), not at the send."""
    refused = b'-221,"Settings conflict"\n'
    pairs = [(b":INIT:IMM;:SYST:ERR?\n", refused), (b"SYST:ERR?\n", NO_ERROR),
             (b":ABOR;:TRAC1:SEL 2;:TRAC2:SEL 2;:TRAC4:SEL 2;:INIT:IMM;:SYST:ERR?\n", NO_ERROR),
             (b":ABOR;:SYST:ERR?\n", NO_ERROR)]
    with expected_protocol(awg, connect_pairs(modes=("EXT", "EXT", "INT", "INT")) + pairs) as driver:
        iq = AwgChannels(driver, (1, 2), amplitude_max=Limit(1.0, "Vpp", "test"), name="iq")
        gate = AwgChannels(driver, (4,), amplitude_max=Limit(1.0, "Vpp", "test"), name="gate")
        started = iq.run_sent()  # the refusal is on the line, not read yet
        with pytest.raises(InstrumentError, match="-221"):
            started.replies()
        playing = iq.play_segment_sent(2, gate)
        assert playing.replies() == []
        assert iq.stop_sent().replies() == []
