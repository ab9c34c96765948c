"""The HDF5 recording of one lab session (schema ``qslab.session``, version 1).

Why this shape: ``qslab replay`` must recompute every result of a session from its file alone, years
later, with plain h5py if need be, and a crash must never cost a completed batch. So the session
is written incrementally in SWMR mode (single writer, any number of live readers): every dataset
exists from the start, each batch extends them and is flushed, and a batch counts only once its
row in ``/batches`` is written, last. Readers take the batches table as the truth and ignore array
tails it does not cover (a batch interrupted half-way); ``SessionWriter.resume`` cuts those tails
off and continues. The full layout, dtypes, units and status rules are in docs/RECORDING.md.

Layout in short: root attributes ``schema, schema_version, created_utc, qslab_version,
git_revision``; ``/meta/<name>`` fixed-length UTF-8 text (config TOML, station snapshot, settings,
provenance, seeds, calibration records); ``/images/{index,label,pixels,prediction}``;
``/layers/<k>/client_quadratures_snu`` and ``/layers/<k>/verification/{sent_snu,returned_snu,
rows,measure_p}``; the compound ``/batches`` table (per batch: images and per-layer start/stop
offsets into the flat verification arrays); ``/status`` and ``/status_detail`` (updated in place);
``/results/results_json`` (UTF-8 JSON as uint8 bytes, empty until the session completes).

Values are stored as written (quadratures as float32): a live analysis that must agree bit for bit
with its replay should compute from the recorded (float32-rounded) values.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

SCHEMA = "qslab.session"
SCHEMA_VERSION = 1
PIXELS_PER_IMAGE = 784
RUNNING, COMPLETE, ABORTED = "running", "complete", "aborted"
STATUSES = (RUNNING, COMPLETE, ABORTED)
META_NAMES = ("config_toml", "station_snapshot_json", "settings_json", "provenance_json", "seeds_json",
              "calibrations_json")
STATUS_BYTES = 16
DETAIL_BYTES = 512

# dataset name -> (dtype, shape of one row); every one is extendable along axis 0
_IMAGE_COLUMNS = {"index": (np.dtype("<i4"), ()), "label": (np.dtype("u1"), ()),
                  "pixels": (np.dtype("u1"), (PIXELS_PER_IMAGE,)), "prediction": (np.dtype("<i2"), ())}
# verification dataset -> (dtype, name of its start/stop fields in /batches)
_VERIFICATION_COLUMNS = {"sent_snu": (np.dtype("<f4"), "sample"), "returned_snu": (np.dtype("<f4"), "sample"),
                         "rows": (np.dtype("<i4"), "row"), "measure_p": (np.dtype("u1"), "measure_p")}
_OFFSET_KINDS = ("sample", "row", "measure_p")
_QUADRATURE_DTYPE = np.dtype("<f4")
_RESULTS_DTYPE = np.dtype("u1")
_CHUNK_BYTES = 1 << 16
_FILTERS = {"compression": "gzip", "compression_opts": 4, "shuffle": True, "fletcher32": True}


class RecordingError(ValueError):
    """A session file that is missing, foreign, corrupt or misused: the message names the file and what was expected."""


@dataclass(frozen=True)
class LayerShape:
    """One secure layer: ``rows`` outputs (client quadratures per image), ``modes`` complex modes per row."""

    rows: int
    modes: int

    def __post_init__(self):
        for name in ("rows", "modes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise RecordingError(f"LayerShape.{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True, eq=False)
class LayerBatch:
    """What one layer produced for one batch of b images, v verified rows (the same rows for every image)."""

    client_quadratures_snu: np.ndarray  # [b, rows] client homodyne outcome per (image, row), SNU
    verified_rows: np.ndarray           # [v] row indices the server verified
    measure_p: np.ndarray               # [b, v] True: the server measured P, False: X
    sent_snu: np.ndarray                # [b, v, modes] the server's sent quadrature, SNU
    returned_snu: np.ndarray            # [b, v, modes] the returned quadrature it measured, SNU


@dataclass(frozen=True, eq=False)
class Images:
    index: np.ndarray       # [n] int32, index into the MNIST test set
    label: np.ndarray       # [n] uint8
    pixels: np.ndarray      # [n, 784] uint8, the client's private input
    prediction: np.ndarray  # [n] int16


@dataclass(frozen=True, eq=False)
class LayerVerification:
    """One layer's verification data over all committed batches; ``rows``/``measure_p`` are per batch."""

    sent_snu: np.ndarray            # [m] float32, pooled in write order (batch, image, row, mode)
    returned_snu: np.ndarray        # [m] float32
    rows: list[np.ndarray]          # per batch: [v] int32
    measure_p: list[np.ndarray]     # per batch: [b, v] bool


