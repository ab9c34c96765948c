"""The server's test at a session's checkpoints (after batches 1, 2, 4, ...) takes its estimate from the running sums
(analysis/running_samples.py), not from the file read back: at every checkpoint of a bench session it equals the
file-reading route's test on the same batches, read from the finished file afterwards (the independent reference)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qslab.analysis.recording.reader import SessionFile
from qslab.analysis.verified_samples import StreamedSamples
from qslab.calibration.records import RecordStore
from qslab.sequences import session as session_module
from qslab.sequences.config import load_config
from qslab.sequences.session import SessionSettings, run_session

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=10, mu=6.0, gain=1.3, seed=7, batch_images=2, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0)
COMPARED = ("transmittance_hat", "excess_noise_hat_snu", "amplitude_threshold", "variance_threshold_snu")


def file_route(path: Path, batches: int, measured, modes: int, false_alarm: float) -> dict:
    """The test on the first ``batches`` batches of the file, each layer's samples read back flat (as a file reader
    sees them: no batch structure), summed by StreamedSamples."""
    with SessionFile.open(path) as session:
        layers = len(session.layers)
        parts = [[session.layer_batch(batch, layer) for batch in range(batches)] for layer in range(layers)]
    samples = StreamedSamples(lambda layer: [(p.sent_snu.ravel(), p.returned_snu.ravel()) for p in parts[layer]],
                              layers)
    return session_module.verify_layers(samples, measured, modes, failure_probability=SETTINGS.failure_probability,
                                        false_alarm=false_alarm)


def test_every_checkpoint_equals_the_file_reading_test(calibrated_store_at, tmp_path, monkeypatch):
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    original, seen = session_module.verify_layers, []

    def recorded_test(samples, measured, modes, **kwargs):
        checked = original(samples, measured, modes, **kwargs)
        seen.append((measured, modes, kwargs["false_alarm"], checked))
        return checked

    monkeypatch.setattr(session_module, "verify_layers", recorded_test)
    result = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "out", store=store, progress=False)
    assert result["images"] == 10
    checkpoints = [batches for batches in range(1, 6) if session_module.is_checkpoint(batches)]
    assert checkpoints == [1, 2, 4] and len(seen) == 3
    for batches, (measured, modes, false_alarm, checked) in zip(checkpoints, seen):
        assert false_alarm == pytest.approx(SETTINGS.false_alarm / 3)  # 5 batches: three checkpoints share it
        reference = file_route(Path(result["file"]), batches, measured, modes, false_alarm)
        assert checked is not None and checked["accepted"] == reference["accepted"]
        for key in COMPARED:
            assert checked[key] == pytest.approx(reference[key], rel=1e-10), key
