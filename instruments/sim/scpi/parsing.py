"""SCPI parsing for the bench's emulators: headers, parameters, replies, message framing, errors.

Conventions reproduced (docs/INSTRUMENTS.md 1.1-1.3):

* headers are case-insensitive; each node is accepted in its short form (the upper-case letters of
  the pattern) or its full long form, nothing in between; ``[...]`` nodes are optional and ``#``
  marks a numeric suffix (``SOURce#`` matches ``SOUR``, ``SOUR1``, ``source4``; default 1);
* several program units per message, separated by ``;`` (``split_units``; the path rules of
  relative headers are the engine's);
* numbers take unit suffixes (``1500NM``, ``19MW``, ``3GHZ``) and ``MIN|MAX|DEF``; booleans
  ``ON|OFF|1|0``; character data by short or long form;
* definite-length blocks ``#<n><len><bytes>`` in parameters (their bytes may hold LF, ``;``,
  ``,`` or ``"``: framing and splitting go by length), and as query replies;
* the standard error codes and texts, raised as ``ScpiError`` (the engine queues them).

Nothing here holds instrument state: the engine (engine.py) executes what this module parses.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# --- errors ------------------------------------------------------------------------------------

STANDARD_ERRORS: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -103: "Invalid separator",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -110: "Command header error",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -120: "Numeric data error",
    -121: "Invalid character in number",
    -131: "Invalid suffix",
    -138: "Suffix not allowed",
    -141: "Invalid character data",
    -150: "String data error",
    -151: "Invalid string data",
    -160: "Block data error",
    -161: "Invalid block data",
    -168: "Block data not allowed",
    -200: "Execution error",
    -220: "Parameter error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -225: "Out of memory",
    -230: "Data corrupt or stale",
    -241: "Hardware missing",
    -300: "Device-specific error",
    -310: "System error",
    -350: "Queue overflow",
    -363: "Input buffer overrun",
    -400: "Query error",
    -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED",
    -430: "Query DEADLOCKED",
}


class ScpiError(Exception):
    """Raised by a handler (or the parser): the instrument queues ``code,"text"`` and goes on."""

    def __init__(self, code: int, text: str | None = None):
        self.code = code
        self.text = text if text is not None else STANDARD_ERRORS.get(code, "Unknown error")
        super().__init__(f'{code},"{self.text}"')



# --- headers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeaderNode:
    short: str
    long: str
    has_suffix: bool
    optional: bool

    def accepts(self, name: str, suffix: int | None) -> bool:
        if name != self.short and name != self.long:
            return False
        return self.has_suffix or suffix is None


_TOKEN = re.compile(r"^([A-Z_*][A-Z_]*?)(\d*)$")


def compile_pattern(pattern: str) -> tuple[HeaderNode, ...]:
    """``"[:SOURce#]:POWer[:LEVel]"`` -> nodes; every node inside brackets is optional."""
    nodes: list[HeaderNode] = []
    depth = 0
    word = ""

    def flush(optional: bool) -> None:
        nonlocal word
        if not word:
            return
        has_suffix = word.endswith("#")
        mnemonic = word.rstrip("#")
        if not re.fullmatch(r"\*?[A-Za-z_]+", mnemonic):
            raise ValueError(f"bad mnemonic {word!r} in pattern {pattern!r}")
        short = "".join(c for c in mnemonic if c.isupper() or c in "*_")
        nodes.append(HeaderNode(short or mnemonic.upper(), mnemonic.upper(), has_suffix, optional))
        word = ""

    for char in pattern:
        if char == "[":
            flush(depth > 0)
            depth += 1
        elif char == "]":
            flush(depth > 0)
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in pattern {pattern!r}")
        elif char == ":":
            flush(depth > 0)
        else:
            word += char
    flush(depth > 0)
    if depth:
        raise ValueError(f"unbalanced '[' in pattern {pattern!r}")
    if not nodes or all(node.optional for node in nodes):
        raise ValueError(f"pattern {pattern!r} has no mandatory node")
    return tuple(nodes)


@functools.lru_cache(maxsize=4096)
def tokenize_header(header: str) -> tuple[tuple[str, int | None], ...]:
    """``":sour1:pow"`` -> (("SOUR", 1), ("POW", None)); raises -110/-113 on malformed nodes. Kept per header
    string: an instrument hears the same few headers again and again (a malformed one is not kept: it raises)."""
    parts = header.upper().lstrip(":").split(":")
    tokens = []
    for part in parts:
        match = _TOKEN.match(part)
        if match is None:
            raise ScpiError(-113 if part else -110)
        name, digits = match.groups()
        tokens.append((name, int(digits) if digits else None))
    return tuple(tokens)


def _match(nodes, i, tokens, j, suffixes) -> bool:
    if i == len(nodes):
        return j == len(tokens)
    node = nodes[i]
    if j < len(tokens):
        name, suffix = tokens[j]
        if node.accepts(name, suffix):
            if node.has_suffix:
                suffixes.append(1 if suffix is None else suffix)
            if _match(nodes, i + 1, tokens, j + 1, suffixes):
                return True
            if node.has_suffix:
                suffixes.pop()
    if node.optional:
        if node.has_suffix:
            suffixes.append(1)
        if _match(nodes, i + 1, tokens, j, suffixes):
            return True
        if node.has_suffix:
            suffixes.pop()
    return False


def match_header(nodes: tuple[HeaderNode, ...], tokens: tuple) -> tuple[int, ...] | None:
    """The numeric suffixes when the typed header tokens match the pattern's nodes, else None."""
    suffixes: list[int] = []
    return tuple(suffixes) if _match(nodes, 0, tokens, 0, suffixes) else None


