"""The calibration store: one immutable, versioned HDF5 file per calibration run.

Why this shape: a session must be able to say exactly which measurement its mu, SNU, efficiency
and noise came from, years later, with plain h5py. So each run is one file, written atomically
(temporary file, then a hard link that refuses to overwrite) and left read-only; nothing ever
rewrites a record, a new run makes a new id. An id is ``<kind>-<instrument>-<UTC time>-<hash>``,
the hash over the file's content, so two runs never collide. Every read recomputes that hash from what it
read and compares it with the one the record was written with (attribute ``content_sha256``): a record
edited after it was written (chmod, edit, chmod back) is refused as CorruptRecord, loudly.

Layout (schema ``qslab.calibration/1``): root attributes ``schema, id, kind, instrument,
created_utc, created_unix_s, validity_s, qslab_version, git_revision, figure_png``, JSON
attributes ``conditions_json`` and ``instruments_json`` (name -> *IDN? string);
``/parameters/<dotted key>`` groups with attributes ``value, uncertainty, unit``; ``/raw/<name>``
datasets (the arrays the fit used, so it can be refitted).

A sequence that needs a record calls ``require(kind, instrument)``: a missing or expired record is
an error naming it and the command that refreshes it (``qslab calibrate <kind>``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import stat
import subprocess
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from qslab.analysis.estimate import Estimate
from qslab.calibration import figures
from qslab.calibration.result import CalibrationResult

SCHEMA = "qslab.calibration/1"
DEFAULT_DIRECTORY = Path("qslab-output") / "calibration"
DIRECTORY_ENV = "QSLAB_CALIBRATION_DIR"
DEFAULT_VALIDITY_S = {"modulators": 3600.0, "homodyne": 3600.0, "photons": 3600.0, "channel": 600.0,
                      "amplifier": 3600.0, "processor": 3600.0}
_ID_PART = re.compile(r"[^A-Za-z0-9_.]+")


class RecordError(LookupError):
    """Base of the store's errors: each message names the record (or file) and what to do."""


class MissingCalibration(RecordError):
    pass


class StaleCalibration(RecordError):
    pass


class CorruptRecord(RecordError):
    pass


def refresh_command(kind: str) -> str:
    return f"qslab calibrate {kind}"


def default_directory() -> Path:
    """``$QSLAB_CALIBRATION_DIR`` if set, else ``qslab-output/calibration`` (relative to the working directory)."""
    return Path(os.environ.get(DIRECTORY_ENV) or DEFAULT_DIRECTORY)


@dataclass(frozen=True)
class CodeVersion:
    qslab_version: str
    git_revision: str

    @classmethod
    def current(cls) -> CodeVersion:
        """The installed qslab version and the git revision of the source tree (``+dirty`` if modified)."""
        try:
            from importlib.metadata import version

            qslab = version("qslab")
        except Exception:  # noqa: BLE001 - not installed: still record something honest
            qslab = "unknown"
        root = Path(__file__).resolve().parents[1]
        try:
            rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                 timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            rev = rev + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            rev = "unavailable"
        return cls(qslab, rev or "unavailable")


@dataclass(frozen=True)
class CalibrationRecord:
    """One stored record, as read back."""

    id: str
    kind: str
    instrument: str
    parameters: dict[str, Estimate]
    raw: dict[str, np.ndarray]
    conditions: dict
    created: dt.datetime          # UTC, timezone-aware
    validity_s: float
    code_version: CodeVersion
    instruments: dict[str, str]   # instrument name -> *IDN? reply
    figure_png: str | None
    path: Path = field(compare=False)

    @property
    def expires(self) -> dt.datetime:
        return self.created + dt.timedelta(seconds=self.validity_s)

    def is_valid(self, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.timezone.utc)
        return self.created <= now < self.expires

    def estimate(self, key: str) -> Estimate:
        try:
            return self.parameters[key]
        except KeyError:
            raise RecordError(f"calibration record {self.id} has no parameter {key!r}; it has "
                              f"{sorted(self.parameters)}") from None


