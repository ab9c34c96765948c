"""Before a session file is continued: is it the same station? And what a resume records about itself.

Why: a resumed session pools its batches with the ones already in the file; batches taken on another station
(another bench seed, 1 dB more loss, a swapped instrument) would be mixed into one result silently. The
config is compared before anything is connected, the instruments' identities (*IDN?) right after connecting,
before anything is switched on; a difference is refused unless the operator says it is intended
(``--allow-different-station``), and then the resume record keeps what differed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import tomllib
from typing import Any

# tables and keys of a config that do not describe the station (where files go, the session's own defaults)
NOT_THE_STATION = ("session", "calibration.directory")


class StationDiffers(RuntimeError):
    """The station now is not the one that recorded the file (one line listing what differs)."""


def config_differences(recorded_toml: str, current_toml: str) -> list[str]:
    """Dotted keys whose values differ between the recorded config and the current one (station keys only)."""
    recorded, current = _flat(tomllib.loads(recorded_toml)), _flat(tomllib.loads(current_toml))
    keys = sorted(key for key in set(recorded) | set(current)
                  if not any(key == skip or key.startswith(f"{skip}.") for skip in NOT_THE_STATION))
    return [f"{key}: {recorded.get(key, '(absent)')!r} -> {current.get(key, '(absent)')!r}"
            for key in keys if recorded.get(key) != current.get(key)]


def identity_differences(snapshot: dict, identities: dict[str, dict[str, str]]) -> list[str]:
    """Instruments whose *IDN? differs from the one the file's station snapshot recorded."""
    recorded = {name: ((entry.get("parameters") or {}).get("IDN") or {}).get("value")
                for name, entry in (snapshot.get("instruments") or {}).items()}
    differences = []
    for name in sorted(set(recorded) | set(identities)):
        before, now = recorded.get(name), identities.get(name)
        if before != now:
            differences.append(f"{name}: {_identity(before)} -> {_identity(now)}")
    return differences


def refuse_unless_allowed(path, differences: list[str], allowed: bool, what: str) -> None:
    if differences and not allowed:
        raise StationDiffers(f"{path} was recorded on another station ({what}: {'; '.join(differences)}): resuming "
                             f"would mix two stations in one result; pass --allow-different-station if that is "
                             f"intended (the resume records what differed)")


def resume_record(config, identities: dict[str, dict[str, str]], records: dict, images: int,
                  differences: list[str], crashed, set_up: dict | None = None) -> dict[str, Any]:
    """One entry of the file's resumes: when, which code, which config, which station, which records, and what the
    resumed set-up measured (``set_up``: MeasuredValues JSON; mu and the VOA per layer): the operating point the
    batches after the resume were taken at (docs/DECISIONS.md, what a resume reproduces)."""
    from qslab.calibration.records import CodeVersion

    version = CodeVersion.current()
    return {"time_utc": dt.datetime.now(dt.timezone.utc).isoformat(), "qslab_version": version.qslab_version,
            "git_revision": version.git_revision, "host": platform.node(),
            "config_sha256": hashlib.sha256(config.text.encode()).hexdigest(), "config_toml": config.text,
            "station": identities, "calibration_records": records, "images_before": images,
            "station_differences": differences, "set_up": set_up,
            "after_crash_of": None if crashed is None else {"pid": crashed.pid, "host": crashed.host,
                                                           "started_utc": crashed.started_utc}}


def resumable_settings(path, recorded: dict):
    """The SessionSettings a file recorded, each checked by the rule the config applies to it: a resume
    continues with the file's settings, so an edited or damaged settings_json (images = 0, batch_images = -10,
    verify_fraction = 2, a weights path outside the package) is refused here, before anything is switched on,
    as a RecordingError naming the file, the key and what was expected."""
    from pathlib import PurePath

    from qslab.analysis.recording import RecordingError
    from qslab.sequences.config import ConfigError
    from qslab.sequences.session import SessionSettings

    if not isinstance(recorded, dict):
        raise RecordingError(f"{path}: its settings_json is {type(recorded).__name__}, expected a JSON object")
    specs = _settings_specs()
    unknown = sorted(set(recorded) - set(specs) - {"weights", "curious_server"})
    missing = sorted(name for name in ("images", "mu", "gain", "seed", "batch_images", "verify_fraction",
                                       "failure_probability", "laser_power_dbm") if name not in recorded)
    if unknown or missing:
        raise RecordingError(f"{path}: its settings_json does not describe a session of this qslab ("
                             + "; ".join(([f"unknown {', '.join(unknown)}"] if unknown else [])
                                         + ([f"missing {', '.join(missing)}"] if missing else [])) + ")")
    values = {}
    for name, spec in specs.items():
        if name in recorded:
            try:
                values[name] = spec.parse(f"settings_json {name}", recorded[name])
            except ConfigError as error:
                raise RecordingError(f"{path}: {error}") from None
    weights = recorded.get("weights")
    if weights is not None:
        parts = PurePath(weights).parts if isinstance(weights, str) and "\x00" not in weights else ("..",)
        if ".." in parts or not str(weights).endswith(".npz"):
            raise RecordingError(f"{path}: settings_json weights = {str(weights)[:60]!r}: expected null (the packaged "
                                 "network) or the path of an .npz weights file without '..'")
        values["weights"] = weights
    curious = recorded.get("curious_server")
    if curious is not None:
        from qslab.analysis.data_leakage_curious import CuriousSpec

        try:
            values["curious_server"] = CuriousSpec.from_json(curious).to_json()
        except (TypeError, ValueError) as error:
            raise RecordingError(f"{path}: settings_json curious_server is not a curious server's spec "
                                 f"({str(error)[:120]})") from None
    return SessionSettings(**values)


def _settings_specs() -> dict:
    """settings_json key -> the config's Number rule for it ([session] and [protocol] keys, same ranges)."""
    from dataclasses import fields

    from qslab.sequences.config import Number, ProtocolConfig, SessionConfig

    rule = {f.name: f.metadata["spec"] for cls in (SessionConfig, ProtocolConfig) for f in fields(cls)
            if "spec" in f.metadata}
    return {"images": rule["images"], "mu": rule["mu_photons"], "gain": rule["gain"], "seed": rule["seed"],
            "batch_images": rule["batch_images"], "verify_fraction": rule["verify_fraction"],
            "failure_probability": rule["failure_probability"], "laser_power_dbm": rule["laser_power_dbm"],
            "false_alarm": Number("probability", 0.0, 0.5, min_open=True, max_open=True),
            "exact_leakage_images": Number("images", 0, integer=True),
            "max_weight_leakage_bits_per_mode": rule["max_weight_leakage_bits_per_mode"],
            "candidate_set": Number("images", 0, integer=True)}


def _flat(table: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _identity(idn: dict | None) -> str:
    return "absent" if not idn else " ".join(str(idn.get(k, "")) for k in ("vendor", "model", "serial", "firmware"))
