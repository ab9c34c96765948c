"""Which channel record a session uses: a valid one of the same station its fresh pilots agree with, else a new one.

Why: every session measures its pilots (the honest baseline check) and used to write them as a new 1.5 MB channel
record. A record of the same station, still valid, whose values today's pilots reproduce within their statistics,
is the same calibration: the session references it and writes nothing (docs/DECISIONS.md Z). "The same station"
is what a resume checks (sequences/resume_check.py): the config's station keys and every instrument's *IDN?, and
in addition what the pilots depend on: the operating point (gain, target mu, laser power, the network's layers and
modes) and the calibration records they were referred through (the server detector's scale among them). The
identity is stored in each channel record a session writes (condition ``station_identity``), with its hash.

Opt-out: ``[session] reuse_channel_record = false`` or ``qslab session --fresh-channel``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tomllib
from dataclasses import dataclass

from qslab.sequences.resume_check import NOT_THE_STATION, _flat

IDENTITY_KEY = "station_identity"   # channel-record condition: the station identity it was measured on
DIFFERENCES_SHOWN = 3               # differing keys named in the log line


def station_identity(station, link) -> dict:
    """The identity of the station the link's pilots were measured on (module docstring), with its sha256."""
    flat = _flat(tomllib.loads(station.config.text)) if station.config.text else {}
    config = {key: value for key, value in sorted(flat.items())
              if not any(key == skip or key.startswith(f"{skip}.") for skip in NOT_THE_STATION)}
    parts = {
        "config": config,
        "instruments": {name: ",".join(c.identity.as_dict().values()) for name, c in sorted(station.connections.items())},
        "operating_point": {"gain": float(link.gain), "mu_photons": float(link.prepared_with[1]),
                            "laser_power_dbm": float(link.laser_power_dbm),
                            "layers": [[int(layer.rows), int(layer.modes)] for layer in link.layers]},
        "records": sorted(summary["id"] for summary in link.calibration.records.values()),
    }
    return {**parts, "sha256": _digest(parts)}


def _digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class ChannelChoice:
    """The channel record a session uses: reused (``agreement`` says how well its pilots matched) or written now,
    with the one-line reason."""

    record_id: str
    reused: bool
    reason: str
    fresh: dict                    # the session's own pilots: T, eps, amplitude (value, uncertainty), samples
    agreement: dict | None = None  # calibration/channel.PilotAgreement.as_json() against the reused record

    def as_json(self) -> dict:
        return {"record": self.record_id, "reused": self.reused, "reason": self.reason, "fresh_pilots": self.fresh,
                "agreement": self.agreement}


def reuse_enabled(config) -> tuple[bool, str]:
    """(whether reuse is on, what turned it off)."""
    if config.session.reuse_channel_record:
        return True, ""
    in_file = tomllib.loads(config.text).get("session", {}).get("reuse_channel_record", True) if config.text else True
    return False, "[session] reuse_channel_record = false" if in_file is False else "--fresh-channel"


def reusable(store, fresh, identity: dict, now: dt.datetime | None = None):
    """(the record to reuse, its PilotAgreement, None) or (None, the agreement or None, why not: one phrase).

    The candidate is the newest channel record of the same station identity; it is reused when valid now and the
    fresh pilots (a CalibrationResult) agree with it (calibration/channel.pilots_agree). A damaged record anywhere in
    the store is refused by the store as before (CorruptRecord)."""
    from qslab.calibration.channel import INSTRUMENT, KIND, pilots_agree

    now = now or dt.datetime.now(dt.timezone.utc)
    records = store.records(KIND, INSTRUMENT)
    if not records:
        return None, None, "no channel record yet"
    same = [r for r in records if (r.conditions.get(IDENTITY_KEY) or {}).get("sha256") == identity["sha256"]]
    if not same and IDENTITY_KEY not in records[-1].conditions:
        return None, None, f"the latest channel record {records[-1].id} records no station identity (written by " \
                           f"`qslab calibrate channel` or an older qslab)"
    if not same:
        return None, None, f"the latest channel record {records[-1].id} is of another station (" \
                           f"{identity_differences(records[-1].conditions.get(IDENTITY_KEY), identity)})"
    candidate = same[-1]
    if not candidate.is_valid(now):
        return None, None, f"the latest channel record of this station, {candidate.id}, expired at " \
                           f"{candidate.expires.isoformat(timespec='seconds')}"
    agreement = pilots_agree(fresh, candidate)
    if not agreement.agrees:
        return None, agreement, f"today's pilots disagree with {candidate.id}: {agreement.describe()}"
    return candidate, agreement, None


def identity_differences(recorded: dict | None, identity: dict) -> str:
    """What differs between a record's station identity and this one, the first few keys named."""
    if not recorded:
        return "it records no station identity"  # not reached from reusable(), which says so itself
    found = []
    for part in ("config", "instruments", "operating_point"):
        before, now = recorded.get(part) or {}, identity[part]
        prefix = "" if part == "config" else f"{part}."
        found += [f"{prefix}{key}: {before.get(key, '(absent)')!r} -> {now.get(key, '(absent)')!r}"
                  for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    if sorted(recorded.get("records") or []) != identity["records"]:
        found.append("other calibration records")
    if not found:
        return "its identity hash differs"
    more = f"; and {len(found) - DIFFERENCES_SHOWN} more" if len(found) > DIFFERENCES_SHOWN else ""
    return "; ".join(found[:DIFFERENCES_SHOWN]) + more


def fresh_summary(result) -> dict:
    """The session's own pilot figures (recorded in the session file whatever record it uses)."""
    keys = {"transmittance": "channel.transmittance", "excess_noise_snu": "channel.excess_noise_snu",
            "amplitude_transmittance": "channel.amplitude_transmittance"}
    summary = {name: [result.parameters[key].value, result.parameters[key].uncertainty] for name, key in keys.items()}
    return {**summary, "residual_variance_snu": result.conditions["residual_variance_snu"],
            "samples": result.conditions["samples"]}
