"""The ``qslab.session`` schema (version 5): names, dtypes, layout and the checks shared by writer and reader.

The layout in full is docs/RECORDING.md; writer.py writes it, reader.py reads and validates it. Version 2
adds what lets netCDF tools read the file as it is: HDF5 dimension scales naming every axis (image, row,
sample, ...) and ``units``/``long_name`` attributes, requires the metadata checksums and may carry a
curious server's counts. Version 3 checks the two shot-noise datasets per committed batch (a CRC-32 of the
batch's bytes in its /batches row) instead of per chunk (fletcher32). Version 4 counts the images sent. Version 5
stores a batch's sent quadratures once when every image sent the same (they are one image's block repeated: the
server plays one reference per verified row), with their own offsets and CRC-32. Every version reads the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA = "qslab.session"
SCHEMA_VERSION = 5
# 2: dimension scales and units, /meta sha256_json required (optional in 1) and the optional /curious_server
# group (curious_group.py); 3: the noise datasets unfiltered, checked by the CRC-32 fields of /batches; 4: the
# counts of images sent (SENT_COUNTS) in /batches and at the root; 5: a batch's sent quadratures stored once when
# every image's are the same, unfiltered, with offsets (sent_start/sent_stop) and a CRC-32 of their own;
# docs/RECORDING.md, Versioning
READABLE_VERSIONS = (1, 2, 3, 4, 5)
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
# verification dataset -> (dtype, name of its start/stop fields in /batches) in versions 1-4 (verification_columns)
_VERIFICATION_COLUMNS = {"sent_snu": (np.dtype("<f4"), "sample"), "returned_snu": (np.dtype("<f4"), "sample"),
                         "rows": (np.dtype("<i4"), "row"), "measure_p": (np.dtype("u1"), "measure_p")}
_OFFSET_KINDS = ("sample", "row", "measure_p")  # versions 1-4 (offset_kinds)
SENT_KIND = "sent"  # version 5: the sent quadratures' own offsets (a batch's block once, or every image's values)
_QUADRATURE_DTYPE = np.dtype("<f4")
_RESULTS_DTYPE = np.dtype("u1")
_CHUNK_BYTES = 1 << 16
# gzip level 1: the pixels, indices and bases compress as well as at level 4 (a 2400-image file 40.8 MB against 40.7)
# at a sixth less of the writer's CPU per batch (11.6 -> 9.7 ms)
_FILTERS = {"compression": "gzip", "compression_opts": 1, "shuffle": True, "fletcher32": True}
# float32 quadratures carry shot noise: their mantissas do not compress (gzip kept 82-84 % of their bytes at 16x
# the CPU of writing them plain), so they are stored plain: no filter at all, not even fletcher32. A chunk straddles
# batches, and HDF5 rewrites an unfiltered (or same-size filtered) chunk in place when the next batch fills it; a
# kill can tear that write between pages. Plain bytes of committed rows are rewritten identical, so they survive;
# under fletcher32 the torn chunk would fail its checksum and take the committed rows with it. Their integrity is
# checked per commit instead: each /batches row holds a CRC-32 of the batch's bytes (NOISE_CRC_FIELDS).
_NOISE_DATASETS = ("client_quadratures_snu", "verification/returned_snu", "verification/sent_snu")
# /batches field (version 3; the sent one version 5) -> the layer dataset whose committed bytes of that batch it checks
# (zlib.crc32)
NOISE_CRC_FIELDS = {"client_quadratures_crc32": "client_quadratures_snu",
                    "returned_snu_crc32": "verification/returned_snu",
                    "sent_snu_crc32": "verification/sent_snu"}
# /batches field (version 4): per layer, the images its weights were sent to up to and including the batch, every
# acquisition counted (the set-up's leakage nulling, batches taken again), over every process that wrote the file; -1:
# not counted by the writer (the leakage figures then count the recorded images only, and say so)
WEIGHT_IMAGES_SENT = "weight_images_sent"
# /batches field (version 4): per layer, the images whose data its light carried (layer 1: the client's images, later
# layers: their hidden vectors) up to and including the batch, every take of a batch counted (not the set-up's
# nulling, which plays no client data); -1: not counted
DATA_IMAGES_SENT = "data_images_sent"
SENT_COUNTS = (WEIGHT_IMAGES_SENT, DATA_IMAGES_SENT)
# each also a root dataset (version 4), int64 [layers]: the count when a writer ended (finished, or marked the file
# aborted), which holds light sent after its last committed batch (a batch taken again, or one that failed); -1 until


def dataset_filters(path: str) -> dict:
    """The HDF5 filters of extendable dataset ``path`` (version 5): shuffle + gzip + fletcher32; none for the noise
    (the sent quadratures included: a batch's block of them is one image's shot-noise-like values)."""
    if path.startswith("layers/") and path.endswith(_NOISE_DATASETS):
        return {}
    return _FILTERS


def offset_kinds(version: int) -> tuple[str, ...]:
    """The per-layer start/stop field pairs of /batches in schema ``version``."""
    return _OFFSET_KINDS + ((SENT_KIND,) if version >= 5 else ())


def verification_columns(version: int) -> dict[str, tuple[np.dtype, str]]:
    """Verification dataset -> (dtype, its offset kind) in schema ``version`` (from 5 the sent quadratures have
    their own)."""
    if version < 5:
        return _VERIFICATION_COLUMNS
    return {**_VERIFICATION_COLUMNS, "sent_snu": (_VERIFICATION_COLUMNS["sent_snu"][0], SENT_KIND)}


def noise_crc_fields(version: int) -> dict[str, str]:
    """NOISE_CRC_FIELDS of schema ``version`` (none before 3, the sent quadratures' from 5)."""
    if version < 3:
        return {}
    return NOISE_CRC_FIELDS if version >= 5 else {field: name for field, name in NOISE_CRC_FIELDS.items()
                                                   if not name.endswith("sent_snu")}


def stored_sent(values: np.ndarray, images: int) -> np.ndarray:
    """What version 5 stores of a batch's sent quadratures ([images x K] float32, flat): one image's K values when
    every image's are the same bit for bit (-0.0 is not 0.0) and there are 2 images or more, else all of them. A
    reader tells which from the lengths: K x images samples, K stored."""
    if images < 2 or not values.size:
        return values
    per_image = values.reshape(images, -1)
    bits = per_image.view(np.uint32)
    return per_image[0] if (bits == bits[0]).all() else values


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


def batches_dtype(layer_count: int, version: int = SCHEMA_VERSION) -> np.dtype:
    """The compound row of ``/batches``: one per committed batch, per-layer offsets as length-L fields, and (version
    3) per layer the CRC-32 of the batch's bytes of each noise dataset, (version 4) per layer the images its weights
    were sent to and the images whose data it carried, up to this batch (SENT_COUNTS), (version 5) the sent
    quadratures' own offsets and CRC-32."""
    per_layer = [(f"{kind}_{end}", "<i8", (layer_count,)) for kind in offset_kinds(version)
                 for end in ("start", "stop")]
    crcs = [(name, "<u4", (layer_count,)) for name in noise_crc_fields(version)]
    sent = [(name, "<i8", (layer_count,)) for name in SENT_COUNTS] if version >= 4 else []
    return np.dtype([("batch", "<i8"), ("first_image", "<i8"), ("image_count", "<i8"), ("time_unix_s", "<f8"),
                     *per_layer, *crcs, *sent])


# The names and units of version 2. Each axis of each dataset is attached to an HDF5 dimension scale written as
# netCDF-4 writes a "dimension but not a variable", so that xarray (engine h5netcdf) names the axes instead of
# inventing phony_dim_*. netCDF finds a dimension in a variable's group or an ancestor: the scale shared by
# /images and /layers/<k> (image) sits at the root, each layer's row count in its own group.
DIMENSION_SCALE_NAME = "This is a netCDF dimension but not a netCDF variable."
# dataset -> (long_name, units or None for labels and indices)
_IMAGE_DESCRIPTIONS = {"index": ("index of the image in the MNIST test set", None),
                       "label": ("true label of the image", None),
                       "pixels": ("raw 28 x 28 pixels, row-major (the client's private input), 0-255", "1"),
                       "prediction": ("label the secure inference predicted", None)}
_VERIFICATION_DESCRIPTIONS = {
    "sent_snu": ("the server's sent quadrature (in the quadrature it measured), per (image, verified row, mode), "
                 "flattened in that order", "SNU"),
    "returned_snu": ("the returned quadrature the server measured, per (image, verified row, mode), flattened in "
                     "that order", "SNU"),
    "rows": ("row indices the server verified, per batch, concatenated", None),
    "measure_p": ("1: the server measured P, 0: X; per (image, verified row)", None)}
_VERIFICATION_DIMENSION = {"sent_snu": "sample_mode", "returned_snu": "sample_mode", "rows": "verified_row",
                           "measure_p": "sample"}
# version 5: the sent quadratures as stored (a batch's block once, or every image's), on an axis of their own
_SENT_V5 = ("sent_value", "the server's sent quadrature (in the quadrature it measured) per (verified row, mode) of "
                          "each batch, stored once when every image of the batch sent the same, else per (image, "
                          "verified row, mode); /batches sent_start/sent_stop (docs/RECORDING.md)", "SNU")


def dimension_scales(layers, version: int = SCHEMA_VERSION) -> dict[str, int | None]:
    """Every dimension scale of version 2 on: path -> fixed length, or None for a dimension that grows per batch."""
    scales = {"image": None, "batch": None, "images/pixel": PIXELS_PER_IMAGE, "results/byte": None}
    if version >= 4:
        scales["layer"] = len(layers)
    for k, layer in enumerate(layers):
        scales[f"layers/{k}/row"] = layer.rows
        scales.update({f"layers/{k}/verification/{name}": None for name in ("sample", "sample_mode", "verified_row")})
        if version >= 5:
            scales[f"layers/{k}/verification/{_SENT_V5[0]}"] = None
    return scales


def dataset_dimensions(layers, version: int = SCHEMA_VERSION) -> dict[str, tuple[tuple[str, ...], str, str | None]]:
    """Version 2's names of every extendable dataset: path -> (paths of its axes' scales, long_name, units)."""
    names = {f"images/{name}": (("image", "images/pixel") if name == "pixels" else ("image",), *description)
             for name, description in _IMAGE_DESCRIPTIONS.items()}
    for k in range(len(layers)):
        names[f"layers/{k}/client_quadratures_snu"] = (
            ("image", f"layers/{k}/row"), "the client's homodyne outcome per (image, row)", "SNU")
        for name, description in _VERIFICATION_DESCRIPTIONS.items():
            names[f"layers/{k}/verification/{name}"] = (
                (f"layers/{k}/verification/{_VERIFICATION_DIMENSION[name]}",), *description)
        if version >= 5:
            names[f"layers/{k}/verification/sent_snu"] = ((f"layers/{k}/verification/{_SENT_V5[0]}",), *_SENT_V5[1:])
    names["batches"] = (("batch",), "one row per committed batch: images and per-layer offsets (docs/RECORDING.md)",
                        None)
    names["results/results_json"] = (("results/byte",), "UTF-8 JSON of the results, empty until complete", None)
    if version >= 4:
        names[WEIGHT_IMAGES_SENT] = (("layer",), "per layer, the images its weights were sent to when a writer last "
                                                 "ended (-1: none has yet; docs/RECORDING.md)", None)
        names[DATA_IMAGES_SENT] = (("layer",), "per layer, the images whose data its light carried when a writer last "
                                               "ended (-1: none has yet; docs/RECORDING.md)", None)
    return names


def _unfilled_row(layer_count: int) -> np.ndarray:
    """The fill value of ``/batches``: batch -1 marks a row that was allocated but never committed."""
    row = np.zeros((), batches_dtype(layer_count))
    for name in row.dtype.names:
        if name not in NOISE_CRC_FIELDS:  # unsigned: left 0
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


def _dataset_paths(layers: list[LayerShape] | tuple[LayerShape, ...], version: int = SCHEMA_VERSION
                   ) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Every extendable dataset of schema ``version``: path -> (dtype, shape of one row)."""
    paths = {f"images/{name}": spec for name, spec in _IMAGE_COLUMNS.items()}
    for k, layer in enumerate(layers):
        paths[f"layers/{k}/client_quadratures_snu"] = (_QUADRATURE_DTYPE, (layer.rows,))
        for name, (dtype, _) in _VERIFICATION_COLUMNS.items():
            paths[f"layers/{k}/verification/{name}"] = (dtype, ())
    paths["batches"] = (batches_dtype(len(layers), version), ())
    paths["results/results_json"] = (_RESULTS_DTYPE, ())
    return paths
