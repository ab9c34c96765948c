"""A batch's layer 2 is set up on the server's side (gate loaded, attenuation set) while layer 1's records are read
(LinkAcquisition.run_plan's ``following``): the server's AWG and the attenuator are idle then. Every capture still
runs at its own layer's attenuation and gate, a layer captured again after a clipped record included."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from qslab.calibration.records import RecordStore
from qslab.instruments.optical.homodyne_receiver import DigitizerHomodyneReceiver
from qslab.sequences import session as session_module
from qslab.sequences.config import load_config
from qslab.sequences.protocol.acquisition import LinkAcquisition
from qslab.sequences.protocol.setup import LinkSetup
from qslab.sequences.session import SessionSettings, run_session

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=10, mu=6.0, gain=1.3, seed=3, batch_images=2, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0)
CLIPPED_BATCH = 2  # (0-based) its layer 1 reads as clipped once: that layer is captured again


def test_layer_2_is_set_up_while_layer_1_is_read_and_every_capture_runs_at_its_own_layers_setting(
        calibrated_store_at, tmp_path, monkeypatch):
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    state = {"batch": None, "segment": None, "waited": False, "clipped": False}
    layer_2_gate = threading.Event()
    gate_threads: list[tuple[int, int, str]] = []  # (batch, segment, thread)
    captures: list[tuple[int, int, float, float, int]] = []  # (batch, segment, set dB, layer's dB, gate's segment)
    original_batch, original_gate = session_module.run_batch, LinkSetup._load_gate
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
                layer_2_gate.set()
        return original_gate(self, segment, *args, **kwargs)

    def capture(self, segment, images):
        original_capture(self, segment, images)
        if state["batch"] is not None:
            bench = self.station.bench.state
            layer = next(layer for layer in self.layers if layer.segment_id == segment)
            captures.append((state["batch"], segment, bench.server_attenuator.attenuation_db, layer.attenuation_db,
                             bench.awg.channels[self.gate.channels[0]].selected_segment))
            state["segment"], state["waited"] = segment, False

    def read_record(self):
        if state["batch"] is not None and state["segment"] == 1 and not state["waited"]:
            state["waited"] = True  # sequential set-up would load layer 2's gate only after these reads: never
            assert layer_2_gate.wait(timeout=60), "layer 2's gate was not loaded while layer 1's records were read"
            layer_2_gate.clear()
        return original_read(self)

    def record_clipped(rx, record):
        if state["batch"] == CLIPPED_BATCH and state["segment"] == 1 and not state["clipped"]:
            state["clipped"] = True
            return True
        return original_clipped(rx, record)

    monkeypatch.setattr(session_module, "run_batch", run_batch)
    monkeypatch.setattr(LinkSetup, "_load_gate", load_gate)
    monkeypatch.setattr(LinkAcquisition, "_capture", capture)
    monkeypatch.setattr(DigitizerHomodyneReceiver, "read_record", read_record)
    monkeypatch.setattr(LinkAcquisition, "_record_clipped", staticmethod(record_clipped))
    result = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "out", store=store, progress=False)

    batches = SETTINGS.images // SETTINGS.batch_images
    assert result["verified"] and state["clipped"]
    assert [segment for _, segment, *_ in captures] == [1, 2] * CLIPPED_BATCH + [1, 1, 2] + [1, 2] * (
        batches - CLIPPED_BATCH - 1)  # layer 1 of the clipped batch captured twice
    for batch, segment, set_db, layer_db, gate_segment in captures:
        assert np.isclose(set_db, layer_db, atol=1e-3), f"batch {batch} layer {segment} ran at {set_db} dB"
        assert gate_segment == segment, f"batch {batch} layer {segment} ran with gate segment {gate_segment}"
    on_worker = {(batch, segment) for batch, segment, thread in gate_threads
                 if thread.startswith("qslab-server-set-up")}
    assert on_worker == {(batch, 2) for batch in range(batches)}  # layer 1's own on the session's thread
