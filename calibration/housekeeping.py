"""Listing calibration records and pruning the superseded ones, never one a session or a kept record uses.

A record is superseded when a newer record of the same kind and instrument holds every parameter it
holds and stays valid at least as long: the store's queries (``require``, ``require_parameter``) can
then never return it again. Pruning deletes superseded records except those a session file references
(its ``/meta/calibrations_json`` records) and, transitively, those a kept record was derived from
(its conditions' ``records``), so every kept result can still be traced to its measurements.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from qslab.calibration.records import CalibrationRecord, CorruptRecord, RecordStore, read_record


@dataclass(frozen=True)
class RecordRow:
    """One record file as listed: ``record`` is None when it cannot be read (``detail`` says why)."""

    path: Path
    record: CalibrationRecord | None
    superseded_by: str | None = None
    detail: str = ""

    def as_dict(self, now: dt.datetime) -> dict:
        r = self.record
        if r is None:
            return {"id": self.path.stem, "file": str(self.path), "readable": False, "detail": self.detail}
        return {"id": r.id, "file": str(self.path), "readable": True, "kind": r.kind, "instrument": r.instrument,
                "created_utc": r.created.isoformat(), "age_s": (now - r.created).total_seconds(),
                "valid_until_utc": r.expires.isoformat(), "valid": r.is_valid(now),
                "superseded_by": self.superseded_by, "parameters": sorted(r.parameters)}


def list_records(directory: str | Path) -> list[RecordRow]:
    """Every record file of a store directory (unreadable ones too), oldest first, with what supersedes each."""
    directory = Path(directory)
    rows: list[RecordRow] = []
    paths = sorted(p for p in directory.glob("*.h5") if not p.name.startswith(".")) if directory.is_dir() else []
    for path in paths:
        try:
            rows.append(RecordRow(path, read_record(path)))
        except CorruptRecord as error:
            rows.append(RecordRow(path, None, detail=str(error)))
    readable = [row.record for row in rows if row.record is not None]
    newer = {r.id: _superseding(r, readable) for r in readable}
    rows = [RecordRow(row.path, row.record, newer.get(row.record.id), row.detail) if row.record else row for row in rows]
    return sorted(rows, key=lambda row: (row.record.created if row.record else dt.datetime.max.replace(
        tzinfo=dt.timezone.utc), row.path.name))


def _superseding(record: CalibrationRecord, records: list[CalibrationRecord]) -> str | None:
    """The newest record that makes ``record`` unreachable by the store's queries, if any."""
    later = [r for r in records if r.kind == record.kind and r.instrument == record.instrument
             and (r.created, r.id) > (record.created, record.id) and set(r.parameters) >= set(record.parameters)
             and r.expires >= record.expires]
    return max(later, key=lambda r: (r.created, r.id)).id if later else None


def derived_from(record: CalibrationRecord) -> set[str]:
    """Ids of the records a record was computed from (its conditions' ``records``: "kind/instrument/id")."""
    references = record.conditions.get("records") or []
    return {str(reference).rsplit("/", 1)[-1] for reference in references}


def prunable(rows: list[RecordRow], referenced: set[str]) -> list[RecordRow]:
    """Superseded records that no session references and no kept record was derived from."""
    by_id = {row.record.id: row.record for row in rows if row.record is not None}
    keep = {row.record.id for row in rows if row.record is not None and row.superseded_by is None}
    keep |= set(referenced) & set(by_id)
    todo = list(keep)
    while todo:  # a kept record's provenance is kept too
        for parent in derived_from(by_id[todo.pop()]):
            if parent in by_id and parent not in keep:
                keep.add(parent)
                todo.append(parent)
    return [row for row in rows if row.record is not None and row.superseded_by and row.record.id not in keep]


def prune(store: RecordStore, referenced: set[str]) -> list[RecordRow]:
    """Delete the prunable records of ``store`` (see ``prunable``); returns what was deleted."""
    doomed = prunable(list_records(store.directory), referenced)
    for row in doomed:
        row.path.unlink()
    return doomed
