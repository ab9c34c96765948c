"""Calibration records under bad input (hypothesis): truncated files, flipped bytes, damaged attributes, foreign
files and bad ids give the store's own errors only (CorruptRecord / MissingCalibration, one line naming the file),
never a raw h5py, OSError, KeyError or TypeError traceback, and reading never changes a file.

Decision for a bad file in the record directory: the directory is the provenance store, so every query that scans
it (records, latest, require, require_parameter) refuses with ONE CorruptRecord naming the bad file, also when
another, valid record is wanted (silently skipping it could hide a damaged newest record); `get` of a valid id
reads only that record's file and still works.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qslab.calibration.records import (CalibrationRecord, CorruptRecord, MissingCalibration, RecordError, RecordStore,
                                 read_record)
from qslab.calibration.result import CalibrationResult, Estimate
from byte_damage import damaged

NOW = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def photons() -> CalibrationResult:
    return CalibrationResult("photons", "server_output",
                             {"server.photons_per_symbol": Estimate(6.0, 0.05, "photons"),
                              "server.attenuator_scale": Estimate(1.0, 0.001, "")},
                             {"monitor_w": np.linspace(1e-6, 2e-6, 50), "codes": np.arange(2000, dtype=np.int8)},
                             {"attenuation_db": 30.0, "laser_power_dbm": 10.0}, "photons.png")


def homodyne() -> CalibrationResult:
    return CalibrationResult("homodyne", "client_receiver",
                             {"client_receiver.efficiency": Estimate(0.8, 0.01, "")},
                             {"lo_power_w": np.linspace(0, 1e-3, 5)}, {"laser_power_dbm": 10.0})


class Quiet(tuple):
    """A fixture value hypothesis does not print in full when an example fails."""

    def __repr__(self) -> str:
        return f"<{type(self[0]).__name__} ...>"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[CalibrationRecord, bytes]:
    """A valid photons record (written elsewhere) and its bytes: the material every mutation starts from."""
    record = RecordStore(tmp_path_factory.mktemp("source")).write(photons(), created=NOW)
    return Quiet((record, record.path.read_bytes()))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[RecordStore, CalibrationRecord]:
    """A store holding one valid homodyne record; each example drops one bad file next to it."""
    store = RecordStore(tmp_path_factory.mktemp("store"))
    return Quiet((store, store.write(homodyne(), created=NOW)))


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file's bytes, mode and mtime: what 'reading changes nothing' compares."""
    return {p.name: (p.read_bytes() if p.is_file() else b"", p.lstat().st_mode, p.lstat().st_mtime_ns)
            for p in sorted(directory.iterdir())}


def one_line_naming(error: BaseException, path: Path) -> None:
    text = str(error)
    assert str(path) in text and "\n" not in text, text


def usable(record: CalibrationRecord) -> None:
    """A record that reads is fit for the queries: nothing of it fails later, in a session."""
    assert record.is_valid(NOW) in (True, False)
    assert record.expires > record.created and record.created.utcoffset() is not None
    assert isinstance(record.conditions, dict) and isinstance(record.instruments, dict)
    for key, estimate in record.parameters.items():
        assert np.isfinite(estimate.value) and np.isfinite(estimate.uncertainty) and estimate.uncertainty >= 0, key
        assert isinstance(estimate.unit, str)
    assert all(isinstance(text, str) for text in (record.id, record.kind, record.instrument))


def same(a: CalibrationRecord, b: CalibrationRecord) -> bool:
    return (a.id, a.parameters, a.created) == (b.id, b.parameters, b.created)


def identical(a: CalibrationRecord, b: CalibrationRecord) -> bool:
    fields = ("id", "kind", "instrument", "parameters", "conditions", "created", "validity_s", "code_version",
              "instruments", "figure_png")
    return (all(getattr(a, name) == getattr(b, name) for name in fields) and a.raw.keys() == b.raw.keys()
            and all(np.array_equal(a.raw[k], b.raw[k]) and a.raw[k].dtype == b.raw[k].dtype for k in a.raw))


def check_store(store: RecordStore, valid: CalibrationRecord, bad: Path) -> CalibrationRecord | None:
    """The decision of the module docstring, for a directory holding ``valid`` and the suspect file ``bad``."""
    store = RecordStore(store.directory)  # a fresh cache: each example rewrites the same path, maybe in one mtime tick
    before = snapshot(store.directory)
    try:
        readable = read_record(bad)
    except CorruptRecord as error:
        one_line_naming(error, bad)
        readable = None
    if readable is not None:
        usable(readable)
    assert same(store.get(valid.id), valid)  # only its own file is read
    queries = [store.records, lambda: store.require("homodyne", "client_receiver"),
               lambda: store.require_parameter("homodyne", "client_receiver", "client_receiver.efficiency"),
               lambda: store.latest_valid("photons")]
    for query in queries:
        if readable is None:
            with pytest.raises(CorruptRecord) as error:
                query()
            one_line_naming(error.value, bad)
        else:
            query()
    if readable is None:
        with pytest.raises(CorruptRecord if bad.is_file() else MissingCalibration):
            store.get(bad.stem)
    else:
        assert same(store.require("homodyne", "client_receiver"), valid)
    assert snapshot(store.directory) == before  # reading never writes, chmods or touches a record
    return readable