# --- parameters --------------------------------------------------------------------------------

# Unit suffixes by dimension (docs/INSTRUMENTS.md 1.2), as multipliers to the base unit.
UNITS: dict[str, dict[str, float]] = {
    "M": {"PM": 1e-12, "NM": 1e-9, "UM": 1e-6, "MM": 1e-3, "M": 1.0},
    "DB": {"MDB": 1e-3, "DB": 1.0},
    "DBM": {"MDBM": 1e-3, "DBM": 1.0},
    "W": {"PW": 1e-12, "NW": 1e-9, "UW": 1e-6, "MW": 1e-3, "W": 1.0, "WATT": 1.0},
    "S": {"PS": 1e-12, "NS": 1e-9, "US": 1e-6, "MS": 1e-3, "S": 1.0},
    "HZ": {"HZ": 1.0, "KHZ": 1e3, "MHZ": 1e6, "MAHZ": 1e6, "GHZ": 1e9, "THZ": 1e12},
    "V": {"UV": 1e-6, "MV": 1e-3, "V": 1.0, "KV": 1e3},
    "A": {"UA": 1e-6, "MA": 1e-3, "A": 1.0},
}
_NUMBER = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:E[+-]?\d+)?)\s*([A-Z/]*)$")
_SPECIAL_NUMBERS = {"MIN": "MIN", "MINIMUM": "MIN", "MAX": "MAX", "MAXIMUM": "MAX", "DEF": "DEF", "DEFAULT": "DEF"}


def parse_number(text: str | bytes, *, units: Sequence[str] = (), minimum: float | None = None,
                 maximum: float | None = None, default: float | None = None) -> tuple[float, str | None]:
    """A numeric parameter -> (value in the base unit of its dimension, dimension or None).

    ``units``: the dimensions whose suffixes are accepted (``("W", "DBM")``); a value without a
    suffix comes back with dimension None (the handler applies its current unit). MIN/MAX/DEF give
    the limits (-224 when the command has none). Values outside [minimum, maximum] are -222.
    """
    if isinstance(text, (bytes, memoryview)):
        raise ScpiError(-104)
    word = text.strip().upper()
    if not word:
        raise ScpiError(-109)
    special = _SPECIAL_NUMBERS.get(word)
    if special is not None:
        value = {"MIN": minimum, "MAX": maximum, "DEF": default}[special]
        if value is None:
            raise ScpiError(-224)
        return float(value), None
    match = _NUMBER.match(word)
    if match is None:
        if word[0].isalpha() or word[0] in "\"'#":
            raise ScpiError(-104)
        raise ScpiError(-120)
    value = float(match.group(1))
    suffix = match.group(2)
    dimension = None
    if suffix:
        if not units:
            raise ScpiError(-138)
        for dim in units:
            scale = UNITS[dim].get(suffix)
            if scale is not None:
                value, dimension = value * scale, dim
                break
        else:
            raise ScpiError(-131)
    if not math.isfinite(value):
        raise ScpiError(-222)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ScpiError(-222)
    return value, dimension


