"""Whether h5py's global lock (``h5py._objects.phil``) is free, and who holds it when it is not: the suite checks it
after every test (tests/conftest.py).

Why: twice (sessions 17 and 19) a clean-checkout run hung in a session's writer thread, which waited for this lock
while no thread of the process was inside h5py. A read had left it held (DECISIONS AL): every later h5py call from
another thread then waits forever, so the run hung at some later test. Checked after each test, the test that leaves
it held fails, with the lock's state.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import time

from h5py._objects import phil

# FastRLock (h5py/_locks.pxi): PyObject_HEAD, then the real lock's pointer, owner (long), count, pending requests
# (ints) and whether the real lock is taken (bint)
_FIELDS = struct.Struct("@Pliii")  # native sizes and alignment, as the C struct
_HEAD_BYTES = 16


def lock_state() -> dict:
    """The lock's fields as h5py keeps them (read from the object's memory: FastRLock exposes none of them)."""
    raw = ctypes.string_at(id(phil), _HEAD_BYTES + _FIELDS.size)
    _, owner, count, pending, locked = _FIELDS.unpack_from(raw, _HEAD_BYTES)
    return {"owner": owner, "count": count, "pending_requests": pending, "real_lock_taken": bool(locked)}


def _check_layout() -> None:
    """The fields are where _FIELDS reads them (else every check would read garbage): free, then held once here."""
    free_state = lock_state()
    with phil:
        held = lock_state()
    if (free_state["count"], held["count"], held["owner"]) != (0, 1, threading.get_ident()):
        raise ImportError(f"h5py's FastRLock is not laid out as tests/h5py_lock.py reads it (free {free_state}, held "
                          f"{held}): update _FIELDS for h5py's _locks.pxi")


_check_layout()


def free(wait_s: float = 2.0) -> bool:
    """True once the lock is held by no thread (its count 0), tried for up to ``wait_s``: a test's background thread
    may still be finishing an h5py call. Why not try to take it from a new thread: thread idents are reused, and a new
    thread with the ident of the exited owner takes the lock as its own (re-entry) and releases it, held, again."""
    deadline = time.monotonic() + wait_s
    while lock_state()["count"]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def describe_holder() -> str:
    """One line: the lock's state and which live thread, if any, is its owner."""
    state = lock_state()
    threads = {thread.ident: thread.name for thread in threading.enumerate()}
    owner = threads.get(state["owner"], "no live thread (it exited holding the lock)")
    return f"h5py's global lock is held: {state}; owner: {owner}"
