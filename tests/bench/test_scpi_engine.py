"""The SCPI emulator engine on its own: headers, parameters, the error queue, status, blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qslab.instruments.sim.scpi.engine import CommandTree, ScpiEngine
from qslab.instruments.sim.scpi.parsing import (MessageFramer, ScpiError, compile_pattern, definite_block, nr3,
                                                parse_bool, parse_choice, parse_number)


class Recorder:
    """A tiny instrument: a power per source port, a state flag, a trace store, and a block query."""

    def __init__(self):
        self.power = {}
        self.state = {}
        self.trace = {}
        tree = CommandTree()
        tree.add("SOURce#[:CHANnel#]:POWer[:LEVel][:IMMediate][:AMPLitude]", set=self.set_power,
                 query=lambda call: nr3(self.power.get(call.suffix, 1e-3)))
        tree.add("SOURce#:POWer:STATe", set=lambda call: self.state.__setitem__(call.suffix, call.boolean()),
                 query=self.get_state)
        tree.add(":TRACe#[:DATA]", set=self.set_trace, query=lambda call: bytes(self.trace[call.integer(0)]))
        tree.add("[SENSe:]CORRection:WAVelength", set=lambda call: self.state.__setitem__(
            "wav", call.number(units=("M",), minimum=1e-6, maximum=2e-6, default=1.55e-6)))
        self.engine = ScpiEngine(tree, "Maker,Model,SN1,1.0", error_zero="+0", queue_depth=30)

    def set_power(self, call):
        call.count(1)
        value, unit = call.quantity(units=("W", "DBM"), minimum=None, maximum=None)
        if unit == "DBM":
            value = 1e-3 * 10 ** (value / 10)
        if not 1e-6 <= value <= 0.1:
            raise ScpiError(-222)
        self.power[call.suffix] = value

    def get_state(self, call):
        call.count(0)
        return "1" if self.state.get(call.suffix) else "0"

    def set_trace(self, call):
        call.count(2)
        self.trace[call.integer(0)] = bytes(call.block(1))

    def ask(self, message: bytes | str) -> str:
        message = message.encode() if isinstance(message, str) else message
        return self.engine.exchange(message).decode()

    def errors(self) -> list[str]:
        found = []
        while (reply := self.ask("SYST:ERR?").strip()) != '+0,"No error"':
            found.append(reply)
        return found


@pytest.fixture
def box() -> Recorder:
    return Recorder()


@pytest.mark.parametrize("header", [
    "SOURCE2:POWER:LEVEL:IMMEDIATE:AMPLITUDE 5MW", ":sour2:pow 5mW", "Sour2:Pow 5e-3", "SOUR2:CHAN1:POW 5MW",
    "source2:power:amplitude 7DBM",
])
def test_long_short_optional_nodes_and_case_reach_the_same_command(box, header):
    box.ask(header)
    assert box.errors() == []
    assert box.power[2] == pytest.approx(5e-3, rel=0.01)


@pytest.mark.parametrize("header", ["SOURC2:POW 1MW", "SOUR2:POWE 1MW", "SOUR2:POWERS 1MW", "SOU2:POW 1MW"])
def test_partial_forms_are_undefined_headers(box, header):
    box.ask(header)
    assert box.errors() == ['-113,"Undefined header"']


def test_numeric_suffix_defaults_to_one(box):
    box.ask(":SOUR:POW 2MW;:SOURCE1:POWER?")
    assert box.power[1] == pytest.approx(2e-3)


def test_semicolon_units_share_one_reply_and_relative_paths_follow_the_previous_header(box):
    reply = box.ask("SOUR3:POW 1MW;POW:STAT ON;:SOUR3:POW:STAT?;*IDN?")
    assert reply == "1;Maker,Model,SN1,1.0\n"
    assert box.state[3] is True and box.errors() == []


def test_optional_first_node(box):
    box.ask("CORR:WAV 1550NM;:SENS:CORR:WAV 1.31UM")
    assert box.state["wav"] == pytest.approx(1.31e-6)
    box.ask("SENS:CORR:WAV MAX")
    assert box.state["wav"] == 2e-6 and box.errors() == []


@pytest.mark.parametrize("message, code, text", [
    ("SOUR1:POW 1W", -222, "Data out of range"),
    ("SOUR1:POW", -109, "Missing parameter"),
    ("SOUR1:POW 1MW,2MW", -108, "Parameter not allowed"),
    ("SOUR1:POW 1FURLONG", -131, "Invalid suffix"),
    ("SOUR1:POW:STAT MAYBE", -224, "Illegal parameter value"),
    ("SOUR1:POW ABC", -104, "Data type error"),
    ("SENS:CORR:WAV 3UM", -222, "Data out of range"),
    ("FOO:BAR 1", -113, "Undefined header"),
    ("*IDN", -113, "Undefined header"),  # a query-only header sent as a command
    ("SOUR1:POW:STAT? 1", -108, "Parameter not allowed"),
])
def test_errors_carry_the_standard_code_and_text(box, message, code, text):
    box.ask(message)
    assert box.errors() == [f'{code},"{text}"']


def test_command_error_discards_the_rest_of_the_message_but_execution_errors_do_not(box):
    box.ask("BOGUS;SOUR1:POW 2MW")
    assert 1 not in box.power
    box.ask("SOUR1:POW 1W;SOUR1:POW 2MW")
    assert box.power[1] == pytest.approx(2e-3)
    assert box.errors() == ['-113,"Undefined header"', '-222,"Data out of range"']


def test_error_queue_overflow_replaces_the_newest_entry(box):
    for _ in range(40):
        box.ask("NOPE")
    errors = box.errors()
    assert len(errors) == 30
    assert errors[:29] == ['-113,"Undefined header"'] * 29 and errors[-1] == '-350,"Queue overflow"'


def test_status_registers(box):
    assert box.ask("*ESR?") == "128\n"  # power on
    box.ask("NOPE;")
    box.ask("SOUR1:POW 1W")
    box.ask("*ESE 48")
    assert int(box.ask("*STB?")) == 4 | 32  # error queue not empty, event summary
    assert box.ask("*ESR?") == f"{32 | 16}\n"
    assert box.ask("*ESR?") == "0\n"
    box.ask("*OPC")
    assert box.ask("*ESR?") == "1\n"
    assert box.ask("*OPC?") == "1\n" and box.ask("*TST?") == "0\n"
    box.ask("*CLS")
    assert box.errors() == [] and int(box.ask("*STB?")) == 0


def test_output_queue_model_reports_interrupted_and_unterminated_queries(box):
    engine = box.engine
    engine.write(b"*IDN?")
    engine.write(b"*IDN?")  # the first reply was never read
    assert engine.read() == b"Maker,Model,SN1,1.0\n"
    assert engine.read() is None
    assert box.errors() == ['-410,"Query INTERRUPTED"', '-420,"Query UNTERMINATED"']


def test_definite_block_with_lf_semicolon_quote_and_hash_bytes(box):
    payload = bytes([10, 59, 34, 35, 49, 10, 13, 0, 255, 10])
    message = b":TRAC2:DATA 7," + definite_block(payload) + b"\n"
    framer = MessageFramer()
    framer.feed(b"*CLS\n" + message + b"*IDN?\r\n")
    assert framer.next_message() == b"*CLS"
    unit = framer.next_message()
    assert unit == message[:-1]
    assert framer.next_message() == b"*IDN?"
    assert framer.next_message() is None
    box.ask(unit)
    assert box.errors() == [] and box.trace[7] == payload
    reply = box.engine.exchange(b":TRAC2? 7")
    assert reply == b"#210" + payload + b"\n"


def test_block_ending_in_cr_keeps_its_cr(box):
    payload = b"ab\r"
    framer = MessageFramer()
    framer.feed(b":TRAC1:DATA 1," + definite_block(payload) + b"\n")
    box.ask(framer.next_message())
    assert box.trace[1] == payload


def test_framer_reports_how_much_of_a_block_is_missing():
    framer = MessageFramer()
    framer.feed(b":TRAC1:DATA 1,#41000" + b"x" * 10)
    assert framer.next_message() is None and framer.needed() == 990
    framer.feed(b"y" * 990 + b"\n")
    assert framer.next_message().endswith(b"y" * 990)


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(min_size=0, max_size=300), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_blocks_survive_any_chunking(payload, cuts):
    box = Recorder()
    stream = b"*CLS\n:TRAC1:DATA 3," + definite_block(payload) + b"\nSOUR1:POW 1MW\n"
    framer, messages, start = MessageFramer(), [], 0
    for cut in sorted(set(c for c in cuts if c < len(stream))) + [len(stream)]:
        framer.feed(stream[start:cut])
        start = cut
        while (message := framer.next_message()) is not None:
            messages.append(message)
    assert len(messages) == 3
    for message in messages:
        box.ask(message)
    assert box.errors() == [] and box.trace[3] == payload


def test_pattern_and_parameter_helpers():
    nodes = compile_pattern("[:SOURce#]:POWer[:LEVel]")
    assert [(n.short, n.long, n.has_suffix, n.optional) for n in nodes] == [
        ("SOUR", "SOURCE", True, True), ("POW", "POWER", False, False), ("LEV", "LEVEL", False, True)]
    assert parse_number("1500NM", units=("M",)) == (pytest.approx(1.5e-6), "M")
    assert parse_number("3GHZ", units=("HZ",))[0] == 3e9
    assert parse_number("def", minimum=0, maximum=2, default=1) == (1.0, None)
    with pytest.raises(ScpiError) as refused:
        parse_number("1NM")
    assert refused.value.code == -138
    assert parse_bool("on") and not parse_bool("0") and parse_bool("1.0")
    assert parse_choice("lsbf", ["LSBFirst", "MSBFirst"]) == "LSBFirst"
    assert parse_choice("msbfirst", ["LSBFirst", "MSBFirst"]) == "MSBFirst"
    assert nr3(1.55e-6) == "+1.55000000E-006" and nr3(-20) == "-2.00000000E+001"
    assert definite_block(np.arange(3, dtype=np.int8).tobytes()) == b"#13\x00\x01\x02"


LONG_TAIL = b";:TRAC1:DEF 1,8" + b";*WAI" * 1000 + b"\n"  # past the room kept after a block


@pytest.mark.parametrize("tail, units, pieces", [
    (b"\r\n", 1, 1), (b";*IDN?\n", 2, 1),
    (b";*IDN?\n", 2, 3),                                     # the rest of the message in pieces
    (b';*IDN?;SOUR1:POW 2MW;*IDN? "a;b\n"\n', None, 1),    # a string after the block (an LF inside it)
    (b";:TRAC2:DATA 8,#13\n\r\n;*IDN?\n", None, 2),        # a second block, holding an LF
    (LONG_TAIL, None, 2)])
def test_large_blocks_are_received_in_place(box, tail, units, pieces):
    payload = (np.arange(200_000) % 256).astype(np.uint8).tobytes()
    stream = b":TRAC1:DATA 9," + definite_block(payload)
    framer = MessageFramer()
    framer.feed(stream[:40])
    assert framer.next_message() is None
    view = framer.reserve()  # what the server receives into
    assert view is not None and len(view) == len(stream) - 40
    view[:] = stream[40:]
    framer.commit(len(view))
    assert framer.next_message() is None  # the terminator has not arrived
    rest = tail + b"SOUR1:POW 1MW\n"
    cuts = [len(tail) * k // pieces for k in range(pieces)] + [len(rest)]
    for start, stop in zip(cuts[:-1], cuts[1:-1]):
        framer.feed(rest[start:stop])
        assert framer.next_message() is None
    framer.feed(rest[cuts[-2]:])
    message = framer.next_message()
    assert bytes(message) == stream + tail[:-2 if tail.endswith(b"\r\n") else -1]  # the whole message, once
    reply = box.engine.exchange(message)
    assert box.trace[9] == payload
    if units is not None:  # (the other tails hold units this instrument refuses)
        assert reply.count(b"\n") == units - 1 and box.errors() == []
    assert framer.next_message() == b"SOUR1:POW 1MW"


def test_bind_is_the_one_dispatch_and_refuses_what_a_header_does_not_do():
    """The engine and the MBX's line protocol both dispatch through CommandTree.bind."""
    tree = CommandTree()
    seen = []
    tree.add("MZM:MODE", set=lambda call: seen.append((call.header, call.args)), query=lambda call: "3")
    tree.add("MZM:RESET", set=lambda call: "reset")
    found = tree.lookup((("MZM", None), ("MODE", None)))
    tree.bind(found, "mzm:mode", False)(["2"])
    assert seen == [("mzm:mode", ["2"])]
    assert tree.bind(found, "MZM:MODE?", True)([]) == "3"
    for found, query in ((tree.lookup((("MZM", None), ("RESET", None))), True), (None, False)):
        with pytest.raises(ScpiError) as error:
            tree.bind(found, "MZM:RESET?", query)
        assert error.value.code == -113