def number_keyword(text: str | bytes) -> str | None:
    """``"MIN"``, ``"MAX"`` or ``"DEF"`` when a numeric parameter is one of those keywords, else None."""
    if isinstance(text, (bytes, memoryview)):
        return None
    return _SPECIAL_NUMBERS.get(text.strip().upper())


def parse_bool(text: str | bytes) -> bool:
    """``ON|OFF|1|0`` (numbers round: SCPI-99 7.3)."""
    if isinstance(text, (bytes, memoryview)):
        raise ScpiError(-104)
    word = text.strip().upper()
    if word == "ON":
        return True
    if word == "OFF":
        return False
    try:
        return round(float(word)) != 0
    except ValueError:
        raise ScpiError(-224) from None


def mnemonic_forms(mnemonic: str) -> tuple[str, str]:
    """(short, long) upper-case forms of ``"LSBFirst"`` -> ("LSBF", "LSBFIRST")."""
    short = "".join(c for c in mnemonic if c.isupper() or c.isdigit())
    return short or mnemonic.upper(), mnemonic.upper()


def parse_choice(text: str | bytes, choices: Sequence[str]) -> str:
    """Character data by short or long form -> the matching entry of ``choices`` (as written there)."""
    if isinstance(text, (bytes, memoryview)):
        raise ScpiError(-104)
    word = text.strip().upper()
    for choice in choices:
        if word in mnemonic_forms(choice):
            return choice
    raise ScpiError(-224)


def unquote(text: str | bytes) -> str:
    """A string parameter ``"abc"`` or ``'abc'`` (doubled quotes inside) -> abc."""
    if isinstance(text, (bytes, memoryview)):
        raise ScpiError(-104)
    text = text.strip()
    if len(text) < 2 or text[0] not in "\"'" or text[-1] != text[0]:
        raise ScpiError(-151)
    quote = text[0]
    return text[1:-1].replace(quote * 2, quote)


# --- reply formatting --------------------------------------------------------------------------

def nr3(value: float, digits: int = 8, exponent_digits: int = 3) -> str:
    """Keysight lightwave NR3: ``+1.55000000E-006`` (docs/INSTRUMENTS.md 1.2)."""
    if not math.isfinite(value):
        return "+9.91000000E+037" if value != value or value > 0 else "-9.91000000E+037"
    mantissa, exponent = f"{value:+.{digits}E}".split("E")
    return f"{mantissa}E{int(exponent):+0{exponent_digits + 1}d}"


def definite_block(data: bytes | bytearray | memoryview) -> bytes:
    """IEEE 488.2 definite-length block ``#<n><len><data>``."""
    length = str(len(data))
    if len(length) > 9:
        raise ScpiError(-223)
    return b"#" + str(len(length)).encode() + length.encode() + bytes(data)


@dataclass(frozen=True)
class Raw:
    """A reply sent exactly as given (an indefinite ``#0`` block, a reply with its own header). ``terminated``:
    ``data`` already ends with the message terminator, so a message whose only reply it is goes out as ``data``
    itself, not copied into a joined reply (a waveform is megabytes)."""

    data: bytes | bytearray | memoryview
    terminated: bool = False


# --- message framing and splitting --------------------------------------------------------------

_SPECIAL = re.compile(rb"[\n#\"']")
_UNIT_SPECIAL = re.compile(rb"[;#\"']")
_PARAM_SPECIAL = re.compile(rb"[,#\"']")

_SEMICOLON = re.compile(rb";")
_QUOTES = {0x22: re.compile(rb'"'), 0x27: re.compile(rb"'")}
_RESERVE_MIN_BYTES = 1 << 16  # blocks still missing more than this are received straight into place
_HANDOVER_MIN_BYTES = 1 << 16  # messages this long that fill the buffer are handed over, not copied
_TAIL_ROOM_BYTES = 4096        # kept after a reserved block for the rest of its message (more units, the LF)


def _definite_end(buffer, start: int) -> int | None:
    """End index of the definite block at ``buffer[start] == '#'`` (digit 1-9 follows); None if the
    header is incomplete. ``buffer`` may be bytes, bytearray or memoryview."""
    n = buffer[start + 1] - 0x30
    if start + 2 + n > len(buffer):
        return None
    digits = bytes(buffer[start + 2:start + 2 + n])
    if not digits.isdigit():
        raise ScpiError(-161)
    return start + 2 + n + int(digits)


