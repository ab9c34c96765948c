"""The HDF5 recording of one lab session (schema ``qslab.session``, version 3; versions 1 and 2 are read too).

Why this shape: ``qslab replay`` must recompute every result of a session from its file alone, years
later, with plain h5py if need be, and a crash must never cost a completed batch. So the session
is written incrementally in SWMR mode (single writer, any number of live readers): every dataset
exists from the start, each batch extends them and is flushed, and a batch counts only once its
row in ``/batches`` is written, last. Readers take the batches table as the truth and ignore array
tails it does not cover (a batch interrupted half-way); ``SessionWriter.resume`` cuts those tails
off and continues. The full layout, dtypes, units and status rules are in docs/RECORDING.md.

Layout in short: root attributes ``schema, schema_version, created_utc, qslab_version,
git_revision`` and (since run ids, run_id.py) ``run_id``; ``/meta/<name>`` fixed-length UTF-8 text (config TOML, station snapshot, settings,
provenance, seeds, calibration records); ``/images/{index,label,pixels,prediction}``;
``/layers/<k>/client_quadratures_snu`` and ``/layers/<k>/verification/{sent_snu,returned_snu,
rows,measure_p}``; the compound ``/batches`` table (per batch: images and per-layer start/stop
offsets into the flat verification arrays, and since version 3 the CRC-32 of its noise quadratures); ``/status`` and ``/status_detail`` (updated in place);
``/results/results_json`` (UTF-8 JSON as uint8 bytes, empty until the session completes); the root
attribute ``resumes_json`` once the session was resumed (one JSON object per resume). While a
process writes the file, ``.NAME.writer`` next to it holds its pid and host (lock.py).

Version 2 attaches HDF5 dimension scales (``/image``, ``/batch``, ``/layers/<k>/row``, ...) to every axis
and gives each dataset ``long_name`` and ``units``, so that xarray opens the file with named dimensions;
xarray_view.py builds the analyst's Datasets (qslab.open_session) through SessionFile, the same for both.

Values are stored as written (quadratures as float32): a live analysis that must agree bit for bit
with its replay should compute from the recorded (float32-rounded) values.
"""

from qslab.analysis.recording.background import BackgroundAppends
from qslab.analysis.recording.lock import WriterLock, WriterRecord
from qslab.analysis.recording.reader import SessionFile, images_sent, validate
from qslab.analysis.recording.schema import (ABORTED, COMPLETE, DATA_IMAGES_SENT, DETAIL_BYTES, META_NAMES,
                                             PIXELS_PER_IMAGE, RUNNING, SCHEMA, SCHEMA_VERSION, STATUS_BYTES, STATUSES,
                                             WEIGHT_IMAGES_SENT, Images, LayerBatch, LayerShape, LayerVerification,
                                             RecordingError, batches_dtype)
from qslab.analysis.recording.run_id import is_run_id, new_run_id, run_id_time
from qslab.analysis.recording.sent_blocks import SentBlocks
from qslab.analysis.recording.writer import SessionWriter

__all__ = ["ABORTED", "BackgroundAppends", "COMPLETE", "DATA_IMAGES_SENT", "WEIGHT_IMAGES_SENT", "DETAIL_BYTES", "META_NAMES", "PIXELS_PER_IMAGE", "RUNNING", "SCHEMA", "SCHEMA_VERSION",
           "STATUS_BYTES", "STATUSES", "Images", "LayerBatch", "LayerShape", "LayerVerification", "RecordingError",
           "SentBlocks", "SessionFile", "SessionWriter", "WriterLock", "WriterRecord", "batches_dtype", "is_run_id", "new_run_id", "run_id_time",
           "images_sent", "validate"]
