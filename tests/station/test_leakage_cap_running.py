"""The session's leakage-cap check on running sums (analysis/running_samples.py): at every batch of a multi-batch
session, the projected leakage and the cap decision equal those of the file-reading computation it replaced (kept
here as the independent reference), and a resumed session's sums continue from its file. One session, interrupted
after 3 of its 6 batches and resumed, serves both."""

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


@pytest.fixture(scope="module")
def checks(calibrated_store_at, tmp_path_factory) -> tuple[list, list, dict]:
    """One session of 6 batches, interrupted after its third and resumed (one run serves both tests): every cap check
    computed both ways, the session's running sums and the file-reading reference, as (images_after, new, reference):
    (the 3 before the interrupt, the 3 after the resume, the resumed session's results)."""
    directory = tmp_path_factory.mktemp("capped")
    store = RecordStore(calibrated_store_at(directory / "records"))
    original = session_module.leakage_cap_allows
    before, after, sent = [], [], []

    def both(seen):
        def check(recorded, settings, measured, shapes, images_after, running=None, images_sent_after=None):
            assert running is not None  # the session passes its running sums
            if seen is before and images_after > 6:
                raise KeyboardInterrupt("stopped for the test")
            new = original(recorded, settings, measured, shapes, images_after, running, images_sent_after)
            reference = original(recorded, settings, measured, shapes, images_after, None, images_sent_after)  # the file
            seen.append((images_after, new[1], reference[1]))
            sent.append(images_sent_after)
            return new
        return check

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session_module, "leakage_cap_allows", both(before))
        with pytest.raises(KeyboardInterrupt):
            run_session(load_config(CONFIG), SETTINGS, out_dir=directory / "out", store=store, progress=False)
        (path,) = (directory / "out").glob("session-*.h5")
        patch.setattr(session_module, "leakage_cap_allows", both(after))
        result = run_session(load_config(CONFIG), SETTINGS, out_dir=directory / "out", store=store, progress=False,
                             resume=path)
    return before, after, result, sent


def test_the_cap_decision_equals_the_file_reading_computation_at_every_batch(checks):
    before, after, result, _ = checks
    seen = before + after
    assert result["images"] == 12 and [images for images, _, _ in seen] == [2, 4, 6, 8, 10, 12]
    projected = np.array([(new, reference) for _, new, reference in seen])
    assert projected[0, 0] == projected[0, 1]  # before any batch: the unverified bound, the same code
    np.testing.assert_allclose(projected[:, 0], projected[:, 1], rtol=1e-10, atol=0.0)
    # any cap gives the same decision on both, at every batch (caps at and around each projection)
    for cap in np.concatenate([projected[:, 1] * factor for factor in (1 - 1e-6, 1.0, 1 + 1e-6)]):
        assert list(projected[:, 0] <= cap) == list(projected[:, 1] <= cap)


def test_a_resumed_capped_session_continues_its_sums_from_the_file(checks):
    """Interrupted after 3 batches, resumed: the cap check after the resume equals the file-reading one, and it counts
    every image the weights were sent to before it (the file's count) with the resume's own set-up on top."""
    before, after, result, sent = checks
    assert len(before) == 3 and result["images"] == 12 and len(after) == 3
    np.testing.assert_allclose([new for _, new, _ in after], [reference for _, _, reference in after], rtol=1e-10,
                               atol=0.0)
    # each check counts this batch once more than the last batch's count; the resume adds its set-up's passes again
    set_up = [n - 2 for n in sent[0]]
    assert all(n > 0 for n in set_up)
    assert sent[:3] == [tuple(n + images for n in set_up) for images in (2, 4, 6)]
    assert sent[3:] == [tuple(2 * n + images for n in set_up) for images in (8, 10, 12)]
    assert result["weight_images_per_layer"] == [2 * n + 12 for n in set_up]
