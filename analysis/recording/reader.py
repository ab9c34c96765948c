"""Reading a session file: SessionFile (live while a session writes it) and validate."""

from __future__ import annotations

import hashlib
import json
import tomllib
import zlib
from pathlib import Path

import h5py
import numpy as np

from qslab.analysis.recording import curious_group
from qslab.analysis.recording.lock import noted_sent
from qslab.analysis.recording.sent_blocks import SentBlocks
from qslab.analysis.recording.swmr import open_swmr_read
from qslab.analysis.recording.schema import (COMPLETE, DATA_IMAGES_SENT, DETAIL_BYTES, META_NAMES, NOISE_CRC_FIELDS,
                                             PIXELS_PER_IMAGE, READABLE_VERSIONS, SCHEMA, SCHEMA_VERSION, SENT_COUNTS,
                                             SENT_KIND, STATUS_BYTES, STATUSES, WEIGHT_IMAGES_SENT, _IMAGE_COLUMNS,
                                             Images, LayerBatch, LayerShape, LayerVerification, RecordingError,
                                             _dataset_paths, _first_line, offset_kinds, verification_columns)

# READABLE_VERSIONS: 1 (sha256_json and resumes_json optional: files written before them, and the version-1
# files that carry them), 2 (sha256_json required, so stripping the checksums is refused) and 3 (/batches carries
# the CRC-32 of each batch's noise bytes, checked with every value), 4 (the counts of images sent) and 5 (a batch's
# sent quadratures stored once when every image's are the same, with offsets and a CRC-32 of their own)
META_CHECKSUMS = "sha256_json"  # /meta attribute: {name: SHA-256 of the UTF-8 text}; a text that differs is refused
RESUMES_ATTRIBUTE = "resumes_json"  # root text attribute: one JSON object per resume, written by SessionWriter.resume


