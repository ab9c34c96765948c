"""A session file as xarray Datasets: named dimensions, units, settings and results as attributes.

Why: an analyst wants ``ds.correct.groupby("image_batch").mean()``, not byte offsets into flat arrays.
The view is built through ``SessionFile`` (validated, committed batches only, live files in SWMR mode),
so schema version 1 (no dimension scales) and 2 give the same Datasets. The file's own dimension scales
(version 2) serve those who open it directly with ``xarray.open_dataset(path, engine="h5netcdf", group=...)``.

Layers have different widths (784 and 10 rows), so a session is two kinds of Dataset: the session's
(dimensions ``image``, ``pixel``, ``batch``, ``layer``) and one per layer (``image``, ``row``, ``sample``,
``mode``), where a sample is one (image, verified row) pair and its sent and returned quadratures run
over the layer's modes. Attributes hold only netCDF types (booleans as 0/1), so ``Dataset.to_netcdf``
works; the settings and results are flattened with dotted names and kept whole as JSON text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr
from qslab.analysis.recording.reader import SessionFile
from qslab.analysis.recording.schema import DATA_IMAGES_SENT, WEIGHT_IMAGES_SENT, RecordingError


def open_session(path: str | Path, layer: int | None = None) -> xr.Dataset:
    """The session file at ``path``: the session's Dataset, or with ``layer`` (0-based, as in the file) that layer's.

    Session: per image ``label``, ``prediction``, ``correct``, ``mnist_index``, ``pixels`` [image, pixel];
    per batch ``time_unix_s``, ``image_count``, ``verified_rows`` and ``samples`` [batch, layer], and (files of
    version 4) ``weight_images_sent`` and ``data_images_sent`` [batch, layer]; per layer
    ``rows``, ``modes``. Layer: ``client_quadratures_snu`` [image, row] and ``sent_snu``/``returned_snu``
    [sample, mode] in SNU, each sample's ``sample_image``, ``sample_row``, ``sample_batch`` and
    ``measured_quadrature`` ("X" or "P"). A missing, foreign or damaged file is one RecordingError.
    """
    with SessionFile.open(path) as session:
        return _session_dataset(session) if layer is None else _layer_dataset(session, layer)


def _image_coordinates(session: SessionFile) -> dict:
    table = session.batch_table
    batch_of_image = np.repeat(table["batch"], table["image_count"]) if len(table) else np.zeros(0, np.int64)
    return {"image": ("image", np.arange(session.images_written)),
            "image_batch": ("image", batch_of_image, {"long_name": "the batch that acquired the image"})}


def _session_dataset(session: SessionFile) -> xr.Dataset:
    images, table = session.images, session.batch_table
    layers = len(session.layers)
    verified = (table["row_stop"] - table["row_start"]) if len(table) else np.zeros((0, layers), np.int64)
    samples = (table["sample_stop"] - table["sample_start"]) if len(table) else np.zeros((0, layers), np.int64)
    data = {
        "mnist_index": ("image", images.index, {"long_name": "index of the image in the MNIST test set"}),
        "label": ("image", images.label, {"long_name": "true label of the image"}),
        "prediction": ("image", images.prediction, {"long_name": "label the secure inference predicted"}),
        "correct": ("image", images.prediction == images.label, {"long_name": "prediction equals label"}),
        "pixels": (("image", "pixel"), images.pixels,
                   {"long_name": "raw 28 x 28 pixels, row-major (the client's private input), 0-255", "units": "1"}),
        "time_unix_s": ("batch", table["time_unix_s"] if len(table) else np.zeros(0),
                        {"long_name": "when the batch was committed (unix time, UTC)", "units": "s"}),
        "image_count": ("batch", table["image_count"] if len(table) else np.zeros(0, np.int64),
                        {"long_name": "images in the batch"}),
        "verified_rows": (("batch", "layer"), verified, {"long_name": "rows the server verified in the batch"}),
        "samples": (("batch", "layer"), samples,
                    {"long_name": "verification samples (image x verified row x mode) of the batch"}),
        "rows": ("layer", [shape.rows for shape in session.layers], {"long_name": "output rows of the layer"}),
        "modes": ("layer", [shape.modes for shape in session.layers],
                  {"long_name": "complex modes per row of the layer"}),
    }
    counted = {WEIGHT_IMAGES_SENT: "images the layer's weights were sent to up to the batch, every acquisition",
               DATA_IMAGES_SENT: "images whose data the layer's light carried up to the batch, every take"}
    for field, long_name in counted.items():  # version 4 on (docs/RECORDING.md): -1 where not counted
        if field in table.dtype.names:
            data[field] = (("batch", "layer"), table[field], {"long_name": f"{long_name} (-1: not counted)"})
    coordinates = {**_image_coordinates(session), "batch": ("batch", np.arange(len(table))),
                   "layer": ("layer", np.arange(layers))}
    return xr.Dataset(data, coordinates, _attributes(session))


def _layer_dataset(session: SessionFile, layer: int) -> xr.Dataset:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < len(session.layers):
        raise RecordingError(f"{session.path} has layers 0 .. {len(session.layers) - 1}, no layer {layer!r}")
    shape = session.layers[layer]
    verification = session.verification(layer)
    table = session.batch_table
    sample_image, sample_row, sample_batch = [], [], []
    for row, rows, measured in zip(table, verification.rows, verification.measure_p):
        count = int(row["image_count"])
        sample_image.append(np.repeat(np.arange(int(row["first_image"]), int(row["first_image"]) + count), len(rows)))
        sample_row.append(np.tile(rows, count))
        sample_batch.append(np.full(count * len(rows), int(row["batch"])))
    measure_p = np.concatenate([m.ravel() for m in verification.measure_p]) if verification.measure_p else \
        np.zeros(0, bool)
    flat = {"sample_image": sample_image, "sample_row": sample_row, "sample_batch": sample_batch}
    flat = {name: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
            for name, parts in flat.items()}
    per_sample = (len(measure_p), shape.modes)
    snu = {"units": "SNU"}
    data = {
        "label": ("image", session.images.label, {"long_name": "true label of the image"}),
        "client_quadratures_snu": (("image", "row"), session.client_quadratures_snu(layer),
                                   {"long_name": "the client's homodyne outcome per (image, row)", **snu}),
        "sent_snu": (("sample", "mode"), verification.sent_snu.reshape(per_sample),
                     {"long_name": "the server's sent quadrature, in the quadrature it measured", **snu}),
        "returned_snu": (("sample", "mode"), verification.returned_snu.reshape(per_sample),
                         {"long_name": "the returned quadrature the server measured", **snu}),
    }
    coordinates = {
        **_image_coordinates(session), "row": ("row", np.arange(shape.rows)), "mode": ("mode", np.arange(shape.modes)),
        "sample": ("sample", np.arange(len(measure_p))),
        "sample_image": ("sample", flat["sample_image"], {"long_name": "the image of the sample"}),
        "sample_row": ("sample", flat["sample_row"], {"long_name": "the verified row of the sample"}),
        "sample_batch": ("sample", flat["sample_batch"], {"long_name": "the batch of the sample"}),
        "measured_quadrature": ("sample", np.where(measure_p, "P", "X").astype("<U1"),
                                {"long_name": "the quadrature the server measured (secret choice)"}),
    }
    attributes = {**_attributes(session), "layer": np.int64(layer), "rows": np.int64(shape.rows),
                  "modes": np.int64(shape.modes)}
    return xr.Dataset(data, coordinates, attributes)


def _attributes(session: SessionFile) -> dict:
    """Identity, then settings and results flattened (``settings.mu``, ``results.verification.transmittance_min``)
    and whole (``settings_json``, ``results_json``; the latter empty until the session completes)."""
    attributes = {"file": str(session.path), "run_id": session.run_id or "", "status": session.status,
                  "status_detail": session.detail, "schema_version": np.int64(session.schema_version),
                  "created_utc": session.created_utc, "qslab_version": session.qslab_version,
                  "git_revision": session.git_revision}
    settings, results = session.settings, session.results
    attributes.update(flattened_attributes("settings", settings))
    attributes.update(flattened_attributes("results", results or {}))
    attributes["settings_json"] = json.dumps(settings, sort_keys=True)
    attributes["results_json"] = json.dumps(results, sort_keys=True) if results is not None else ""
    return attributes


def flattened_attributes(prefix: str, value) -> dict:
    """Dotted names -> netCDF attribute values: numbers, text, 0/1 for booleans, arrays for lists of numbers,
    JSON text for any other list; None is left out (netCDF has no null)."""
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(flattened_attributes(f"{prefix}.{key}", item))
        return flat
    if value is None:
        return {}
    if isinstance(value, bool):
        return {prefix: np.int8(value)}
    if isinstance(value, (int, float, str)):
        return {prefix: value}
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return {prefix: np.asarray(value, dtype=float)}
    return {prefix: json.dumps(value, sort_keys=True)}