def batches_dtype(layer_count: int) -> np.dtype:
    """The compound row of ``/batches``: one per committed batch, per-layer offsets as length-L fields."""
    per_layer = [(f"{kind}_{end}", "<i8", (layer_count,)) for kind in _OFFSET_KINDS for end in ("start", "stop")]
    return np.dtype([("batch", "<i8"), ("first_image", "<i8"), ("image_count", "<i8"), ("time_unix_s", "<f8"),
                     *per_layer])


def _unfilled_row(layer_count: int) -> np.ndarray:
    """The fill value of ``/batches``: batch -1 marks a row that was allocated but never committed."""
    row = np.zeros((), batches_dtype(layer_count))
    for name in row.dtype.names:
        row[name] = np.nan if name == "time_unix_s" else -1
    return row


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (dt.datetime, dt.date, Path)):
        return str(value)
    raise TypeError(f"a value of type {type(value).__name__} is not JSON serialisable")


def _json_text(value, what: str) -> str:
    """A dict (dumped, keys sorted) or a string that must already be JSON."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError as error:
            raise RecordingError(f"{what} is not valid JSON ({_first_line(error)})") from None
        return value
    try:
        return json.dumps(value, sort_keys=True, default=_jsonable)
    except (TypeError, ValueError) as error:
        raise RecordingError(f"{what} cannot be written as JSON ({_first_line(error)})") from None


def _meta_texts(meta: dict) -> dict[str, str]:
    """The six /meta texts, checked: all present, nothing unknown, JSON parses, the config is TOML."""
    missing = [name for name in META_NAMES if name not in meta]
    unknown = sorted(set(meta) - set(META_NAMES))
    if missing or unknown:
        raise RecordingError(f"session meta must have exactly the keys {list(META_NAMES)}; "
                             f"missing {missing}, unknown {unknown}")
    if not isinstance(meta["config_toml"], str):
        raise RecordingError(f"meta['config_toml'] must be the lab_config text (str), "
                             f"got {type(meta['config_toml']).__name__}")
    try:
        tomllib.loads(meta["config_toml"])
    except tomllib.TOMLDecodeError as error:
        raise RecordingError(f"meta['config_toml'] is not valid TOML ({error})") from None
    texts = {"config_toml": meta["config_toml"]}
    texts.update({name: _json_text(meta[name], f"meta[{name!r}]") for name in META_NAMES[1:]})
    for name, text in texts.items():
        if "\x00" in text:
            raise RecordingError(f"meta[{name!r}] contains a NUL character; fixed-length HDF5 text cannot hold it")
    return texts


def _truncate_utf8(text: str, size_bytes: int) -> bytes:
    data = text.encode("utf-8")[:size_bytes]
    return data.decode("utf-8", errors="ignore").encode("utf-8")


def _dataset_paths(layers: list[LayerShape] | tuple[LayerShape, ...]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Every extendable dataset of the schema: path -> (dtype, shape of one row)."""
    paths = {f"images/{name}": spec for name, spec in _IMAGE_COLUMNS.items()}
    for k, layer in enumerate(layers):
        paths[f"layers/{k}/client_quadratures_snu"] = (_QUADRATURE_DTYPE, (layer.rows,))
        for name, (dtype, _) in _VERIFICATION_COLUMNS.items():
            paths[f"layers/{k}/verification/{name}"] = (dtype, ())
    paths["batches"] = (batches_dtype(len(layers)), ())
    paths["results/results_json"] = (_RESULTS_DTYPE, ())
    return paths


# --- writing -------------------------------------------------------------------------------------

