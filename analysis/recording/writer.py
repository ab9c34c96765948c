"""Writing a session file: created once, extended and flushed per batch in SWMR mode, resumed after a crash.

One writer per file, held by a writer lock (lock.py) that tells a crashed writer from a live one. A resume
never opens the file itself for writing: it copies what is committed into ``.NAME.recovering``, prepares
that copy (tails cut, the resume recorded, SWMR writing started) and only then puts it in place, so a kill
at any moment of a resume leaves the original file as it was (and a stale copy the next resume removes).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from qslab.analysis.recording import curious_group
from qslab.analysis.recording.lock import WriterLock
from qslab.analysis.recording.swmr import open_swmr_read
from qslab.analysis.recording.reader import (META_CHECKSUMS, RESUMES_ATTRIBUTE, SessionFile, _images_in, images_sent,
                                             meta_checksums)
from qslab.analysis.recording.schema import (_CHUNK_BYTES, ABORTED, COMPLETE, DETAIL_BYTES, DIMENSION_SCALE_NAME,
                                             PIXELS_PER_IMAGE, RUNNING, SCHEMA, SCHEMA_VERSION, STATUS_BYTES,
                                             DATA_IMAGES_SENT, SENT_COUNTS, WEIGHT_IMAGES_SENT, _IMAGE_COLUMNS,
                                             _QUADRATURE_DTYPE, _RESULTS_DTYPE, _VERIFICATION_COLUMNS, LayerBatch,
                                             LayerShape, RecordingError, _dataset_paths, _first_line, _json_text,
                                             _meta_texts, _truncate_utf8, _unfilled_row, batches_dtype,
                                             dataset_dimensions, dataset_filters, dimension_scales, noise_crc_fields,
                                             offset_kinds, stored_sent, verification_columns)


# How a session file is laid out: the newest format (SWMR needs it), and paged file space, so that no metadata block
# straddles a 4 KiB page. Why: a SIGKILL can cut a write of the file only between pages (the kernel copies a write
# into the page cache page by page and stops at a fatal signal), and HDF5 rewrites its metadata in place at every
# flush. In the default layout 34 of the 313 small writes of a file's creation, 8 appends and close crossed a page
# (strace), among them the chunk-index block of /images/label, and a writer killed during that write left all of its
# committed labels unreadable. With paged file space, none crosses one (tests/test_file_space.py).
FILE_SPACE = {"libver": "latest", "fs_strategy": "page", "fs_page_size": 4096}


class _Extendable:
    """One extendable dataset, open for the writer's life, written through h5py's low-level API (h5d, h5s, h5t).

    The same HDF5 calls as ``Dataset.resize`` and ``Dataset[a:b] = values`` (H5Dset_extent, then H5Dwrite of a
    hyperslab, the memory type h5py derives from the array's dtype), without rebuilding a selection and a memory
    type from Python on every call: those were most of a batch's CPU besides compression.
    """

    __slots__ = ("_id", "_row_shape", "_dtype", "_memory_type")

    def __init__(self, dataset: h5py.Dataset):
        self._id = dataset.id
        self._row_shape = tuple(dataset.shape[1:])
        self._dtype = dataset.dtype
        self._memory_type = h5py.h5t.py_create(self._dtype)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def write_at(self, start: int, values: np.ndarray) -> None:
        """Resize to exactly ``start + len(values)`` rows (dropping any uncommitted tail) and write them there."""
        count = len(values)
        self._id.set_extent((start + count, *self._row_shape))
        if not count:
            return
        if values.shape[1:] != self._row_shape:
            raise ValueError(f"rows of shape {values.shape[1:]} given, the dataset's are {self._row_shape}")
        values = np.ascontiguousarray(values)
        file_space = self._id.get_space()
        file_space.select_hyperslab((start, *(0,) * len(self._row_shape)), values.shape)
        self._id.write(h5py.h5s.create_simple(values.shape), file_space, values,
                       self._memory_type if values.dtype == self._dtype else None)


@dataclass(frozen=True)
class _Datasets:
    """The extendable datasets, opened once for the writer's life: a batch looks nothing up by path, and no handle
    is closed per batch (closing flushed its chunk cache; ``file.flush()`` flushes the caches of every open dataset,
    raw data before metadata, so the commit rule still holds)."""

    images: dict[str, _Extendable]                     # _IMAGE_COLUMNS name -> /images/<name>
    quadratures: tuple[_Extendable, ...]               # per layer: client_quadratures_snu
    verification: tuple[dict[str, _Extendable], ...]   # per layer: _VERIFICATION_COLUMNS name -> dataset
    batches: _Extendable
    results: _Extendable

    @classmethod
    def open(cls, file: h5py.File, layer_count: int) -> _Datasets:
        def extendable(path: str) -> _Extendable:
            return _Extendable(file[path])

        return cls(images={name: extendable(f"images/{name}") for name in _IMAGE_COLUMNS},
                   quadratures=tuple(extendable(f"layers/{k}/client_quadratures_snu") for k in range(layer_count)),
                   verification=tuple({name: extendable(f"layers/{k}/verification/{name}")
                                       for name in _VERIFICATION_COLUMNS} for k in range(layer_count)),
                   batches=extendable("batches"), results=extendable("results/results_json"))


class SessionWriter:
    """Appends batches to one session file in SWMR mode; use ``create`` or ``resume``, then as a context manager.

    Leaving the ``with`` block by an exception marks the session aborted with the exception as the
    reason; leaving it normally without ``finish`` leaves it "running" (resumable).
    """

    def __init__(self, path: Path, file: h5py.File, layers: tuple[LayerShape, ...], table: np.ndarray,
                 lock: WriterLock | None = None):
        self.path = path
        self.layers = layers
        self.lock = lock  # released when the writer closes; ``lock.crashed``: the crashed writer a resume replaced
        try:
            self._datasets: _Datasets | None = _Datasets.open(file, len(layers))
        except Exception as error:  # noqa: BLE001 - a file that passed create/resume lacks a dataset: never expected
            file.close()
            if lock is not None:
                lock.release()
            raise RecordingError(f"{path}: cannot open the session's datasets for appending "
                                 f"({_first_line(error)})") from None
        self._curious = curious_group.present(file)
        self._file: h5py.File | None = file
        self._batches = len(table)
        self._images = _images_in(table)
        self._version = int(file.attrs["schema_version"])  # a resumed file of an earlier version keeps its layout
        self._columns = verification_columns(self._version)
        self._stops = {kind: (table[f"{kind}_stop"][-1].copy() if len(table) else np.zeros(len(layers), np.int64))
                       for kind in offset_kinds(self._version)}
        noted = (lock.crashed.sent if lock is not None and lock.crashed is not None else None) or {}
        self._sent = {field: images_sent(table, field, file[field][()] if field in file else None, noted.get(field))
                      for field in SENT_COUNTS}  # a crashed writer's note counts: its light went out

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, layers: list[LayerShape], meta: dict[str, str | dict], *,
               qslab_version: str, git_revision: str, created: dt.datetime | None = None,
               run_id: str | None = None, curious_server: tuple[int, dict] | None = None) -> SessionWriter:
        """A new session file (never overwrites one), every dataset created empty, SWMR writing started.

        ``run_id`` (run_id.py) names the session in listings, figures and logs; a root attribute when given.
        ``curious_server``: (outputs, spec) creates the optional /curious_server group (curious_group.py).
        """
        path = Path(path)
        layers = tuple(layers)
        if not layers or not all(isinstance(layer, LayerShape) for layer in layers):
            raise RecordingError(f"{path}: layers must be a non-empty list of LayerShape, got {layers!r}")
        texts = _meta_texts(meta)
        if path.exists():
            raise RecordingError(f"{path} already exists: a recording is never overwritten; choose a new path, "
                                 f"or continue it with SessionWriter.resume")
        created = (created or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
        lock = WriterLock.acquire(path)
        try:
            file = h5py.File(path, "x", **FILE_SPACE)
        except Exception as error:  # noqa: BLE001 - h5py/OS errors: one line naming the file
            lock.release()
            raise RecordingError(f"{path}: cannot create the session file ({_first_line(error)})") from None
        try:
            _write_skeleton(file, layers, texts, created, str(qslab_version), str(git_revision))
            if run_id is not None:
                _text_attribute(file, "run_id", str(run_id))
            if curious_server is not None:
                curious_group.create(file, *curious_server)
            file.swmr_mode = True
            file.flush()
        except Exception as error:  # noqa: BLE001 - remove the half-made file: it holds no data yet
            file.close()
            path.unlink(missing_ok=True)
            lock.release()
            raise RecordingError(f"{path}: cannot create the session file ({_first_line(error)})") from None
        return cls(path, file, layers, np.zeros(0, batches_dtype(len(layers))), lock)

    @classmethod
    def resume(cls, path: str | Path, *, after_crash: bool = False, record: dict | None = None,
               lock: WriterLock | None = None) -> SessionWriter:
        """Reopen an incomplete ("running" or "aborted") session to append batches after its last committed one.

        The writer lock refuses a live writer and tells a crashed one (its lock left behind, its flock gone
        with it): such a file is recovered as it is. A file HDF5 marks open-for-writing whose writer left no
        lock (written by a qslab before the lock) needs ``after_crash=True``: never pass it while a writer
        may be running. Array tails beyond the batches table (a batch cut short) are removed; ``record``
        (JSON-able: who resumed, with what) is appended to the file's resumes (SessionFile.resumes). The
        file at ``path`` is replaced only once all of this is done (module docstring). ``lock``: the file's
        writer lock, when the caller took it already (a session takes it before connecting its station).
        """
        path = Path(path)
        lock = lock or WriterLock.acquire(path)
        try:
            with SessionFile.open(path) as session:
                if session.status == COMPLETE:
                    raise RecordingError(f"{path} is a complete session: a finished recording is never appended "
                                         f"to; record the rest in a new session file")
                layers, table, marked_open, resumes = session.layers, session.batch_table, session.swmr, \
                    session.resumes
            if marked_open and lock.crashed is None and not after_crash:
                raise RecordingError(f"{path} cannot be reopened for writing: HDF5 still marks it open by a writer "
                                     f"that left no writer lock, which is either running or crashed. If no process "
                                     f"writes it any more, resume with SessionWriter.resume(path, after_crash=True)")
            _refuse_readers(path)
            resumes = resumes + [record] if record is not None else None
            file = _prepared_copy(path, marked_open, layers, table, resumes)
        except BaseException:
            lock.release()
            raise
        return cls(path, file, layers, table, lock)

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._file is None:
            return
        if exc_type is None:
            self.close()
            return
        try:
            self.abort(f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__)
        except Exception:  # noqa: BLE001 - never hide the original exception behind a failed abort
            self._close_quietly()

    # -- state ------------------------------------------------------------------------------------
    @property
    def images_written(self) -> int:
        return self._images

    @property
    def weight_images_sent(self) -> tuple[int, ...] | None:
        """Per layer, the images its weights were sent to up to the last committed batch (zeros before the first),
        or when the last writer ended, or as a crashed writer noted in its lock, if that is more; None when they were
        not counted (reader.images_sent)."""
        return self._sent[WEIGHT_IMAGES_SENT]

    @property
    def data_images_sent(self) -> tuple[int, ...] | None:
        """Per layer, the images whose data its light carried, as weight_images_sent."""
        return self._sent[DATA_IMAGES_SENT]

    @property
    def batches_written(self) -> int:
        return self._batches

    @property
    def closed(self) -> bool:
        return self._file is None

    # -- appending --------------------------------------------------------------------------------
    def append_batch(self, image_index, label, pixels, prediction, layers: list[LayerBatch],
                     curious_counts=None, weight_images_sent=None, data_images_sent=None) -> None:
        """Validate one batch, write all its arrays, flush, then commit its /batches row and flush again.

        ``curious_counts``: (counts [b, outputs], counted rows [b]) when the file has a /curious_server group.
        ``weight_images_sent``, ``data_images_sent``: per layer, the images its weights were sent to and the images
        whose data it carried since the session began, up to and including this batch (SENT_COUNTS; None: not
        counted)."""
        file = self._require_open("append_batch")
        datasets = self._datasets
        images, batches = self._checked_batch(image_index, label, pixels, prediction, layers)
        count = len(images["index"])
        sent = self._checked_counts(weight_images_sent, data_images_sent, count, "append_batch")
        curious = None
        if self._curious != (curious_counts is not None):
            raise RecordingError(f"{self.path}: append_batch: curious-server counts "
                                 + ("missing: the file has a /curious_server group" if curious_counts is None
                                    else "given, but the file has no /curious_server group"))
        if curious_counts is not None:
            curious = curious_group.checked(file, *curious_counts, count, f"{self.path}: append_batch")
        try:
            if curious is not None:
                curious_group.write(file, self._images, *curious)
            for name, values in images.items():
                datasets.images[name].write_at(self._images, values)
            new_stops = {kind: stops.copy() for kind, stops in self._stops.items()}
            if self._version >= 5:
                for batch in batches:
                    batch["sent_snu"] = stored_sent(batch["sent_snu"], count)
            crcs = _noise_crcs(batches, self._version)
            for k, batch in enumerate(batches):
                datasets.quadratures[k].write_at(self._images, batch["client_quadratures_snu"])
                for name, (_, kind) in self._columns.items():
                    values = batch[name]
                    datasets.verification[k][name].write_at(int(self._stops[kind][k]), values)
                    new_stops[kind][k] = self._stops[kind][k] + len(values)
            file.flush()  # every open dataset's chunk cache, then the metadata: the batch's arrays are in the file
            self._commit(file, count, new_stops, {**crcs, **sent})
        except RecordingError:
            raise
        except Exception as error:  # noqa: BLE001 - the committed batches are untouched
            raise RecordingError(f"{self.path}: writing batch {self._batches} failed ({_first_line(error)}); "
                                 f"the {self._batches} committed batches are intact") from None
        self._batches += 1
        self._images += count
        self._stops = new_stops
        self._sent = {field: None if values is None else tuple(int(n) for n in values) for field, values in sent.items()}

    def _commit(self, file: h5py.File, image_count: int, new_stops: dict[str, np.ndarray],
                fields: dict[str, np.ndarray | None]) -> None:
        """The batch's /batches row, written last: from here on readers count the batch. ``fields``: NOISE_CRC_FIELDS
        -> per-layer CRC-32 and SENT_COUNTS -> the counts (None: left at -1), stored where the table has them
        (a resumed file of an earlier version keeps its layout)."""
        row = np.zeros((), self._datasets.batches.dtype)
        row["batch"], row["first_image"], row["image_count"] = self._batches, self._images, image_count
        row["time_unix_s"] = time.time()
        for kind, stops in new_stops.items():
            row[f"{kind}_start"], row[f"{kind}_stop"] = self._stops[kind], stops
        for name, values in fields.items():
            if name in row.dtype.names:
                row[name] = -1 if values is None else values
        self._datasets.batches.write_at(self._batches, row[np.newaxis])
        file.flush()

    @staticmethod
    def _write_counts(file: h5py.File, sent: dict[str, np.ndarray | None]) -> None:
        """The counts at a writer's end, into their root datasets (files of version 4 on)."""
        for field, values in sent.items():
            if values is not None and field in file:
                file[field][...] = values

    def _checked_counts(self, weight_images_sent, data_images_sent, count: int, what: str) -> dict:
        """SENT_COUNTS field -> the count given as int64 [layers] (None: not counted), each at least the images
        recorded with this batch (``count`` more) and no fewer than the last (light once sent stays counted);
        RecordingError naming what is off."""
        checked = {}
        for field, given in ((WEIGHT_IMAGES_SENT, weight_images_sent), (DATA_IMAGES_SENT, data_images_sent)):
            if given is None:
                checked[field] = None
                continue
            where, last = f"{self.path}: {what}: {field}", self._sent[field]
            if last is None:
                raise RecordingError(f"{where}: the file holds no count to add it to (batches before it were not "
                                     f"counted, or its schema version has no {field} field): pass None")
            least = np.maximum(self._images + count, np.asarray(last, np.int64))
            sent = _integers(given, where, 0, np.iinfo(np.int64).max, "<i8", shape=(len(self.layers),))
            if np.any(sent < least):
                raise RecordingError(f"{where} {sent.tolist()}: expected per layer at least {least.tolist()} (the "
                                     f"images recorded with this batch, and the last batch's counts)")
            checked[field] = sent
        return checked

    def _checked_batch(self, image_index, label, pixels, prediction, layers) -> tuple[dict, list[dict]]:
        """The batch as the exact arrays to store; RecordingError naming the field if anything is off."""
        where = f"{self.path}: append_batch"
        index = _integers(image_index, f"{where}: image_index", 0, np.iinfo(np.int32).max, "<i4", ndim=1)
        count = len(index)
        if count == 0:
            raise RecordingError(f"{where}: a batch needs at least one image")
        images = {
            "index": index,
            "label": _integers(label, f"{where}: label", 0, 255, "u1", shape=(count,)),
            "pixels": _integers(pixels, f"{where}: pixels", 0, 255, "u1", shape=(count, PIXELS_PER_IMAGE)),
            "prediction": _integers(prediction, f"{where}: prediction", -(1 << 15), (1 << 15) - 1, "<i2",
                                    shape=(count,)),
        }
        if len(layers) != len(self.layers):
            raise RecordingError(f"{where}: {len(layers)} LayerBatch given, the session has {len(self.layers)} layers")
        return images, [_checked_layer(batch, shape, count, f"{where}: layer {k}")
                        for k, (batch, shape) in enumerate(zip(layers, self.layers))]

    # -- ending -----------------------------------------------------------------------------------
    def finish(self, results: dict, weight_images_sent=None, data_images_sent=None) -> None:
        """Write the results, then mark the session complete, then close (results first: "complete" implies them).
        ``weight_images_sent``, ``data_images_sent``: the counts at the end (as append_batch takes them; they may hold
        light sent after the last batch, e.g. a take the leakage cap stopped from being repeated)."""
        file = self._require_open("finish")
        data = np.frombuffer(_json_text(results, f"{self.path}: results").encode("utf-8"), dtype=_RESULTS_DTYPE)
        sent = self._checked_counts(weight_images_sent, data_images_sent, 0, "finish")
        try:
            self._write_counts(file, sent)
            self._datasets.results.write_at(0, data)
            file.flush()
            _set_status(file, COMPLETE, "")
        except Exception as error:  # noqa: BLE001
            raise RecordingError(f"{self.path}: cannot write the results ({_first_line(error)}); "
                                 f"the {self._batches} committed batches are intact") from None
        self.close()

    def abort(self, reason: str, weight_images_sent=None, data_images_sent=None) -> None:
        """Mark the session aborted with ``reason`` (UTF-8, cut to 512 bytes) and close; every committed batch stays.
        ``weight_images_sent``, ``data_images_sent``: the counts at the end, with the light of a batch that failed
        (stored when they can be totals; an abort never fails on them)."""
        file = self._require_open("abort")
        try:
            try:
                self._write_counts(file, self._checked_counts(weight_images_sent, data_images_sent, 0, "abort"))
            except Exception:  # noqa: BLE001 - not a total for this file, or not writable: the status matters more
                pass
            _set_status(file, ABORTED, str(reason))
        except Exception as error:  # noqa: BLE001
            raise RecordingError(f"{self.path}: cannot mark the session aborted ({_first_line(error)})") from None
        finally:
            self._close_quietly()

    def close(self) -> None:
        """Flush and close; the status is left as it is ("running" if neither finish nor abort was called)."""
        if self._file is None:
            return
        file, self._file, self._datasets = self._file, None, None  # the datasets close here, before the file
        try:
            file.flush()
        finally:
            file.close()
            if self.lock is not None:
                self.lock.release()

    def _close_quietly(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def _require_open(self, what: str) -> h5py.File:
        if self._file is None:
            raise RecordingError(f"{self.path}: {what} on a closed SessionWriter (the session was finished, "
                                 f"aborted or closed; SessionWriter.resume reopens an incomplete one)")
        return self._file


def _write_skeleton(file: h5py.File, layers: tuple[LayerShape, ...], texts: dict[str, str], created: dt.datetime,
                    qslab_version: str, git_revision: str) -> None:
    """Every group, dataset and attribute of the schema, empty: SWMR allows no new objects later."""
    file.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
    for name, text in {"schema": SCHEMA, "created_utc": created.isoformat(), "qslab_version": qslab_version,
                       "git_revision": git_revision}.items():
        _text_attribute(file, name, text)
    meta = file.create_group("meta")
    for name, text in texts.items():
        data = text.encode("utf-8")
        meta.create_dataset(name, shape=(), dtype=h5py.string_dtype("utf-8", max(1, len(data))))[()] = data
    _text_attribute(meta, META_CHECKSUMS, json.dumps(meta_checksums(texts), sort_keys=True))
    for k, layer in enumerate(layers):
        group = file.create_group(f"layers/{k}")
        group.attrs.update({"rows": np.int64(layer.rows), "modes": np.int64(layer.modes)})
    for path, (dtype, row_shape) in _dataset_paths(layers).items():
        _create_extendable(file, path, dtype, row_shape)
    for field in SENT_COUNTS:
        file.create_dataset(field, data=np.full(len(layers), -1, np.int64))
    name_dimensions(file, layers)
    file.create_dataset("status", shape=(), dtype=h5py.string_dtype("ascii", STATUS_BYTES))[()] = RUNNING.encode()
    file.create_dataset("status_detail", shape=(), dtype=h5py.string_dtype("utf-8", DETAIL_BYTES))[()] = b""


def name_dimensions(file: h5py.File, layers: tuple[LayerShape, ...]) -> None:
    """Version 2's dimension scales, attached to every axis, and each dataset's ``long_name`` and ``units``.

    Before SWMR writing starts (it allows no new objects or attributes). A growing dimension's scale stays
    empty: netCDF readers take its length from the longest dataset attached to it. Idempotent, so a resumed
    copy can be named again whatever its copy did to the object references.
    """
    version = int(file.attrs["schema_version"])
    for path, length in dimension_scales(layers, version).items():
        if path not in file:
            shape, extra = ((0,), {"maxshape": (None,), "chunks": (1024,)}) if length is None else ((length,), {})
            file.create_dataset(path, shape=shape, dtype=">f4", **extra)
        if not h5py.h5ds.is_scale(file[path].id):
            file[path].make_scale(DIMENSION_SCALE_NAME if length is None else f"{DIMENSION_SCALE_NAME}{length:>10}")
    for path, (axes, long_name, units) in dataset_dimensions(layers, version).items():
        dataset = file[path]
        for axis, scale in enumerate(axes):
            if not h5py.h5ds.is_attached(dataset.id, file[scale].id, axis):
                dataset.dims[axis].attach_scale(file[scale])
        _text_attribute(dataset, "long_name", long_name)
        if units is not None:
            _text_attribute(dataset, "units", units)


def _text_attribute(node: h5py.HLObject, name: str, text: str) -> None:
    """Fixed-length UTF-8: kept in the checksummed object header, unlike variable-length strings (global heap)."""
    data = text.encode("utf-8")
    size = max(1, len(data))
    node.attrs.create(name, np.array(data, dtype=f"S{size}"), dtype=h5py.string_dtype("utf-8", size))


def _create_extendable(file: h5py.File, path: str, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
    """Empty along axis 0, unlimited, chunked to about 64 KiB (schema._CHUNK_BYTES), fletcher32 (corruption is
    detected) and gzip + shuffle where the data compress, no filter on the noise (checked per batch by CRC-32
    instead; schema.dataset_filters)."""
    row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
    chunk_rows = max(1, _CHUNK_BYTES // row_bytes)
    extra = {"fillvalue": _unfilled_row(int(dtype["sample_start"].shape[0]))} if path == "batches" else {}
    file.create_dataset(path, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype,
                        chunks=(chunk_rows, *row_shape), **dataset_filters(path), **extra)


def _set_status(file: h5py.File, status: str, detail: str) -> None:
    file["status_detail"][()] = _truncate_utf8(detail, DETAIL_BYTES)
    file["status"][()] = status.encode("ascii")
    file.flush()


def _integers(values, what: str, low: int, high: int, dtype: str, *, ndim: int | None = None,
              shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``values`` as ``dtype`` if it is an integer array of the right shape within [low, high]."""
    array = np.asarray(values)
    if array.dtype.kind not in "iub":
        raise RecordingError(f"{what} must be integers, got dtype {array.dtype}")
    if shape is not None and array.shape != shape:
        raise RecordingError(f"{what} has shape {array.shape}, expected {shape}")
    if ndim is not None and array.ndim != ndim:
        raise RecordingError(f"{what} must be {ndim}-D, got shape {array.shape}")
    if array.size and (array.min() < low or array.max() > high):
        raise RecordingError(f"{what} must lie in [{low}, {high}], got [{array.min()}, {array.max()}]")
    return array.astype(dtype)


def _finite_floats(values, what: str, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise RecordingError(f"{what} must be real numbers, got dtype {array.dtype}")
    if array.shape != shape:
        raise RecordingError(f"{what} has shape {array.shape}, expected {shape}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range is stored as inf: refused below
        stored = array.astype(_QUADRATURE_DTYPE, copy=False)
    if not np.all(np.isfinite(stored)):
        raise RecordingError(f"{what} holds {int(np.size(stored) - np.isfinite(stored).sum())} non-finite values "
                             "(as float32)")
    return stored


def _checked_layer(batch: LayerBatch, shape: LayerShape, count: int, where: str) -> dict[str, np.ndarray]:
    """One LayerBatch as the flat arrays to store (C order: image, verified row, mode)."""
    if not isinstance(batch, LayerBatch):
        raise RecordingError(f"{where} must be a LayerBatch, got {type(batch).__name__}")
    quadratures = _finite_floats(batch.client_quadratures_snu, f"{where} client_quadratures_snu", (count, shape.rows))
    rows = _integers(batch.verified_rows, f"{where} verified_rows", 0, shape.rows - 1, "<i4", ndim=1)
    if len(np.unique(rows)) != len(rows):
        raise RecordingError(f"{where} verified_rows repeats a row: {rows.tolist()}")
    verified = len(rows)
    measure_p = _integers(batch.measure_p, f"{where} measure_p", 0, 1, "u1", shape=(count, verified))
    sample_shape = (count, verified, shape.modes)
    return {"client_quadratures_snu": quadratures,
            "sent_snu": _finite_floats(batch.sent_snu, f"{where} sent_snu", sample_shape).ravel(),
            "returned_snu": _finite_floats(batch.returned_snu, f"{where} returned_snu", sample_shape).ravel(),
            "rows": rows, "measure_p": measure_p.ravel()}


def _noise_crcs(batches: list[dict[str, np.ndarray]], version: int) -> dict[str, np.ndarray]:
    """The CRC fields of schema ``version`` (noise_crc_fields) -> [layers] uint32: zlib.crc32 of the bytes each noise
    dataset receives for this batch, taken from the contiguous little-endian float32 arrays about to be written (no
    read back)."""
    return {field: np.array([zlib.crc32(np.ascontiguousarray(batch[name.rsplit("/", 1)[-1]], "<f4"))
                             for batch in batches], dtype="<u4")
            for field, name in noise_crc_fields(version).items()}


def _refuse_readers(path: Path) -> None:
    """RecordingError if another process holds the file open (HDF5 readers hold a shared flock on it): replacing
    it would leave them reading the old copy."""
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # dropped when the handle closes
    except BlockingIOError:
        raise RecordingError(f"{path} is open in another process (unable to lock file): close its readers, "
                             f"then resume") from None
    except OSError as error:
        raise RecordingError(f"{path} cannot be reopened for writing ({error.strerror})") from None


def _prepared_copy(path: Path, marked_open: bool, layers: tuple[LayerShape, ...], table: np.ndarray,
                   resumes: list | None) -> h5py.File:
    """The committed content of ``path`` copied to ``.NAME.recovering``, tails cut, status running, ``resumes``
    recorded, SWMR writing started, then moved onto ``path``: open for appending. ``path`` is unchanged until
    the move; a stale copy (a resume killed before its move) is removed first (the writer lock is held)."""
    temporary = path.with_name(f".{path.name}.recovering")
    temporary.unlink(missing_ok=True)
    target = None
    try:
        with (open_swmr_read(path) if marked_open else h5py.File(path, "r", libver="latest")) as source:
            target = h5py.File(temporary, "w", **FILE_SPACE)
            target.attrs.update({name: source.attrs[name] for name in list(source.attrs)})  # DECISIONS AL
            _copy_objects(source, target)
        _truncate_to(target, layers, table)
        if int(target.attrs["schema_version"]) >= 2:
            name_dimensions(target, layers)
        if resumes is not None:
            _text_attribute(target, RESUMES_ATTRIBUTE, json.dumps(resumes, separators=(",", ":")))
        target.swmr_mode = True
        target.flush()
        os.fsync(target.id.get_vfd_handle())
        os.replace(temporary, path)
    except Exception as error:  # noqa: BLE001
        if target is not None:
            target.close()
        temporary.unlink(missing_ok=True)
        raise RecordingError(f"{path}: cannot prepare the session for appending ({_first_line(error)}); it is "
                             f"unchanged") from None
    return target


# HDF5's dimension-scale bookkeeping: object references, which a copy into another file cannot carry over
_SCALE_ATTRIBUTES = ("DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME")


def _copy_objects(source: h5py.File, target: h5py.File) -> None:
    """Every object under the root of ``source`` into ``target``. The dimension scales' references would point
    into ``source``, so a version-2 file is copied without them (every other attribute with its stored type) and
    named again (name_dimensions)."""
    if int(source.attrs["schema_version"]) < 2:
        for name in source:
            source.copy(source[name], target, name)
        return
    for name in source:
        source.copy(source[name], target, name, without_attrs=True)

    def copy_attributes(name: str, node: h5py.HLObject) -> None:
        for key in list(node.attrs):  # the names first: the attribute iterator holds h5py's lock (DECISIONS AL)
            if key not in _SCALE_ATTRIBUTES:
                target[name].attrs.create(key, node.attrs[key], dtype=node.attrs.get_id(key).dtype)

    source.visititems(copy_attributes)


def _truncate_to(file: h5py.File, layers: tuple[LayerShape, ...], table: np.ndarray) -> None:
    """Cut every array back to what ``table`` commits, empty the results, status back to running."""
    images = _images_in(table)
    for name in _IMAGE_COLUMNS:
        file[f"images/{name}"].resize(images, axis=0)
    for k in range(len(layers)):
        file[f"layers/{k}/client_quadratures_snu"].resize(images, axis=0)
        for name, (_, kind) in verification_columns(int(file.attrs["schema_version"])).items():
            stop = int(table[f"{kind}_stop"][-1, k]) if len(table) else 0
            file[f"layers/{k}/verification/{name}"].resize(stop, axis=0)
    curious_group.truncate(file, images)
    file["batches"].resize(len(table), axis=0)
    file["results/results_json"].resize(0, axis=0)
    _set_status(file, RUNNING, "")
