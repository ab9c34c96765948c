"""A calibration record as an xarray Dataset: fitted parameters with units and uncertainties, raw data, conditions.

Why: the analyst who refits a record or compares two wants named arrays with units, not h5py groups.
The record is read through ``read_record`` (its content hash checked), so a damaged or edited record is
one CorruptRecord. Each fitted parameter is a scalar variable named by its dotted key, with ``units``
and ``uncertainty`` (one sigma) as attributes. Raw arrays share the dimension ``sample`` along their first
axis when they have the record's most common length there (the points of a sweep); any other axis is
``<name>_axis<k>``. A raw array's unit follows from its name's suffix (``_w`` W, ``_db`` dB, ...).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import xarray as xr
from qslab.analysis.recording.xarray_view import flattened_attributes
from qslab.calibration.records import read_record

# name suffix -> unit, longest first (``_u_w``, an uncertainty in W, ends in ``_w`` too)
_UNIT_SUFFIXES = (("_v2", "V^2"), ("_snu", "SNU"), ("_rad", "rad"), ("_db", "dB"), ("_hz", "Hz"), ("_w", "W"),
                  ("_v", "V"), ("_s", "s"))


def open_calibration(path: str | Path) -> xr.Dataset:
    """The calibration record at ``path`` (one ``<kind>-<instrument>-<time>-<hash>.h5``) as a Dataset."""
    record = read_record(path)
    data = {}
    for key, estimate in record.parameters.items():
        data[key] = ((), estimate.value, {"units": estimate.unit or "1", "uncertainty": estimate.uncertainty,
                                          "long_name": f"fitted {key} (uncertainty: one sigma)"})
    lengths = Counter(np.shape(array)[0] for array in record.raw.values() if np.ndim(array) > 0)
    common = lengths.most_common(1)[0][0] if lengths else None
    for name, array in record.raw.items():
        array = np.asarray(array)
        dims = tuple("sample" if axis == 0 and array.shape[0] == common else f"{name}_axis{axis}"
                     for axis in range(array.ndim))
        attributes = {"long_name": f"raw data the fit used: {name}"}
        unit = raw_unit(name)
        if unit is not None:
            attributes["units"] = unit
        data[f"raw.{name}"] = (dims, array, attributes)
    attributes = {"file": str(record.path), "id": record.id, "kind": record.kind, "instrument": record.instrument,
                  "created_utc": record.created.isoformat(), "validity_s": record.validity_s,
                  "expires_utc": record.expires.isoformat(), "qslab_version": record.code_version.qslab_version,
                  "git_revision": record.code_version.git_revision, "figure_png": record.figure_png or "",
                  **flattened_attributes("conditions", record.conditions),
                  **flattened_attributes("instruments", record.instruments)}
    return xr.Dataset(data, attrs=attributes)


def raw_unit(name: str) -> str | None:
    """The unit a raw array's name ends in (``monitor_u_w`` -> W), None when it names none."""
    for suffix, unit in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return None