class SessionWriter:
    """Appends batches to one session file in SWMR mode; use ``create`` or ``resume``, then as a context manager.

    Leaving the ``with`` block by an exception marks the session aborted with the exception as the
    reason; leaving it normally without ``finish`` leaves it "running" (resumable).
    """

    def __init__(self, path: Path, file: h5py.File, layers: tuple[LayerShape, ...], table: np.ndarray):
        self.path = path
        self.layers = layers
        self._file: h5py.File | None = file
        self._batches = len(table)
        self._images = _images_in(table)
        self._stops = {kind: (table[f"{kind}_stop"][-1].copy() if len(table) else np.zeros(len(layers), np.int64))
                       for kind in _OFFSET_KINDS}

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, layers: list[LayerShape], meta: dict[str, str | dict], *,
               qslab_version: str, git_revision: str, created: dt.datetime | None = None) -> SessionWriter:
        """A new session file (never overwrites one), every dataset created empty, SWMR writing started."""
        path = Path(path)
        layers = tuple(layers)
        if not layers or not all(isinstance(layer, LayerShape) for layer in layers):
            raise RecordingError(f"{path}: layers must be a non-empty list of LayerShape, got {layers!r}")
        texts = _meta_texts(meta)
        if path.exists():
            raise RecordingError(f"{path} already exists: a recording is never overwritten; choose a new path, "
                                 f"or continue it with SessionWriter.resume")
        created = (created or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
        try:
            file = h5py.File(path, "x", libver="latest")
        except Exception as error:  # noqa: BLE001 - h5py/OS errors: one line naming the file
            raise RecordingError(f"{path}: cannot create the session file ({_first_line(error)})") from None
        try:
            _write_skeleton(file, layers, texts, created, str(qslab_version), str(git_revision))
            file.swmr_mode = True
            file.flush()
        except Exception as error:  # noqa: BLE001 - remove the half-made file: it holds no data yet
            file.close()
            path.unlink(missing_ok=True)
            raise RecordingError(f"{path}: cannot create the session file ({_first_line(error)})") from None
        return cls(path, file, layers, np.zeros(0, batches_dtype(len(layers))))

    @classmethod
    def resume(cls, path: str | Path, *, after_crash: bool = False) -> SessionWriter:
        """Reopen an incomplete ("running" or "aborted") session to append batches after its last committed one.

        Array tails beyond the batches table (a batch cut short) are removed first. A file whose writer
        did not close it (crash, kill, power cut) is still marked open-for-writing by HDF5; since a
        live writer looks the same, that needs ``after_crash=True``, which first rewrites the file
        from a SWMR read (what ``h5clear -s`` would do). Never pass it while a writer may be running.
        """
        path = Path(path)
        with SessionFile.open(path) as session:
            if session.status == COMPLETE:
                raise RecordingError(f"{path} is a complete session: a finished recording is never appended to; "
                                     f"record the rest in a new session file")
            layers, table = session.layers, session.batch_table
        file = _open_for_append(path, after_crash)
        try:
            _truncate_to(file, layers, table)
            file.swmr_mode = True
            file.flush()
        except Exception as error:  # noqa: BLE001
            file.close()
            raise RecordingError(f"{path}: cannot prepare the session for appending ({_first_line(error)})") from None
        return cls(path, file, layers, table)

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
    def batches_written(self) -> int:
        return self._batches

    @property
    def closed(self) -> bool:
        return self._file is None

    # -- appending --------------------------------------------------------------------------------
    def append_batch(self, image_index, label, pixels, prediction, layers: list[LayerBatch]) -> None:
        """Validate one batch, write all its arrays, flush, then commit its /batches row and flush again."""
        file = self._require_open("append_batch")
        images, batches = self._checked_batch(image_index, label, pixels, prediction, layers)
        count = len(images["index"])
        try:
            for name, values in images.items():
                _write_at(file[f"images/{name}"], self._images, values)
            new_stops = {kind: self._stops[kind].copy() for kind in _OFFSET_KINDS}
            for k, batch in enumerate(batches):
                _write_at(file[f"layers/{k}/client_quadratures_snu"], self._images, batch["client_quadratures_snu"])
                for name, (_, kind) in _VERIFICATION_COLUMNS.items():
                    values = batch[name]
                    _write_at(file[f"layers/{k}/verification/{name}"], int(self._stops[kind][k]), values)
                    new_stops[kind][k] = self._stops[kind][k] + len(values)
            file.flush()
            self._commit(file, count, new_stops)
        except RecordingError:
            raise
        except Exception as error:  # noqa: BLE001 - the committed batches are untouched
            raise RecordingError(f"{self.path}: writing batch {self._batches} failed ({_first_line(error)}); "
                                 f"the {self._batches} committed batches are intact") from None
        self._batches += 1
        self._images += count
        self._stops = new_stops

    def _commit(self, file: h5py.File, image_count: int, new_stops: dict[str, np.ndarray]) -> None:
        """The batch's /batches row, written last: from here on readers count the batch."""
        row = np.zeros((), file["batches"].dtype)
        row["batch"], row["first_image"], row["image_count"] = self._batches, self._images, image_count
        row["time_unix_s"] = time.time()
        for kind in _OFFSET_KINDS:
            row[f"{kind}_start"], row[f"{kind}_stop"] = self._stops[kind], new_stops[kind]
        _write_at(file["batches"], self._batches, row[np.newaxis])
        file.flush()

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
    def finish(self, results: dict) -> None:
        """Write the results, then mark the session complete, then close (results first: "complete" implies them)."""
        file = self._require_open("finish")
        data = np.frombuffer(_json_text(results, f"{self.path}: results").encode("utf-8"), dtype=_RESULTS_DTYPE)
        try:
            _write_at(file["results/results_json"], 0, data)
            file.flush()
            _set_status(file, COMPLETE, "")
        except Exception as error:  # noqa: BLE001
            raise RecordingError(f"{self.path}: cannot write the results ({_first_line(error)}); "
                                 f"the {self._batches} committed batches are intact") from None
        self.close()

    def abort(self, reason: str) -> None:
        """Mark the session aborted with ``reason`` (UTF-8, cut to 512 bytes) and close; every committed batch stays."""
        file = self._require_open("abort")
        try:
            _set_status(file, ABORTED, str(reason))
        except Exception as error:  # noqa: BLE001
            raise RecordingError(f"{self.path}: cannot mark the session aborted ({_first_line(error)})") from None
        finally:
            self._close_quietly()

    def close(self) -> None:
        """Flush and close; the status is left as it is ("running" if neither finish nor abort was called)."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.flush()
        finally:
            file.close()

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
    for k, layer in enumerate(layers):
        group = file.create_group(f"layers/{k}")
        group.attrs.update({"rows": np.int64(layer.rows), "modes": np.int64(layer.modes)})
    for path, (dtype, row_shape) in _dataset_paths(layers).items():
        _create_extendable(file, path, dtype, row_shape)
    file.create_dataset("status", shape=(), dtype=h5py.string_dtype("ascii", STATUS_BYTES))[()] = RUNNING.encode()
    file.create_dataset("status_detail", shape=(), dtype=h5py.string_dtype("utf-8", DETAIL_BYTES))[()] = b""


def _text_attribute(node: h5py.HLObject, name: str, text: str) -> None:
    """Fixed-length UTF-8: kept in the checksummed object header, unlike variable-length strings (global heap)."""
    data = text.encode("utf-8")
    size = max(1, len(data))
    node.attrs.create(name, np.array(data, dtype=f"S{size}"), dtype=h5py.string_dtype("utf-8", size))


def _create_extendable(file: h5py.File, path: str, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
    """Empty along axis 0, unlimited, chunked to about 64 KiB, gzip + shuffle + fletcher32 (corruption is detected)."""
    row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
    chunk_rows = max(1, _CHUNK_BYTES // row_bytes)
    extra = {"fillvalue": _unfilled_row(int(dtype["sample_start"].shape[0]))} if path == "batches" else {}
    file.create_dataset(path, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype,
                        chunks=(chunk_rows, *row_shape), **_FILTERS, **extra)


def _write_at(dataset: h5py.Dataset, start: int, values: np.ndarray) -> None:
    """Resize to exactly ``start + len(values)`` rows (dropping any uncommitted tail) and write them there."""
    dataset.resize(start + len(values), axis=0)
    if len(values):
        dataset[start:start + len(values)] = values


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
    if not np.all(np.isfinite(array)):
        raise RecordingError(f"{what} holds {int(np.size(array) - np.isfinite(array).sum())} non-finite values")
    return array.astype(_QUADRATURE_DTYPE)


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


def _open_for_append(path: Path, after_crash: bool) -> h5py.File:
    try:
        return h5py.File(path, "r+", libver="latest")
    except Exception as error:  # noqa: BLE001
        reason = _first_line(error)
    if "unable to lock file" in reason:
        raise RecordingError(f"{path} is open in another process ({reason}): close its readers, then resume")
    if "already open for write" not in reason:
        raise RecordingError(f"{path} cannot be reopened for writing ({reason})")
    if not after_crash:
        raise RecordingError(f"{path} cannot be reopened for writing ({reason}): HDF5 still marks it open by a "
                             f"writer, which is either running or crashed. If no process writes it any more, "
                             f"resume with SessionWriter.resume(path, after_crash=True)")
    _rewrite_from_swmr_read(path)
    try:
        return h5py.File(path, "r+", libver="latest")
    except Exception as error:  # noqa: BLE001
        raise RecordingError(f"{path} cannot be reopened for writing even after rewriting it "
                             f"({_first_line(error)})") from None


def _rewrite_from_swmr_read(path: Path) -> None:
    """Copy every object of a crashed writer's file into a fresh file and put it in place (clears HDF5's open flags)."""
    temporary = path.with_name(f".{path.name}.recovering")
    try:
        with h5py.File(path, "r", libver="latest", swmr=True) as source, \
                h5py.File(temporary, "w", libver="latest") as target:
            target.attrs.update(dict(source.attrs))
            for name in source:
                source.copy(source[name], target, name)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except Exception as error:  # noqa: BLE001
        temporary.unlink(missing_ok=True)
        raise RecordingError(f"{path}: cannot recover the crashed session file ({_first_line(error)}); "
                             f"it is unchanged") from None


def _truncate_to(file: h5py.File, layers: tuple[LayerShape, ...], table: np.ndarray) -> None:
    """Cut every array back to what ``table`` commits, empty the results, status back to running."""
    images = _images_in(table)
    for name in _IMAGE_COLUMNS:
        file[f"images/{name}"].resize(images, axis=0)
    for k in range(len(layers)):
        file[f"layers/{k}/client_quadratures_snu"].resize(images, axis=0)
        for name, (_, kind) in _VERIFICATION_COLUMNS.items():
            stop = int(table[f"{kind}_stop"][-1, k]) if len(table) else 0
            file[f"layers/{k}/verification/{name}"].resize(stop, axis=0)
    file["batches"].resize(len(table), axis=0)
    file["results/results_json"].resize(0, axis=0)
    _set_status(file, RUNNING, "")


# --- reading -------------------------------------------------------------------------------------

def validate(path: str | Path) -> None:
    """Check ``path`` against schema qslab.session/1, reading every committed value; RecordingError if it fails."""
    SessionFile.open(path).close()


class SessionFile:
    """A validated, read-only view of a session file (complete, aborted, crashed, or still being written).

    Only committed batches are visible. A file still being written is opened in SWMR mode;
    ``refresh()`` then picks up the batches committed since.
    """

    def __init__(self, path: Path, file: h5py.File, swmr: bool):
        self.path = path
        self.swmr = swmr
        self._file = file
        self.layers: tuple[LayerShape, ...] = ()
        self._table = np.zeros(0)
        self._meta: dict[str, str] = {}

    @classmethod
    def open(cls, path: str | Path) -> SessionFile:
        """Open and validate; a missing, foreign, truncated or corrupt file is one RecordingError naming it."""
        path = Path(path)
        file, swmr = _open_readable(path)
        session = cls(path, file, swmr)
        try:
            session._load()
        except BaseException:
            file.close()
            raise
        return session

    def _load(self) -> None:
        with self._translated("is not a readable qslab session recording"):
            _check_schema(self._file, self.path)
            self.layers = _check_structure(self._file, self.path)
            self._meta = _read_meta(self._file, self.path)
            self._table = _committed_table(self._file, self.layers, self.path)
            _check_values(self)
            self.results  # noqa: B018 - parses the results of a complete session

    def refresh(self) -> int:
        """Re-read a file that is being written (SWMR); returns the number of committed batches."""
        if self.swmr:
            with self._translated("could not be refreshed"):
                for dataset in self._datasets():
                    dataset.refresh()
                self._table = _committed_table(self._file, self.layers, self.path)
        return self.batches_written

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SessionFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- identity and meta ------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return int(self._file.attrs["schema_version"])

    @property
    def created_utc(self) -> str:
        return _attribute_text(self._file.attrs["created_utc"])

    @property
    def qslab_version(self) -> str:
        return _attribute_text(self._file.attrs["qslab_version"])

    @property
    def git_revision(self) -> str:
        return _attribute_text(self._file.attrs["git_revision"])

    @property
    def config_toml(self) -> str:
        return self._meta["config_toml"]

    def meta_json(self, name: str):
        """One /meta JSON text, parsed (``settings_json``, ``seeds_json``, ...)."""
        return json.loads(self._meta[name])

    @property
    def settings(self) -> dict:
        return self.meta_json("settings_json")

    @property
    def seeds(self) -> dict:
        return self.meta_json("seeds_json")

    @property
    def calibrations(self) -> dict:
        return self.meta_json("calibrations_json")

    @property
    def provenance(self) -> dict:
        return self.meta_json("provenance_json")

    @property
    def station_snapshot(self) -> dict:
        return self.meta_json("station_snapshot_json")

    # -- status and results -----------------------------------------------------------------------
    @property
    def status(self) -> str:
        with self._translated("has an unreadable /status"):
            return _status_text(self._file["status"], self.path)

    @property
    def detail(self) -> str:
        with self._translated("has an unreadable /status_detail"):
            return bytes(self._file["status_detail"][()]).decode("utf-8", errors="replace")

    @property
    def results(self) -> dict | None:
        """The results of a complete session; None while it is running or after an abort."""
        if self.status != COMPLETE:
            return None
        with self._translated("has unreadable results"):
            data = self._file["results/results_json"][()]
            if len(data) == 0:
                raise RecordingError(f"{self.path} says it is complete but /results/results_json is empty")
            return json.loads(data.tobytes().decode("utf-8"))

    # -- batches and data -------------------------------------------------------------------------
    @property
    def batch_table(self) -> np.ndarray:
        """The committed rows of /batches (structured array, see ``batches_dtype``)."""
        return self._table.copy()

    @property
    def batches_written(self) -> int:
        return len(self._table)

    @property
    def images_written(self) -> int:
        return _images_in(self._table)

    @property
    def images(self) -> Images:
        n = self.images_written
        return Images(**{name: self._read(f"images/{name}", slice(0, n)) for name in _IMAGE_COLUMNS})

    def client_quadratures_snu(self, layer: int) -> np.ndarray:
        """[images, rows] float32: the client's homodyne outcome per committed image and row, SNU."""
        return self._read(f"layers/{self._layer(layer)}/client_quadratures_snu", slice(0, self.images_written))

    def verification(self, layer: int) -> LayerVerification:
        k = self._layer(layer)
        stops = {kind: int(self._table[f"{kind}_stop"][-1, k]) if len(self._table) else 0 for kind in _OFFSET_KINDS}
        flat = {name: self._read(f"layers/{k}/verification/{name}", slice(0, stops[kind]))
                for name, (_, kind) in _VERIFICATION_COLUMNS.items()}
        rows, measure_p = [], []
        for row in self._table:
            r = flat["rows"][row["row_start"][k]:row["row_stop"][k]]
            p = flat["measure_p"][row["measure_p_start"][k]:row["measure_p_stop"][k]]
            rows.append(r)
            measure_p.append(p.reshape(int(row["image_count"]), len(r)).astype(bool))
        return LayerVerification(flat["sent_snu"], flat["returned_snu"], rows, measure_p)

    def layer_batch(self, batch: int, layer: int) -> LayerBatch:
        """Exactly what ``append_batch`` stored for ``layer`` of ``batch`` (quadratures as float32)."""
        k = self._layer(layer)
        if not 0 <= batch < self.batches_written:
            raise RecordingError(f"{self.path} has {self.batches_written} committed batches, no batch {batch}")
        row = self._table[batch]
        count, modes = int(row["image_count"]), self.layers[k].modes
        first = int(row["first_image"])

        def part(name: str, kind: str) -> np.ndarray:
            return self._read(f"layers/{k}/verification/{name}", slice(int(row[f"{kind}_start"][k]),
                                                                       int(row[f"{kind}_stop"][k])))

        rows = part("rows", "row")
        return LayerBatch(
            client_quadratures_snu=self._read(f"layers/{k}/client_quadratures_snu", slice(first, first + count)),
            verified_rows=rows,
            measure_p=part("measure_p", "measure_p").reshape(count, len(rows)).astype(bool),
            sent_snu=part("sent_snu", "sample").reshape(count, len(rows), modes),
            returned_snu=part("returned_snu", "sample").reshape(count, len(rows), modes))

    # -- helpers ----------------------------------------------------------------------------------
    def _layer(self, layer: int) -> int:
        if not 0 <= layer < len(self.layers):
            raise RecordingError(f"{self.path} has {len(self.layers)} layers, no layer {layer}")
        return layer

    def _read(self, name: str, rows: slice) -> np.ndarray:
        with self._translated(f"has unreadable data in /{name}"):
            return self._file[name][rows]

    def _datasets(self) -> list[h5py.Dataset]:
        names = ["status", "status_detail", *_dataset_paths(self.layers)]
        return [self._file[name] for name in names]

    def _translated(self, what: str):
        return _Translated(self.path, what)


