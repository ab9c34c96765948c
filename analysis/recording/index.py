"""The run index: one summary row per session file of a directory, and the calibration records they reference.

Why from the files themselves: a session file holds its settings, status, results and the ids of
the records it used (docs/RECORDING.md), so the index needs no database that could disagree with
them; a file still being written is read through SWMR like any other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from qslab.analysis.recording.reader import SessionFile
from qslab.analysis.recording.run_id import is_run_id, run_id_time
from qslab.analysis.recording.schema import RecordingError

PATTERN = "session-*.h5"


@dataclass(frozen=True)
class SessionSummary:
    """One session file: ``status`` is complete, aborted, running or unreadable (``detail`` says why).

    ``started_utc`` is the run id's time (the session's start, before its calibrations), else the file's creation.
    """

    file: str
    run_id: str | None
    started_utc: str | None
    status: str
    images: int | None                          # images recorded (committed batches)
    images_planned: int | None
    accuracy: float | None                      # complete sessions only
    verified: bool | None
    weight_leakage_bits_per_mode: float | None
    data_leakage_bits_per_bin: float | None     # per-bin photon counting, not a bound (older files: "_exact")
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def session_files(directory: str | Path) -> list[Path]:
    """Every ``session-*.h5`` under ``directory`` (sub-directories too), oldest name first."""
    directory = Path(directory)
    return sorted(directory.rglob(PATTERN)) if directory.is_dir() else []


def summarize(path: str | Path) -> SessionSummary:
    """The summary row of one file; a file that cannot be read is a row with status ``unreadable``."""
    path = Path(path)
    try:
        with SessionFile.open(path) as session:
            results = session.results or {}
            run_id = session.run_id
            started = run_id_time(run_id).isoformat() if is_run_id(run_id) else session.created_utc
            return SessionSummary(
                file=str(path), run_id=run_id, started_utc=started, status=session.status,
                images=session.images_written, images_planned=session.settings.get("images"),
                accuracy=results.get("accuracy"), verified=results.get("verified"),
                weight_leakage_bits_per_mode=results.get("weight_leakage_bits_per_mode"),
                data_leakage_bits_per_bin=results.get("data_leakage_bits_per_bin",
                                                      results.get("data_leakage_bits_exact")),  # before the rename
                detail=session.detail)
    except RecordingError as error:
        stem = path.stem.removeprefix("session-")
        return SessionSummary(str(path), stem if is_run_id(stem) else None,
                              run_id_time(stem).isoformat() if is_run_id(stem) else None, "unreadable", None, None,
                              None, None, None, None, str(error))


def session_index(directory: str | Path) -> list[SessionSummary]:
    """Every session of ``directory``, in the order they started (run id, else creation time, else name)."""
    rows = [summarize(path) for path in session_files(directory)]
    return sorted(rows, key=lambda row: (row.started_utc or "", row.run_id or "", row.file))


def referenced_records(directories) -> dict[str, list[str]]:
    """Calibration record id -> the session files that used it, over every session under ``directories``.

    A session file that cannot be read is a RecordingError: what it references is unknown, so nothing
    may be deleted on the strength of this answer.
    """
    used: dict[str, list[str]] = {}
    for directory in directories:
        for path in session_files(directory):
            with SessionFile.open(path) as session:
                try:
                    records = session.calibrations.get("records") or {}
                except (ValueError, AttributeError) as error:
                    raise RecordingError(f"{path}: /meta/calibrations_json cannot be read ({error})") from None
            for key, summary in records.items():
                record_id = (summary or {}).get("id") if isinstance(summary, dict) else None
                used.setdefault(record_id or key.rsplit("/", 1)[-1], []).append(str(path))
    return used
