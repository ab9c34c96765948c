"""Run ids: short, unique, sortable names for sessions (like ``1M91WSGE1E14A``, Crockford base32).

Why this shape: the first 9 characters are the UTC milliseconds since 1970 (so ids sort by start
time, as text, until the year 10889), the last 4 are random (20 bits: two sessions started in the
same millisecond still differ, with odds of 1 in a million of a clash). Crockford's alphabet has
no I, L, O or U, so an id read aloud or copied by hand stays unambiguous.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
TIME_CHARS, RANDOM_CHARS = 9, 4
PATTERN = re.compile(f"^[{ALPHABET}]{{{TIME_CHARS + RANDOM_CHARS}}}$")


def _encode(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 32)
        digits.append(ALPHABET[digit])
    if number:
        raise ValueError(f"does not fit in {width} base32 characters")
    return "".join(reversed(digits))


def new_run_id(now: dt.datetime | None = None) -> str:
    """A fresh id for a run starting ``now`` (UTC now by default)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    milliseconds = int(now.timestamp() * 1000)
    return _encode(milliseconds, TIME_CHARS) + _encode(secrets.randbits(5 * RANDOM_CHARS), RANDOM_CHARS)


def is_run_id(text: str) -> bool:
    return isinstance(text, str) and PATTERN.match(text) is not None


def run_id_time(run_id: str) -> dt.datetime:
    """When the run started (UTC, to the millisecond), read back from its id."""
    if not is_run_id(run_id):
        raise ValueError(f"{run_id!r} is not a run id ({TIME_CHARS + RANDOM_CHARS} Crockford base32 characters)")
    milliseconds = 0
    for char in run_id[:TIME_CHARS]:
        milliseconds = milliseconds * 32 + ALPHABET.index(char)
    return dt.datetime.fromtimestamp(milliseconds / 1000, dt.timezone.utc)
