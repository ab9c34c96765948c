"""qcodes' Keysight Infiniium driver, subclassed: traces read by their known length, capture in two
messages with its settings read back and the error queue read in the same message, the edge trigger set up
and read back in one message, acquisitions waited for through VISA timeouts, reconnect, and the upstream
trace regression worked around only while the installed qcodes has it.

Why a subclass: the upstream driver is reused unchanged (every parameter, the constructor's set-up),
and what we add goes through its public surface (``ask``/``write``, ``visa_handle``, parameter caches,
``DSOTraceParam.update_setpoints(preamble)``, ``set_address``), never through its private attributes.

The regression: qcodes 0.53.0 to 0.58.x read a channel's ``trace`` with ``container=npt.NDArray``, which
is no class, so pyvisa calls ``npt.NDArray(<samples>)`` and fails. Fixed on qcodes' main branch by
microsoft/Qcodes#8206 (commit 0c9a08c6a, "Fix type checking with numpy 2.5", merged 2026-06-08, after
0.58.0), hence first released in ``QCODES_TRACE_FIXED_IN``. Below that version each channel's ``trace``
is a ``BlockTrace`` (qcodes' own trace parameter class, reading the block by its length); from it on,
qcodes' trace is left as it is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import qcodes
from packaging.version import Version
from pyvisa import constants
from pyvisa.errors import VisaIOError
from qcodes.instrument_drivers.Keysight import KeysightInfiniium as _UpstreamInfiniium
from qcodes.instrument_drivers.Keysight import KeysightInfiniiumChannel
from qcodes.instrument_drivers.Keysight.Infiniium import DSOTraceParam
from qcodes.validators import Arrays

from qslab.instruments.drivers import visa_connection
from qslab.instruments.drivers._scpi import (ESR_POWER_ON, InstrumentError, InstrumentFault, compound_replies,
                                             parse_error_reply)

__all__ = ["ACQUIRE", "ERROR_QUERY", "QCODES_TRACE_FIXED_IN", "BlockTrace", "EdgeTrigger", "KeysightInfiniium", "TraceBlock",
           "digitize_and_read", "qcodes_trace_needs_fix", "read_trace_block"]

# The Infiniium answers :SYSTem:ERRor? with the number only unless asked for the STRing (programmer's guide,
# :SYSTem:ERRor); the string form is <code>,"<text>".
ERROR_QUERY = ":SYST:ERR? STR"
_MAX_ERRORS_READ = 32
# An acquisition waits for its trigger: *OPC? answers when the record is complete, which may take longer than
# one VISA timeout (a slow trigger, a long record). Read again until this long has passed (s), as qcodes'
# digitize() reads through timeouts (it waits without bound; a session needs a bound).
ACQUISITION_TIMEOUT_S = 60.0
EDGE_SLOPES = ("POS", "NEG", "EITH")
ACQUIRE = f":DIGitize;*OPC?;{ERROR_QUERY}"

QCODES_TRACE_FIXED_IN = Version("0.59.0")
# :WAV:PRE? fields (Infiniium programmer's guide, as qcodes reads them): points, y increment, y origin
_POINTS, _Y_INCREMENT, _Y_ORIGIN = 2, 7, 8
# and [13] Y display range (the voltage across the display: the channel's full scale, 8 divisions), [14] Y display
# origin (the voltage at the display's centre: its offset); Infiniium 90000 programmer's reference pp. 893, 1072
_Y_RANGE, _Y_CENTRE = 13, 14
# pyvisa reads a block in pieces of its resource's chunk_size (20 kB by default: a select() and four copies each);
# pieces of the socket's receive size make a trace of megabytes a few reads
BLOCK_READ_CHUNK_BYTES = visa_connection.PYVISA_PY_RECV_BYTES


def qcodes_trace_needs_fix(qcodes_version: str = qcodes.__version__) -> bool:
    """Whether this qcodes reads Infiniium traces with the broken ``container=npt.NDArray`` (module docstring)."""
    return Version(qcodes_version) < QCODES_TRACE_FIXED_IN


@dataclass(frozen=True)
class TraceBlock:
    """What a ``:WAV:PRE?`` preamble says about the next ``:WAV:DATA?`` block: int16 words -> volts."""

    points: int
    volts_per_count: float
    origin_v: float

    @classmethod
    def from_preamble(cls, preamble: list[str]) -> TraceBlock:
        return cls(int(preamble[_POINTS]), float(preamble[_Y_INCREMENT]), float(preamble[_Y_ORIGIN]))

    def volts(self, words: np.ndarray) -> np.ndarray:
        """The block's words in volts, float64 in one pass (a record is tens of MB)."""
        volts = np.multiply(words, self.volts_per_count, dtype=np.float64)
        if self.origin_v:  # in place; a zero origin (no channel offset) adds nothing, so no second pass
            volts += self.origin_v
        return volts


