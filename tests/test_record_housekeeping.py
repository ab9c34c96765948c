"""The calibration directory does not grow without bound (issue 17): orphaned `.writing-*` temporaries of a killed
write are removed on the next run, and superseded channel records that no session file references are pruned."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import h5py
import numpy as np

from qslab.calibration.records import RecordStore
from qslab.calibration.result import CalibrationResult, Estimate
from qslab.sequences import calibrations


def _channel(store: RecordStore, hours_ago: float):
    created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)
    return store.write(CalibrationResult("channel", "link", {"channel.transmittance": Estimate(0.6, 0.01)},
                                         raw={"pilots": np.zeros(1000)}), created=created, validity_s=1e6)


def _session_referencing(path, record_ids):
    with h5py.File(path, "w") as file:
        records = {f"channel/link/{rid}": {"id": rid} for rid in record_ids}
        file["meta/calibrations_json"] = json.dumps({"records": records})


def test_orphaned_writing_files_are_removed_and_a_write_under_way_is_not(tmp_path):
    store = RecordStore(tmp_path)
    old, fresh = tmp_path / ".writing-killed.h5", tmp_path / ".writing-under-way.h5"
    old.write_bytes(b"half a record")
    fresh.write_bytes(b"being written")
    os.utime(old, (time.time() - 2 * calibrations.ORPHAN_AGE_S,) * 2)
    assert calibrations.ensure(None, store, None, tmp_path, kinds=()) == []  # what a session runs first
    assert not old.exists() and fresh.exists()


def test_superseded_channel_records_no_session_references_are_pruned(tmp_path):
    store, sessions = RecordStore(tmp_path / "records"), tmp_path / "sessions"
    sessions.mkdir()
    referenced, superseded, recent, newest = (_channel(store, hours) for hours in (5, 4, 0.1, 0))
    _session_referencing(sessions / "session-a.h5", [referenced.id])
    removed = calibrations.prune_channel_records(store, sessions)
    assert removed == [superseded.id]
    left = {r.id for r in store.records("channel")}
    assert left == {referenced.id, recent.id, newest.id}


def test_nothing_is_pruned_when_a_session_file_cannot_be_read(tmp_path):
    store, sessions = RecordStore(tmp_path / "records"), tmp_path / "sessions"
    sessions.mkdir()
    _channel(store, 5), _channel(store, 0)
    (sessions / "session-broken.h5").write_bytes(b"not hdf5")
    assert calibrations.prune_channel_records(store, sessions) == []
    assert len(store.records("channel")) == 2
