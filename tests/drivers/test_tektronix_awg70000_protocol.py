"""Byte-exact protocol of the Awg role over qcodes' Tektronix AWG70002A driver (instruments/optical/awg70000.py):
the exact bytes sent, terminations included, and the replies parsed.

Commands as the AWG70000 Series Programmer Manual names them (WLISt:WAVeform:NEW/DATA/MARKer:DATA/DELete,
WLISt:LIST?, SOURce<n>:CASSet:WAVeform, SOURce<n>:VOLTage, SOURce<n>:DAC:RESolution, OUTPut<n>:STATe,
AWGControl:RUN/STOP/RSTate?, CLOCk:SRATe, SYSTem:ERRor:ALL?); waveform data as little-endian IEEE 754 singles in a
definite block, marker data one byte per sample with marker 1 in bit 6 (docs/INSTRUMENTS.md 6.3).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from qcodes.instrument_drivers.tektronix import TektronixAWG70002A

from qslab.instruments.drivers._scpi import InstrumentError
from qslab.instruments.optical.awg70000 import Awg70000Channels, parse_error_list
from qslab.instruments.optical.limits import Limit, LimitError
from tests.drivers.expected_protocol import expected_protocol

IDN = b"TEKTRONIX,AWG70002A,B020000,FV:7.1.0170.0\n"
NO_ERROR = b'0,"No error"\n'
CONNECT = [(b"*IDN?\n", IDN), (b'MMEMory:CDIRectory "\\Users\\OEM\\Documents"\n', None), (b"*IDN?\n", IDN)]
SAMPLES = 2400


def factory(address: str) -> TektronixAWG70002A:
    return TektronixAWG70002A("awg70k", address, visalib="@py", timeout=2, device_clear=False)


def role(driver, channels=(1, 2)) -> Awg70000Channels:
    return Awg70000Channels.from_driver(driver, list(channels), amplitude_max=Limit(0.5, "Vpp", "limits.x"),
                                        name="client_processor")


def block(payload: bytes) -> bytes:
    return b"#" + str(len(str(len(payload)))).encode() + str(len(payload)).encode() + payload


def upload(name: str, codes: np.ndarray, marker: bool) -> list:
    values = struct.pack(f"<{codes.size}f", *(codes.astype(np.float32) / np.float32(127)))
    markers = bytes([64] * (codes.size // 2) + [0] * (codes.size - codes.size // 2)) if marker else bytes(codes.size)
    n = codes.size
    return [(f'WLISt:WAVeform:NEW "{name}",{n}\n'.encode(), None),
            (f'WLISt:WAVeform:DATA "{name}",0,{n},'.encode() + block(values) + b"\n", None),
            (f'WLISt:WAVeform:MARKer:DATA "{name}",0,{n},'.encode() + block(markers) + b"\n", None),
            (b"SYSTem:ERRor:ALL?\n", NO_ERROR)]


def test_load_sends_each_waveform_its_markers_and_the_channel_settings_byte_for_byte():
    codes = [(np.arange(SAMPLES) % 255 - 127).astype(np.int8), np.full(SAMPLES, -5, dtype=np.int8)]
    pairs = CONNECT + [(b"WLISt:WAVeform:LMINimum?\n", b"2400\n"),  # checked before anything is changed
                       (b"AWGControl:STOP\n", None), (b"WLISt:LIST?\n", b'"qslab_ch2_seg3"\n')]
    pairs += upload("qslab_ch1_seg3", codes[0], marker=True)
    pairs += [(b'WLISt:WAVeform:DELete "qslab_ch2_seg3"\n', None)] + upload("qslab_ch2_seg3", codes[1], marker=False)
    pairs += [(b"SOURce1:DAC:RESolution 8\n", None), (b"SOURce1:VOLTage 0.500000\n", None),
              (b'SOURce1:CASSet:WAVeform "qslab_ch1_seg3"\n', None), (b"OUTPut1:STATe 1\n", None),
              (b"SOURce2:DAC:RESolution 8\n", None), (b"SOURce2:VOLTage 0.300000\n", None),
              (b'SOURce2:CASSet:WAVeform "qslab_ch2_seg3"\n', None), (b"OUTPut2:STATe 1\n", None),
              (b"SYSTem:ERRor:ALL?\n", NO_ERROR), (b"AWGControl:RUN\n", None), (b"SYSTem:ERRor:ALL?\n", NO_ERROR)]
    with expected_protocol(factory, pairs) as driver:
        role(driver).load([(3, codes)], [0.5, 0.3], run=True)
        assert driver.ch2.awg_amplitude.cache.get(get_if_invalid=False) == 0.3


def test_a_refusal_in_the_error_queue_is_an_instrument_error_naming_the_step():
    pairs = CONNECT + [(b'SOURce1:CASSet:WAVeform "qslab_ch1_seg2"\n', None),
                       (b"SYSTem:ERRor:ALL?\n", b'-224,"Illegal parameter value;no waveform"\n')]
    with expected_protocol(factory, pairs) as driver:
        with pytest.raises(InstrumentError, match="select segment 2.*-224"):
            role(driver, (1,)).select(2)


def test_playing_a_segment_is_a_message_per_step():
    """Stop, the segment's waveform assigned to each channel of this role and of another, run (AWGControl:RUN/STOP,
    SOURce<n>:CASSet:WAVeform), each checked as on its own."""
    pairs = CONNECT + [(b"AWGControl:STOP\n", None),
                       (b'SOURce1:CASSet:WAVeform "qslab_ch1_seg2"\n', None), (b"SYSTem:ERRor:ALL?\n", NO_ERROR),
                       (b'SOURce2:CASSet:WAVeform "qslab_ch2_seg2"\n', None), (b"SYSTem:ERRor:ALL?\n", NO_ERROR),
                       (b"AWGControl:RUN\n", None), (b"SYSTem:ERRor:ALL?\n", NO_ERROR)]
    with expected_protocol(factory, pairs) as driver:
        role(driver, (1,)).play_segment(2, role(driver, (2,)))


def test_a_segment_shorter_than_the_awgs_shortest_waveform_is_refused_before_anything_changes():
    codes = [np.zeros(2392, dtype=np.int8)] * 2
    pairs = CONNECT + [(b"WLISt:WAVeform:LMINimum?\n", b"2400\n")]
    with expected_protocol(factory, pairs) as driver:
        with pytest.raises(LimitError, match="a segment of 2392 samples is shorter than the 2400 samples"):
            role(driver).load([(1, codes)], [0.5, 0.5])


def test_an_error_text_with_quotes_inside_is_parsed_whole():
    """IEEE 488.2 string response data double an inner quote; the entries after it are still read."""
    reply = '-224,"Illegal parameter value;no waveform ""qslab_ch1_seg1"" in the waveform list",-222,"Data out of range"'
    assert parse_error_list(reply) == [
        (-224, 'Illegal parameter value;no waveform "qslab_ch1_seg1" in the waveform list'), (-222, "Data out of range")]
    assert parse_error_list('0,"No error"') == []


def test_rate_divider_sets_the_clock_to_the_maximum_over_it_and_reads_samples_per_symbol():
    pairs = CONNECT + [(b"CLOCk:SRATe? MAX\n", b"1.6000000000E+10\n"), (b"CLOCk:SOURce?\n", b"INT\n"),
                       (b"CLOCk:SOURce?\n", b"INT\n"),  # qcodes' rate validator asks the clock source twice
                       (b"CLOCk:SRATe 4000000000.0\n", None), (b"SYSTem:ERRor:ALL?\n", NO_ERROR),
                       (b"CLOCk:SRATe?\n", b"4.0000000000E+09\n")]
    with expected_protocol(factory, pairs) as driver:
        awg = role(driver)
        awg.configure(rate_divider=4)
        assert awg.samples_per_symbol(1e9) == 4


def test_amplitudes_outside_the_direct_path_or_the_declared_limit_are_refused_before_anything_is_sent():
    codes = [np.zeros(SAMPLES, dtype=np.int8)] * 2
    with expected_protocol(factory, CONNECT) as driver:
        with pytest.raises(LimitError, match="0.25..0.5 Vpp"):
            role(driver).load([(1, codes)], [0.2, 0.3])
        with pytest.raises(LimitError, match="drive amplitude"):
            Awg70000Channels(driver, [1, 2], amplitude_max=Limit(0.4, "Vpp", "limits.x"), name="r").load(
                [(1, codes)], [0.45, 0.3])


def test_error_list_parsing():
    assert parse_error_list('0,"No error"') == []
    assert parse_error_list('-222,"Data out of range;x",-221,"Settings conflict"') == [
        (-222, "Data out of range;x"), (-221, "Settings conflict")]