class _Translated:
    """Context manager: any non-RecordingError becomes one RecordingError naming the file."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, RecordingError) or not isinstance(exc, Exception):
            return False
        raise RecordingError(f"{self.path} {self.what} ({_first_line(exc)})") from None


def _open_readable(path: Path) -> tuple[h5py.File, bool]:
    """Open read-only; SWMR mode only when HDF5 says a writer has it open (live, or crashed).

    A plain open first, because it checks the file against its recorded size (truncation) and
    fails fast on bad metadata, whereas a SWMR reader retries bad metadata for minutes.
    """
    expected = f"expected a qslab session recording (schema {SCHEMA!r} version {SCHEMA_VERSION})"
    if not path.exists():
        raise RecordingError(f"{path}: no such file ({expected})")
    if not path.is_file():
        raise RecordingError(f"{path} is not a regular file ({expected})")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except Exception as error:  # noqa: BLE001
        raise RecordingError(f"{path} cannot be read ({_first_line(error)})") from None
    if not is_hdf5:
        raise RecordingError(f"{path} is not an HDF5 file ({expected})")
    try:
        return h5py.File(path, "r"), False
    except Exception as error:  # noqa: BLE001
        reason = _first_line(error)
    if "already open for write" not in reason:
        problem = "is truncated" if "truncated file" in reason else "is a corrupt or unreadable HDF5 file"
        raise RecordingError(f"{path} {problem} ({reason}; {expected})")
    try:
        return h5py.File(path, "r", libver="latest", swmr=True), True
    except Exception as error:  # noqa: BLE001
        raise RecordingError(f"{path} is open for writing and cannot be read in SWMR mode "
                             f"({_first_line(error)}; {expected})") from None


def _attribute_text(value) -> str | None:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def _check_schema(file: h5py.File, path: Path) -> None:
    schema = file.attrs.get("schema")
    if schema is None:
        raise RecordingError(f"{path} is not a qslab session recording: it has no 'schema' attribute "
                             f"(expected {SCHEMA!r}); it is an HDF5 file written by something else")
    if _attribute_text(schema) != SCHEMA:
        shown = _attribute_text(schema) if _attribute_text(schema) is not None else schema
        raise RecordingError(f"{path} is not a qslab session recording: its schema attribute is {shown!r} "
                             f"(expected {SCHEMA!r})")
    version = file.attrs.get("schema_version")
    if not isinstance(version, np.integer | int) or isinstance(version, bool):
        raise RecordingError(f"{path}: the schema_version attribute is {version!r}, expected the integer "
                             f"{SCHEMA_VERSION}")
    if int(version) != SCHEMA_VERSION:
        advice = "update qslab to read it" if int(version) > SCHEMA_VERSION else "it predates this format"
        raise RecordingError(f"{path} is a {SCHEMA!r} recording of schema_version {int(version)}; this qslab "
                             f"reads schema_version {SCHEMA_VERSION} ({advice})")
    for name in ("created_utc", "qslab_version", "git_revision"):
        if _attribute_text(file.attrs.get(name)) is None:
            raise RecordingError(f"{path} has no text attribute {name!r} at the root (schema {SCHEMA} "
                                 f"version {SCHEMA_VERSION})")


def _node(file: h5py.File, name: str, path: Path) -> h5py.HLObject | None:
    """The object at ``name``, None if absent; a damaged one is an error (h5py reports both as KeyError)."""
    try:
        return file[name]
    except KeyError as error:
        if "doesn't exist" in str(error) or "component not found" in str(error):
            return None
        raise RecordingError(f"{path} has a damaged /{name} ({_first_line(error)})") from None


def _dataset(file: h5py.File, name: str, path: Path) -> h5py.Dataset:
    node = _node(file, name, path)
    if not isinstance(node, h5py.Dataset):
        found = "is missing" if node is None else f"has a {type(node).__name__} where a dataset belongs"
        raise RecordingError(f"{path} {found}: /{name} (schema {SCHEMA} version {SCHEMA_VERSION}, docs/RECORDING.md)")
    return node


def _check_structure(file: h5py.File, path: Path) -> tuple[LayerShape, ...]:
    """Layers from /layers, then every dataset present with the schema's dtype and row shape."""
    layers = _layer_shapes(file, path)
    for name, (dtype, row_shape) in _dataset_paths(layers).items():
        dataset = _dataset(file, name, path)
        if dataset.dtype != dtype:
            raise RecordingError(f"{path}: /{name} has dtype {dataset.dtype}, expected {dtype}")
        if dataset.ndim != 1 + len(row_shape) or dataset.shape[1:] != row_shape:
            expected = "(n,)" if not row_shape else f"(n, {', '.join(map(str, row_shape))})"
            raise RecordingError(f"{path}: /{name} has shape {dataset.shape}, expected {expected}")
        if dataset.maxshape[0] is not None:
            raise RecordingError(f"{path}: /{name} is not extendable along axis 0 (maxshape {dataset.maxshape})")
    for name, kind, size in (("status", "ascii", STATUS_BYTES), ("status_detail", "utf-8", DETAIL_BYTES)):
        dataset = _dataset(file, name, path)
        info = h5py.check_string_dtype(dataset.dtype)
        if dataset.shape != () or info is None or info.length != size:
            raise RecordingError(f"{path}: /{name} must be a scalar fixed-length string of {size} bytes, "
                                 f"got shape {dataset.shape} dtype {dataset.dtype}")
    for name in META_NAMES:
        dataset = _dataset(file, f"meta/{name}", path)
        if dataset.shape != () or h5py.check_string_dtype(dataset.dtype) is None:
            raise RecordingError(f"{path}: /meta/{name} must be a scalar UTF-8 string, got shape {dataset.shape} "
                                 f"dtype {dataset.dtype}")
    return layers


