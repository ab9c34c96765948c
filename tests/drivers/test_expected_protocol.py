"""The byte-exact protocol helper fails on every kind of difference, and passes a matching transcript, over both
transports it offers (pyvisa-py raw socket, pyserial socket:// URL)."""

from __future__ import annotations

import re

import pytest
import pyvisa
import serial

from tests.drivers.expected_protocol import ProtocolServer, expected_protocol


def _visa(address: str):
    resource = pyvisa.ResourceManager("@py").open_resource(address, read_termination="\n", write_termination="\n",
                                                           timeout=2000)
    return resource


def test_matching_transcript_passes_and_replies_reach_the_client():
    pairs = [(b"*IDN?\n", b"ACME,X1,0,1\n"), (b"VOLT 1\n", None), (b"VOLT?\n", b"+1.0E+00\n")]
    with expected_protocol(_visa, pairs) as resource:
        assert resource.query("*IDN?") == "ACME,X1,0,1"
        resource.write("VOLT 1")
        assert float(resource.query("VOLT?")) == 1.0


def test_a_wrong_byte_fails_naming_the_pair_and_offset():
    with pytest.raises(AssertionError, match=r"pair 1: byte 5 differs"):
        with expected_protocol(_visa, [(b"*IDN?\n", b"A\n"), (b"VOLT 1\n", None), (b"VOLT?\n", b"1\n")]) as resource:
            resource.query("*IDN?")
            resource.write("VOLT 2")
            resource.query("VOLT?")


def test_a_wrong_termination_fails():
    message = r"byte 6 differs: expected b'OUTP 1\r\n', received b'OUTP 1\n'"
    with pytest.raises(AssertionError, match=re.escape(message)):
        with expected_protocol(_visa, [(b"OUTP 1\r\n", None)]) as resource:
            resource.write("OUTP 1")  # LF only


def test_too_few_bytes_fail():
    with pytest.raises(AssertionError, match=re.escape(r"closed after b'OUTP 1\n', in the middle of pair 0")):
        with expected_protocol(_visa, [(b"OUTP 1\n*OPC?\n", b"1\n")]) as resource:
            resource.write("OUTP 1")


def test_extra_bytes_and_unplayed_pairs_fail():
    with pytest.raises(AssertionError, match="after the transcript ended"):
        with expected_protocol(_visa, [(b"A\n", None)]) as resource:
            resource.write("A")
            resource.write("B")
            resource.query("C?")
    with pytest.raises(AssertionError, match=r"1 pair\(s\) never sent"):
        with expected_protocol(_visa, [(b"A\n", None), (b"B\n", None)]) as resource:
            resource.write("A")


def test_serial_transport_with_cr_lf():
    def port(address: str):
        return serial.serial_for_url(address, timeout=2)

    with expected_protocol(port, [(b"V?\r\n", b"1.5\r\n")], transport="serial") as line:
        line.write(b"V?\r\n")
        assert line.read_until(b"\r\n") == b"1.5\r\n"


def test_pairs_are_checked_before_serving():
    with pytest.raises(TypeError, match="pair 0"):
        ProtocolServer([("*IDN?\n", None)])