def place(store: RecordStore, name: str, data: bytes) -> Path:
    path = store.directory / name
    if path.exists():
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        path.unlink()
    path.write_bytes(data)
    return path


# --- byte-level damage ---------------------------------------------------------------------------

@FUZZ
@given(position=st.floats(0, 1, exclude_max=True), kind=st.sampled_from(["truncate", "flip", "zero", "append"]),
       span=st.integers(1, 64), xor=st.integers(1, 255))
def test_truncated_and_flipped_files_give_only_corrupt_record(source, store, position, kind, span, xor):
    """Whatever bytes a record file holds, the store answers with one CorruptRecord naming it, or with exactly the
    record that was written (the damage hit unused bytes): never a hang (checksummed metadata, fixed-length text)
    and never a silently different value (fletcher32 on the raw arrays)."""
    record, valid = source
    store, other = store
    data = valid + bytes([xor]) * span if kind == "append" else damaged(valid, position, kind, span, xor)
    bad = place(store, record.path.name, bytes(data))
    try:
        readable = check_store(store, other, bad)
    finally:
        bad.unlink()
    if readable is not None:
        assert identical(readable, record)


# --- attribute-level damage ------------------------------------------------------------------------

ROOT_ATTRIBUTES = ["schema", "id", "kind", "instrument", "created_utc", "created_unix_s", "validity_s",
                   "qslab_version", "git_revision", "figure_png", "conditions_json", "instruments_json"]
PARAMETER_ATTRIBUTES = ["value", "uncertainty", "unit"]
ODD_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**62, 2**62),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12),  # (a lone
    # surrogate has no UTF-8: h5py cannot write it, so no file can hold one)
    st.binary(max_size=12).map(np.bytes_), st.sampled_from([
        "", "nan", "inf", "-1", "[1, 2]", "{}", "null", '"x"', "{\"a\": 1}", "2026-01-02T03:04:05",
        "2026-01-02T03:04:05+00:00", "9999-12-31T23:59:59+00:00", "qslab.calibration/1", "qslab.calibration/2"]),
    st.lists(st.floats(allow_nan=True), min_size=1, max_size=3).map(np.array),
    st.just(np.zeros((2, 2))))


@st.composite
def damage(draw):
    """(where, attribute, action, value): one attribute deleted or overwritten, or a group replaced."""
    where = draw(st.sampled_from(["/", "/parameters/server.photons_per_symbol", "/parameters", "/raw"]))
    if where in ("/parameters", "/raw"):
        return where, None, draw(st.sampled_from(["delete", "dataset", "empty", "subgroup"])), None
    names = ROOT_ATTRIBUTES if where == "/" else PARAMETER_ATTRIBUTES
    name = draw(st.sampled_from(names))
    action = draw(st.sampled_from(["delete", "set"]))
    return where, name, action, draw(ODD_VALUES) if action == "set" else None


def apply(path: Path, where: str, name: str | None, action: str, value) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with h5py.File(path, "r+") as f:
        if name is not None:
            attrs = f[where].attrs
            if action == "delete":
                del attrs[name]
            else:
                attrs[name] = value
        elif action == "delete":
            del f[where]
        elif action == "dataset":
            del f[where]
            f[where] = np.arange(3.0)
        elif action == "empty":
            del f[where]
            f.create_group(where)
        else:
            f[where].create_group("nested")
    path.chmod(stat.S_IRUSR)


@FUZZ
@given(change=damage())
def test_damaged_attributes_give_only_corrupt_record(source, store, change):
    """Missing or wrong attributes (schema, id, times, validity, JSON, value/uncertainty/unit, non-finite numbers,
    arrays, bytes) and replaced groups: a record that still reads is fully usable, else one CorruptRecord."""
    record, valid = source
    store, other = store
    bad = place(store, record.path.name, valid)
    try:  # (a damage that fails half-way must not leave its file for the next example)
        apply(bad, *change)
        check_store(store, other, bad)
    finally:
        bad.chmod(stat.S_IRUSR | stat.S_IWUSR)
        bad.unlink()