# Records read by this process (RecordStore._read), shared by every store of the process (a test run's sessions each
# open their own store); the least recently used go once their raw arrays pass READ_KEPT_BYTES (a channel record
# holds ~1.6 MB of pilot samples, most others well under 1 MB).
_READ: OrderedDict[tuple, CalibrationRecord] = OrderedDict()
_READ_LOCK = threading.Lock()
READ_KEPT_BYTES = 128 * 2**20


class RecordStore:
    """A directory of records; ``write`` adds one, the queries never modify anything."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else default_directory()

    # -- writing -----------------------------------------------------------------------------------
    def write(self, result: CalibrationResult, *, validity_s: float | None = None,
              instruments: dict[str, str] | None = None, created: dt.datetime | None = None,
              code_version: CodeVersion | None = None) -> CalibrationRecord:
        """Store ``result`` as a new read-only record and return it as read back. It names its figure only when
        figures are drawn (calibration/figures.py: ``$QSLAB_FIGURES``)."""
        if result.figure_png and not figures.wanted():
            result = replace(result, figure_png=None)
        validity_s = DEFAULT_VALIDITY_S.get(result.kind, 3600.0) if validity_s is None else float(validity_s)
        if not (np.isfinite(validity_s) and validity_s > 0):
            raise ValueError(f"validity_s must be > 0, got {validity_s!r}")
        if not result.parameters:
            raise ValueError(f"calibration {result.kind!r} of {result.instrument!r} has no parameters to store")
        created = (created or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
        code_version = code_version or CodeVersion.current()
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = created.strftime("%Y%m%dT%H%M%S.%fZ")
        prefix = f"{_ID_PART.sub('_', result.kind)}-{_ID_PART.sub('_', result.instrument)}-{stamp}"
        handle, temp_name = tempfile.mkstemp(prefix=".writing-", suffix=".h5", dir=self.directory)
        os.close(handle)
        temp = Path(temp_name)
        try:
            digest = _content_hash(result, created, validity_s, instruments or {}, code_version)
            record_id = f"{prefix}-{digest[:10]}"
            _write_h5(temp, record_id, result, created, validity_s, instruments or {}, code_version, digest)
            os.chmod(temp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            final = self.directory / f"{record_id}.h5"
            os.link(temp, final)  # refuses to replace an existing record
        finally:
            temp.unlink(missing_ok=True)
        return self._read(final)  # read back (its hash checked) and remembered: the session reads it again soon

    # -- reading -----------------------------------------------------------------------------------
    def path_of(self, record_id: str) -> Path:
        return self.directory / f"{record_id}.h5"

    def get(self, record_id: str) -> CalibrationRecord:
        shown = repr(record_id) if len(repr(record_id)) <= 120 else repr(record_id)[:117] + "..."
        if not isinstance(record_id, str) or "\x00" in record_id or Path(record_id).name != record_id:
            raise MissingCalibration(f"{shown} is not a calibration record id (a file name in {self.directory}, "
                                     "<kind>-<instrument>-<UTC time>-<hash>)")
        path = self.path_of(record_id)
        try:
            found = path.is_file()
        except OSError as error:  # e.g. a name too long for the file system
            raise MissingCalibration(f"no calibration record {shown} in {self.directory} ({error.strerror})") from None
        if not found:
            raise MissingCalibration(f"no calibration record {shown} in {self.directory}")
        return read_record(path)

    def records(self, kind: str | None = None, instrument: str | None = None) -> list[CalibrationRecord]:
        """Every record (oldest first), optionally of one kind and/or instrument."""
        if not self.directory.is_dir():
            return []
        found = [self._read(path) for path in sorted(self.directory.glob("*.h5")) if not path.name.startswith(".")]
        found = [r for r in found if (kind is None or r.kind == kind) and (instrument is None or r.instrument == instrument)]
        return sorted(found, key=lambda r: (r.created, r.id))

    def _read(self, path: Path) -> CalibrationRecord:
        """read_record, remembered by the process (_READ) per file and version: records are immutable, and a
        session, or the next one in the same process (a test run's, a script's), asks for the same ones many times."""
        try:
            stat_ = path.stat()
        except OSError as error:  # e.g. a dangling link named *.h5
            raise CorruptRecord(f"{path} is not a readable qslab calibration record "
                                f"({error.strerror or error})") from None
        key = (str(path), stat_.st_dev, stat_.st_ino, stat_.st_size, stat_.st_mtime_ns, stat_.st_ctime_ns)
        with _READ_LOCK:
            record = _READ.get(key)
            if record is not None:
                _READ.move_to_end(key)
                return record
        record = read_record(path)
        with _READ_LOCK:
            _READ[key] = record
            kept = sum(_raw_bytes(r) for r in _READ.values())
            while kept > READ_KEPT_BYTES and len(_READ) > 1:
                kept -= _raw_bytes(_READ.popitem(last=False)[1])
        return record

    def latest(self, kind: str, instrument: str | None = None) -> CalibrationRecord | None:
        found = self.records(kind, instrument)
        return found[-1] if found else None

    def latest_valid(self, kind: str, instrument: str | None = None,
                     now: dt.datetime | None = None) -> CalibrationRecord | None:
        valid = [r for r in self.records(kind, instrument) if r.is_valid(now)]
        return valid[-1] if valid else None

    def require_parameter(self, kind: str, instrument: str, key: str,
                          now: dt.datetime | None = None) -> CalibrationRecord:
        """The latest valid record of (kind, instrument) that holds ``key`` (one procedure writes several records)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        holding = [r for r in self.records(kind, instrument) if key in r.parameters]
        valid = [r for r in holding if r.is_valid(now)]
        if valid:
            return valid[-1]
        what = f"{kind!r} calibration of {instrument} with {key}"
        if not holding:
            raise MissingCalibration(f"no {what} in {self.directory}: run `{refresh_command(kind)}`")
        raise StaleCalibration(f"{what}: the latest record {holding[-1].id} expired at "
                               f"{holding[-1].expires.isoformat()}: refresh it with `{refresh_command(kind)}`")

    def require(self, kind: str, instrument: str | None = None, now: dt.datetime | None = None) -> CalibrationRecord:
        """The latest valid record, else MissingCalibration / StaleCalibration naming it and the refresh command."""
        now = now or dt.datetime.now(dt.timezone.utc)
        what = f"{kind!r} calibration" + (f" of {instrument}" if instrument else "")
        record = self.latest_valid(kind, instrument, now)
        if record is not None:
            return record
        latest = self.latest(kind, instrument)
        if latest is None:
            raise MissingCalibration(f"no {what} record in {self.directory}: run `{refresh_command(kind)}`")
        raise StaleCalibration(f"{what}: the latest record {latest.id} expired at {latest.expires.isoformat()} "
                               f"(valid {latest.validity_s:g} s from {latest.created.isoformat()}): refresh it with "
                               f"`{refresh_command(kind)}`")


