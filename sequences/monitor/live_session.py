"""A session file read while it is written: only what was committed since the last look, without a lock.

Why open, read and close on every look instead of holding the file: HDF5 readers normally hold a shared
flock, and a resume refuses to replace a file someone holds open (analysis/recording/writer.py); a monitor
must never be that someone. So the file is opened with ``locking=False`` (read-only, SWMR mode only when a
writer has it open), the batches committed since the last look are read (the /batches row is written last,
so a batch counts only once complete), and it is closed again. A resume replaces the file (a new inode) and
may cut uncommitted tails: then everything is read afresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from qslab.analysis import mnist
from qslab.analysis.measured_values import MeasuredValues
from qslab.analysis.recording import COMPLETE, WEIGHT_IMAGES_SENT, LayerShape, images_sent
from qslab.analysis.recording.swmr import open_swmr_read
from qslab.analysis.recording.sent_blocks import SentBlocks
from qslab.analysis.replay import CHUNK_VALUES
from qslab.analysis.session_results import ImageTotals
from qslab.analysis.verified_samples import StreamedSamples


class SessionUnreadable(RuntimeError):
    """The file cannot be read as a session yet (being created) or at all: the message says which."""


def open_lock_free(path: Path) -> h5py.File:
    """Read-only, no file lock; SWMR mode only when HDF5 says a writer has the file open (as reader.py does).

    Within a process that has the file open already (a test writing it, a notebook), HDF5 shares that handle and
    refuses other locking flags: there the file is opened with the handle's own (it adds no lock)."""
    for swmr in (False, True):
        for locking in (False, None):
            try:
                return open_swmr_read(path, locking=locking) if swmr else h5py.File(path, "r", locking=locking)
            except Exception as error:  # noqa: BLE001 - h5py raises OSError with HDF5's message
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            if "file locking flag values don't match" not in reason:
                break
        if "already open for write" not in reason:
            break
    raise SessionUnreadable(f"{path}: {reason}")


def _text(value) -> str | None:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


