"""The optional ``/curious_server`` group (schema version 2): a curious server's photon counts, per image.

Present only in sessions run with a curious server (`qslab session --curious-server KIND`). It is created
with the file (SWMR allows no new objects later) and extended with each batch before the batch's
``/batches`` row, like every other per-image array, so the commit rule covers it: only the first
``images_written`` rows are data. Layout (docs/RECORDING.md):

    /curious_server/            attribute spec_json (the server's measurement, training data, seeds, residual)
    /curious_server/counts          int32 [n, outputs]: photons counted per output, summed over the counted rows
    /curious_server/counted_rows    int32 [n]: rows of layer 1 counted for that image (the unverified ones)
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from qslab.analysis.recording.schema import _CHUNK_BYTES, _FILTERS, RecordingError

GROUP = "curious_server"
COUNTS = f"{GROUP}/counts"
ROWS = f"{GROUP}/counted_rows"
SPEC_ATTRIBUTE = "spec_json"
_COUNT_DTYPE = np.dtype("<i4")


def create(file: h5py.File, outputs: int, spec: dict) -> None:
    """The empty group: counts over `outputs` outputs, and the spec as fixed-length UTF-8 text."""
    outputs = int(outputs)
    if outputs < 1:
        raise RecordingError(f"curious server outputs {outputs}: expected >= 1")
    group = file.create_group(GROUP)
    data = json.dumps(spec, sort_keys=True).encode("utf-8")
    group.attrs.create(SPEC_ATTRIBUTE, np.array(data, dtype=f"S{max(1, len(data))}"),
                       dtype=h5py.string_dtype("utf-8", max(1, len(data))))
    for path, shape in ((COUNTS, (outputs,)), (ROWS, ())):
        row_bytes = _COUNT_DTYPE.itemsize * int(np.prod(shape, dtype=np.int64))
        file.create_dataset(path, shape=(0, *shape), maxshape=(None, *shape), dtype=_COUNT_DTYPE,
                            chunks=(max(1, _CHUNK_BYTES // row_bytes), *shape), **_FILTERS)


def present(file: h5py.File) -> bool:
    return GROUP in file


def checked(file: h5py.File, counts, counted_rows, images: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The batch's counts [images, outputs] and counted rows [images] as stored; RecordingError naming what is off."""
    outputs = file[COUNTS].shape[1]
    counts = np.asarray(counts)
    rows = np.broadcast_to(np.asarray(counted_rows), (images,)) if np.ndim(counted_rows) == 0 else np.asarray(counted_rows)
    if counts.shape != (images, outputs) or rows.shape != (images,):
        raise RecordingError(f"{where}: curious-server counts of shape {counts.shape} and counted rows {rows.shape}; "
                             f"expected ({images}, {outputs}) and ({images},)")
    for name, values in (("counts", counts), ("counted rows", rows)):
        if not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() > np.iinfo(_COUNT_DTYPE).max:
            raise RecordingError(f"{where}: curious-server {name} must be integers in [0, 2^31)")
    return counts.astype(_COUNT_DTYPE), rows.astype(_COUNT_DTYPE)


def write(file: h5py.File, start: int, counts: np.ndarray, rows: np.ndarray) -> None:
    for path, values in ((COUNTS, counts), (ROWS, rows)):
        file[path].resize(start + len(values), axis=0)
        file[path][start:start + len(values)] = values


def truncate(file: h5py.File, images: int) -> None:
    if present(file):
        for path in (COUNTS, ROWS):
            file[path].resize(images, axis=0)


def read(file: h5py.File, images: int, where) -> tuple[dict, np.ndarray, np.ndarray] | None:
    """(spec, counts [images, outputs], counted rows [images]) of the committed images, or None without the group."""
    found = spec(file, where)
    if found is None:
        return None
    check_length(file, images, where)
    return found, file[COUNTS][:images], file[ROWS][:images]


def spec(file: h5py.File, where) -> dict | None:
    """The curious server's spec (its attribute only, no counts read), or None without the group."""
    if not present(file):
        return None
    raw = file[GROUP].attrs.get(SPEC_ATTRIBUTE)
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (TypeError, ValueError):
        raise RecordingError(f"{where}: /{GROUP} has no readable {SPEC_ATTRIBUTE} attribute (JSON text)") from None


def check_length(file: h5py.File, images: int, where) -> None:
    """RecordingError unless the group holds counts of at least the `images` committed images."""
    counts, rows = file[COUNTS], file[ROWS]
    if counts.shape[0] < images or rows.shape[0] < images:
        raise RecordingError(f"{where}: /{GROUP} holds counts of {min(counts.shape[0], rows.shape[0])} images, the "
                             f"committed batches {images}")
