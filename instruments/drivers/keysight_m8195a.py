"""Keysight M8195A arbitrary waveform generator (65 GSa/s, 8-bit), through its Soft Front Panel's SCPI.

Command set and limits: docs/INSTRUMENTS.md 6.1 (M8195A/M8190A user's guides, and the qudi driver for
the numbers the guides do not give). Samples are signed 8-bit (-128..127) sent as IEEE 488.2
definite-length blocks with pyvisa's ``write_binary_values(datatype='b')``; a segment longer
than one block is sent in ascending-offset chunks (``:TRAC<ch>:DATA <id>,<offset>,<block>``), as
the guide requires. Every command is followed by ``SYST:ERR?``; a non-zero entry raises
:class:`InstrumentError` with the code and text. Booleans are sent as 1/0 (SCPI, docs/INSTRUMENTS.md 1.2).

Memory model (M8195A user's guide, Revision 2): the memory mode is per channel (p. 26; ``:TRAC<ch>:MMOD
EXT|INT``, ``memory_mode``); internal memory holds one waveform per channel and no sequencing, extended
memory without option -SEQ one segment (p. 110), so a segment id other than 1 is refused before anything is
sent unless the channel is on extended memory and ``*OPT?`` (read at connect, ``options``) lists SEQ; the
extended-memory channels share one sequence table (p. 110): they play one selected segment, and deleting a
segment on one deletes it on all (p. 254), which the driver's own segment table follows.

What a segment holds: the driver keeps the samples it last sent to each segment and names the segment with a token
of that upload (``:TRAC<ch>:NAME <id>,"<token>"``, at most 32 characters). Defining or deleting a segment, a memory
mode change or a reset drops it (and its name) on the instrument; ``segment_catalog`` and ``segment_name`` read
what the instrument holds, so a caller can confirm that a segment is still the driver's upload before sending only
what changed in it (``loaded_samples``, the Awg role's ``load``).

Address: the Soft Front Panel offers HiSLIP (``TCPIP0::localhost::hislip0::INSTR``) and a raw
socket (``TCPIP::<host>::5025::SOCKET``); terminations are LF both ways.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from qcodes.instrument import ChannelTuple, InstrumentChannel
from qcodes.validators import Bool, Enum, Ints, Numbers

from qslab.instruments.drivers._scpi import (InstrumentError, RetriedGets, ScpiErrorCheckingInstrument, block_unit,
                                             parse_bool, parse_float, parse_int)

__all__ = ["InstrumentError", "KeysightM8195A", "M8195AChannel"]

# Sample clock 53.76-65 GSa/s (guide, docs/INSTRUMENTS.md 6.1).
SAMPLE_RATE_LIMITS_HZ = (53.76e9, 65e9)
# qudi's constraints (docs/INSTRUMENTS.md 6.1): amplitude 0.075-2 Vpp, offset 0-1 V, segments at least
# 1280 samples long in steps of 256 / (sample-rate divider).
AMPLITUDE_LIMITS_VPP = (0.075, 2.0)
OFFSET_LIMITS_V = (0.0, 1.0)
MIN_SEGMENT_SAMPLES = 1280
GRANULARITY_AT_DIV1_SAMPLES = 256
# One block per MiB keeps each write far below the 999,999,999-byte SCPI block limit and gives the
# socket a steady stream; a multiple of 256 so every chunk but the last keeps the granularity.
DEFAULT_CHUNK_SAMPLES = 1 << 20
# the longest segment name the instrument keeps (:TRAC<ch>:NAME)
SEGMENT_NAME_CHARS = 32

_DIVIDERS = {1: "DIV1", 2: "DIV2", 4: "DIV4"}
DAC_MODES = ("SING", "DUAL", "FOUR", "MARK", "DCM", "DCD")
MEMORY_MODES = ("EXT", "INT")
SEQUENCING_OPTION = "SEQ"
_TRIGGER_MODES = {  # (INIT:CONT:STAT, INIT:GATE:STAT) per docs/INSTRUMENTS.md 6.1
    "continuous": (1, 0),
    "triggered": (0, 0),
    "gated": (0, 1),
}


def one_of(*words: str):
    """A get parser for a character reply: the stripped word if it is one of ``words``, else ValueError (a garbled
    reply the retries take again), not a mode the instrument does not have."""

    def parse(reply: str) -> str:
        word = reply.strip()
        if word not in words:
            raise ValueError(f"expected one of {', '.join(words)}, got {reply!r}")
        return word

    return parse


def as_int8_samples(samples: Any) -> np.ndarray:
    """Samples as an int8 array; refuses values outside -128..127 and non-integers (why: a silent
    wrap-around of 128 to -128 would flip the drive polarity)."""
    array = np.asarray(samples)
    if array.ndim != 1:
        raise ValueError(f"samples must be one-dimensional, got shape {array.shape}")
    if array.dtype == np.int8:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError("samples must be integers in -128..127 (quantise before uploading)")
    if array.size and (array.min() < -128 or array.max() > 127):
        raise ValueError(f"samples must lie in -128..127, got {array.min()}..{array.max()}")
    return array.astype(np.int8)


def random_upload_name() -> str:
    """``qslab`` and 27 random hex digits: a segment name (32 characters) no other upload gave."""
    return "qslab" + uuid.uuid4().hex[:SEGMENT_NAME_CHARS - 5]


def parse_catalog(reply: str) -> dict[int, int]:
    """A ``:TRAC<ch>:CAT?`` reply ``<id>,<length>[,<id>,<length>...]`` as {id: length}; "0,0" is no segment."""
    values = [int(word) for word in reply.strip().split(",") if word.strip()]
    if len(values) % 2:
        raise ValueError(f"a segment catalog holds id,length pairs, got {reply!r}")
    return {segment_id: length for segment_id, length in zip(values[::2], values[1::2]) if segment_id}


def parse_name(reply: str) -> str:
    """A ``:TRAC<ch>:NAME?`` reply (a quoted string) as the name."""
    text = reply.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(f"a segment name is a quoted string, got {reply!r}")
    return text[1:-1].replace('""', '"')


class M8195AChannel(RetriedGets, InstrumentChannel):
    """One output channel: amplitude, offset, output, function mode and its waveform segments."""

    def __init__(self, parent: KeysightM8195A, name: str, channel: int):
        super().__init__(parent, name)
        self.channel = channel
        self._segment_lengths: dict[int, int] = {}
        self._uploads: dict[int, tuple[np.ndarray, str]] = {}  # segment id -> (samples last sent, their name token)
        self.amplitude_vpp = self.add_parameter(
            "amplitude_vpp", label="amplitude (peak to peak)", unit="V", get_cmd=f":VOLT{channel}?",
            set_cmd=f":VOLT{channel} {{:.6f}}", get_parser=parse_float, vals=Numbers(*AMPLITUDE_LIMITS_VPP))
        self.offset_v = self.add_parameter(
            "offset_v", label="offset", unit="V", get_cmd=f":VOLT{channel}:OFFS?",
            set_cmd=f":VOLT{channel}:OFFS {{:.6f}}", get_parser=parse_float, vals=Numbers(*OFFSET_LIMITS_V))
        self.output_enabled = self.add_parameter(
            "output_enabled", label="output", get_cmd=f":OUTP{channel}?",
            set_cmd=f":OUTP{channel} {{}}", get_parser=parse_bool, set_parser=int, vals=Bool())
        self.function_mode = self.add_parameter(
            "function_mode", label="function mode", get_cmd=f":FUNC{channel}:MODE?",
            set_cmd=f":FUNC{channel}:MODE {{}}", get_parser=one_of("ARB", "STS", "STSC"),
            vals=Enum("ARB", "STS", "STSC"),
            docstring="ARB plays the selected segment; STS/STSC run the sequence table.")
        self.memory_mode = self.add_parameter(
            "memory_mode", label="memory mode", get_cmd=f":TRAC{channel}:MMOD?",
            set_cmd=f":TRAC{channel}:MMOD {{}}", get_parser=one_of(*MEMORY_MODES), vals=Enum(*MEMORY_MODES),
            docstring="EXT: extended memory (segments, the shared sequence table, the rate divider); INT: internal "
                      "memory, one waveform (user's guide p. 26, p. 110). A change empties the channel's segments.")

    def check_segment_id(self, segment_id: int, memory_mode: str | None = None) -> None:
        """Segment 1 only, unless the channel is on extended memory and the AWG has option SEQ (guide p. 110).
        ``memory_mode``: the mode the channel will have (default: the one it has)."""
        Ints(1).validate(segment_id, "segment_id")
        if segment_id == 1:
            return
        mode = memory_mode or self.memory_mode.get_latest()
        if mode != "EXT":
            raise ValueError(f"{self.full_name}: segment {segment_id} refused: a channel on internal memory plays one "
                             "waveform, segment 1 (M8195A user's guide p. 110); set memory_mode to EXT")
        if not self.parent.has_sequencing:
            raise ValueError(f"{self.full_name}: segment {segment_id} refused: without option SEQ (*OPT? "
                             f"{','.join(self.parent.options) or 'none'}) extended memory holds one segment, 1 "
                             "(M8195A user's guide p. 110)")

    def sharing_channels(self) -> list[M8195AChannel]:
        """The channels a segment deletion on this one applies to: all extended-memory channels if this is one."""
        if self.memory_mode.get_latest() != "EXT":
            return [self]
        return [c for c in self.parent.channels if c.memory_mode.get_latest() == "EXT"]

    def note_memory_mode(self, mode: str) -> None:
        """What the driver knows after ``:TRAC<ch>:MMOD`` was sent in a batch: the mode, and no segments."""
        if self.memory_mode.cache.get(get_if_invalid=False) != mode:
            self._segment_lengths.clear()
            self._uploads.clear()
        self.memory_mode.cache.set(mode)

    def define_segment(self, segment_id: int, length_samples: int, init_value: int | None = None) -> None:
        """``:TRAC<ch>:DEF``: reserve a segment, checked against the length and memory rules first."""
        self.check_segment_id(segment_id)
        self.check_segment_length(length_samples)
        command = f":TRAC{self.channel}:DEF {segment_id},{length_samples}"
        if init_value is not None:
            Ints(-128, 127).validate(init_value, "init_value")
            command += f",{init_value}"
        self.write(command)
        self._segment_lengths[segment_id] = length_samples
        self._uploads.pop(segment_id, None)

    def upload_segment(self, segment_id: int, samples: Any, offset_samples: int = 0,
                       chunk_samples: int = DEFAULT_CHUNK_SAMPLES) -> None:
        """``:TRAC<ch>:DATA``: send int8 samples in ascending-offset chunks (one block each).

        Everything is checked before the first byte goes out: sample range, chunk granularity,
        and, if this driver defined the segment, that the data fit in it (the instrument would
        answer -223 "too much data" halfway through an upload).
        """
        Ints(1).validate(segment_id, "segment_id")
        data = as_int8_samples(samples)
        granularity = self.parent.granularity_samples()
        if chunk_samples <= 0 or chunk_samples % granularity:
            raise ValueError(f"chunk_samples must be a positive multiple of {granularity}, got {chunk_samples}")
        if offset_samples < 0 or offset_samples % granularity:
            raise ValueError(f"offset_samples must be a non-negative multiple of {granularity}, got {offset_samples}")
        defined = self._segment_lengths.get(segment_id)
        if defined is not None and offset_samples + data.size > defined:
            raise ValueError(f"{data.size} samples at offset {offset_samples} overflow segment "
                             f"{segment_id} of {defined} samples")
        self._uploads.pop(segment_id, None)  # no longer what a named upload put there
        for start in range(0, data.size, chunk_samples):
            chunk = data[start:start + chunk_samples]
            header = f":TRAC{self.channel}:DATA {segment_id},{offset_samples + start},"
            self.root_instrument.write_binary_block(header, chunk, datatype="b")

    def load_waveform(self, segment_id: int, samples: Any, chunk_samples: int = DEFAULT_CHUNK_SAMPLES) -> None:
        """Define a segment of exactly ``len(samples)``, upload it and select it for playback."""
        data = as_int8_samples(samples)
        self.check_segment_length(data.size)
        self.define_segment(segment_id, data.size)
        self.upload_segment(segment_id, data, chunk_samples=chunk_samples)
        self.select_segment(segment_id)

    def segment_units(self, segment_id: int, samples: Any, chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
                      memory_mode: str | None = None) -> list[bytes]:
        """The ``:TRAC<ch>:DEF`` and ``:TRAC<ch>:DATA`` units of ``define_segment`` + ``upload_segment`` for
        ``write_batch``, validated as those are (why: one round trip for a whole load instead of two per
        command); ``memory_mode``: the mode the batch sets first. Call ``note_batch_settings`` once the batch
        was accepted."""
        data = as_int8_samples(samples)
        self.check_segment_id(segment_id, memory_mode)
        self.check_segment_length(data.size)
        granularity = self.parent.granularity_samples()
        if chunk_samples <= 0 or chunk_samples % granularity:
            raise ValueError(f"chunk_samples must be a positive multiple of {granularity}, got {chunk_samples}")
        n = self.channel
        units = [f":TRAC{n}:DEF {segment_id},{data.size}".encode("ascii")]
        units += [block_unit(f":TRAC{n}:DATA {segment_id},{start},", data[start:start + chunk_samples].tobytes())
                  for start in range(0, data.size, chunk_samples)]
        return units

    def piece_units(self, segment_id: int, pieces: list[tuple[int, np.ndarray]]) -> list[bytes]:
        """``:TRAC<ch>:DATA <id>,<offset>,<block>`` units writing ``pieces`` ((offset, int8 samples), ascending,
        each offset a multiple of the granularity) into a segment the instrument already holds, for ``write_batch``."""
        granularity = self.parent.granularity_samples()
        units, end = [], 0
        for offset, samples in pieces:
            if offset < end or offset % granularity:
                raise ValueError(f"pieces must ascend at multiples of {granularity} samples, got offset {offset}")
            end = offset + samples.size
            units.append(block_unit(f":TRAC{self.channel}:DATA {segment_id},{offset},",
                                    as_int8_samples(samples).tobytes()))
        return units

    def name_unit(self, segment_id: int, name: str) -> bytes:
        """``:TRAC<ch>:NAME <id>,"<name>"`` for ``write_batch`` (names of at most 32 characters, no quotes)."""
        if len(name) > SEGMENT_NAME_CHARS or '"' in name:
            raise ValueError(f"segment name {name!r}: at most {SEGMENT_NAME_CHARS} characters, no quotes")
        return f':TRAC{self.channel}:NAME {segment_id},"{name}"'.encode("ascii")

    def upload_token(self) -> str:
        """A name no other upload had (``KeysightM8195A.upload_names``): what ``segment_name`` reads back while the
        segment holds that upload."""
        return self.parent.upload_names()

    def loaded_samples(self, segment_id: int) -> tuple[np.ndarray, str] | None:
        """(the samples the driver last sent to ``segment_id``, the name token it gave them), or None when it
        sent none there since its segment table last changed. What the DRIVER sent: the instrument confirms it
        still holds them (``segment_catalog``, ``segment_name``)."""
        return self._uploads.get(segment_id)

    def forget_upload(self, segment_id: int) -> None:
        """What ``segment_id`` holds is unknown (an upload that may not have completed)."""
        self._uploads.pop(segment_id, None)

    def segment_catalog(self) -> dict[int, int]:
        """``:TRAC<ch>:CAT?``: segment id -> length (samples) the instrument holds on this channel ("0,0": none)."""
        return parse_catalog(self.ask(f":TRAC{self.channel}:CAT?"))

    def segment_name(self, segment_id: int) -> str:
        """``:TRAC<ch>:NAME? <id>``: the segment's name (empty when it has none)."""
        return parse_name(self.ask(f":TRAC{self.channel}:NAME? {int(segment_id)}"))

    def note_batch_settings(self, segment_id: int, length_samples: int, amplitude_vpp: float, offset_v: float,
                            upload: tuple[np.ndarray, str] | None = None) -> None:
        """Update what the driver knows after a ``waveform_units`` batch was accepted (its caches, segment table;
        ``upload``: the segment's whole samples and the name the batch gave them, None when it named none)."""
        self._segment_lengths[segment_id] = length_samples
        if upload is None:
            self._uploads.pop(segment_id, None)
        else:
            self._uploads[segment_id] = upload
        self.amplitude_vpp.cache.set(amplitude_vpp)
        self.offset_v.cache.set(offset_v)
        self.output_enabled.cache.set(True)

    def select_segment(self, segment_id: int) -> None:
        """``:TRAC<ch>:SEL``: the segment played in ARB mode."""
        Ints(1).validate(segment_id, "segment_id")
        self.write(f":TRAC{self.channel}:SEL {segment_id}")

    def delete_segment(self, segment_id: int) -> None:
        """``:TRAC<ch>:DEL <id>``: on an extended-memory channel, gone from every extended-memory channel (p. 254)."""
        Ints(1).validate(segment_id, "segment_id")
        self.write(f":TRAC{self.channel}:DEL {segment_id}")
        for channel in self.sharing_channels():
            channel._segment_lengths.pop(segment_id, None)
            channel._uploads.pop(segment_id, None)

    def delete_all_segments(self) -> None:
        """``:TRAC<ch>:DEL:ALL`` (on every extended-memory channel if this is one)."""
        self.write(f":TRAC{self.channel}:DEL:ALL")
        for channel in self.sharing_channels():
            channel._segment_lengths.clear()
            channel._uploads.clear()

    def check_segment_length(self, length_samples: int) -> None:
        """At least 1280 samples, in steps of the granularity (docs/INSTRUMENTS.md 6.1)."""
        granularity = self.parent.granularity_samples()
        if length_samples < MIN_SEGMENT_SAMPLES or length_samples % granularity:
            raise ValueError(f"segment length must be >= {MIN_SEGMENT_SAMPLES} samples and a multiple "
                             f"of {granularity}, got {length_samples}")