@dataclass
class LiveSession:
    """What one session file has committed so far, gathered as the session gathers it (replay.Recorded's duck: what
    projected_weight_leakage reads): labels and predictions,
    image totals (analysis/session_results.ImageTotals), and the verified samples' estimates streamed from the
    file in chunks when asked (flat memory, whatever the session's length)."""

    path: Path
    run_id: str | None = None
    created_utc: str | None = None
    settings: dict = field(default_factory=dict)
    measured: MeasuredValues | None = None
    records: dict = field(default_factory=dict)
    shapes: tuple[LayerShape, ...] = ()
    status: str = "unknown"
    detail: str = ""
    results: dict | None = None
    batch_times_unix_s: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    predictions: list = field(default_factory=list)
    images: ImageTotals | None = None
    verified_rows: list = field(default_factory=list)   # per layer: rows verified per batch
    sample_stops: list = field(default_factory=list)    # per layer: verified samples committed so far
    weight_images_sent: tuple[int, ...] | None = None   # per layer, as the last batch's row holds (None: not counted)
    _committed_rows: list = field(default_factory=list)  # the /batches rows read so far, in pieces
    _samples: tuple[int, StreamedSamples] | None = None
    _inode: int | None = None

    @property
    def batches_written(self) -> int:
        return len(self.batch_times_unix_s)

    @property
    def images_written(self) -> int:
        return self.images.count if self.images is not None else 0

    def samples(self) -> StreamedSamples:
        """The verified samples' estimates over the committed batches (read once per batch count, lock-free)."""
        if self._samples is None or self._samples[0] != self.batches_written:
            self._samples = (self.batches_written, StreamedSamples(self._sample_chunks, len(self.shapes)))
        return self._samples[1]

    def _sample_chunks(self, layer: int):
        file = open_lock_free(self.path)
        try:
            returned, sent = file[f"layers/{layer}/verification/returned_snu"], SentBlocks()
            stop = self.sample_stops[layer]
            if not stop:
                return
            committed = _Committed(file, np.concatenate(self._committed_rows))
            for start in range(0, stop, CHUNK_VALUES):
                end = min(stop, start + CHUNK_VALUES)
                yield (sent.read(committed, layer, slice(start, end), f"layers/{layer}/verification/sent_snu"),
                       returned[start:end])
        finally:
            file.close()

    def poll(self) -> bool:
        """Read what was committed since the last poll; True when anything (batches, status) changed."""
        inode = os.stat(self.path).st_ino
        if inode != self._inode:  # new, or replaced by a resume: read it all afresh
            self._reset()
            self._inode = inode
        file = open_lock_free(self.path)
        try:
            if self.images is None:
                self._read_meta(file)
            before = (self.batches_written, self.status)
            self.status = (_text(file["status"][()]) or "unknown").strip("\x00")
            self.detail = bytes(file["status_detail"][()]).decode("utf-8", errors="replace").strip("\x00")
            self._read_batches(file)
            if self.status == COMPLETE and self.results is None:
                data = file["results/results_json"][()]
                self.results = json.loads(data.tobytes().decode("utf-8")) if len(data) else None
        except (KeyError, ValueError, OSError) as error:  # a file still being created, or not a session
            raise SessionUnreadable(f"{self.path}: not readable as a session yet ({type(error).__name__}: "
                                    f"{str(error).splitlines()[0] if str(error) else ''})") from None
        finally:
            file.close()
        return (self.batches_written, self.status) != before

    def _reset(self) -> None:
        fresh = LiveSession(self.path)
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def _read_meta(self, file: h5py.File) -> None:
        layers = file["layers"]
        self.shapes = tuple(LayerShape(int(layers[str(k)].attrs["rows"]), int(layers[str(k)].attrs["modes"]))
                            for k in range(len(layers)))
        self.run_id = _text(file.attrs.get("run_id"))
        self.created_utc = _text(file.attrs.get("created_utc"))
        self.settings = json.loads(bytes(file["meta/settings_json"][()]).decode("utf-8"))
        calibrations = json.loads(bytes(file["meta/calibrations_json"][()]).decode("utf-8"))
        self.records = calibrations.get("records") or {}
        self.measured = MeasuredValues.from_json(calibrations["measured"])
        self.images = ImageTotals(0)
        self.verified_rows = [[] for _ in self.shapes]
        self.sample_stops = [0 for _ in self.shapes]

    def _read_batches(self, file: h5py.File) -> None:
        """Append the batches committed since the last look (a row whose batch number is its position)."""
        table = file["batches"][self.batches_written:]  # a fresh open sees the current extent: no refresh()
        committed = table["batch"] == np.arange(self.batches_written, self.batches_written + len(table))
        table = table[:len(table) if committed.all() else int(np.argmin(committed))]
        for row in table:
            self._read_batch(file, row)
        self._committed_rows.append(table)

    def _read_batch(self, file: h5py.File, row) -> None:
        first, count = int(row["first_image"]), int(row["image_count"])
        images = slice(first, first + count)

        def read(name: str, where: slice) -> np.ndarray:
            return file[name][where]

        labels = read("images/label", images)
        quadratures = [read(f"layers/{k}/client_quadratures_snu", images) for k in (0, len(self.shapes) - 1)]
        self.images.add(labels, quadratures[0], quadratures[-1], mnist.preprocess(read("images/pixels", images)))
        self.labels.append(labels)
        self.predictions.append(read("images/prediction", images))
        for k in range(len(self.shapes)):
            self.sample_stops[k] = int(row["sample_stop"][k])
            self.verified_rows[k].append(int(row["row_stop"][k] - row["row_start"][k]))
        self.batch_times_unix_s.append(float(row["time_unix_s"]))
        self.weight_images_sent = images_sent(row[np.newaxis], WEIGHT_IMAGES_SENT)


class _Committed:
    """What SentBlocks reads a session's sent quadratures through: the committed /batches rows and the open file
    (version 5 stores a batch's once when every image sent the same)."""

    def __init__(self, file: h5py.File, table: np.ndarray):
        self._file, self._table = file, table

    def _read(self, name: str, part: slice) -> np.ndarray:
        return self._file[name][part]


def newest_session(directory: Path) -> Path | None:
    """The newest ``session-<run id>.h5`` of ``directory`` (run ids sort by start time; then by mtime)."""
    try:
        files = [p for p in Path(directory).glob("session-*.h5") if p.is_file()]
    except OSError:
        return None
    if not files:
        return None
    return max(files, key=lambda p: (p.stem, p.stat().st_mtime))