def validate(path: str | Path) -> None:
    """Check ``path`` against schema qslab.session (every READABLE_VERSIONS), reading every committed value;
    RecordingError if it fails."""
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
        self._handles: dict[str, h5py.Dataset] = {}  # datasets opened once (a path lookup costs more than a small read)

    @classmethod
    def open(cls, path: str | Path, *, check_values: bool = True) -> SessionFile:
        """Open and validate; a missing, foreign, truncated or corrupt file is one RecordingError naming it.
        ``check_values=False`` skips reading every value (the structure, /meta and /batches are still checked): for
        the session that wrote them, reading its own batches back (analysis/replay.Recorded)."""
        path = Path(path)
        file, swmr = _open_readable(path)
        session = cls(path, file, swmr)
        try:
            session._load(check_values)
        except BaseException:
            file.close()
            raise
        return session

    def _load(self, check_values: bool = True) -> None:
        with self._translated("is not a readable qslab session recording"):
            _check_schema(self._file, self.path)
            self.layers = _check_structure(self._file, self.path, self._handles)
            self._meta = _read_meta(self._file, self.path)
            self._table = _committed_table(self._file, self.layers, self.path, self._handle)
            if check_values:
                _check_values(self)
            self.results  # noqa: B018 - parses the results of a complete session

    def refresh(self) -> int:
        """Re-read a file that is being written (SWMR); returns the number of committed batches."""
        if self.swmr:
            with self._translated("could not be refreshed"):
                for dataset in self._datasets():
                    dataset.refresh()
                self._table = _committed_table(self._file, self.layers, self.path, self._handle)
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
    def run_id(self) -> str | None:
        """The session's run id (root attribute ``run_id``); None in files written before run ids existed."""
        value = self._file.attrs.get("run_id")
        return None if value is None else _attribute_text(value)

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
    def resumes(self) -> list[dict]:
        """Every resume of this session, in order (time, code version, config, station, records used); [] if none."""
        text = _attribute_text(self._file.attrs.get(RESUMES_ATTRIBUTE))
        if text is None:
            return []
        try:
            resumes = json.loads(text)
        except ValueError as error:
            raise RecordingError(f"{self.path}: its {RESUMES_ATTRIBUTE} attribute is not valid JSON "
                                 f"({_first_line(error)})") from None
        if not isinstance(resumes, list):
            raise RecordingError(f"{self.path}: its {RESUMES_ATTRIBUTE} attribute is not a JSON list")
        return resumes

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
    def weight_images_sent(self) -> tuple[int, ...] | None:
        """Per layer, the images its weights were sent to over the committed batches (every acquisition: the set-up's
        leakage nulling and batches taken again included, and what a writer sent after its last batch when it ended);
        None when the file does not count them."""
        return self._images_sent(WEIGHT_IMAGES_SENT)

    @property
    def data_images_sent(self) -> tuple[int, ...] | None:
        """Per layer, the images whose data its light carried (every take of a batch, as weight_images_sent)."""
        return self._images_sent(DATA_IMAGES_SENT)

    def _images_sent(self, field: str) -> tuple[int, ...] | None:
        """images_sent of the table, the root dataset (a writer's end) and what a live or crashed writer noted in its
        lock before light it has not recorded (lock.noted_sent)."""
        at_end = None
        if field in self._file:
            with self._translated(f"has an unreadable /{field}"):
                at_end = self._file[field][()]
        return images_sent(self._table, field, at_end, (noted_sent(self.path) or {}).get(field))

    @property
    def images(self) -> Images:
        n = self.images_written
        return Images(**{name: self._read(f"images/{name}", slice(0, n)) for name in _IMAGE_COLUMNS})

    def client_quadratures_snu(self, layer: int) -> np.ndarray:
        """[images, rows] float32: the client's homodyne outcome per committed image and row, SNU."""
        return self._read(f"layers/{self._layer(layer)}/client_quadratures_snu", slice(0, self.images_written))

    def image_chunks(self, values: int | None = None):
        """The committed images in order, a slice at a time: (Images, [client quadratures of each layer]) of about
        ``values`` numbers per array (default VALUES_PER_READ), so reading a whole file needs flat memory."""
        widest = max([PIXELS_PER_IMAGE, *(layer.rows for layer in self.layers)])
        for rows in _slices(self.images_written, widest, values):
            images = Images(**{name: self._read(f"images/{name}", rows) for name in _IMAGE_COLUMNS})
            yield images, [self._read(f"layers/{k}/client_quadratures_snu", rows) for k in range(len(self.layers))]

    def verification_chunks(self, layer: int, values: int | None = None, sent: SentBlocks | None = None):
        """One layer's committed verification samples in write order, a slice at a time: (sent_snu, returned_snu)
        float32 of at most ``values`` samples (default VALUES_PER_READ). ``sent``: the batches' repeated sent blocks
        kept from earlier reads of this file (sent_blocks.py), so each batch's sent_snu is decoded once."""
        k = self._layer(layer)
        stop = int(self._table["sample_stop"][-1, k]) if len(self._table) else 0
        for part in _slices(stop, 1, values):
            yield self._sent(k, part, sent), self._read(f"layers/{k}/verification/returned_snu", part)

    def verification(self, layer: int, samples: bool = True) -> LayerVerification:
        """One layer's verification data; ``samples=False`` leaves sent_snu/returned_snu empty (rows and
        bases only, without reading the largest arrays)."""
        k = self._layer(layer)

        def stop(kind: str) -> int:
            return int(self._table[f"{kind}_stop"][-1, k]) if len(self._table) else 0

        flat_rows = self._read(f"layers/{k}/verification/rows", slice(0, stop("row")))
        flat_p = self._read(f"layers/{k}/verification/measure_p", slice(0, stop("measure_p")))
        samples_stop = stop("sample") if samples else 0
        sent, returned = (self._sent(k, slice(0, samples_stop)),
                          self._read(f"layers/{k}/verification/returned_snu", slice(0, samples_stop)))
        rows, measure_p = [], []
        for row in self._table:
            r = flat_rows[row["row_start"][k]:row["row_stop"][k]]
            p = flat_p[row["measure_p_start"][k]:row["measure_p_stop"][k]]
            rows.append(r)
            measure_p.append(p.reshape(int(row["image_count"]), len(r)).astype(bool))
        return LayerVerification(sent, returned, rows, measure_p)

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
            sent_snu=self._sent(k, slice(int(row["sample_start"][k]), int(row["sample_stop"][k]))).reshape(
                count, len(rows), modes),
            returned_snu=part("returned_snu", "sample").reshape(count, len(rows), modes))

    # -- helpers ----------------------------------------------------------------------------------
    def _layer(self, layer: int) -> int:
        if not 0 <= layer < len(self.layers):
            raise RecordingError(f"{self.path} has {len(self.layers)} layers, no layer {layer}")
        return layer

    def _sent(self, layer: int, part: slice, blocks: SentBlocks | None = None) -> np.ndarray:
        """Samples ``part`` of the layer's sent quadratures as every image sent them (version 5 stores a batch's once
        when they repeat: expanded here); ``blocks``: kept from earlier reads of this file (sent_blocks.py)."""
        name = f"layers/{layer}/verification/sent_snu"
        if blocks is None and self.schema_version < 5:
            return self._read(name, part)
        return (SentBlocks() if blocks is None else blocks).read(self, layer, part, name)

    def _read(self, name: str, rows: slice) -> np.ndarray:
        with self._translated(f"has unreadable data in /{name}"):
            return self._handle(name)[rows]

    def _handle(self, name: str) -> h5py.Dataset:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = self._file[name]
        return handle

    @property
    def curious_server(self) -> tuple[dict, np.ndarray, np.ndarray] | None:
        """(spec, counts [images, outputs], counted rows [images]) of a curious server, or None (curious_group.py)."""
        with self._translated("has an unreadable /curious_server group"):
            return curious_group.read(self._file, self.images_written, self.path)

    @property
    def curious_spec(self) -> dict | None:
        """The curious server's spec, or None without one (no counts are read)."""
        with self._translated("has an unreadable /curious_server group"):
            return curious_group.spec(self._file, self.path)

    def curious_chunks(self, values: int | None = None):
        """A curious server's counts of the committed images in order, a slice of about ``values`` numbers at a time:
        (image index, label, counts [b, outputs], counted rows [b]); nothing without the group. Flat memory."""
        if self.curious_spec is None:
            return
        with self._translated("has an unreadable /curious_server group"):
            curious_group.check_length(self._file, self.images_written, self.path)
            outputs = self._file[curious_group.COUNTS].shape[1]
        for rows in _slices(self.images_written, outputs, values):
            yield (self._read("images/index", rows), self._read("images/label", rows),
                   self._read(curious_group.COUNTS, rows), self._read(curious_group.ROWS, rows))

    def _datasets(self) -> list[h5py.Dataset]:
        names = ["status", "status_detail", *_dataset_paths(self.layers, self.schema_version)]
        if curious_group.present(self._file):
            names += [curious_group.COUNTS, curious_group.ROWS]
        return [self._handle(name) for name in names]

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
    try:
        exists, regular = path.exists(), path.is_file()
    except (OSError, ValueError) as error:  # a name too long for the file system, an embedded NUL
        raise RecordingError(f"{_shown(path)} cannot be opened ({getattr(error, 'strerror', None) or error}; "
                             f"{expected})") from None
    if not exists:
        raise RecordingError(f"{path}: no such file ({expected})")
    if not regular:
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
        return open_swmr_read(path), True
    except Exception as error:  # noqa: BLE001
        raise RecordingError(f"{path} is open for writing and cannot be read in SWMR mode "
                             f"({_first_line(error)}; {expected})") from None


