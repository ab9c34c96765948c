"""The calibration record store: immutable versioned HDF5 records, queries, stale/missing/corrupt errors."""

from __future__ import annotations

import datetime as dt
import os
import stat

import h5py
import numpy as np
import pytest

from qslab.calibration.records import (SCHEMA, CorruptRecord, MissingCalibration, RecordStore, StaleCalibration,
                                 default_directory)
from qslab.calibration.result import CalibrationResult, Estimate

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def result(kind="homodyne", instrument="client_receiver", value=0.8, **raw) -> CalibrationResult:
    return CalibrationResult(kind, instrument, {f"{instrument}.efficiency": Estimate(value, 0.01, ""),
                                                f"{instrument}.electronic_noise_snu": Estimate(0.05, 0.001, "SNU")},
                             raw or {"lo_power_w": np.linspace(0, 1e-3, 5)}, {"laser_power_dbm": 10.0}, "fig.png")


def test_a_record_names_its_figure_only_when_figures_are_drawn(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    for setting, named in (("on", "fig.png"), ("off", None)):
        monkeypatch.setenv("QSLAB_FIGURES", setting)
        record = store.write(result(value=0.7 if named else 0.6), created=NOW)
        assert record.figure_png == named and store.get(record.id).figure_png == named


def test_round_trip_keeps_everything_and_the_file_is_read_only(tmp_path, figures_drawn):
    store = RecordStore(tmp_path)
    trace = np.arange(5000, dtype=np.float32)
    record = store.write(result(trace=trace), validity_s=60, instruments={"digitizer": "KEYSIGHT,DSOS804A,1,2"},
                         created=NOW)
    assert record.id.startswith("homodyne-client_receiver-20260102T030405.000000Z-")
    assert record.path == tmp_path / f"{record.id}.h5"
    assert not os.stat(record.path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    again = store.get(record.id)
    assert again.parameters["client_receiver.efficiency"] == Estimate(0.8, 0.01, "")
    assert again.parameters["client_receiver.electronic_noise_snu"].unit == "SNU"
    np.testing.assert_array_equal(again.raw["trace"], trace)
    assert again.conditions == {"laser_power_dbm": 10.0}
    assert again.instruments == {"digitizer": "KEYSIGHT,DSOS804A,1,2"}
    assert again.created == NOW and again.validity_s == 60 and again.figure_png == "fig.png"
    assert again.code_version.qslab_version and again.code_version.git_revision
    assert again.expires == NOW + dt.timedelta(seconds=60)
    with h5py.File(record.path, "r") as f:  # plain h5py reads it
        assert f.attrs["schema"].decode() == SCHEMA and f["parameters/client_receiver.efficiency"].attrs["value"] == 0.8
    assert [p.name for p in tmp_path.iterdir()] == [record.path.name]  # no temporary file left behind


def test_records_are_never_overwritten(tmp_path):
    store = RecordStore(tmp_path)
    first = store.write(result(value=0.8), created=NOW)
    second = store.write(result(value=0.7), created=NOW)  # same second, different content: a new id
    assert first.id != second.id
    assert store.get(first.id).parameters["client_receiver.efficiency"].value == 0.8
    with pytest.raises(FileExistsError):  # the store links, never replaces: an existing id cannot be rewritten
        os.link(second.path, first.path)
    assert store.get(first.id).parameters == first.parameters


def test_queries_by_kind_instrument_and_latest_valid(tmp_path):
    store = RecordStore(tmp_path)
    old = store.write(result(value=0.1), validity_s=10, created=NOW - dt.timedelta(hours=1))
    new = store.write(result(value=0.2), validity_s=3600, created=NOW - dt.timedelta(minutes=1))
    other = store.write(result(instrument="server_receiver"), validity_s=3600, created=NOW)
    photons = store.write(CalibrationResult("photons", "server_output", {"server.photons_per_symbol":
                                                                        Estimate(6.0, 0.05, "photons")}), created=NOW)
    assert [r.id for r in store.records()] == [old.id, new.id, other.id, photons.id]
    assert [r.id for r in store.records("homodyne", "client_receiver")] == [old.id, new.id]
    assert [r.id for r in store.records(instrument="server_receiver")] == [other.id]
    assert store.latest_valid("homodyne", "client_receiver", now=NOW).id == new.id
    assert store.latest_valid("homodyne", "client_receiver", now=NOW + dt.timedelta(hours=2)) is None
    assert store.require("photons", now=NOW).estimate("server.photons_per_symbol").value == 6.0


def test_missing_and_stale_records_name_the_record_and_the_refresh_command(tmp_path):
    store = RecordStore(tmp_path / "empty")
    with pytest.raises(MissingCalibration, match=r"no 'homodyne' calibration of client_receiver record .*"
                                                 r"run `qslab calibrate homodyne`"):
        store.require("homodyne", "client_receiver", now=NOW)
    stale = store.write(result(), validity_s=60, created=NOW - dt.timedelta(minutes=5))
    with pytest.raises(StaleCalibration) as error:
        store.require("homodyne", "client_receiver", now=NOW)
    assert stale.id in str(error.value) and "`qslab calibrate homodyne`" in str(error.value)
    assert "expired" in str(error.value)
    with pytest.raises(MissingCalibration, match="no calibration record 'nope'"):
        store.get("nope")


def test_corrupt_and_foreign_files_give_one_clear_error(tmp_path):
    store = RecordStore(tmp_path)
    good = store.write(result(), created=NOW)
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CorruptRecord, match=r"garbage.h5 is not a readable qslab calibration record"):
        store.get("garbage")
    with pytest.raises(CorruptRecord, match="garbage.h5"):
        store.records()
    (tmp_path / "garbage.h5").unlink()
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f.attrs["schema"] = "somebody.else/3"
    with pytest.raises(CorruptRecord, match=r"foreign.h5 is not a qslab calibration record \(schema 'somebody.else/3'"):
        store.get("foreign")
    (tmp_path / "foreign.h5").unlink()
    os.link(good.path, tmp_path / "renamed.h5")
    with pytest.raises(CorruptRecord, match="renamed or copied over"):
        store.get("renamed")


def test_directory_is_configurable(tmp_path, monkeypatch):
    monkeypatch.delenv("QSLAB_CALIBRATION_DIR", raising=False)
    assert default_directory().as_posix() == "qslab-output/calibration"
    monkeypatch.setenv("QSLAB_CALIBRATION_DIR", str(tmp_path / "x"))
    assert RecordStore().directory == tmp_path / "x"


def test_a_result_without_parameters_or_with_bad_validity_is_refused(tmp_path):
    store = RecordStore(tmp_path)
    with pytest.raises(ValueError, match="no parameters"):
        store.write(CalibrationResult("photons", "server_output", {}))
    with pytest.raises(ValueError, match="validity_s"):
        store.write(result(), validity_s=0)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_the_stores_of_a_process_share_each_record_read_and_read_a_changed_file_again(tmp_path):
    """Each session opens its own store: a record one store read is not read again by the next (records are
    immutable), its arrays are read-only (they are shared), and a file changed since (its times differ) is read
    again."""
    written = RecordStore(tmp_path).write(result(trace=np.arange(100.0)), created=NOW)
    (first,), (again,) = RecordStore(tmp_path).records(), RecordStore(tmp_path).records()
    assert first is again is written
    with pytest.raises(ValueError, match="read-only"):
        first.raw["trace"][0] = 1.0
    times = written.path.stat()
    os.utime(written.path, ns=(times.st_atime_ns, times.st_mtime_ns + 1))
    (changed,) = RecordStore(tmp_path).records()
    assert changed is not first and changed.id == first.id and changed.parameters == first.parameters


def test_the_records_kept_by_the_process_are_bounded_by_their_arrays_bytes(tmp_path, monkeypatch):
    """Least recently used out once the kept raw arrays pass READ_KEPT_BYTES: a process reading a large archive of
    records does not keep them all."""
    from qslab.calibration import records

    monkeypatch.setattr(records, "READ_KEPT_BYTES", 20_000)  # two of these records' 8 kB arrays, not three
    written = [RecordStore(tmp_path / str(k)).write(result(trace=np.arange(1000.0) + k), created=NOW) for k in range(3)]
    kept = [RecordStore(tmp_path / str(k)).records()[0] is written[k] for k in (2, 1, 0)]  # the newest first
    assert kept == [True, True, False]


@pytest.mark.parametrize("where", ["parameter", "raw", "conditions"])
def test_a_record_edited_after_writing_fails_its_content_hash_loudly(tmp_path, where):
    """Records are 0444, but chmod, edit, chmod back works: every read recomputes the content hash and refuses."""
    store = RecordStore(tmp_path)
    record = store.write(result(trace=np.arange(2000.0)))
    assert store.get(record.id).parameters == record.parameters  # unedited: read as written
    os.chmod(record.path, stat.S_IRUSR | stat.S_IWUSR)
    with h5py.File(record.path, "r+") as f:
        if where == "parameter":
            f["parameters/client_receiver.efficiency"].attrs["value"] = 0.4
        elif where == "raw":
            f["raw/trace"][7] = 8.0
        else:
            f.attrs["conditions_json"] = np.bytes_(f.attrs["conditions_json"]).replace(b"}", b', "x": 1}')
    os.chmod(record.path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    fresh = RecordStore(tmp_path)
    with pytest.raises(CorruptRecord, match="does not match the hash it was written with"):
        fresh.get(record.id)
    with pytest.raises(CorruptRecord, match=record.id):
        fresh.records()


def test_measured_values_are_stored_plain_and_counts_compressed_all_checksummed(tmp_path):
    """Noise does not compress (gzip saved ~6 % of a channel record at 15 times the time to write): large real and
    complex arrays are stored plain, large integer arrays gzip-compressed, every non-empty array fletcher32-guarded."""
    rng = np.random.default_rng(5)
    raw = {"noise_snu": rng.standard_normal(5000).astype(np.float32), "pilots": rng.standard_normal(2000) + 1j,
           "counts": rng.integers(0, 3, 5000), "few_v": np.arange(10.0)}
    record = RecordStore(tmp_path).write(result(**raw), validity_s=60, created=NOW)
    with h5py.File(record.path, "r") as f:
        stored = {name: (f["raw"][name].compression, f["raw"][name].fletcher32) for name in raw}
    assert stored == {"noise_snu": (None, True), "pilots": (None, True), "counts": ("gzip", True),
                      "few_v": (None, True)}
    again = RecordStore(tmp_path).get(record.id)
    for name, array in raw.items():
        np.testing.assert_array_equal(again.raw[name], array)
