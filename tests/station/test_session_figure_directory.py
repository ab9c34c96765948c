"""A session's figure directory is checked for emptiness only once every figure is on disk: the figure worker
writes its files after the session has queued them (calibration/figures.py), so a directory found empty and removed
before then made those figures fail, and the session with them, after its file was written."""

from __future__ import annotations

from pathlib import Path

import pytest
from station_fixtures import patient_config_file

from qslab.calibration import figures
from qslab.calibration.records import RecordStore
from qslab.sequences.config import load_config
from qslab.sequences.session import SessionSettings, run_session

SETTINGS = SessionSettings(images=2, mu=6.0, gain=1.3, seed=3, batch_images=2, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=2)


class LateDrawer:
    """A figure worker still busy when the session ends: it draws every queued figure only when background() waits
    for them on leaving (the latest a real worker can)."""

    def __init__(self):
        self.jobs = []

    def submit(self, plot, args, kwargs) -> bool:
        self.jobs.append((plot, args, kwargs))
        return True

    def collect(self) -> tuple[list[str], bool]:
        failed = []
        for plot, args, kwargs in self.jobs:
            try:
                plot(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - reported as a real worker reports it
                failed.append(f"{plot.__module__}.{plot.__name__}: {error}")
        return failed, False

    def close(self) -> None:
        self.jobs.clear()


@pytest.fixture
def late_figures(monkeypatch, figures_drawn):
    monkeypatch.setattr(figures, "_Drawer", LateDrawer)
    monkeypatch.setattr(figures, "_kept", None)  # no worker kept from an earlier test: this session makes a late one


def test_figures_drawn_after_the_session_find_its_directory(late_figures, calibrated_store_at, tmp_path):
    store = RecordStore(calibrated_store_at(tmp_path / "calibration"))
    result = run_session(load_config(patient_config_file()), SETTINGS, out_dir=tmp_path / "sessions", store=store,
                         progress=False)
    directory = Path(result["figures"])
    assert directory == Path(result["file"]).with_suffix("")
    assert sorted(path.name for path in directory.iterdir()) == ["channel-link.png", "session.png"]