@pytest.mark.parametrize(("change", "message"), [
    (("/", "created_utc", "set", "2026-01-02T03:04:05"), "has no time zone"),
    (("/", "validity_s", "set", float("nan")), "validity_s is nan"),
    (("/", "validity_s", "set", -60.0), "validity_s is -60.0"),
    (("/", "validity_s", "set", 1e300), "ends beyond the calendar"),
    (("/", "conditions_json", "set", "[1, 2]"), "conditions_json holds JSON list"),
    (("/", "kind", "set", np.arange(3)), "attribute /kind is ndarray"),
    (("/parameters/server.photons_per_symbol", "uncertainty", "delete", None),
     "/parameters/server.photons_per_symbol has no attribute uncertainty"),
    (("/parameters/server.photons_per_symbol", "value", "set", float("inf")), "expected finite values"),
    (("/parameters", None, "dataset", None), "/parameters is a Dataset, expected a group"),
    (("/raw", None, "delete", None), "/raw is missing"),
])
def test_each_damage_is_named(source, tmp_path, change, message):
    """The one line says what is wrong with which part of the file (the cases that used to fail later, in a query,
    with TypeError/ValueError/OverflowError, or read as a record no query could use)."""
    record, valid = source
    path = tmp_path / record.path.name
    path.write_bytes(valid)
    apply(path, *change)
    with pytest.raises(CorruptRecord, match="is not a readable qslab calibration record") as error:
        read_record(path)
    assert message in str(error.value) and str(path) in str(error.value)


# --- foreign files and bad ids -----------------------------------------------------------------------

def _foreign_hdf5(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = "somebody.else/3"
        f["data"] = np.arange(10)


def _empty_hdf5(path: Path) -> None:
    h5py.File(path, "w").close()


def _session_file(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = np.bytes_(b"qslab.session")
        f.attrs["schema_version"] = 1


FOREIGN = {
    "other schema": _foreign_hdf5,
    "empty hdf5": _empty_hdf5,
    "session recording": _session_file,
    "empty file": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("time,power_w\n0,1e-3\n"),
    "directory": lambda p: p.mkdir(),
    "dangling link": lambda p: p.symlink_to(p.parent / "nowhere.h5"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_foreign_file_in_the_directory_is_named_and_changes_nothing(store, kind):
    """Foreign HDF5 files, non-HDF5 files, a directory or a dangling link named *.h5: one CorruptRecord naming it
    from every scanning query, `get` of the valid record unaffected, nothing modified."""
    store, other = store
    bad = store.directory / "foreign.h5"
    FOREIGN[kind](bad)
    try:
        check_store(store, other, bad)
    finally:
        shutil.rmtree(bad) if bad.is_dir() and not bad.is_symlink() else bad.unlink()


def test_hidden_and_non_record_files_are_ignored(store):
    """A writer's temporary ('.writing-*.h5') and files without .h5 never disturb the queries."""
    store, other = store
    extras = [store.directory / ".writing-abc.h5", store.directory / "notes.txt", store.directory / "foo.h5.bak"]
    for path in extras:
        path.write_bytes(b"garbage")
    try:
        assert [r.id for r in store.records()] == [other.id]
        assert same(store.require("homodyne"), other)
    finally:
        for path in extras:
            path.unlink()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record_id=st.one_of(st.text(max_size=40), st.text(min_size=300, max_size=400),
                           st.sampled_from(["", ".", "..", "/etc/passwd", "../store", "a/b", "a\x00b", " "])))
def test_a_bad_id_is_missing_never_a_path(source, store, record_id):
    """Any string given as an id gives a record or MissingCalibration/CorruptRecord, and never reaches a file
    outside the directory (an absolute path or ../ is not an id)."""
    store, other = store
    try:
        found = store.get(record_id)
    except RecordError as error:
        assert isinstance(error, (MissingCalibration, CorruptRecord)) and "\n" not in str(error)
    else:
        assert found.path.parent == store.directory
    with pytest.raises(MissingCalibration, match="is not a calibration record id"):
        store.get(str(source[0].path.with_suffix("")))  # a valid record, but elsewhere: not reachable by id
    assert same(store.get(other.id), other)


def test_an_unreadable_directory_entry_does_not_hide_a_later_valid_record(store, tmp_path):
    """Fixing the directory (moving the bad file out) restores every query; the valid record is unchanged."""
    store, other = store
    before = other.path.read_bytes()
    bad = place(store, "zz-broken.h5", b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(CorruptRecord, match="zz-broken.h5"):
        store.require("homodyne", "client_receiver")
    os.replace(bad, tmp_path / bad.name)
    assert same(store.require("homodyne", "client_receiver"), other)
    assert other.path.read_bytes() == before