def _block_kind(buffer, start: int) -> str | None:
    """At a '#': "definite" (#1-#9), "indefinite" (#0), "none" (a '#H1F' number or stray '#'), None if unknown yet."""
    if start + 1 >= len(buffer):
        return None
    digit = buffer[start + 1]
    if digit == 0x30:
        return "indefinite"
    return "definite" if 0x31 <= digit <= 0x39 else "none"


def _skip_string(buffer, start: int) -> int | None:
    """Index after the closing quote of the string opened at ``start`` (a doubled quote escapes)."""
    quote = buffer[start]
    pattern = _QUOTES[quote]
    pos = start + 1
    while True:
        match = pattern.search(buffer, pos)
        if match is None:
            return None
        close = match.start()
        if close + 1 < len(buffer) and buffer[close + 1] == quote:
            pos = close + 2
            continue
        return close + 1


class MessageFramer:
    """Splits a byte stream into LF-terminated program messages, skipping blocks by their length.

    Why not split on LF: block bytes are arbitrary (int8 samples hold 0x0A and 0x0D), so the framer
    reads ``#<n><len>`` and jumps over ``len`` bytes (an indefinite ``#0`` block runs to the LF). A
    CR before the LF is dropped (CR LF terminators) unless it is the last byte of a block.

    Large blocks: ``reserve()`` allocates the message up to the block's end once (uninitialised,
    so no zeroing pass) and returns the view for ``recv_into``; when the LF follows the block, or a short
    plain rest of the message (more units, as a driver batches its commands) fits the room kept after it,
    the message is handed over as a view of that memory. A 64 MiB upload is thus received in place and
    never copied on its way to the handler.
    """

    def __init__(self):
        self.buffer = bytearray()
        self._scan = 0
        self._need = 0
        self._block_end = 0
        self._big: np.ndarray | None = None  # a reserved message head (ends with a block)

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def needed(self) -> int:
        """Bytes an unfinished definite block still lacks (0 when unknown or complete)."""
        if self._big is not None:
            return 0
        return max(self._need - len(self.buffer), 0)

    def reserve(self) -> memoryview | None:
        """A view of the missing part of a large block, to fill with ``recv_into`` then ``commit``."""
        need = self.needed()
        if need < _RESERVE_MIN_BYTES:
            return None
        have = len(self.buffer)
        big = np.empty(have + need + _TAIL_ROOM_BYTES, dtype=np.uint8)
        big[:have] = np.frombuffer(self.buffer, dtype=np.uint8)
        self._big, self.buffer, self._reserved = big, bytearray(), need
        return memoryview(big)[have:have + need]

    def commit(self, count: int) -> None:
        """After ``reserve()``: ``count`` bytes arrived; fewer than reserved means the peer went
        away mid-block, and the partial message is dropped."""
        if count < self._reserved:
            self._big = None
            self.buffer = bytearray()
            self._scan = self._need = self._block_end = 0

    def next_message(self) -> bytes | bytearray | memoryview | None:
        if self._big is not None:
            return self._next_after_big()
        buffer = self.buffer
        pos = self._scan
        while True:
            match = _SPECIAL.search(buffer, pos)
            if match is None:
                self._scan = len(buffer)
                return None
            index = match.start()
            char = buffer[index]
            if char == 0x0A:
                return self._take(index)
            if char == 0x23:  # '#'
                kind = _block_kind(buffer, index)
                if kind is None:
                    self._scan = index
                    return None
                if kind == "none":
                    pos = index + 1
                    continue
                if kind == "indefinite":
                    newline = buffer.find(b"\n", index + 2)
                    if newline < 0:
                        self._scan = index
                        return None
                    return self._take(newline)
                try:
                    end = _definite_end(buffer, index)
                except ScpiError:
                    pos = index + 1  # not a valid block header: the parser reports it
                    continue
                if end is None or end > len(buffer):
                    self._scan = index
                    self._need = end if end is not None else index + 2 + buffer[index + 1] - 0x30
                    return None
                self._block_end = pos = end
                continue
            end = _skip_string(buffer, index)
            if end is None:
                # an unterminated quote: the message still ends at the LF (the parser reports it)
                newline = buffer.find(b"\n", index)
                if newline < 0:
                    self._scan = index
                    return None
                return self._take(newline)
            pos = end

    def _next_after_big(self) -> memoryview | bytes | None:
        """The reserved head is complete: hand it over when the message's end follows the block. A short plain
        tail (more units after the block, up to the LF: no block, no string) is copied into the room kept after
        the block; anything else merges with the head (one copy) and is scanned on."""
        tail, size = self.buffer, self._big.size - _TAIL_ROOM_BYTES  # the head and its block
        if tail in (b"", b"\r"):
            return None
        newline = tail.find(b"\n")
        plain = _SPECIAL.search(tail, 0, len(tail) if newline < 0 else newline) is None
        if plain and newline < 0 and len(tail) < _TAIL_ROOM_BYTES:
            return None  # the rest of the message is on its way
        if plain and 0 <= newline <= _TAIL_ROOM_BYTES:
            end = newline - 1 if newline and tail[newline - 1] == 0x0D else newline  # (a CR LF terminator)
            self._big[size:size + end] = np.frombuffer(tail, dtype=np.uint8, count=end)
            message = memoryview(self._big)[:size + end]
            del tail[:newline + 1]
            self._big = None
            self._scan = self._need = self._block_end = 0
            return message
        # a long tail, or one with a block or a string: merge (one copy of the head) and scan on
        merged = bytearray(memoryview(self._big)[:size])
        merged += tail
        self.buffer = merged
        self._big = None
        self._scan = self._block_end = size
        self._need = 0
        return self.next_message()

    def _take(self, newline: int) -> bytes | bytearray:
        buffer = self.buffer
        end = newline
        if end > self._block_end and end > 0 and buffer[end - 1] == 0x0D:
            end -= 1
        self._scan = self._need = self._block_end = 0
        if newline + 1 == len(buffer) and end >= _HANDOVER_MIN_BYTES:
            self.buffer = bytearray()
            del buffer[end:]
            return buffer
        message = bytes(memoryview(buffer)[:end])
        del buffer[:newline + 1]
        return message


