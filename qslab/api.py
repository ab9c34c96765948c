"""The analyst's API, re-exported by ``import qslab`` on first use (qslab/__init__.py keeps the import cheap).

    ds = qslab.open_session(path)            # xarray Dataset: image, pixel, batch, layer
    layer = qslab.open_session(path, 0)      # one layer: image, row, sample, mode (quadratures in SNU)
    cal = qslab.open_calibration(path)       # a calibration record: parameters with units, raw data
    result = qslab.replay(path, failure_probability=1e-6)   # typed ReplayResult, as `qslab replay --json`

docs/analysis_example.py walks through them on a bench session.
"""

from qslab.analysis.recording.schema import RecordingError
from qslab.analysis.recording.xarray_view import open_session
from qslab.analysis.replay_result import Change, ReplayResult, replay
from qslab.calibration.record_dataset import open_calibration
from qslab.calibration.records import RecordError

__all__ = ["Change", "RecordError", "RecordingError", "ReplayResult", "open_calibration", "open_session", "replay"]