def _shown(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


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
    if int(version) not in READABLE_VERSIONS:
        advice = "update qslab to read it" if int(version) > SCHEMA_VERSION else "it predates this format"
        readable = ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" and {READABLE_VERSIONS[-1]}"
        raise RecordingError(f"{path} is a {SCHEMA!r} recording of schema_version {int(version)}; this qslab "
                             f"reads schema_version {readable} ({advice})")
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


def _check_structure(file: h5py.File, path: Path, found: dict | None = None) -> tuple[LayerShape, ...]:
    """Layers from /layers, then every dataset present with the dtype and row shape of the file's schema version."""
    layers = _layer_shapes(file, path)
    for name, (dtype, row_shape) in _dataset_paths(layers, int(file.attrs["schema_version"])).items():
        dataset = _dataset(file, name, path)
        if found is not None:  # the reader keeps the datasets it checked (SessionFile._handle)
            found[name] = dataset
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


def meta_checksums(texts: dict[str, str]) -> dict[str, str]:
    return {name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, text in texts.items()}


# (name, SHA-256) of /meta texts this process parsed: the same bytes parse the same, so a session reading its own
# file back at every checkpoint parses its config and snapshot once (the parse cost 26 ms per open), not each time
_PARSED_META: set[tuple[str, str]] = set()
_PARSED_META_KEPT = 1024


def _read_meta(file: h5py.File, path: Path) -> dict[str, str]:
    """The /meta texts, each checked against its SHA-256 in /meta's sha256_json (files written before it: none)."""
    stored = _attribute_text(file["meta"].attrs.get(META_CHECKSUMS))
    if stored is None and int(file.attrs["schema_version"]) >= 2:
        raise RecordingError(f"{path}: /meta has no {META_CHECKSUMS} attribute, which schema_version 2 and later "
                             "require (removed or damaged since): the recording cannot be trusted")
    try:
        checksums = json.loads(stored) if stored is not None else {}
    except ValueError as error:
        raise RecordingError(f"{path}: /meta's {META_CHECKSUMS} attribute is not valid JSON ({_first_line(error)})") \
            from None
    texts = {}
    for name in META_NAMES:
        data = bytes(file[f"meta/{name}"][()])
        digest = hashlib.sha256(data).hexdigest()
        try:
            texts[name] = data.decode("utf-8")
            if (name, digest) not in _PARSED_META:
                if name.endswith("_json"):
                    json.loads(texts[name])
                else:
                    tomllib.loads(texts[name])
                if len(_PARSED_META) >= _PARSED_META_KEPT:
                    _PARSED_META.clear()
                _PARSED_META.add((name, digest))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: nested thousands deep
            kind = "JSON" if name.endswith("_json") else "TOML"
            raise RecordingError(f"{path}: /meta/{name} is not valid UTF-8 {kind} ({_first_line(error)})") from None
        if stored is not None and checksums.get(name) != digest:
            raise RecordingError(f"{path}: /meta/{name} does not match its SHA-256 recorded when the file was written "
                                 f"(changed or damaged since): the recording cannot be trusted")
    return texts


def _images_in(table: np.ndarray) -> int:
    return int(table["first_image"][-1] + table["image_count"][-1]) if len(table) else 0


def images_sent(table: np.ndarray, field: str, *later) -> tuple[int, ...] | None:
    """Per layer, one of SENT_COUNTS up to the table's last batch (zeros before the first), or where larger any count
    in ``later`` (the root dataset of that name, the count when a writer last ended; what a writer noted in its lock
    before light it never recorded); a later count not given (None), -1 or of another length is passed over. None
    when the table has no such field (schema version 1-3) or its last batch was not counted (-1)."""
    if field not in (table.dtype.names or ()):
        return None
    last = table[field][-1] if len(table) else np.zeros(table.dtype[field].shape, np.int64)
    if np.any(last < 0):
        return None
    for count in later:
        count = None if count is None else np.asarray(count, np.int64)
        if count is not None and count.shape == last.shape and np.all(count >= 0):
            last = np.maximum(last, count)
    return tuple(int(n) for n in last)


def _committed_table(file: h5py.File, layers: tuple[LayerShape, ...], path: Path, open_dataset=None) -> np.ndarray:
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
    version = int(file.attrs["schema_version"])
    for kind in offset_kinds(version):
        starts, stops = table[f"{kind}_start"], table[f"{kind}_stop"]
        expected_starts = np.vstack([np.zeros((1, len(layers)), np.int64), stops[:-1]])
        if np.any(starts != expected_starts) or np.any(stops < starts):
            raise RecordingError(f"{path}: /batches {kind}_start/{kind}_stop are not contiguous per layer")
    for field in SENT_COUNTS:
        _check_images_sent(table, path, field, file.get(field))
    verified = table["row_stop"] - table["row_start"]
    modes = np.array([layer.modes for layer in layers])
    expected = {"measure_p": counts[:, None] * verified, "sample": counts[:, None] * verified * modes}
    for kind, sizes in expected.items():
        if np.any(table[f"{kind}_stop"] - table[f"{kind}_start"] != sizes):
            raise RecordingError(f"{path}: /batches {kind} offsets disagree with image_count x verified rows"
                                 f"{' x modes' if kind == 'sample' else ''}")
    if version >= 5:  # every image's sent values, or (2 images or more) one image's block of them
        stored = table[f"{SENT_KIND}_stop"] - table[f"{SENT_KIND}_start"]
        if np.any((stored != expected["sample"]) & ((counts[:, None] < 2) | (stored * counts[:, None]
                                                                              != expected["sample"]))):
            raise RecordingError(f"{path}: /batches {SENT_KIND} offsets are neither image_count x verified rows x "
                                 f"modes nor verified rows x modes")
    _check_lengths(file, layers, table, path, open_dataset, version)
    return table


def _check_images_sent(table: np.ndarray, path: Path, field: str, at_end: h5py.Dataset | None) -> None:
    """One of SENT_COUNTS, where present: -1 (not counted) from the first batch on, or counts that cover the images
    recorded with each batch and never decrease (light once sent stays counted); the root dataset of the same name
    one count per layer (int64, -1 until a writer ended)."""
    if field not in table.dtype.names:
        return
    layers = table.dtype[field].shape
    if at_end is None or not isinstance(at_end, h5py.Dataset) or at_end.shape != layers or at_end.dtype != np.int64 \
            or np.any(at_end[()] < -1):
        raise RecordingError(f"{path}: /{field} must be an int64 dataset of shape {layers} holding counts or -1")
    sent = table[field]
    counted = np.all(sent >= 0, axis=1)
    images = np.cumsum(table["image_count"])
    if np.any(counted[1:] & ~counted[:-1]) or np.any((sent < 0) & (sent != -1)) \
            or np.any(sent[counted] < images[counted, None]) or np.any(np.diff(sent[counted], axis=0) < 0):
        raise RecordingError(f"{path}: /batches {field} is inconsistent (per layer -1 from the first batch on, or "
                             f"counts of at least the images recorded that never decrease)")


def _check_lengths(file: h5py.File, layers: tuple[LayerShape, ...], table: np.ndarray, path: Path,
                   open_dataset, version: int) -> None:
    """Every array at least as long as the committed batches need (longer tails are an interrupted batch)."""
    images = _images_in(table)
    needed = {f"images/{name}": images for name in _IMAGE_COLUMNS}
    for k in range(len(layers)):
        needed[f"layers/{k}/client_quadratures_snu"] = images
        for name, (_, kind) in verification_columns(version).items():
            needed[f"layers/{k}/verification/{name}"] = int(table[f"{kind}_stop"][-1, k])
    open_dataset = open_dataset or file.__getitem__  # (name -> the dataset: a reader's handles opened once)
    for name, length in needed.items():
        rows = open_dataset(name).shape[0]
        if rows < length:
            raise RecordingError(f"{path}: /{name} has {rows} rows but the batches table commits {length}")


def _status_text(dataset: h5py.Dataset, path: Path) -> str:
    status = bytes(dataset[()]).decode("ascii", errors="replace")
    if status not in STATUSES:
        raise RecordingError(f"{path}: /status is {status!r}, expected one of {list(STATUSES)}")
    return status


def _check_values(session: SessionFile) -> None:
    """Read every committed value once (a corrupt chunk fails its checksum here, a corrupt batch of the unfiltered
    noise datasets its CRC-32 in /batches) and check what it may hold: MNIST test indices and labels, predictions
    (-1: void), finite quadratures. Read in slices of VALUES_PER_READ, so checking a 10k-image file needs no more
    memory than a small one."""
    session.status  # noqa: B018
    session.detail  # noqa: B018
    n = session.images_written
    for name, low, high, what in (("index", 0, MNIST_TEST_IMAGES - 1, "MNIST test-set indices"),
                                  ("label", 0, 9, "digit labels"), ("prediction", -1, 9, "predicted digits or -1")):
        for part in _slices(n, 1):
            values = session._read(f"images/{name}", part)
            if len(values) and (values.min() < low or values.max() > high):
                raise RecordingError(f"{session.path}: /images/{name} holds {_outside(values, low, high)}, "
                                     f"expected {what} in [{low}, {high}]")
    for part in _slices(n, PIXELS_PER_IMAGE):
        session._read("images/pixels", part)
    table = session.batch_table
    for k, layer in enumerate(session.layers):
        quadrature_crcs = _BatchCrcs(session, table, k, "client_quadratures_snu", np.cumsum(table["image_count"]))
        for part in _slices(n, layer.rows):
            quadrature_crcs.feed(_require_finite(session, f"layers/{k}/client_quadratures_snu", part))
        quadrature_crcs.finish()
        for name, (_, kind) in verification_columns(session.schema_version).items():
            if name in ("sent_snu", "returned_snu"):  # finite, and each batch's bytes against its CRC-32
                crcs = _BatchCrcs(session, table, k, f"verification/{name}", table[f"{kind}_stop"][:, k])
                for part in _slices(int(table[f"{kind}_stop"][-1, k]) if session.batches_written else 0, 1):
                    crcs.feed(_require_finite(session, f"layers/{k}/verification/{name}", part))
                crcs.finish()
        verification = session.verification(k, samples=False)
        for batch, rows in enumerate(verification.rows):
            if len(rows) and (rows.min() < 0 or rows.max() >= layer.rows or len(np.unique(rows)) != len(rows)):
                raise RecordingError(f"{session.path}: /layers/{k}/verification/rows of batch {batch} are not "
                                     f"distinct rows in [0, {layer.rows})")
        stop = int(session.batch_table["measure_p_stop"][-1, k]) if session.batches_written else 0
        if np.any(session._read(f"layers/{k}/verification/measure_p", slice(0, stop)) > 1):
            raise RecordingError(f"{session.path}: /layers/{k}/verification/measure_p holds values other than 0/1")


VALUES_PER_READ = 1 << 22  # numbers read at once when a whole dataset is checked or pooled (16 MB of float32)
MNIST_TEST_IMAGES = 10_000


def _slices(length: int, per_row: int, values: int | None = None):
    step = max(1, (VALUES_PER_READ if values is None else int(values)) // max(1, per_row))
    return [slice(start, min(start + step, length)) for start in range(0, length, step)]


def _require_finite(session: SessionFile, name: str, rows: slice) -> np.ndarray:
    values = session._read(name, rows)
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise RecordingError(f"{session.path}: /{name} holds {bad} non-finite value(s) (NaN or inf), expected finite "
                             "quadratures in SNU")
    return values


class _BatchCrcs:
    """The CRC-32 of each committed batch's bytes of layer ``k``'s noise dataset ``name``, computed from its rows fed
    in order (in any slices) and compared with the batch's /batches field (NOISE_CRC_FIELDS; version 1-2 files have
    none: nothing is checked). ``stops``: the row after each batch's last."""

    def __init__(self, session: SessionFile, table: np.ndarray, k: int, name: str, stops: np.ndarray):
        field = next(field for field, dataset in NOISE_CRC_FIELDS.items() if dataset == name)
        self.path, self.name, self.stops = session.path, f"layers/{k}/{name}", stops
        self.expected = table[field][:, k] if field in table.dtype.names else None
        self.batch, self.row, self.crc = 0, 0, 0

    def feed(self, values: np.ndarray) -> None:
        """The next rows of the dataset (starting where the previous call ended)."""
        if self.expected is None:
            return
        at = 0
        while self.batch < len(self.stops):
            end = min(len(values), at + int(self.stops[self.batch]) - self.row)
            self.crc = zlib.crc32(np.ascontiguousarray(values[at:end]), self.crc)
            self.row, at = self.row + end - at, end
            if self.row < self.stops[self.batch]:
                return  # the batch continues in the next slice
            if self.crc != int(self.expected[self.batch]):
                raise RecordingError(f"{self.path}: /{self.name} of batch {self.batch} does not match the CRC-32 its "
                                     f"/batches row recorded (changed or damaged since): the recording cannot be "
                                     f"trusted")
            self.batch, self.crc = self.batch + 1, 0

    def finish(self) -> None:
        """After the last rows: checks the batches that end there with no rows of their own."""
        self.feed(np.zeros(0, "<f4"))


def _outside(values: np.ndarray, low: int, high: int) -> str:
    bad = values[(values < low) | (values > high)]
    return f"{int(bad[0])}" + (f" and {len(bad) - 1} more value(s) out of range" if len(bad) > 1 else "")
