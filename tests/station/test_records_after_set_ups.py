"""A layer's server record is turned into quadratures only once the next layer's set-ups are done
(LinkAcquisition._server_records): the computation no longer takes the cores from the next layer's client upload and
capture. The batch's last layer, and a single one (run_plan), start theirs at once; every capture's arrive."""

from __future__ import annotations

import threading
from pathlib import Path

from qslab.calibration.records import RecordStore
from qslab.instruments.optical.homodyne_receiver import DigitizerHomodyneReceiver
from qslab.instruments.optical.time_bin_processor import AwgTimeBinProcessor
from qslab.sequences import session as session_module
from qslab.sequences.config import load_config
from qslab.sequences.protocol import acquisition
from qslab.sequences.protocol.acquisition import LinkAcquisition
from qslab.sequences.session import SessionSettings, run_session

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=8, mu=6.0, gain=1.3, seed=3, batch_images=2, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0)
HOLD_S = 0.5  # how long layer 2's upload gives layer 1's quadratures to start, had they been started with the read


def test_layer_1s_quadratures_start_once_layer_2s_set_ups_are_done(calibrated_store_at, tmp_path, monkeypatch):
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    state = {"batch": None, "segment": None}
    server_read, quadratures_started = threading.Event(), threading.Event()  # layer 1's, in the batch under way
    held: list[int] = []   # batches whose layer 2 upload waited for layer 1's server record to be read
    early: list[int] = []  # batches whose layer 1 quadratures started while layer 2's upload was not over
    original_batch, original_capture = session_module.run_batch, LinkAcquisition._capture
    original_read, original_upload = DigitizerHomodyneReceiver.read_record, AwgTimeBinProcessor.load_batch
    original_quadratures = acquisition._server_quadratures

    def run_batch(link, layers, pixels, seed, batch, **kwargs):
        state["batch"] = batch
        try:
            return original_batch(link, layers, pixels, seed, batch, **kwargs)
        finally:
            state["batch"] = None

    def capture(link, segment, images):
        if state["batch"] is not None and segment == 1:
            server_read.clear()
            quadratures_started.clear()
        original_capture(link, segment, images)
        state["segment"] = segment

    def read_record(rx):
        record = original_read(rx)
        if state["batch"] is not None and state["segment"] == 1 and rx.name == "server_receiver":
            server_read.set()
        return record

    def upload(processor, *args, **kwargs):
        result = original_upload(processor, *args, **kwargs)
        if state["batch"] is not None and state["segment"] == 1:  # layer 2's, started while layer 1 is read
            assert server_read.wait(timeout=60), "layer 1's server record was not read"
            held.append(state["batch"])
            if quadratures_started.wait(timeout=HOLD_S):
                early.append(state["batch"])
        return result

    def quadratures(rx, record, n_server, dc_v, shape):
        if state["segment"] == 1:
            quadratures_started.set()
        return original_quadratures(rx, record, n_server, dc_v, shape)

    monkeypatch.setattr(session_module, "run_batch", run_batch)
    monkeypatch.setattr(LinkAcquisition, "_capture", capture)
    monkeypatch.setattr(DigitizerHomodyneReceiver, "read_record", read_record)
    monkeypatch.setattr(AwgTimeBinProcessor, "load_batch", upload)
    monkeypatch.setattr(acquisition, "_server_quadratures", quadratures)
    result = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "out", store=store, progress=False)
    batches = SETTINGS.images // SETTINGS.batch_images
    assert result["verified"]  # every layer's quadratures arrived, and the server's test passed on them
    assert held == list(range(batches)) and early == []
