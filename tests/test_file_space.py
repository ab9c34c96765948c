"""No small write of a session's appends straddles a 4 KiB page of the file (recording.writer.FILE_SPACE, paged file
space), and in HDF5's default layout some do: the check can fail.

Why it matters: a SIGKILL can cut a write only between pages (the kernel copies it into the page cache page by page
and stops at a fatal signal), and HDF5 rewrites its metadata in place at every flush. A chunk-index block cut in two
left every committed label of a killed writer's file unreadable. The session is written through h5py's file-object
driver, whose writes are recorded: the same HDF5 library, calls and layout as on disk, with the writer's own
skeleton and appends."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import h5py
import numpy as np

from qslab.analysis.recording import SessionWriter, batches_dtype
from qslab.analysis.recording.schema import _meta_texts
from qslab.analysis.recording.writer import FILE_SPACE, _write_skeleton
from test_recording import LAYERS, META, long_batch_data

PAGE_BYTES = 4096
BATCHES = 8


class RecordedWrites(io.BytesIO):
    """An in-memory file noting (offset, bytes) of every write HDF5 makes to it."""

    def __init__(self):
        super().__init__()
        self.writes: list[tuple[int, int]] = []

    def write(self, data) -> int:
        self.writes.append((self.tell(), len(data)))
        return super().write(data)


def append_writes(file_space: dict) -> list[tuple[int, int]]:
    """The writes of BATCHES appends (arrays, flush, /batches row, flush) to a new session file laid out so."""
    buffer = RecordedWrites()
    file = h5py.File(buffer, "w", **file_space)
    _write_skeleton(file, tuple(LAYERS), _meta_texts(META), dt.datetime.now(dt.timezone.utc), "0.1.0", "abc123")
    file.swmr_mode = True
    file.flush()
    writer = SessionWriter(Path("in-memory.h5"), file, tuple(LAYERS), np.zeros(0, batches_dtype(len(LAYERS))))
    buffer.writes.clear()
    for batch in range(BATCHES):
        images, layers = long_batch_data(batch)
        writer.append_batch(**images, layers=layers)
    writer.close()
    return buffer.writes


def straddling(writes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The writes of at most a page that begin in one page and end in the next."""
    return [(offset, size) for offset, size in writes
            if size <= PAGE_BYTES and offset // PAGE_BYTES != (offset + size - 1) // PAGE_BYTES]


def test_no_small_write_of_the_appends_straddles_a_page():
    writes = append_writes(FILE_SPACE)
    assert len([size for _, size in writes if size <= PAGE_BYTES]) > 10 * BATCHES  # the metadata of every flush
    assert straddling(writes) == []


def test_in_the_default_layout_some_do():
    assert straddling(append_writes({"libver": "latest"}))
