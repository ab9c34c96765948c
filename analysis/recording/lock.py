"""The writer lock of a session file: tells a live writer from a crashed one, so a crash is recovered without guessing.

HDF5 marks a file open-for-writing the same way whether its writer runs or was killed. Next to every file
being written, ``.NAME.writer`` holds the writer's pid, host and start time, and the writer holds an
exclusive flock on it for as long as it writes. The kernel drops a flock when its process dies (kill -9,
power cut of the process, crash), so:

    flock taken by another process          a live writer: refused, naming its pid and host
    flock free, record from this host       a crashed writer: its lock is adopted (``crashed`` says whose)
    flock free, record from another host    cannot tell from here (flocks may not cross a network file
                                            system): refused, naming the host
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from qslab.analysis.recording.schema import RecordingError


@dataclass(frozen=True)
class WriterRecord:
    """Who writes (or wrote) a session file."""

    pid: int
    host: str
    started_utc: str
    # the counts of images sent (recording.SENT_COUNTS -> per layer), noted before each acquisition's light: what a
    # writer killed mid-batch sent beyond its file's last count (None: none noted)
    sent: dict | None = None

    @classmethod
    def here(cls) -> WriterRecord:
        return cls(os.getpid(), platform.node(), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (since {self.started_utc})"


def lock_path(session_path: Path) -> Path:
    return session_path.with_name(f".{session_path.name}.writer")


class WriterLock:
    """Held by the one process writing ``session_path``; ``crashed`` is the record of a crashed writer it replaced."""

    def __init__(self, path: Path, fd: int, crashed: WriterRecord | None, record: WriterRecord):
        self.path, self.crashed, self.record = path, crashed, record
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, session_path: Path) -> WriterLock:
        """The lock of ``session_path``; RecordingError if a live writer (or one on another host) holds it."""
        path = lock_path(Path(session_path))
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise RecordingError(f"{session_path}: cannot create its writer lock {path} ({error.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                who = holder.describe() if holder else "another process"
                raise RecordingError(f"{session_path} is being written by {who}: a session file has one writer; "
                                     f"wait for it to end (or stop it) before resuming") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the lock file as we took it: take the new one
        previous = _read(fd)
        if previous is not None and previous.host != platform.node():
            os.close(fd)
            raise RecordingError(f"{session_path} was being written by {previous.describe()}: from "
                                 f"{platform.node()} it cannot be told whether that writer still runs. If it does "
                                 f"not, remove {path} and resume")
        record = WriterRecord.here()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(record)).encode(), 0)
        os.fsync(fd)
        return cls(path, fd, previous, record)

    def note_sent(self, sent: dict) -> None:
        """Record the counts of images sent (SENT_COUNTS -> per layer) before light that no batch row may ever hold.

        One pwrite of a fixed RECORD_BYTES at offset 0, so a kill leaves either record whole; not synced: a killed
        process's write survives in the page cache (a power cut of the host may lose it)."""
        if self._fd is None:
            return
        record = json.dumps(asdict(replace(self.record, sent={k: [int(n) for n in v] for k, v in sent.items()})))
        record = record.encode()
        if len(record) > RECORD_BYTES:
            raise RecordingError(f"{self.path}: the writer record's counts need {len(record)} bytes, more than "
                                 f"{RECORD_BYTES}")
        os.pwrite(self._fd, record.ljust(RECORD_BYTES), 0)

    def release(self) -> None:
        """Remove the lock file, then let go of the flock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)


RECORD_BYTES = 4096  # a record noted while writing is padded to this (JSON allows the trailing spaces)


def noted_sent(session_path: Path) -> dict | None:
    """The counts of images sent that the writer lock beside ``session_path`` holds (a live writer's so far, or a
    crashed one's last note), read without taking it; None when there is no lock or no note."""
    try:
        fd = os.open(lock_path(Path(session_path)), os.O_RDONLY)
    except OSError:
        return None
    try:
        record = _read(fd)
    finally:
        os.close(fd)
    return None if record is None else record.sent


def _read(fd: int) -> WriterRecord | None:
    """The record in the lock file (None: empty, new, or unreadable)."""
    try:
        data = os.pread(fd, RECORD_BYTES, 0)
        return WriterRecord(**json.loads(data.decode())) if data else None
    except (OSError, ValueError, TypeError):
        return None
