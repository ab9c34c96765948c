"""Which session to watch, and its view: the newest of a directory (switching when a newer one starts) or one file.

``SessionFollower.refresh()`` is the monitor's one look: it finds the session, reads what its file committed
and its status stream appended since the last look (live_session.py, stream_reader.py), recomputes the
numbers when batches arrived (live_numbers.py; at most once per ``analysis_interval_s`` while it runs, so a
long session costs the monitor O(total) work per interval, never per poll) and returns a JSON-able view.
Any error of a look is reported in the view (``error``), never raised: the page shows it and looks again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from qslab.analysis.recording import ABORTED, COMPLETE
from qslab.sequences.monitor import live_numbers
from qslab.sequences.monitor.live_session import LiveSession, SessionUnreadable, newest_session
from qslab.sequences.monitor.stream_reader import StationStatus, record_expiries, seconds_left


@dataclass
class History:
    """One point per analysis: what the plots draw."""

    images: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    ci_low: list = field(default_factory=list)
    ci_high: list = field(default_factory=list)
    transmittance_hat: list = field(default_factory=list)
    transmittance_min: list = field(default_factory=list)
    excess_noise_hat_snu: list = field(default_factory=list)
    excess_noise_max_snu: list = field(default_factory=list)
    spent_bits_per_mode: list = field(default_factory=list)

    def add(self, images: int, accuracy: dict | None, security: dict) -> None:
        if accuracy is None or (self.images and self.images[-1] == images):
            return
        verification = security["verification"] or {}
        nan = float("nan")
        self.images.append(images)
        self.accuracy.append(accuracy["accuracy"])
        self.ci_low.append(accuracy["ci95"][0])
        self.ci_high.append(accuracy["ci95"][1])
        for name in ("transmittance_hat", "transmittance_min", "excess_noise_hat_snu", "excess_noise_max_snu"):
            getattr(self, name).append(verification.get(name, nan))
        self.spent_bits_per_mode.append(security["leakage"].get("spent_bits_per_mode", nan))


class SessionFollower:
    """The session at ``target`` (a session file, or a directory whose newest session is followed)."""

    def __init__(self, target: str | Path, analysis_interval_s: float = 2.0):
        self.target = Path(target)
        self.analysis_interval_s = analysis_interval_s
        self.session: LiveSession | None = None
        self.station: StationStatus | None = None
        self.history = History()
        self.expiries: dict = {}
        self._numbers: dict = {"accuracy": None, "security": {}}
        self._analysed_batches = -1
        self._analysed_at = -float("inf")
        self._analysis_s = 0.0
        self._analysis_error: str | None = None

    def _choose(self) -> Path | None:
        """The target file (once it exists), else the newest session of the target directory (once there is one)."""
        if self.target.suffix == ".h5" and not self.target.is_dir():
            return self.target if self.target.exists() else None
        return newest_session(self.target)

    def refresh(self) -> dict:
        """One look (module docstring): the view, with how long reading and analysing took."""
        started = time.perf_counter()
        path = self._choose()
        if path is None:
            waiting = (f"waiting for {self.target} to be created" if self.target.suffix == ".h5"
                       else f"no session-*.h5 in {self.target} yet")
            return {"target": str(self.target), "waiting": waiting}
        if self.session is None or self.session.path != path:
            self.session, self.station = LiveSession(path), StationStatus.beside(path)
            self.history, self.expiries, self._analysed_batches = History(), {}, -1
            self._numbers, self._analysis_error = {"accuracy": None, "security": {}}, None
        error = None
        try:
            self.session.poll()
        except (SessionUnreadable, OSError) as problem:
            error = str(problem)
        try:
            self.station.poll()
        except OSError as problem:
            error = error or f"{self.station.path}: {problem}"
        read_s = time.perf_counter() - started
        if self.session.images is not None:
            self._analyse()
        view = self._view(error or self._analysis_error)
        view["refresh"] = {"read_s": read_s, "analysis_s": self._analysis_s,
                           "total_s": time.perf_counter() - started, "time_unix_s": time.time()}
        return view

    def _analyse(self) -> None:
        """The numbers of the batches committed so far, unless they are the ones analysed last or the interval has not
        passed. A finished session's last batches are analysed at once; an analysis that failed is taken again after
        the interval (finished or not), the batches it failed on counting as not analysed."""
        session = self.session
        finished = session.status in (COMPLETE, ABORTED) and self._analysis_error is None
        due = time.monotonic() - self._analysed_at >= self.analysis_interval_s or finished
        if session.batches_written == self._analysed_batches or not due:
            return
        started = time.perf_counter()
        self._analysed_at = time.monotonic()
        try:
            accuracy, security = live_numbers.accuracy(session), live_numbers.security(session)
        except Exception as error:  # noqa: BLE001 - values the analysis refuses: said on the page, looked at again
            self._analysis_error = f"the analysis of {session.images_written} images failed ({type(error).__name__}: " \
                                   f"{error})"
            return
        self._analysed_batches, self._analysis_error = session.batches_written, None
        self._numbers = {"accuracy": accuracy, "security": security}
        self.history.add(session.images_written, accuracy, security)
        self._analysis_s = time.perf_counter() - started

    def _view(self, error: str | None) -> dict:
        session, station = self.session, self.station
        security = self._numbers.get("security") or {}
        if station.records:
            record_expiries(station.calibration_dir, station.records, self.expiries)
        records = station.records or sorted(session.records)
        calibrations = []
        for key in records:
            record_id = key.rsplit("/", 1)[-1]
            entry = self.expiries.get(record_id) or {"kind": key.partition("/")[0],
                                                     "instrument": key.split("/")[1] if key.count("/") else "",
                                                     "created_utc": (session.records.get(key) or {}).get("created_utc"),
                                                     "expires_utc": None}
            calibrations.append({"id": record_id, **entry, "seconds_left": seconds_left(entry.get("expires_utc"))})
        times = session.batch_times_unix_s
        return {
            "target": str(self.target), "file": str(session.path), "run_id": session.run_id,
            "created_utc": session.created_utc, "status": session.status, "detail": session.detail, "error": error,
            "settings": session.settings, "progress": live_numbers.progress(session),
            "analysed_images": self.history.images[-1] if self.history.images else 0,
            "accuracy": self._numbers.get("accuracy"), "verification": security.get("verification"),
            "layers": security.get("layers") or [], "leakage": security.get("leakage") or {
                "cap_bits_per_mode": (session.settings.get("max_weight_leakage_bits_per_mode") or None)},
            "history": self.history.__dict__,
            "batch_seconds": [b - a for a, b in zip(times, times[1:])],
            "station": {"readings": station.readings, "link": station.link,
                        "time_unix_s": station.readings_time_unix_s, "batches_done": station.batches_done,
                        "stream": str(station.path), "streaming": station.started},
            "calibrations": calibrations,
            "faults": {"injected": station.injected, "actions": station.actions, "fired": station.fired},
            "stopped": station.stopped, "results": session.results,
        }
