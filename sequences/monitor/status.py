"""The session's status stream: one JSON line per batch beside the session file, for `qslab monitor`.

Why a stream and not the HDF5 file: what the monitor shows of the station (the instruments' key readings,
faults and cures) is not part of the recording, and SWMR allows no new objects in a file being written. Why
it can never slow or stop the session: every reading comes from the drivers' parameter caches (the values the
session last set or read; nothing is sent to an instrument for it), a line is one append of a few kB, and
any failure (disk full, a value JSON cannot hold) disables the stream with one log line: the session goes on.

    session-<run id>.status.jsonl    one object a line, keys: event ("start", "batch", "stopped"),
                                     time_unix_s, batches_done, readings {instrument: {category, values}},
                                     link {laser_power_dbm, digitizer_ranges_v, mu_photons, attenuation_db},
                                     actions (faults and cures since the previous line), fired (bench faults
                                     that fired so far); "start" adds calibration_dir, records, injected;
                                     "stopped" adds error, error_type.

A resumed session appends to the same stream (a new "start" line).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
STREAM_SUFFIX = ".status.jsonl"

# instrument category -> the cached parameters (any submodule) that are its key readings
READINGS = {
    "laser": ("power_dbm", "output_enabled", "wavelength_m"),
    "attenuator": ("attenuation_db", "shutter_open"),
    "power_meter": ("read_power_w", "power"),
    "bias_controller": ("bias_mode", "is_locked", "bias_v"),
    "digitizer": ("range", "offset", "sample_rate", "acquire_points"),
    "amplifier": ("gain_db", "output_enabled"),
}


def stream_path(session_path: str | Path) -> Path:
    """``session-<run id>.status.jsonl`` beside ``session-<run id>.h5``."""
    session_path = Path(session_path)
    return session_path.with_name(session_path.stem + STREAM_SUFFIX)


class StatusPublisher:
    """Appends the session's status lines; never raises (a failure disables it and is logged once)."""

    def __init__(self, session_path: str | Path, station, link, report):
        self.path = stream_path(session_path)
        self.station, self.link, self.report = station, link, report
        self._actions_sent = 0
        self._broken = False

    @classmethod
    def beside(cls, session_path: str | Path, station, link, report, store_directory=None) -> StatusPublisher:
        """A publisher for ``session_path`` that has written its "start" line (calibration records in use)."""
        publisher = cls(session_path, station, link, report)
        publisher._publish("start", lambda: {
            "calibration_dir": None if store_directory is None else str(Path(store_directory).resolve()),
            "records": sorted(link.calibration.records), "injected": list(report.injected)})
        return publisher

    def batch(self, batches_done: int) -> None:
        """After a batch was committed: readings, link values and the faults and cures since the last line."""
        self._publish("batch", lambda: {"batches_done": int(batches_done)})

    def stopped(self, error: BaseException) -> None:
        """The session stopped (an error or a signal): what stopped it, and the last faults and cures."""
        lines = str(error).strip().splitlines()
        self._publish("stopped", lambda: {"error_type": type(error).__name__,
                                          "error": lines[0] if lines else type(error).__name__})

    # -- writing ------------------------------------------------------------------------------------
    def _publish(self, event: str, fields) -> None:
        if self._broken:
            return
        try:
            line = {"event": event, "time_unix_s": time.time(), **fields(), "readings": cached_readings(self.station),
                    "link": link_values(self.link), **self._faults()}
            data = (json.dumps(_plain(line), allow_nan=False, separators=(",", ":")) + "\n").encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)  # one append: a reader sees whole lines, or a last line without its newline
            finally:
                os.close(fd)
        except Exception as error:  # noqa: BLE001 - the stream is for the monitor; the session goes on without it
            self._broken = True
            log.warning("status stream %s disabled (%s: %s); the session goes on", self.path, type(error).__name__,
                        error)

    def _faults(self) -> dict:
        actions = list(self.report.actions)
        new, self._actions_sent = actions[self._actions_sent:], len(actions)
        plan = self.report.plan
        fired = [asdict(f) if is_dataclass(f) else f for f in plan.fired] if plan is not None else []
        return {"actions": new, "fired": fired}


def cached_readings(station) -> dict[str, dict]:
    """Every connected instrument's key readings (READINGS) as its driver last set or read them; nothing is sent."""
    from qcodes.instrument import InstrumentModule

    readings = {}
    for name, connection in station.connections.items():
        category = connection.config.spec.category
        keys = READINGS.get(category)
        if not keys:
            continue
        values: dict[str, Any] = {}
        pending = [("", connection.driver)]
        while pending:
            prefix, node = pending.pop(0)
            for parameter_name, parameter in node.parameters.items():
                if parameter_name in keys:
                    value = parameter.cache.get(get_if_invalid=False)
                    if value is not None:
                        values[prefix + parameter_name] = {"value": _plain(value), "unit": parameter.unit or ""}
            pending += [(f"{prefix}{sub_name}.", sub) for sub_name, sub in node.submodules.items()
                        if isinstance(sub, InstrumentModule)]
        readings[name] = {"category": category, "values": values}
    return readings


def link_values(link) -> dict:
    """What the secure link set and measured: laser set-point, digitizer ranges, mu and the VOA per layer."""
    return {"laser_power_dbm": link.laser_power_dbm, "digitizer_ranges_v": dict(link.ranges_v),
            "mu_photons": [None if layer.mu_photons is None else layer.mu_photons.value for layer in link.layers],
            "attenuation_db": [layer.attenuation_db for layer in link.layers]}


def _plain(value):
    """A JSON-able form of a cached value (numpy scalars, non-finite floats as None)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