def _layer_shapes(file: h5py.File, path: Path) -> tuple[LayerShape, ...]:
    group = _node(file, "layers", path)
    if not isinstance(group, h5py.Group) or len(group) == 0:
        raise RecordingError(f"{path} has no layers: /layers must hold groups 0 .. L-1 (schema {SCHEMA})")
    names = sorted(group, key=lambda name: (len(name), name))
    if names != [str(k) for k in range(len(names))]:
        raise RecordingError(f"{path}: /layers holds {names}, expected groups named 0 .. {len(names) - 1}")
    shapes = []
    for name in names:
        attrs = group[name].attrs
        try:
            shapes.append(LayerShape(int(attrs["rows"]), int(attrs["modes"])))
        except (KeyError, TypeError, ValueError) as error:
            raise RecordingError(f"{path}: /layers/{name} needs integer attributes rows >= 1 and modes >= 1 "
                                 f"({_first_line(error)})") from None
    return tuple(shapes)


def _read_meta(file: h5py.File, path: Path) -> dict[str, str]:
    texts = {}
    for name in META_NAMES:
        data = bytes(file[f"meta/{name}"][()])
        try:
            texts[name] = data.decode("utf-8")
            if name.endswith("_json"):
                json.loads(texts[name])
            else:
                tomllib.loads(texts[name])
        except (UnicodeDecodeError, ValueError) as error:
            kind = "JSON" if name.endswith("_json") else "TOML"
            raise RecordingError(f"{path}: /meta/{name} is not valid UTF-8 {kind} ({_first_line(error)})") from None
    return texts