class KeysightM8195A(ScpiErrorCheckingInstrument):
    """Keysight M8195A: four 8-bit channels sharing one sample clock."""

    default_timeout = 20.0  # s; the Soft Front Panel can be slow to acknowledge long uploads (qudi)
    num_channels = 4

    def __init__(self, name: str, address: str | None = None, **kwargs: Any):
        super().__init__(name, address, **kwargs)
        # where segment names come from: random, so no other program's or session's upload carries one of ours
        # (a test may set its own source)
        self.upload_names: Callable[[], str] = random_upload_name
        self.clear_errors()
        self.options = self.read_options()
        self.sample_rate_hz = self.add_parameter(
            "sample_rate_hz", label="DAC sample rate", unit="Hz", get_cmd=":FREQ:RAST?",
            set_cmd=":FREQ:RAST {:.8E}", get_parser=parse_float, vals=Numbers(*SAMPLE_RATE_LIMITS_HZ))
        self.memory_divider = self.add_parameter(
            "memory_divider", label="sample-rate divider (extended memory)",
            get_cmd=":INST:MEM:EXT:RDIV?", set_cmd=":INST:MEM:EXT:RDIV {}",
            get_parser=str.strip, val_mapping=_DIVIDERS,
            docstring="Divides the sample rate by 1, 2 or 4; the segment granularity is 256 / divider.")
        self.dac_mode = self.add_parameter(
            "dac_mode", label="DAC mode", get_cmd=":INST:DACM?", set_cmd=":INST:DACM {}",
            get_parser=one_of(*DAC_MODES), vals=Enum(*DAC_MODES),
            docstring="MARK outputs the marker bits on channels 3 and 4.")
        self.trigger_mode = self.add_parameter(
            "trigger_mode", label="trigger mode", get_cmd=self._get_trigger_mode,
            set_cmd=self._set_trigger_mode, vals=Enum(*_TRIGGER_MODES))
        self.is_running = self.add_parameter(
            "is_running", label="running", get_cmd=":STAT:OPER:RUN:COND?",
            get_parser=lambda reply: parse_int(reply) != 0, set_cmd=False)
        channels = []
        for number in range(1, self.num_channels + 1):
            channel = M8195AChannel(self, f"ch{number}", number)
            channels.append(channel)
            self.add_submodule(f"ch{number}", channel)
        self.channels = self.add_submodule(
            "channels", ChannelTuple(self, "channels", M8195AChannel, channels, snapshotable=False))
        self.memory_divider.get()
        for channel in channels:
            channel.memory_mode.get()
        self.connect_message()

    def read_options(self) -> tuple[str, ...]:
        """``*OPT?``: the installed options (``004``, ``16G``, ``SEQ``, ...); ``0`` or empty means none."""
        reply = self.ask("*OPT?").strip().strip('"')
        return tuple(word.strip().upper() for word in reply.split(",") if word.strip() not in ("", "0"))

    @property
    def has_sequencing(self) -> bool:
        """Option -SEQ: many segments in extended memory (without it, one; user's guide p. 110)."""
        return SEQUENCING_OPTION in self.options

    def granularity_samples(self) -> int:
        """Segment length step: 256 samples divided by the extended-memory rate divider."""
        divider = self.memory_divider.get_latest() or self.memory_divider.get()
        return GRANULARITY_AT_DIV1_SAMPLES // divider

    def run(self) -> None:
        """``:INIT:IMM``: start the outputs."""
        self.write(":INIT:IMM")

    def stop(self) -> None:
        """``:ABOR``: stop the outputs."""
        self.write(":ABOR")

    def send_trigger(self) -> None:
        """``:TRIG:BEG``: software trigger (triggered and gated modes)."""
        self.write(":TRIG:BEG")

    def safe_state(self) -> None:
        """Stop and switch every output off (house rule: failures leave drives at zero)."""
        self.stop()
        for channel in self.channels:
            channel.output_enabled(False)

    def _set_trigger_mode(self, mode: str) -> None:
        continuous, gated = _TRIGGER_MODES[mode]
        self.write(f":INIT:CONT:STAT {continuous}")
        self.write(f":INIT:GATE:STAT {gated}")

    def _get_trigger_mode(self) -> str:
        state = (int(parse_bool(self.ask(":INIT:CONT:STAT?"))), int(parse_bool(self.ask(":INIT:GATE:STAT?"))))
        for mode, states in _TRIGGER_MODES.items():
            if states == state:
                return mode
        # continuous and gated both on is not one of the guide's three modes
        raise InstrumentError(self.name, ":INIT:CONT:STAT?;:INIT:GATE:STAT?",
                              [(None, f"unexpected trigger state continuous={state[0]} gated={state[1]}")])