@dataclass(frozen=True)
class EdgeTrigger:
    """An edge trigger as the scope reads it back: source (CHAN<n> or AUX), level (V), slope, sweep."""

    source: str
    level_v: float
    slope: str
    sweep: str


class KeysightInfiniium(_UpstreamInfiniium):
    """qcodes' ``KeysightInfiniium`` plus ``read_trace_v``, ``digitize_and_read_v`` and ``reconnect``.

    pyvisa-py raw-socket sessions receive up to ``visa_connection.PYVISA_PY_RECV_BYTES`` per recv() (traces
    are megabytes), from the constructor on and after every reconnect.
    """

    def __init__(self, name: str, address: str, channels: int = 4, **kwargs: Any):
        super().__init__(name, address, channels=channels, **kwargs)
        visa_connection.widen_socket_reads(self.visa_handle)
        self._acquired_preambles: dict[str, list[str]] = {}  # source -> its record's preamble (start_acquisition)
        self._preamble_sources: list[str] = []  # the sources whose preambles the acquisition under way asked for
        if qcodes_trace_needs_fix():
            for channel in self.channels:
                channel.remove_parameter("trace")
                channel.trace = BlockTrace(name="trace", instrument=channel, label=f"Channel {channel.channel} trace",
                                           unit="V", channel=channel.channel_name,
                                           vals=Arrays(shape=(self.acquire_points,)), snapshot_value=False)

    # -- the connection ----------------------------------------------------------------------------
    def reconnect(self) -> None:
        """Close and reopen the VISA resource (same address, terminations, timeout): drops any late or partial
        reply a failed exchange left on the line. The scope's settings are untouched."""
        visa_connection.reopen(self)
        visa_connection.widen_socket_reads(self.visa_handle)

    # -- the settings check --------------------------------------------------------------------------
    _read_together: dict[str, str] = {}  # query -> its reply from the compound query under way

    def power_cycled(self) -> bool:
        """IEEE 488.2 ``*ESR?`` bit 7: switched off and on since ``*ESR?`` was last read (reading clears it)."""
        return bool(int(float(self.ask("*ESR?"))) & ESR_POWER_ON)

    @staticmethod
    def query_of(parameter: Any) -> str | None:
        """The query qcodes asks for ``parameter`` (its ``get_cmd`` string, kept by qcodes' Command as ``cmd_str``),
        or None for a parameter read another way: what ``replies_read_together`` may ask together."""
        query = getattr(parameter.get_raw, "cmd_str", None)
        return query if isinstance(query, str) and query.rstrip().split(" ")[0].endswith("?") else None

    @contextmanager
    def replies_read_together(self, queries: Sequence[str]) -> Iterator[None]:
        """``queries`` asked in ONE message; inside the block each of them (a parameter get, ``power_cycled``) takes
        its reply from it instead of asking again (the SCPI drivers' ``replies_read_together``, _scpi.py).

        Why: the session checks every setting after each batch; the scope's ten settings and ``*ESR?`` were eleven
        round trips. A reply that does not split into one unit per query is not used (each is asked on its own)."""
        self._read_together = compound_replies(self.ask, queries)
        try:
            yield
        finally:
            self._read_together = {}

    def ask_raw(self, cmd: str) -> str:
        """qcodes' ``ask_raw``, or the reply to ``cmd`` from the compound query under way (once)."""
        reply = self._read_together.pop(cmd, None)
        return super().ask_raw(cmd) if reply is None else reply

    # -- traces --------------------------------------------------------------------------------------
    def read_trace_v(self, channel: KeysightInfiniiumChannel) -> np.ndarray:
        """``channel``'s last acquisition in volts, as qcodes' ``trace`` reads it (preamble, ``:WAV:DATA?``,
        int16 words) but in two messages (``:WAV:SOUR <ch>;:WAV:PRE?``, then ``:WAV:DATA?``) with the block read
        by its known length; the channel's range and offset caches take the preamble's (the record's own).

        Why: pyvisa-py's socket read returns whenever its buffer holds the termination character, so a
        block of int16 samples (one 0x0A byte in ~256) arrives in ~256-byte pieces, ~10^4 pyvisa loops
        per megabyte. The preamble gives the length: that many bytes are read with the termination
        character off, then the LF.
        """
        words, block = self.read_trace_words(channel)
        return block.volts(words)

    def read_trace_words(self, channel: KeysightInfiniiumChannel) -> tuple[np.ndarray, TraceBlock]:
        """``read_trace_v`` without the volts: the record's int16 words as sent and the preamble's map to volts
        (``TraceBlock.volts``). Why: a caller that filters the record a piece at a time never holds it as float64."""
        preamble = self._acquired_preambles.pop(channel.channel_name, None)
        if preamble is None:
            preamble = self.ask(f":WAV:SOUR {channel.channel_name};:WAV:PRE?").strip().split(",")
            data_query = ":WAV:DATA?"
        else:  # the acquisition's reply brought it: the source and the data in one message
            data_query = f":WAV:SOUR {channel.channel_name};:WAV:DATA?"
        channel.trace.update_setpoints(preamble)
        self._note_channel_preamble(channel, preamble)
        self.write(data_query)
        block = TraceBlock.from_preamble(preamble)
        return self.read_words(block), block

    @staticmethod
    def _note_channel_preamble(channel: KeysightInfiniiumChannel, preamble: list[str]) -> None:
        """The channel's range and offset as the preamble of its record states them ([13] Y display range, the
        full scale of 8 divisions; [14] Y display origin, the centre) into the parameter caches: what the record
        was taken at, known without asking again."""
        channel.range.cache.set(float(preamble[_Y_RANGE]))
        channel.offset.cache.set(float(preamble[_Y_CENTRE]))

    def digitize_and_read_v(self, channel: KeysightInfiniiumChannel, points: int, sample_rate_hz: float,
                            range_v: float, offset_v: float = 0.0,
                            acquisition_timeout_s: float = ACQUISITION_TIMEOUT_S) -> np.ndarray:
        """Set the record length, sample rate and ``channel``'s range and offset, acquire, and read the trace
        in volts, in TWO messages.

        Message 1 is ``:ACQ:POIN;:ACQ:SRAT;:CHAN<n>:RANG;:CHAN<n>:OFFS;:DIGitize;*OPC?`` followed by the
        read-back of the four settings, ``:SYST:ERR? STR``, ``:WAV:SOUR`` and ``:WAV:PRE?``: the ``*OPC?``
        makes the instrument finish the acquisition first (its reply is waited for through VISA timeouts, up
        to ``acquisition_timeout_s``), the read-back says what the scope took (it rounds the rate and refuses
        a range it does not have), and the error entry says whether it refused anything: an entry other than
        0 raises :class:`InstrumentError` with every queued entry, the parameter caches then holding what
        the scope reads back, not what was asked. Message 2 is ``:WAV:DATA?``, read by its known length.
        """
        number, source = channel.channel, channel.channel_name
        self._acquired_preambles = {}
        reads = f":ACQ:POIN?;:ACQ:SRAT?;:CHAN{number}:RANG?;:CHAN{number}:OFFS?"
        command = (f":ACQ:POIN {int(points)};:ACQ:SRAT {float(sample_rate_hz)};:CHAN{number}:RANG "
                   f"{float(range_v)};:CHAN{number}:OFFS {float(offset_v)};:DIGitize;*OPC?;{reads};{ERROR_QUERY};"
                   f":WAV:SOUR {source};:WAV:PRE?")
        reply = self.ask_waiting(command, acquisition_timeout_s).strip()
        fields = reply.split(";", 5)
        error_text, _, preamble_text = fields[-1].rpartition(";") if len(fields) == 6 else ("", "", "")
        if len(fields) != 6 or fields[0] != "1" or not preamble_text or not error_text:
            raise ValueError(f"{self.name}: the acquisition answered {reply[:120]!r} "
                             "(expected 1;<points>;<rate>;<range>;<offset>;<error>;<preamble>)")
        self.acquire_points.cache.set(int(float(fields[1])))
        self.sample_rate.cache.set(float(fields[2]))
        channel.range.cache.set(float(fields[3]))
        channel.offset.cache.set(float(fields[4]))
        self._raise_on_errors(command, parse_error_reply(error_text))
        preamble = preamble_text.split(",")
        channel.trace.update_setpoints(preamble)
        self.write(":WAV:DATA?")
        return self.read_word_block(TraceBlock.from_preamble(preamble))

    def configure_acquisition(self, points: int | None = None, sample_rate_hz: float | None = None) -> tuple[int, float]:
        """Record length and sample rate (None: unchanged) set, read back and error-checked in ONE message:
        ``[:ACQ:POIN n;][:ACQ:SRAT r;]:ACQ:POIN?;:ACQ:SRAT?;:SYST:ERR? STR``. The caches take the read-back (the
        scope rounds the rate to one it has); an error entry raises :class:`InstrumentError`."""
        self._acquired_preambles = {}  # (kept for the record just taken only while nothing is set)
        sets = ([f":ACQ:POIN {int(points)}"] if points is not None else []) + (
            [f":ACQ:SRAT {float(sample_rate_hz)}"] if sample_rate_hz is not None else [])
        command = ";".join(sets + [":ACQ:POIN?", ":ACQ:SRAT?", ERROR_QUERY])
        points_text, rate_text, error_text = self._ask_fields(command, 3)
        self.acquire_points.cache.set(int(float(points_text)))
        self.sample_rate.cache.set(float(rate_text))
        self._raise_on_errors(command, parse_error_reply(error_text))
        return int(float(points_text)), float(rate_text)

    def configure_channel_v(self, channel: KeysightInfiniiumChannel, range_v: float | None = None,
                            offset_v: float | None = None) -> tuple[float, float]:
        """``channel``'s offset and range (None: unchanged) set, read back and error-checked in ONE message:
        ``[:CHAN<n>:OFFS o;][:CHAN<n>:RANG r;]:CHAN<n>:RANG?;:CHAN<n>:OFFS?;:SYST:ERR? STR``. The caches take
        the read-back; a refused value (-222 for a range the scope does not have) raises InstrumentError."""
        number = channel.channel
        self._acquired_preambles = {}
        sets = ([f":CHAN{number}:OFFS {float(offset_v)}"] if offset_v is not None else []) + (
            [f":CHAN{number}:RANG {float(range_v)}"] if range_v is not None else [])
        command = ";".join(sets + [f":CHAN{number}:RANG?", f":CHAN{number}:OFFS?", ERROR_QUERY])
        range_text, offset_text, error_text = self._ask_fields(command, 3)
        channel.range.cache.set(float(range_text))
        channel.offset.cache.set(float(offset_text))
        self._raise_on_errors(command, parse_error_reply(error_text))
        return float(range_text), float(offset_text)

    def _ask_fields(self, command: str, count: int) -> list[str]:
        """The ``count`` ;-separated fields of a compound reply (the last, an error entry, may hold ';')."""
        fields = self.ask(command).strip().split(";", count - 1)
        if len(fields) != count:
            raise ValueError(f"{self.name}: {command!r} answered {';'.join(fields)[:120]!r} ({count} fields expected)")
        return [field.strip() for field in fields]

    # -- acquisitions and the error queue ------------------------------------------------------------------
    def ask_waiting(self, command: str, wait_s: float = ACQUISITION_TIMEOUT_S) -> str:
        """Send ``command`` and read its reply through VISA timeouts (``read_waiting``)."""
        self.visa_handle.write(command)
        return self.read_waiting(command, wait_s)

    def read_waiting(self, command: str, wait_s: float = ACQUISITION_TIMEOUT_S) -> str:
        """The reply to ``command`` (already sent), reading again after each VISA timeout until ``wait_s`` has
        passed (an acquisition waiting for its trigger). Then a device clear drops the pending acquisition and
        :class:`InstrumentFault` says so."""
        deadline = time.monotonic() + float(wait_s)
        while True:
            try:
                return self.visa_handle.read()
            except VisaIOError as error:
                if error.error_code != constants.StatusCode.error_timeout:
                    raise
                if time.monotonic() >= deadline:
                    self.device_clear()
                    raise InstrumentFault(self.name, str(self.address), command.split(";*OPC?")[0],
                                          f"the acquisition did not complete within {float(wait_s):g} s (no trigger?)",
                                          1, repeatable=False) from error

    def read_errors(self) -> list[tuple[int, str]]:
        """Pop every entry of the error queue (``:SYST:ERR? STR`` until 0)."""
        errors = []
        for _ in range(_MAX_ERRORS_READ):
            code, text = parse_error_reply(self.ask(ERROR_QUERY))
            if code == 0:
                break
            errors.append((code, text))
        return errors

    def _raise_on_errors(self, command: str, first: tuple[int, str]) -> None:
        """InstrumentError with ``first`` and the rest of the queue, unless ``first`` is 0 (no error)."""
        if first[0] != 0:
            raise InstrumentError(self.name, command, [first, *self.read_errors()])

    def start_acquisition(self, preambles_of: Sequence[KeysightInfiniiumChannel] = ()) -> None:
        """Send ``:DIGitize;*OPC?;:SYST:ERR? STR``: one acquisition; its reply comes when the record is complete.
        ``preambles_of``: channels whose records will be read, each followed by ``:WAV:SOUR <ch>;:WAV:PRE?`` in the
        same message, so that their preambles come with the reply and ``read_trace_words`` asks only for the data
        (one round trip less per channel)."""
        self._acquired_preambles = {}
        self._preamble_sources = [channel.channel_name for channel in preambles_of]
        self.visa_handle.write(ACQUIRE + "".join(f";:WAV:SOUR {source};:WAV:PRE?" for source in self._preamble_sources))

    def finish_acquisition(self, acquisition_timeout_s: float = ACQUISITION_TIMEOUT_S) -> None:
        """The reply of ``start_acquisition``, waited for through timeouts: ``1``, the error entry (an error
        raises :class:`InstrumentError`) and the preambles asked for (kept for the reads of this record)."""
        reply = self.read_waiting(ACQUIRE, acquisition_timeout_s).strip()
        sources = self._preamble_sources
        done, _, rest = reply.partition(";")
        fields = rest.rsplit(";", len(sources)) if sources else [rest]  # a preamble holds no ';', an error text may
        if done != "1" or not fields[0] or len(fields) != len(sources) + 1 or not all(fields[1:]):
            expected = "".join(";<preamble>" for _ in sources)
            raise ValueError(f"{self.name}: the acquisition answered {reply[:80]!r} (expected 1;<error>{expected})")
        self._raise_on_errors(ACQUIRE, parse_error_reply(fields[0]))
        self._acquired_preambles = {source: field.split(",") for source, field in zip(sources, fields[1:])}

    def acquire(self, acquisition_timeout_s: float = ACQUISITION_TIMEOUT_S) -> None:
        """One acquisition and its error check (``start_acquisition`` then ``finish_acquisition``)."""
        self.start_acquisition()
        self.finish_acquisition(acquisition_timeout_s)

    # -- the trigger -------------------------------------------------------------------------------------------
    def set_edge_trigger(self, source: str, level_v: float, slope: str = "POS") -> EdgeTrigger:
        """Edge trigger on ``source`` (``CHAN<n>`` or ``AUX``) at ``level_v``, triggered sweep (no auto trigger),
        in ONE message with its read-back and the error entry: ``:TRIG:MODE EDGE;:TRIG:EDGE:SOUR;:TRIG:LEV
        <source>,<V>;:TRIG:EDGE:SLOP;:TRIG:SWE TRIG`` (programmer's guide, :TRIGger subsystem). Refusals raise
        :class:`InstrumentError`; the trigger parameters' caches hold what the scope reads back."""
        source, slope = source.strip().upper(), slope.strip().upper()
        channels = [f"CHAN{i}" for i in range(1, self.no_channels + 1)]
        if source not in channels + ["AUX"]:
            raise ValueError(f"{self.name}: trigger source must be one of {', '.join(channels)}, AUX; got {source!r}")
        if slope not in EDGE_SLOPES:
            raise ValueError(f"{self.name}: trigger slope must be one of {', '.join(EDGE_SLOPES)}; got {slope!r}")
        command = (f":TRIG:MODE EDGE;:TRIG:EDGE:SOUR {source};:TRIG:LEV {source},{float(level_v)};"
                   f":TRIG:EDGE:SLOP {slope};:TRIG:SWE TRIG;:TRIG:MODE?;:TRIG:EDGE:SOUR?;:TRIG:LEV? {source};"
                   f":TRIG:EDGE:SLOP?;:TRIG:SWE?;{ERROR_QUERY}")
        fields = self.ask(command).strip().split(";", 5)
        if len(fields) != 6:
            raise ValueError(f"{self.name}: the trigger set-up answered {';'.join(fields)[:120]!r} (expected 6 fields)")
        mode, read_source, level, read_slope, sweep, error_text = (f.strip() for f in fields)
        self._raise_on_errors(command, parse_error_reply(error_text))
        trigger = EdgeTrigger(read_source, float(level), read_slope, sweep)
        self.trigger_mode.cache.set(mode)
        self.trigger_edge_source.cache.set(trigger.source)
        self.trigger_edge_slope.cache.set(trigger.slope)
        self.trigger_sweep.cache.set(trigger.sweep)
        if trigger.source == "AUX":
            self.trigger_level_aux.cache.set(trigger.level_v)
        elif trigger.source in channels:
            getattr(self, f"ch{trigger.source[4:]}").trigger_level.cache.set(trigger.level_v)
        return trigger

    def read_word_block(self, block: TraceBlock) -> np.ndarray:
        """The ``#0`` block of int16 words a ``:WAV:DATA?`` just asked for, read by its known length, in volts."""
        return block.volts(self.read_words(block))

    def read_words(self, block: TraceBlock) -> np.ndarray:
        """The ``#0`` block of int16 words a ``:WAV:DATA?`` just asked for, read by its known length (read-only).

        On a pyvisa-py raw socket the whole reply (header, words, LF) is received straight into one array with
        ``recv_into``, within the resource's timeout: pyvisa-py's read copies every byte four times on the way
        (its recv, its pending buffer, the slice it returns, pyvisa's accumulating bytearray), about as much CPU
        as the DSP's filter over the record. Nothing is left in pyvisa-py's buffer: the preamble's reply ended
        at its LF before ``:WAV:DATA?`` was sent, and pyvisa-py had taken no byte beyond it."""
        handle = self.visa_handle
        sock = visa_connection.visa_socket(handle)
        if sock is not None:
            return self._received_words(sock, block)
        attribute = constants.ResourceAttribute.termchar_enabled
        before = handle.get_visa_attribute(attribute)
        handle.set_visa_attribute(attribute, False)
        try:
            header = handle.read_bytes(2)
            data = handle.read_bytes(2 * block.points + 1, chunk_size=BLOCK_READ_CHUNK_BYTES)
        finally:
            handle.set_visa_attribute(attribute, before)
        if header != b"#0" or data[-1:] != b"\n":
            raise ValueError(f"{self.name}: trace block of {block.points} points arrived malformed "
                             f"(header {header!r}, last byte {data[-1:]!r})")
        return np.frombuffer(data, dtype="<i2", count=block.points)  # no copy of the bytes

    def _received_words(self, sock, block: TraceBlock) -> np.ndarray:
        """``read_words`` on the session's own socket: ``#0``, 2 x points bytes and the LF into one fresh array."""
        reply = np.empty(2 * block.points + 3, dtype=np.uint8)
        view, received = memoryview(reply), 0
        previous = sock.gettimeout()
        timeout_ms = getattr(self.visa_handle, "timeout", None)
        sock.settimeout(None if timeout_ms is None or timeout_ms == float("inf") else max(float(timeout_ms), 1.0) / 1e3)
        try:
            while received < reply.size:
                count = sock.recv_into(view[received:])
                if not count:
                    raise VisaIOError(constants.StatusCode.error_connection_lost)
                received += count
        except TimeoutError:
            raise VisaIOError(constants.StatusCode.error_timeout) from None
        finally:
            sock.settimeout(previous)
        header, last = reply[:2].tobytes(), reply[-1:].tobytes()
        if header != b"#0" or last != b"\n":
            raise ValueError(f"{self.name}: trace block of {block.points} points arrived malformed "
                             f"(header {header!r}, last byte {last!r})")
        words = reply[2:-1].view("<i2")  # the words where they arrived: no copy
        words.flags.writeable = False  # as the bytes route's: the record as sent
        return words