def _images_in(table: np.ndarray) -> int:
    return int(table["first_image"][-1] + table["image_count"][-1]) if len(table) else 0


def _committed_table(file: h5py.File, layers: tuple[LayerShape, ...], path: Path) -> np.ndarray:
    """The leading /batches rows whose batch number equals their position, checked for consistency."""
    table = file["batches"][()]
    committed = table["batch"] == np.arange(len(table))
    table = table[:len(table) if committed.all() else int(np.argmin(committed))]
    if not len(table):
        return table
    counts = table["image_count"]
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if np.any(counts < 1) or np.any(table["first_image"] != firsts):
        raise RecordingError(f"{path}: /batches first_image/image_count are inconsistent (each batch must start "
                             f"where the previous ended, with >= 1 image)")
    if not np.all(np.isfinite(table["time_unix_s"])):
        raise RecordingError(f"{path}: /batches time_unix_s holds non-finite time stamps")
    for kind in _OFFSET_KINDS:
        starts, stops = table[f"{kind}_start"], table[f"{kind}_stop"]
        expected_starts = np.vstack([np.zeros((1, len(layers)), np.int64), stops[:-1]])
        if np.any(starts != expected_starts) or np.any(stops < starts):
            raise RecordingError(f"{path}: /batches {kind}_start/{kind}_stop are not contiguous per layer")
    verified = table["row_stop"] - table["row_start"]
    modes = np.array([layer.modes for layer in layers])
    expected = {"measure_p": counts[:, None] * verified, "sample": counts[:, None] * verified * modes}
    for kind, sizes in expected.items():
        if np.any(table[f"{kind}_stop"] - table[f"{kind}_start"] != sizes):
            raise RecordingError(f"{path}: /batches {kind} offsets disagree with image_count x verified rows"
                                 f"{' x modes' if kind == 'sample' else ''}")
    _check_lengths(file, layers, table, path)
    return table


