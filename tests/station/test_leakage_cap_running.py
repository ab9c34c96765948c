"""The session's leakage-cap check on running sums (analysis/running_samples.py): at every batch of a multi-batch
session, the projected leakage and the cap decision equal those of the file-reading computation it replaced (kept
here as the independent reference), and a resumed session's sums continue from its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qslab.calibration.records import RecordStore
from qslab.sequences import session as session_module
from qslab.sequences.config import load_config
from qslab.sequences.session import SessionSettings, run_session

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=12, mu=6.0, gain=1.3, seed=5, batch_images=2, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=12,
                           max_weight_leakage_bits_per_mode=1e9)


def test_the_cap_decision_equals_the_file_reading_computation_at_every_batch(calibrated_store_at, tmp_path,
                                                                             monkeypatch):
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    original = session_module.leakage_cap_allows
    seen = []

    def both(recorded, settings, measured, shapes, images_after, running=None):
        assert running is not None  # the session passes its running sums
        new = original(recorded, settings, measured, shapes, images_after, running)
        reference = original(recorded, settings, measured, shapes, images_after, None)  # reads the file back
        seen.append((images_after, new[1], reference[1]))
        return new

    monkeypatch.setattr(session_module, "leakage_cap_allows", both)
    result = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "out", store=store, progress=False)
    assert result["images"] == 12 and len(seen) == 6
    projected = np.array([(new, reference) for _, new, reference in seen])
    assert projected[0, 0] == projected[0, 1]  # before any batch: the unverified bound, the same code
    np.testing.assert_allclose(projected[:, 0], projected[:, 1], rtol=1e-10, atol=0.0)
    # any cap gives the same decision on both, at every batch (caps at and around each projection)
    for cap in np.concatenate([projected[:, 1] * factor for factor in (1 - 1e-6, 1.0, 1 + 1e-6)]):
        assert list(projected[:, 0] <= cap) == list(projected[:, 1] <= cap)


def test_a_resumed_capped_session_continues_its_sums_from_the_file(calibrated_store_at, tmp_path, monkeypatch):
    """Interrupted after 3 batches, resumed: the cap check after the resume equals the file-reading one."""
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    original = session_module.leakage_cap_allows
    seen = []

    def stop_after_three(recorded, settings, measured, shapes, images_after, running=None):
        if images_after > 6 and not seen:
            raise KeyboardInterrupt("stopped for the test")
        return original(recorded, settings, measured, shapes, images_after, running)

    monkeypatch.setattr(session_module, "leakage_cap_allows", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "out", store=store, progress=False)
    (path,) = (tmp_path / "out").glob("session-*.h5")

    def both(recorded, settings, measured, shapes, images_after, running=None):
        new = original(recorded, settings, measured, shapes, images_after, running)
        seen.append((new[1], original(recorded, settings, measured, shapes, images_after, None)[1]))
        return new

    monkeypatch.setattr(session_module, "leakage_cap_allows", both)
    result = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "out", store=store, progress=False,
                         resume=path)
    assert result["images"] == 12 and len(seen) == 3
    np.testing.assert_allclose([new for new, _ in seen], [reference for _, reference in seen], rtol=1e-10, atol=0.0)
