"""A bench session works out the client's layer-1 codes of each next batch while it captures this one (run_layers'
next_data, AwgTimeBinProcessor.prepare_batch): every batch but the first uploads codes so prepared (this batch's
layer 2 upload, in between, leaves them), and the session records what one without the preparation records, value
for value."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qslab.analysis.recording.reader import SessionFile
from qslab.calibration.records import RecordStore
from qslab.instruments.optical.time_bin_processor import AwgTimeBinProcessor
from qslab.sequences.config import load_config
from qslab.sequences.protocol.acquisition import LinkAcquisition
from qslab.sequences.session import SessionSettings, run_session

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=10, mu=6.0, gain=1.3, seed=3, batch_images=2, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0)


def recorded(path: Path) -> list[np.ndarray]:
    with SessionFile.open(path) as session:
        return [getattr(session.layer_batch(batch, layer), name) for batch in range(session.batches_written)
                for layer in range(len(session.layers))
                for name in ("client_quadratures_snu", "sent_snu", "returned_snu")]


def test_each_next_batch_uploads_codes_worked_out_ahead_and_records_the_same(calibrated_store_at, tmp_path,
                                                                            monkeypatch):
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    prepared, taken, calls = [], [], []
    original_prepare, original_codes = AwgTimeBinProcessor.prepare_batch, AwgTimeBinProcessor._codes_for

    def prepare(self, x_hat):
        prepared.append(x_hat.shape)
        calls.append("prepare")
        return original_prepare(self, x_hat)

    def codes_for(self, x_hat):
        taken.append(self._prepared is not None and np.array_equal(self._prepared[0], x_hat))
        if calls:  # (the set-up's uploads before the first batch: not)
            calls.append("load")
        return original_codes(self, x_hat)

    monkeypatch.setattr(AwgTimeBinProcessor, "prepare_batch", prepare)
    monkeypatch.setattr(AwgTimeBinProcessor, "_codes_for", codes_for)
    ahead = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "ahead", store=store, progress=False)
    assert prepared == [(2, 392)] * 4  # batches 2-5, each prepared during the batch before
    assert taken.count(True) == 4  # and each one's layer-1 upload took them
    # each next batch's codes are worked out as a batch starts, before its layer 2 upload (on the same worker), not
    # during its check: batch 1 loads both its layers, each check the next batch's layer 1, each batch its layer 2
    assert calls == ["prepare", "load", "load"] + ["load", "prepare", "load"] * 3 + ["load", "load"]
    monkeypatch.setattr(LinkAcquisition, "prepare_first_layer", lambda self, data: None)
    plain = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "plain", store=store, progress=False)
    assert len(prepared) == 4 and taken.count(True) == 4  # nothing prepared this time
    for a, b in zip(recorded(Path(ahead["file"])), recorded(Path(plain["file"])), strict=True):
        np.testing.assert_array_equal(a, b)
