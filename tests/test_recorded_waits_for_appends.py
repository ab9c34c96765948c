"""A live session's Recorded reads its file back only once the background appends committed every batch it added
(Recorded.committed): a read-back right after a batch was handed over sees that batch, and gives the estimates of a
replay of the finished file (the independent route: the file alone, read after the writer closed)."""

from __future__ import annotations

import numpy as np

from test_verified_samples import random_session_batch
from qslab.analysis import recording
from qslab.analysis.replay import Recorded

SHAPES = [recording.LayerShape(40, 16), recording.LayerShape(10, 16)]
META = {"config_toml": "", "station_snapshot_json": {}, "settings_json": {"exact_leakage_images": 5},
        "provenance_json": {}, "seeds_json": {}, "calibrations_json": {}}


def _estimates(samples, layers: int) -> list:
    return [(fit.n, fit.qq, fit.qy) for fit in samples._fits[:layers]] + [samples.sizes]


def test_a_read_back_right_after_a_handed_over_batch_waits_for_its_commit(tmp_path):
    rng = np.random.default_rng(12)
    path = tmp_path / "live.h5"
    live = Recorded.empty(2, 5, path)
    waits = []
    with recording.SessionWriter.create(path, SHAPES, META, qslab_version="0", git_revision="x") as writer:
        appends = recording.BackgroundAppends(writer)

        def committed() -> None:
            appends.wait()
            waits.append(writer.batches_written)

        live.committed = committed
        for batch in range(4):
            images, labels, pixels, captures = random_session_batch(rng, SHAPES)
            appends.append_batch(np.arange(images) + 100 * batch, labels, pixels, rng.integers(0, 10, images),
                                 captures)
            live.add(labels, pixels, captures)
            live.samples()  # raised RecordingError ("holds n committed batches, the session recorded n + 1") unwaited
        appends.close()
    assert waits == [1, 2, 3, 4]
    with recording.SessionFile.open(path) as session:
        replayed = Recorded.from_file(session)
        replayed.samples_from(session)
    assert _estimates(live.samples(), 2) == _estimates(replayed.samples(), 2)