def _check_lengths(file: h5py.File, layers: tuple[LayerShape, ...], table: np.ndarray, path: Path) -> None:
    """Every array at least as long as the committed batches need (longer tails are an interrupted batch)."""
    images = _images_in(table)
    needed = {f"images/{name}": images for name in _IMAGE_COLUMNS}
    for k in range(len(layers)):
        needed[f"layers/{k}/client_quadratures_snu"] = images
        for name, (_, kind) in _VERIFICATION_COLUMNS.items():
            needed[f"layers/{k}/verification/{name}"] = int(table[f"{kind}_stop"][-1, k])
    for name, length in needed.items():
        if file[name].shape[0] < length:
            raise RecordingError(f"{path}: /{name} has {file[name].shape[0]} rows but the batches table commits "
                                 f"{length}")


def _status_text(dataset: h5py.Dataset, path: Path) -> str:
    status = bytes(dataset[()]).decode("ascii", errors="replace")
    if status not in STATUSES:
        raise RecordingError(f"{path}: /status is {status!r}, expected one of {list(STATUSES)}")
    return status


def _check_values(session: SessionFile) -> None:
    """Read every committed value once (a corrupt chunk fails its checksum here) and check the index ranges."""
    session.status  # noqa: B018
    session.detail  # noqa: B018
    session.images  # noqa: B018
    for k, layer in enumerate(session.layers):
        session.client_quadratures_snu(k)
        verification = session.verification(k)
        for batch, rows in enumerate(verification.rows):
            if len(rows) and (rows.min() < 0 or rows.max() >= layer.rows or len(np.unique(rows)) != len(rows)):
                raise RecordingError(f"{session.path}: /layers/{k}/verification/rows of batch {batch} are not "
                                     f"distinct rows in [0, {layer.rows})")
        stop = int(session.batch_table["measure_p_stop"][-1, k]) if session.batches_written else 0
        if np.any(session._read(f"layers/{k}/verification/measure_p", slice(0, stop)) > 1):
            raise RecordingError(f"{session.path}: /layers/{k}/verification/measure_p holds values other than 0/1")
