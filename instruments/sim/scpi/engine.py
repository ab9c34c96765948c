"""A small SCPI emulator engine: command trees, IEEE 488.2 common commands, error queue, status registers.

It executes program messages that parsing.py splits and parses: ``;`` units with relative paths
(a unit that does not start with ``:`` or ``*`` continues the path of the previous one, SCPI-99
6.2.4; ``:`` returns to the root), one handler per header (``CommandTree.dispatch``, also used by
the line protocol of the Thorlabs MBX emulator), one error queue per instrument with ``-350,"Queue
overflow"`` when it is full, the Standard Event Status Register bits the errors set, and ``*STB?``.

Why a write/read pair as well as ``exchange``: a raw-socket transport pushes each reply as soon as
it exists (as LAN instruments' port 5025 does), so it calls ``exchange``; ``write``/``read`` model
an IEEE 488.2 output queue, where a new message over an unread reply is ``-410 Query
INTERRUPTED`` and a read with nothing to read is ``-420 Query UNTERMINATED``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qslab.instruments.sim.scpi.parsing import (STANDARD_ERRORS, Arg, HeaderNode, Raw, ScpiError, compile_pattern,
                                                definite_block, match_header, parse_bool, parse_choice, parse_number,
                                                split_parameters, split_units, tokenize_header)

log = logging.getLogger(__name__)
_HEADER_END = re.compile(rb"[ \t]")  # a program header ends at its first space or tab (its separator)


# --- status --------------------------------------------------------------------------------------

# Standard Event Status Register bits (IEEE 488.2 11.5.1)
ESR_OPERATION_COMPLETE = 1
ESR_QUERY_ERROR = 4
ESR_DEVICE_ERROR = 8
ESR_EXECUTION_ERROR = 16
ESR_COMMAND_ERROR = 32
ESR_POWER_ON = 128
# Status Byte bits (IEEE 488.2 11.2; SCPI puts the error/event queue summary in bit 2)
STB_ERROR_QUEUE = 4
STB_MESSAGE_AVAILABLE = 16
STB_EVENT_SUMMARY = 32
STB_MASTER_SUMMARY = 64


def esr_bit_for(code: int) -> int:
    """The ESR bit an error class sets: -1xx command, -2xx execution, -3xx device, -4xx query."""
    if -199 <= code <= -100:
        return ESR_COMMAND_ERROR
    if -299 <= code <= -200:
        return ESR_EXECUTION_ERROR
    if -399 <= code <= -300 or code > 0:
        return ESR_DEVICE_ERROR
    if -499 <= code <= -400:
        return ESR_QUERY_ERROR
    return 0


class ErrorQueue:
    """FIFO of (code, text); when full the newest entry becomes -350 (SCPI-99 21.8, N77xx: 30 deep)."""

    def __init__(self, depth: int = 30):
        if depth < 2:
            raise ValueError(f"error queue depth must be >= 2, got {depth}")
        self.depth = depth
        self._entries: list[tuple[int, str]] = []

    def push(self, code: int, text: str) -> None:
        if len(self._entries) < self.depth:
            self._entries.append((code, text))
        else:
            self._entries[-1] = (-350, STANDARD_ERRORS[-350])

    def pop(self) -> tuple[int, str]:
        return self._entries.pop(0) if self._entries else (0, STANDARD_ERRORS[0])

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[tuple[int, str]]:
        return list(self._entries)


# --- commands ----------------------------------------------------------------------------------

@dataclass
class Call:
    """One program unit as a handler sees it: numeric suffixes, parameters, and parsing helpers."""

    header: str
    suffixes: tuple[int, ...]
    args: list[Arg]
    query: bool

    @property
    def suffix(self) -> int:
        """The first (usually only) numeric suffix."""
        return self.suffixes[0]

    def count(self, low: int, high: int | None = None) -> None:
        """-109 Missing parameter / -108 Parameter not allowed unless low <= len(args) <= high."""
        high = low if high is None else high
        if len(self.args) < low:
            raise ScpiError(-109)
        if len(self.args) > high:
            raise ScpiError(-108)

    def text(self, index: int = 0) -> str:
        arg = self.args[index]
        if not isinstance(arg, str):
            raise ScpiError(-168)
        return arg

    def number(self, index: int = 0, **kwargs: Any) -> float:
        return parse_number(self.text(index), **kwargs)[0]

    def quantity(self, index: int = 0, **kwargs: Any) -> tuple[float, str | None]:
        return parse_number(self.text(index), **kwargs)

    def integer(self, index: int = 0, **kwargs: Any) -> int:
        value = self.number(index, **kwargs)
        return int(round(value))

    def boolean(self, index: int = 0) -> bool:
        return parse_bool(self.text(index))

    def choice(self, choices: Sequence[str], index: int = 0) -> str:
        return parse_choice(self.text(index), choices)

    def block(self, index: int = 0) -> memoryview:
        arg = self.args[index]
        if isinstance(arg, str):
            raise ScpiError(-104)
        return arg


Handler = Callable[[Call], Any]


@dataclass
class Command:
    pattern: str
    nodes: tuple[HeaderNode, ...]
    set: Handler | None = None
    query: Handler | None = None


@dataclass
class CommandTree:
    """Registered headers; lookups are cached by the typed tokens (the hot path is one dict hit)."""

    commands: list[Command] = field(default_factory=list)
    _cache: dict[tuple, tuple[Command, tuple[int, ...]] | None] = field(default_factory=dict)

    def add(self, pattern: str, *, set: Handler | None = None, query: Handler | None = None) -> Command:
        if set is None and query is None:
            raise ValueError(f"{pattern!r}: give a set handler, a query handler, or both")
        command = Command(pattern, compile_pattern(pattern), set, query)
        self.commands.append(command)
        self._cache.clear()
        return command

    def lookup(self, tokens: tuple) -> tuple[Command, tuple[int, ...]] | None:
        try:
            return self._cache[tokens]
        except KeyError:
            pass
        found = None
        for command in self.commands:
            suffixes = match_header(command.nodes, tokens)
            if suffixes is not None:
                found = (command, suffixes)
                break
        if len(self._cache) < 4096:
            self._cache[tokens] = found
        return found

    def bind(self, found: tuple[Command, tuple[int, ...]] | None, header: str,
             query: bool) -> Callable[[list[Arg]], Any]:
        """The set or query handler of a looked-up header, to call with its parameters (-113 when
        there is none of that kind): the one dispatch of the SCPI engine and of the MBX's line protocol."""
        if found is None:
            raise ScpiError(-113)
        command, suffixes = found
        handler = command.query if query else command.set
        if handler is None:
            raise ScpiError(-113)
        return lambda args: handler(Call(header, suffixes, args, query))


