"""The run index and housekeeping: run ids, `qslab sessions`, `qslab calibrations` and its --prune guarantee
(a superseded record is deleted only when no session file references it and no kept record was derived from it)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from qslab.analysis.estimate import Estimate
from qslab.analysis.recording import (PIXELS_PER_IMAGE, LayerBatch, LayerShape, SessionFile, SessionWriter, is_run_id,
                                      new_run_id, run_id_time)
from qslab.analysis.recording.index import referenced_records, session_index
from qslab.calibration.housekeeping import list_records, prunable
from qslab.calibration.records import RecordStore
from qslab.calibration.result import CalibrationResult

from cli_capture import cli

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
LAYERS = [LayerShape(rows=3, modes=2)]


# --- run ids ---------------------------------------------------------------------------------------

def test_run_ids_are_short_unique_and_sort_by_time():
    times = [T0 + dt.timedelta(milliseconds=k * 137) for k in range(50)] + [T0 + dt.timedelta(days=400)]
    ids = [new_run_id(t) for t in times]
    assert all(is_run_id(i) and len(i) == 13 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [run_id_time(i) for i in ids] == times
    # the random part (20 bits) separates runs started in the same millisecond. 200 draws all distinct, as this once
    # asserted, fails in 1.9 % of runs (a birthday clash); 2000 draws clash in ~1.9 pairs on average (Poisson: more
    # than 12 has odds below 1e-7), and each random character takes every one of its 32 values (odds of missing
    # one: 32 x (31/32)^2000 ~ 1e-26)
    same_instant = [new_run_id(T0) for _ in range(2000)]
    assert {i[:9] for i in same_instant} == {ids[0][:9]}
    assert len(same_instant) - len(set(same_instant)) <= 12
    assert all(len({i[9 + k] for i in same_instant}) == 32 for k in range(4))
    for bad in ("", "1M91WVP1MDCV", "1M91WVP1MDCVU", "1m91wvp1mdcv0", 5):
        assert not is_run_id(bad)
    with pytest.raises(ValueError, match="not a run id"):
        run_id_time("session")


# --- sessions ----------------------------------------------------------------------------------------

def write_session(path: Path, run_id: str | None, records: dict, images: int = 4, finish: dict | None = None,
                  abort: str | None = None) -> Path:
    meta = {"config_toml": "[station]\n", "station_snapshot_json": {}, "settings_json": {"images": images},
            "provenance_json": {}, "seeds_json": {}, "calibrations_json": {"records": records, "measured": {}}}
    rng = np.random.default_rng(0)
    with SessionWriter.create(path, LAYERS, meta, qslab_version="0", git_revision="x", run_id=run_id) as writer:
        count = images if finish else images // 2
        writer.append_batch(np.arange(count), rng.integers(0, 10, count),
                            rng.integers(0, 256, (count, PIXELS_PER_IMAGE), dtype=np.uint8), np.zeros(count, int),
                            [LayerBatch(np.zeros((count, 3), np.float32), np.array([0]), np.zeros((count, 1), bool),
                                        np.zeros((count, 1, 2), np.float32), np.zeros((count, 1, 2), np.float32))])
        if finish:
            writer.finish(finish)
        elif abort:
            writer.abort(abort)
    return path


def reference(record) -> dict:
    return {f"{record.kind}/{record.instrument}/{record.id}": {"id": record.id, "kind": record.kind}}


def test_sessions_lists_complete_aborted_old_and_unreadable_files(tmp_path):
    first, second = new_run_id(T0), new_run_id(T0 + dt.timedelta(hours=1))
    write_session(tmp_path / f"session-{second}.h5", second, {}, images=6, abort="SessionStopped: laser")
    write_session(tmp_path / f"session-{first}.h5", first, {}, finish={
        "accuracy": 0.75, "verified": True, "weight_leakage_bits_per_mode": 0.25, "data_leakage_bits_exact": 0.01})  # an older file's key
    (tmp_path / "old").mkdir()
    write_session(tmp_path / "old" / "session-20250101T000000.000000Z.h5", None, {}, finish={"accuracy": 0.5})
    (tmp_path / "session-broken.h5").write_bytes(b"not hdf5")
    rows = session_index(tmp_path)
    by_file = {Path(row.file).name: row for row in rows}
    done = by_file[f"session-{first}.h5"]
    assert (done.run_id, done.status, done.images, done.images_planned, done.accuracy, done.verified,
            done.weight_leakage_bits_per_mode, done.data_leakage_bits_per_bin) == (first, "complete", 4, 4, 0.75, True,
                                                                                   0.25, 0.01)
    stopped = by_file[f"session-{second}.h5"]
    assert (stopped.status, stopped.images, stopped.images_planned, stopped.accuracy) == ("aborted", 3, 6, None)
    assert "SessionStopped" in stopped.detail
    assert by_file["session-20250101T000000.000000Z.h5"].run_id is None  # written before run ids
    assert by_file["session-broken.h5"].status == "unreadable"
    assert [row.run_id for row in rows if row.run_id in (first, second)] == [first, second]  # in start order

    code, out, err = cli("sessions", str(tmp_path), "--json")
    assert code == 0 and err == ""
    listed = json.loads(out.splitlines()[-1])["sessions"]
    assert [row["run_id"] for row in listed] == [row.run_id for row in rows]
    table = out.splitlines()[:-1]
    assert table[0].split()[:3] == ["run", "id", "started"] and len(table) == 1 + len(rows)
    assert any(first in line and "75.00 %" in line and "complete" in line and "yes" in line for line in table)
    assert any(second in line and "3/6" in line and "aborted" in line for line in table)


def test_sessions_of_a_missing_directory_is_one_line(tmp_path):
    code, out, err = cli("sessions", str(tmp_path / "nowhere"))
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "not a directory" in err


# --- calibration records and prune -------------------------------------------------------------------

def write_record(store: RecordStore, kind: str, instrument: str, minutes: float, keys=("a",), parents=(),
                 validity_s: float = 3600.0):
    result = CalibrationResult(kind, instrument, {key: Estimate(1.0 + minutes, 0.1, "V") for key in keys},
                               conditions={"records": [f"{p.kind}/{p.instrument}/{p.id}" for p in parents]})
    return store.write(result, created=T0 + dt.timedelta(minutes=minutes), validity_s=validity_s)


@pytest.fixture
def store_and_sessions(tmp_path):
    """A store in which ``old`` homodyne records are superseded, one of them referenced by a session, one
    the parent of a kept channel record, and records a newer one does NOT supersede (other keys, longer life)."""
    store, sessions = RecordStore(tmp_path / "calibration"), tmp_path / "sessions"
    sessions.mkdir()
    r = {"h1": write_record(store, "homodyne", "rx", 0), "h2": write_record(store, "homodyne", "rx", 1),
         "h3": write_record(store, "homodyne", "rx", 2), "h4": write_record(store, "homodyne", "rx", 3),
         "long": write_record(store, "photons", "out", 0, validity_s=7200.0),
         "wide": write_record(store, "modulators", "iq", 0, keys=("a", "b")),
         "other_keys": write_record(store, "modulators", "iq", 1, keys=("c",))}
    r["short"] = write_record(store, "photons", "out", 1)          # expires before "long": does not supersede it
    r["wide_new"] = write_record(store, "modulators", "iq", 2, keys=("a",))  # fewer keys: does not supersede "wide"
    r["chan"] = write_record(store, "channel", "link", 4, parents=[r["h2"]])
    r["h5"] = write_record(store, "homodyne", "rx", 5)
    run_id = new_run_id(T0)
    write_session(sessions / f"session-{run_id}.h5", run_id, {**reference(r["h1"]), **reference(r["chan"])},
                  finish={"accuracy": 1.0})
    return store, sessions, r


def test_superseded_means_unreachable_by_the_store(store_and_sessions):
    store, _, r = store_and_sessions
    superseded = {row.record.id: row.superseded_by for row in list_records(store.directory)}
    assert {name for name, rec in r.items() if superseded[rec.id]} == {"h1", "h2", "h3", "h4"}
    assert superseded[r["h1"].id] == r["h5"].id
    assert store.require("homodyne", "rx", now=T0 + dt.timedelta(minutes=10)).id == r["h5"].id


def test_prune_never_deletes_what_a_session_or_a_kept_record_references(store_and_sessions):
    store, sessions, r = store_and_sessions
    used = referenced_records([sessions])
    assert set(used) == {r["h1"].id, r["chan"].id}
    doomed = {row.record.id for row in prunable(list_records(store.directory), set(used))}
    assert doomed == {r["h3"].id, r["h4"].id}  # h1: the session's; h2: the kept channel record's parent

    code, out, err = cli("calibrations", str(store.directory), "--prune", "--sessions", str(sessions), "--json")
    assert code == 0 and err == "", err
    report = json.loads(out.splitlines()[-1])
    assert set(report["deleted"]) == doomed
    left = {path.stem for path in store.directory.glob("*.h5")}
    assert left == {rec.id for rec in r.values()} - doomed
    with SessionFile.open(next(sessions.glob("*.h5"))) as session:  # every record the session names is still there
        assert all(store.get(summary["id"]) for summary in session.calibrations["records"].values())
    code, out, _ = cli("calibrations", str(store.directory), "--prune", "--sessions", str(sessions))
    assert code == 0 and out.startswith("nothing to prune")


def test_prune_refuses_when_a_session_file_cannot_be_read(store_and_sessions):
    store, sessions, r = store_and_sessions
    (sessions / "session-damaged.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    before = sorted(store.directory.glob("*.h5"))
    code, out, err = cli("calibrations", str(store.directory), "--prune", "--sessions", str(sessions))
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "nothing pruned" in err and "session-damaged.h5" in err
    assert sorted(store.directory.glob("*.h5")) == before


def test_calibrations_lists_kind_instrument_age_validity_and_superseded(store_and_sessions):
    store, _, r = store_and_sessions
    (store.directory / "junk.h5").write_bytes(b"junk")
    code, out, err = cli("calibrations", str(store.directory), "--json")
    assert code == 0 and err == ""
    rows = {row["id"]: row for row in json.loads(out.splitlines()[-1])["records"]}
    h1 = rows[r["h1"].id]
    assert (h1["kind"], h1["instrument"], h1["superseded_by"], h1["valid"]) == ("homodyne", "rx", r["h5"].id, False)
    assert h1["valid_until_utc"] == (T0 + dt.timedelta(hours=1)).isoformat() and h1["age_s"] > 86400
    assert rows["junk"]["readable"] is False
    table = out.splitlines()[:-1]
    assert table[0].split()[:3] == ["kind", "instrument", "age"]
    assert any(r["h3"].id in line and f"by {r['h5'].id}" in line and "(expired)" in line for line in table)
    assert any(line.startswith("?") and "unreadable" in line and "junk.h5" in line for line in table)