# --- HDF5 ----------------------------------------------------------------------------------------

def _content_hash(result, created, validity_s, instruments, code_version) -> str:
    h = hashlib.sha256()
    meta = {"kind": result.kind, "instrument": result.instrument, "created": created.isoformat(),
            "validity_s": validity_s, "instruments": instruments, "code": code_version.__dict__,
            "conditions": result.conditions, "figure": result.figure_png or None,
            # as stored (floats; no figure reads back as None), so a read record hashes as it was written
            "parameters": {k: [float(e.value), float(e.uncertainty), e.unit] for k, e in sorted(result.parameters.items())}}
    h.update(json.dumps(meta, sort_keys=True, default=_jsonable).encode())
    for name in sorted(result.raw):
        array = np.ascontiguousarray(result.raw[name])
        h.update(name.encode() + str(array.dtype).encode() + str(array.shape).encode() + array.tobytes())
    return h.hexdigest()


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (dt.datetime, Path)):
        return str(value)
    raise TypeError(f"condition of type {type(value).__name__} is not JSON serialisable")


def _write_h5(path: Path, record_id: str, result: CalibrationResult, created: dt.datetime, validity_s: float,
              instruments: dict[str, str], code_version: CodeVersion, digest: str) -> None:
    import h5py

    # Damage must fail a checksum, never loop: libver="latest" checksums the superblock, the object headers and the
    # attributes in them; text is stored fixed-length (in the header; variable-length strings would live in the
    # unchecksummed global heap, whose damage sends HDF5 into an endless loop); fletcher32 guards the raw arrays.
    # Plain h5py reads the text attributes as bytes (.decode()), as in the session recordings.
    with h5py.File(path, "w", libver="latest") as f:
        _set_attributes(f.attrs, {
            "schema": SCHEMA, "id": record_id, "kind": result.kind, "instrument": result.instrument,
            "created_utc": created.isoformat(), "created_unix_s": created.timestamp(), "validity_s": validity_s,
            "qslab_version": code_version.qslab_version, "git_revision": code_version.git_revision,
            "figure_png": result.figure_png or "",
            "conditions_json": json.dumps(result.conditions, sort_keys=True, default=_jsonable),
            "instruments_json": json.dumps(instruments, sort_keys=True), "content_sha256": digest})
        parameters = f.create_group("parameters")
        for key, estimate in result.parameters.items():
            group = parameters.create_group(key)
            _set_attributes(group.attrs, {"value": float(estimate.value), "uncertainty": float(estimate.uncertainty),
                                          "unit": estimate.unit})
        raw = f.create_group("raw")
        for name, array in result.raw.items():
            array = np.asarray(array)
            raw.create_dataset(name, data=array, compression="gzip" if _compressible(array) else None,
                               fletcher32=array.ndim > 0 and array.size > 0)
        f.flush()
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _compressible(array: np.ndarray) -> bool:
    """Whether a raw array is stored gzip-compressed: large arrays of integers, flags or text. Real and complex
    values are measurements, mostly noise: gzip saved ~6 % of a channel record's samples at 15 times the time to
    write them and 7 times the time to read them back (every RecordStore reads every record it lists)."""
    return array.size > 1024 and array.dtype.kind not in "fc"