class BlockTrace(DSOTraceParam):
    """qcodes' Infiniium trace parameter, reading its block by length instead of through pyvisa's binary
    values with the broken container (used only while ``qcodes_trace_needs_fix()``, module docstring).

    It does what qcodes' ``get_raw`` does (preamble unless cached, digitize when ``auto_digitize``,
    ``:WAV:SOUR``, ``:WAV:DATA?``), keeping the block's shape from the preamble it asked for itself.
    """

    _block: TraceBlock | None = None

    def update_setpoints(self, preamble: Any = None) -> None:
        if preamble is None:
            self.instrument.write(f":WAV:SOUR {self.instrument.channel_name}")
            preamble = self.instrument.ask(":WAV:PRE?").strip().split(",")
        super().update_setpoints(preamble)
        self._block = TraceBlock.from_preamble(list(preamble))

    def get_raw(self) -> np.ndarray:
        scope = self.root_instrument
        if not scope.cache_setpoints():
            self.update_setpoints()
        if self._block is None:
            raise RuntimeError("Trace parameters are unknown. If cache_setpoints is True, call "
                               "instr.chX.update_setpoints at least once before a measurement.")
        if scope.auto_digitize():
            scope.digitize()
        scope.write(f":WAV:SOUR {self.instrument.channel_name}")
        scope.write(":WAV:DATA?")
        return scope.read_word_block(self._block)


