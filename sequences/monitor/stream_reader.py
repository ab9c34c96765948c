"""The status stream (status.py) read as it grows: whole lines only, from where the last look stopped."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from qslab.sequences.monitor.status import stream_path


@dataclass
class StationStatus:
    """What the session's status lines said so far: the latest readings, the records in use, every fault action."""

    path: Path
    started: bool = False
    calibration_dir: str | None = None
    records: list = field(default_factory=list)
    injected: list = field(default_factory=list)
    readings: dict = field(default_factory=dict)
    link: dict = field(default_factory=dict)
    readings_time_unix_s: float | None = None
    batches_done: int = 0
    actions: list = field(default_factory=list)
    fired: list = field(default_factory=list)
    stopped: dict | None = None
    _offset: int = 0

    @classmethod
    def beside(cls, session_path: Path) -> StationStatus:
        return cls(stream_path(session_path))

    def poll(self) -> bool:
        """Read the lines appended since the last poll; True if there were any. A missing stream is no error (a
        session of an older qslab, or one that has not set up yet)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(0, 2)
                if handle.tell() < self._offset:  # truncated or replaced: read it afresh
                    self.__dict__.update(StationStatus(self.path).__dict__)
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return False
        complete = data[:data.rfind(b"\n") + 1]  # a line still being appended is read next time
        self._offset += len(complete)
        changed = False
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a damaged line: the next ones still count
            if isinstance(event, dict):
                self._apply(event)
                changed = True
        return changed

    def _apply(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            self.started = True
            self.calibration_dir = event.get("calibration_dir")
            self.records = list(event.get("records") or [])
            self.injected = list(event.get("injected") or [])
            self.stopped = None
        if kind == "stopped":
            self.stopped = {"error": event.get("error"), "error_type": event.get("error_type")}
        self.readings = event.get("readings") or self.readings
        self.link = event.get("link") or self.link
        self.readings_time_unix_s = event.get("time_unix_s", self.readings_time_unix_s)
        self.batches_done = int(event.get("batches_done", self.batches_done) or 0)
        self.actions += list(event.get("actions") or [])
        self.fired = list(event.get("fired") or self.fired)


def record_expiries(calibration_dir: str | None, record_keys, known: dict) -> dict:
    """``{record id: {kind, instrument, created_utc, expires_utc}}`` from the calibration store the session used
    (records are immutable: each is read once, ``known`` keeps them); a record that cannot be read: expiry None."""
    from qslab.calibration.records import RecordStore

    store = RecordStore(calibration_dir) if calibration_dir else None
    for key in record_keys:
        record_id = key.rsplit("/", 1)[-1]
        if record_id in known:
            continue
        kind, _, rest = key.partition("/")
        entry = {"kind": kind, "instrument": rest.partition("/")[0], "created_utc": None, "expires_utc": None}
        try:
            record = store.get(record_id)
            entry.update(created_utc=record.created.isoformat(), expires_utc=record.expires.isoformat())
        except Exception:  # noqa: BLE001 - pruned, moved, or no store: shown as unknown
            pass
        known[record_id] = entry
    return known


def seconds_left(expires_utc: str | None, now: dt.datetime | None = None) -> float | None:
    if not expires_utc:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    return (dt.datetime.fromisoformat(expires_utc) - now).total_seconds()
