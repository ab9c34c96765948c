"""The shared SCPI pieces: error-reply parsing, boolean parsing, draining a multi-entry error queue."""

from __future__ import annotations

import pytest

from qslab.instruments.drivers._scpi import InstrumentError, parse_bool, parse_error_reply, parse_int
from qslab.instruments.drivers.scpi_optical_amplifier import ScpiOpticalAmplifier


@pytest.mark.parametrize(("reply", "expected"), [
    ('+0,"No error"', (0, "No error")),
    ('0,"No error"\r', (0, "No error")),
    ('-222,"Data out of range"', (-222, "Data out of range")),
    ("-113,Undefined header", (-113, "Undefined header")),
])
def test_parse_error_reply(reply, expected):
    assert parse_error_reply(reply) == expected


def test_malformed_error_reply_is_named():
    with pytest.raises(ValueError, match="'garbage'"):
        parse_error_reply("garbage")


@pytest.mark.parametrize(("reply", "expected"), [("1", True), ("+0", False), ("ON", True), ("off\r", False),
                                                 ("+1.00000000E+000", True)])
def test_parse_bool(reply, expected):
    assert parse_bool(reply) is expected


def test_parse_int_accepts_nr3():
    assert parse_int("-2.00000000E+001") == -20


def test_every_queued_error_is_reported_and_drained(scpi_socket):
    queue = ['-222,"Data out of range"', '-350,"Queue overflow"']
    answers = {b"*IDN?": "qslab,SCPI optical amplifier,1,1"}

    def answer(message: bytes) -> str | None:
        if message == b"SYST:ERR?":
            return queue.pop(0) if queue and sent_gain[0] else '0,"No error"'
        if message.startswith(b"SOUR:GAIN "):
            sent_gain[0] = True
        return answers.get(message)

    sent_gain = [False]
    fake = scpi_socket(answer)
    amplifier = ScpiOpticalAmplifier("amp_socket", fake.address, visalib="@py")
    with pytest.raises(InstrumentError) as refused:
        amplifier.gain_db(10.0)
    assert refused.value.errors == [(-222, "Data out of range"), (-350, "Queue overflow")]
    assert str(refused.value).startswith("amp_socket: 'SOUR:GAIN 10.0000' was refused: "
                                         '-222,"Data out of range"; -350,"Queue overflow" (')
    assert "setting amp_socket_gain_db to 10.0" in str(refused.value)
    assert fake.messages[-4:] == [b"SOUR:GAIN 10.0000", b"SYST:ERR?", b"SYST:ERR?", b"SYST:ERR?"]
