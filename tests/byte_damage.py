"""One way to damage a file's bytes, shared by the fuzz tests of session files and calibration records."""

from __future__ import annotations


def damaged(valid: bytes, position: float, kind: str, span: int, xor: int) -> bytes:
    """`valid` cut at `position` (a fraction), or one byte xor-ed there, or `span` bytes zeroed there."""
    data = bytearray(valid)
    offset = int(position * len(data))
    if kind == "truncate":
        return bytes(data[:offset])
    if kind == "flip":
        data[offset] ^= xor
    else:
        data[offset:offset + span] = bytes(len(data[offset:offset + span]))
    return bytes(data)