def _raw_bytes(record: CalibrationRecord) -> int:
    return sum(array.nbytes for array in record.raw.values())


def _read_only(array: np.ndarray) -> np.ndarray:
    """A record's raw array as handed out: every reader of the process shares it (RecordStore._read)."""
    array.flags.writeable = False
    return array


def _set_attributes(attrs, values: dict) -> None:
    """Numbers as they are, text as fixed-length UTF-8 (see _write_h5)."""
    import h5py

    for name, value in values.items():
        if isinstance(value, str):
            data = value.encode("utf-8")
            attrs.create(name, data, dtype=h5py.string_dtype("utf-8", max(1, len(data))))
        else:
            attrs[name] = value


def read_record(path: str | Path) -> CalibrationRecord:
    """One record file; CorruptRecord (naming the file) if it is not a readable qslab calibration record."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            schema = f.attrs.get("schema")
            if isinstance(schema, bytes):
                schema = schema.decode()
            if schema != SCHEMA:
                raise CorruptRecord(f"{path} is not a qslab calibration record (schema {schema!r}, expected {SCHEMA!r})")
            a = f.attrs
            parameters = {key: _estimate(key, g) for key, g in _members(_group(f, "parameters"))}
            raw = {name: _read_only(np.asarray(d[()])) for name, d in _members(_group(f, "raw"))}
            record = CalibrationRecord(
                id=_text(a, "id"), kind=_text(a, "kind"), instrument=_text(a, "instrument"), parameters=parameters,
                raw=raw, conditions=_json_object(a, "conditions_json"),
                created=dt.datetime.fromisoformat(_text(a, "created_utc")), validity_s=float(a["validity_s"]),
                code_version=CodeVersion(_text(a, "qslab_version"), _text(a, "git_revision")),
                instruments=_json_object(a, "instruments_json"), figure_png=_text(a, "figure_png") or None, path=path)
            stored_digest = _text(a, "content_sha256") if "content_sha256" in a else None
            if record.created.utcoffset() is None:
                raise ValueError(f"created_utc {record.created.isoformat()!r} has no time zone")
            if not (math.isfinite(record.validity_s) and record.validity_s >= 1e-6):  # below 1 us: an empty window
                raise ValueError(f"validity_s is {record.validity_s!r}, expected a finite number >= 1e-6 (the "
                                 "timestamps' resolution)")
            try:
                record.expires  # noqa: B018 - a window beyond the calendar fails here, not in a later query
            except OverflowError:
                raise ValueError(f"validity_s {record.validity_s:g} from {record.created.isoformat()} ends beyond "
                                 "the calendar") from None
    except CorruptRecord:
        raise
    except Exception as error:  # noqa: BLE001 - h5py/json/key errors: one line naming the file
        raise CorruptRecord(f"{path} is not a readable qslab calibration record "
                            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    if record.id != path.stem:
        raise CorruptRecord(f"{path} holds record {record.id!r}, not {path.stem!r} (renamed or copied over)")
    _verify_content(path, record, stored_digest)
    return record


def _verify_content(path: Path, record: CalibrationRecord, stored_digest: str | None) -> None:
    """The content hash recomputed from what was read must be the one the record was written with (its full
    ``content_sha256``, and the id's last part for records written before it): an edited value fails loudly."""
    digest = _content_hash(record, record.created, record.validity_s, record.instruments, record.code_version)
    written = stored_digest or record.id.rpartition("-")[2]
    if not digest.startswith(written) or len(written) < 10:
        raise CorruptRecord(f"{path}: its content does not match the hash it was written with ({written[:16]}..., "
                            f"now {digest[:16]}...): the record was edited or damaged after it was written; do not "
                            f"use it (run the calibration again)")


def _text(attrs, name: str, where: str = "") -> str:
    """A text attribute (h5py gives str, or bytes for fixed-length strings); anything else is a damaged record."""
    value = attrs[name]
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8")
    if not isinstance(value, str):
        shown = repr(value).replace("\n", " ")
        raise TypeError(f"attribute {where}/{name} is {type(value).__name__} {shown[:60]}, expected text")
    return value


def _json_object(attrs, name: str) -> dict:
    value = json.loads(_text(attrs, name))
    if not isinstance(value, dict):
        raise TypeError(f"attribute {name} holds JSON {type(value).__name__}, expected an object")
    return value


def _estimate(key: str, group) -> Estimate:
    """``/parameters/<key>``: a group with finite ``value``, ``uncertainty`` >= 0 and a text ``unit``."""
    where = f"/parameters/{key}"
    attrs = getattr(group, "attrs", None)
    missing = [name for name in ("value", "uncertainty", "unit") if attrs is None or name not in attrs]
    if missing:
        raise ValueError(f"{where} has no attribute {', '.join(missing)}")
    try:
        return Estimate(float(attrs["value"]), float(attrs["uncertainty"]), _text(attrs, "unit", where))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


def _members(group) -> list:
    """(name, member) of every member of an h5py group, read whole before the caller looks at any.

    Why not ``group.items()``: h5py's items(), values() and attribute iterators yield while holding h5py's global
    lock. A caller that raises mid-way (a damaged member) leaves the iterator suspended with the lock held by this
    thread for as long as the error's traceback lives, and every h5py call from another thread (a session's writer)
    waits meanwhile (DECISIONS AL)."""
    return [(name, group[name]) for name in list(group)]


def _group(file, name: str):
    import h5py

    if name not in file:
        raise ValueError(f"/{name} is missing")
    node = file[name]
    if not isinstance(node, h5py.Group):
        raise ValueError(f"/{name} is a {type(node).__name__}, expected a group")
    return node