def read_trace_block(channel: Any) -> np.ndarray | None:
    """``KeysightInfiniium.read_trace_v`` for ``channel``; None when it is not a channel of that driver."""
    scope = getattr(channel, "root_instrument", None)
    return scope.read_trace_v(channel) if isinstance(scope, KeysightInfiniium) else None


def read_trace_words(channel: Any) -> tuple[np.ndarray, TraceBlock] | None:
    """``KeysightInfiniium.read_trace_words`` for ``channel``; None when it is not a channel of that driver."""
    scope = getattr(channel, "root_instrument", None)
    return scope.read_trace_words(channel) if isinstance(scope, KeysightInfiniium) else None


def digitize_and_read(channel: Any, points: int, sample_rate_hz: float, range_v: float,
                      offset_v: float = 0.0, acquisition_timeout_s: float = ACQUISITION_TIMEOUT_S
                      ) -> np.ndarray | None:
    """``KeysightInfiniium.digitize_and_read_v`` for ``channel``; None when it is not a channel of that driver
    (the caller takes the per-setting path)."""
    scope = getattr(channel, "root_instrument", None)
    if not isinstance(scope, KeysightInfiniium):
        return None
    return scope.digitize_and_read_v(channel, points, sample_rate_hz, range_v, offset_v, acquisition_timeout_s)