def split_units(message: bytes | bytearray) -> list[memoryview]:
    """Program message units separated by ';' outside strings and blocks."""
    view = memoryview(message)
    if _SEMICOLON.search(message) is None:
        return [view]
    units, start, pos = [], 0, 0
    while True:
        match = _UNIT_SPECIAL.search(message, pos)
        if match is None:
            units.append(view[start:])
            return units
        index = match.start()
        char = message[index]
        if char == 0x3B:  # ';'
            units.append(view[start:index])
            start = pos = index + 1
        elif char == 0x23:
            kind = _block_kind(message, index)
            if kind == "indefinite":  # runs to the end of the message
                units.append(view[start:])
                return units
            if kind == "definite":
                end = _definite_end(message, index)
                if end is None or end > len(message):
                    raise ScpiError(-161)
                pos = end
            else:
                pos = index + 1
        else:
            end = _skip_string(message, index)
            if end is None:
                raise ScpiError(-151)
            pos = end


Arg = str | memoryview  # character/numeric/string data as text; a block's payload as bytes


def split_parameters(data: memoryview) -> list[Arg]:
    """Parameters separated by ',' outside strings and blocks; a block becomes its payload (no copy)."""
    if not _PARAM_SPECIAL.search(data):
        text = bytes(data).decode("ascii", errors="replace")
        if not text.strip():
            return []
        return [part.strip() for part in text.split(",")]
    args: list[Arg] = []
    start = pos = 0
    pending_block: memoryview | None = None
    size = len(data)
    while True:
        match = _PARAM_SPECIAL.search(data, pos)
        index = size if match is None else match.start()
        char = None if match is None else data[index]
        if char is None or char == 0x2C:  # end or ','
            text = bytes(data[start:index]).decode("ascii", errors="replace").strip()
            if pending_block is not None:
                if text:
                    raise ScpiError(-161)
                args.append(pending_block)
                pending_block = None
            else:
                if not text and (char is not None or args):
                    raise ScpiError(-103 if char is not None else -109)
                if text:
                    args.append(text)
            if char is None:
                return args
            start = pos = index + 1
        elif char == 0x23:
            kind = _block_kind(data, index)
            if kind in (None, "none"):
                pos = index + 1
                continue
            if bytes(data[start:index]).strip():
                raise ScpiError(-161)
            if kind == "indefinite":
                args.append(data[index + 2:])
                return args
            end = _definite_end(data, index)
            if end is None or end > size:
                raise ScpiError(-161)
            pending_block = data[index + 2 + data[index + 1] - 0x30:end]
            start = pos = end
        else:
            end = _skip_string(data, index)
            if end is None:
                raise ScpiError(-151)
            pos = end
