"""A batch's layer 2 is set up while layer 1 is read (LinkAcquisition.run_layers): the server's gate and attenuation on
a worker as soon as layer 1 is captured, the client's upload as soon as the client's record of layer 1 is in, while
the server's is read. Every capture still runs with its own layer's data, attenuation and gate, a layer captured
again after a clipped record included."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from qslab.calibration.records import RecordStore
from qslab.instruments.optical.homodyne_receiver import DigitizerHomodyneReceiver
from qslab.instruments.optical.time_bin_processor import AwgTimeBinProcessor
from qslab.sequences import session as session_module
from qslab.sequences.config import load_config
from qslab.sequences.protocol.acquisition import LinkAcquisition
from qslab.sequences.protocol.setup import LinkSetup
from qslab.sequences.session import SessionSettings, run_session

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=10, mu=6.0, gain=1.3, seed=3, batch_images=2, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0)
CLIPPED_BATCH = 2  # (0-based) the server's record of its layer 1 reads as clipped once: that layer is captured again


def test_layer_2_is_set_up_while_layer_1_is_read_and_every_capture_runs_with_its_own_layers_settings(
        calibrated_store_at, tmp_path, monkeypatch):
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    state = {"batch": None, "segment": None, "reads": 0, "clipped": False}
    started = {"gate": threading.Event(), "upload": threading.Event()}  # layer 2's, while layer 1 is read
    gate_threads: list[tuple[int, int, str]] = []  # (batch, segment, thread)
    captures: list[tuple] = []  # (batch, segment, set dB, layer's dB, gate's segment, the processor's x_hat)
    original_batch, original_gate = session_module.run_batch, LinkSetup._load_gate
    original_upload = AwgTimeBinProcessor.load_batch
    original_capture, original_read = LinkAcquisition._capture, DigitizerHomodyneReceiver.read_record
    original_clipped = LinkAcquisition._record_clipped

    def run_batch(link, layers, pixels, seed, batch, **kwargs):
        state["batch"] = batch
        try:
            return original_batch(link, layers, pixels, seed, batch, **kwargs)
        finally:
            state["batch"] = None

    def load_gate(self, segment, *args, **kwargs):
        if state["batch"] is not None:
            gate_threads.append((state["batch"], segment, threading.current_thread().name))
            if segment == 2:
                started["gate"].set()
        return original_gate(self, segment, *args, **kwargs)

    def load_batch(self, *args, **kwargs):
        if state["segment"] == 1 and threading.current_thread().name.startswith("qslab-client-upload"):
            started["upload"].set()
        return original_upload(self, *args, **kwargs)

    def capture(self, segment, images):
        original_capture(self, segment, images)
        if state["batch"] is not None:
            bench = self.station.bench.state
            layer = next(layer for layer in self.layers if layer.segment_id == segment)
            captures.append((state["batch"], segment, bench.server_attenuator.attenuation_db, layer.attenuation_db,
                             bench.awg.channels[self.gate.channels[0]].selected_segment,
                             bench.last_capture.session.x_hat.copy()))
        state["segment"], state["reads"] = segment, 0

    def read_record(self):
        if state["batch"] is not None and state["segment"] == 1:
            # sequential set-ups would start layer 2's only after layer 1's records are read: these waits never end
            what = ("gate", "upload")[state["reads"]]
            assert started[what].wait(timeout=60), f"layer 2's {what} did not start while layer 1 was read"
            started[what].clear()
        state["reads"] += 1
        return original_read(self)

    def record_clipped(rx, record):
        if state["batch"] == CLIPPED_BATCH and rx.name == "server_receiver" and not state["clipped"]:
            state["clipped"] = True
            return True
        return original_clipped(rx, record)

    monkeypatch.setattr(session_module, "run_batch", run_batch)
    monkeypatch.setattr(LinkSetup, "_load_gate", load_gate)
    monkeypatch.setattr(AwgTimeBinProcessor, "load_batch", load_batch)
    monkeypatch.setattr(LinkAcquisition, "_capture", capture)
    monkeypatch.setattr(DigitizerHomodyneReceiver, "read_record", read_record)
    monkeypatch.setattr(LinkAcquisition, "_record_clipped", staticmethod(record_clipped))
    result = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "out", store=store, progress=False,
                         embedded_bench=True)

    batches = SETTINGS.images // SETTINGS.batch_images
    assert result["verified"] and state["clipped"]
    assert [segment for _, segment, *_ in captures] == [1, 2] * CLIPPED_BATCH + [1, 1, 2] + [1, 2] * (
        batches - CLIPPED_BATCH - 1)  # layer 1 of the clipped batch captured twice
    for batch, segment, set_db, layer_db, gate_segment, _ in captures:
        assert np.isclose(set_db, layer_db, atol=1e-3), f"batch {batch} layer {segment} ran at {set_db} dB"
        assert gate_segment == segment, f"batch {batch} layer {segment} ran with gate segment {gate_segment}"
    first, again = (x_hat for batch, segment, *_, x_hat in captures if batch == CLIPPED_BATCH and segment == 1)
    np.testing.assert_array_equal(again, first)  # the retake played layer 1's data, not layer 2's sent meanwhile
    layer_2_gates = [(batch, thread) for batch, segment, thread in gate_threads if segment == 2]
    assert {batch for batch, _ in layer_2_gates} == set(range(batches))
    assert all(thread.startswith("qslab-server-set-up") for _, thread in layer_2_gates), layer_2_gates
    # (layer 1's: batch 1's on the session's thread, the others' started in the check before them, on the same worker,
    # which on a loaded machine may still be loading when the next batch starts: test_set_ups_in_check)