class ScpiEngine:
    """Executes program messages against a command tree; owns the error queue and status registers.

    ``idn``: the ``*IDN?`` reply. ``error_zero``: how the empty queue is reported (``+0`` on the
    N77xx, ``0`` elsewhere). ``on_reset``: called by ``*RST``. ``rst_clears_errors``: the N77xx
    empties the queue on ``*RST`` (docs/INSTRUMENTS.md 1.1). Thread-safe: one lock per instrument, so
    several connections to the same instrument are served one message at a time.
    """

    def __init__(self, tree: CommandTree, idn: str, *, error_zero: str = "0", queue_depth: int = 30,
                 on_reset: Callable[[], None] | None = None, rst_clears_errors: bool = False,
                 self_test_reply: str = "0", options_reply: str = "0", terminator: bytes = b"\n"):
        self.tree = tree
        self.idn = idn
        self.error_zero = error_zero
        self.errors = ErrorQueue(queue_depth)
        self.on_reset = on_reset
        self.rst_clears_errors = rst_clears_errors
        self.self_test_reply = self_test_reply
        self.options_reply = options_reply
        self.terminator = terminator
        self.esr = ESR_POWER_ON
        self.ese = 0
        self.sre = 0
        self.lock = threading.RLock()
        self._output: list[bytes] = []
        self.after_command: Callable[[], None] | None = None  # called once, after the next command unit runs
        self._add_common_commands()

    # -- status --------------------------------------------------------------------------------
    def push_error(self, code: int, text: str | None = None) -> None:
        self.errors.push(code, text if text is not None else STANDARD_ERRORS.get(code, "Unknown error"))
        self.esr |= esr_bit_for(code)

    def power_on(self) -> None:
        """Status after power-on: error and output queues empty, ESE/SRE zero, ESR = power-on bit."""
        with self.lock:
            self.errors.clear()
            self._output.clear()
            self.esr, self.ese, self.sre = ESR_POWER_ON, 0, 0

    def status_byte(self) -> int:
        stb = 0
        if len(self.errors):
            stb |= STB_ERROR_QUEUE
        if self._output:
            stb |= STB_MESSAGE_AVAILABLE
        if self.esr & self.ese:
            stb |= STB_EVENT_SUMMARY
        if stb & self.sre & ~STB_MASTER_SUMMARY:
            stb |= STB_MASTER_SUMMARY
        return stb

    def format_error(self, code: int, text: str) -> str:
        number = self.error_zero if code == 0 else f"{code:+d}" if self.error_zero.startswith("+") else str(code)
        quoted = text.replace('"', '""')  # IEEE 488.2 string response data: an inner quote is doubled
        return f'{number},"{quoted}"'

    # -- execution -----------------------------------------------------------------------------
    def exchange(self, message: bytes) -> bytes:
        """Execute one message; return its reply with the terminator (b'' when it holds no query)."""
        with self.lock:
            replies = self._execute(message)
        if not replies:
            return b""
        return _joined(replies, self.terminator)

    def write(self, message: bytes) -> None:
        """IEEE 488.2 output-queue model: an unread reply is discarded with -410."""
        with self.lock:
            if self._output:
                self._output.clear()
                self.push_error(-410)
            replies = self._execute(message)
            if replies:
                self._output.append(_joined(replies, self.terminator))

    def read(self) -> bytes | None:
        """The pending reply, or None after queueing -420 when nothing was asked."""
        with self.lock:
            if not self._output:
                self.push_error(-420)
                return None
            return self._output.pop(0)

    def _execute(self, message: bytes) -> list[bytes]:
        replies: list[bytes] = []
        try:
            units = split_units(message)
        except ScpiError as error:
            self.push_error(error.code, error.text)
            return replies
        path: tuple = ()
        for unit in units:
            try:
                reply, path = self._execute_unit(unit, path)
            except ScpiError as error:
                self.push_error(error.code, error.text)
                if error.code <= -100 and error.code > -200:
                    break  # a command (parser) error discards the rest of the message
                continue
            except Exception as error:  # an emulator bug: report it like a device fault, keep serving
                log.exception("SCPI unit %r failed", bytes(unit[:80]))
                self.push_error(-300, f"Device-specific error;{type(error).__name__}: {error}"[:200])
                continue
            if reply is not None:
                replies.append(reply)
            elif self.after_command is not None and bytes(unit[:64]).strip():  # a command ran: before the next unit
                hook, self.after_command = self.after_command, None
                hook()
        return replies

    def _execute_unit(self, unit: memoryview, path: tuple) -> tuple[bytes | None, tuple]:
        raw = unit.tobytes() if len(unit) < 256 else bytes(unit[:256])
        stripped = raw.lstrip()
        if not stripped:
            return None, path
        skip = len(raw) - len(stripped)
        separator = _HEADER_END.search(stripped)
        head_end = len(stripped) if separator is None else separator.start()
        header = stripped[:head_end].decode("ascii", errors="replace")
        query = header.endswith("?")
        bare = header[:-1] if query else header
        if not bare or "?" in bare:
            raise ScpiError(-113)
        tokens = tokenize_header(bare)
        if bare.startswith("*") or bare.startswith(":"):
            new_path = tokens[:-1] if not bare.startswith("*") else path
            full = tokens
        else:
            full = path + tokens
            new_path = full[:-1]
        found = self.tree.lookup(full)
        if found is None and path and not bare.startswith(("*", ":")):
            found = self.tree.lookup(tokens)  # lenient: an absolute header without its leading ':'
            new_path = tokens[:-1]
        run = self.tree.bind(found, header, query)
        data = unit[skip + head_end:]
        result = run(split_parameters(data) if len(data) else [])
        if not query:
            return None, new_path
        return self._format_reply(result), new_path

    @staticmethod
    def _format_reply(result: Any) -> bytes | Raw:
        if isinstance(result, Raw):
            return result if result.terminated else result.data
        if isinstance(result, (bytes, bytearray, memoryview)):
            return definite_block(result)
        if isinstance(result, bool):
            return b"1" if result else b"0"
        return str(result).encode("ascii")

    # -- IEEE 488.2 common commands and the error queue -----------------------------------------
    def _add_common_commands(self) -> None:
        tree = self.tree

        def no_args(call: Call) -> None:
            call.count(0)

        def idn(call: Call) -> str:
            no_args(call)
            return self.idn

        def rst(call: Call) -> None:
            no_args(call)
            if self.on_reset is not None:
                self.on_reset()
            if self.rst_clears_errors:
                self.errors.clear()

        def cls(call: Call) -> None:
            no_args(call)
            self.errors.clear()
            self.esr = 0
            self._output.clear()

        def opc(call: Call) -> None:
            no_args(call)
            self.esr |= ESR_OPERATION_COMPLETE

        def esr(call: Call) -> str:
            no_args(call)
            value, self.esr = self.esr, 0
            return str(value)

        def set_ese(call: Call) -> None:
            call.count(1)
            self.ese = call.integer(minimum=0, maximum=255)

        def set_sre(call: Call) -> None:
            call.count(1)
            self.sre = call.integer(minimum=0, maximum=255)

        def error_next(call: Call) -> str:
            no_args(call)
            return self.format_error(*self.errors.pop())

        def error_count(call: Call) -> str:
            no_args(call)
            return str(len(self.errors))

        def error_all(call: Call) -> str:
            no_args(call)
            entries = [self.errors.pop() for _ in range(len(self.errors))] or [self.errors.pop()]
            return ",".join(self.format_error(code, text) for code, text in entries)

        def reply(value: Callable[[], str]) -> Handler:
            def handler(call: Call) -> str:
                no_args(call)
                return value()
            return handler

        tree.add("*IDN", query=idn)
        tree.add("*RST", set=rst)
        tree.add("*CLS", set=cls)
        tree.add("*OPC", set=opc, query=reply(lambda: "1"))
        tree.add("*WAI", set=no_args)
        tree.add("*ESR", query=esr)
        tree.add("*ESE", set=set_ese, query=reply(lambda: str(self.ese)))
        tree.add("*SRE", set=set_sre, query=reply(lambda: str(self.sre)))
        tree.add("*STB", query=reply(lambda: str(self.status_byte())))
        tree.add("*TST", query=reply(lambda: self.self_test_reply))
        tree.add("*OPT", query=reply(lambda: self.options_reply))
        tree.add("SYSTem:ERRor:COUNt", query=error_count)
        tree.add("SYSTem:ERRor:ALL", query=error_all)
        tree.add("SYSTem:ERRor[:NEXT]", query=error_next)


def _joined(replies: list[bytes | Raw], terminator: bytes) -> bytes | bytearray | memoryview:
    """The replies separated by ';' and terminated, in one copy (a waveform block is megabytes); a lone reply that
    carries its terminator (Raw terminated) in none."""
    if len(replies) == 1 and isinstance(replies[0], Raw):
        return replies[0].data
    replies = [memoryview(r.data)[:len(r.data) - len(terminator)] if isinstance(r, Raw) else r for r in replies]
    parts = [b";"] * (2 * len(replies) - 1) + [terminator]
    parts[0:-1:2] = replies
    return b"".join(parts)
