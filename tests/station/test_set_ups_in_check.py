"""The check after a batch reads every instrument back at once, each on a thread of its own, and sets the next batch's
layer 1 up meanwhile (BatchGuard._examine): the client's upload once the client's AWG has read back
(SecureLink.start_next_upload), the server's gate and attenuation once the server's AWG, attenuator and meter have, and
the light (start_next_server_set_up). A batch whose check then finds a fault ends what it started before the check
reads the vacuum (it stops the AWGs) and before the cure, and is taken again with its own data."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from qslab.analysis.recording.reader import SessionFile
from qslab.calibration.records import RecordStore
from qslab.instruments.optical.time_bin_processor import AwgTimeBinProcessor
from qslab.sequences.config import load_config
from qslab.sequences.protocol.acquisition import LinkAcquisition
from qslab.sequences.protocol.health import LinkHealth
from qslab.sequences.protocol.setup import LinkSetup
from qslab.sequences.session import SessionSettings, run_session
from qslab.sequences import session_guard
from qslab.sequences.session_guard import BatchGuard

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=10, mu=6.0, gain=1.3, seed=3, batch_images=2, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0)
BATCHES = SETTINGS.images // SETTINGS.batch_images
SERVER = ("awg", "attenuator", "power_meter")  # what the server's set-up and the light reading talk to
OTHERS = ("laser", "bias_carver", "bias_iq", "amplifier", "digitizer")  # the station's order of the rest


def recorded(path: Path) -> list[np.ndarray]:
    with SessionFile.open(path) as session:
        return [getattr(session.layer_batch(batch, layer), name) for batch in range(session.batches_written)
                for layer in range(len(session.layers))
                for name in ("client_quadratures_snu", "sent_snu", "returned_snu")]


class Watch:
    """The session's batch, the check under way and what it did, in order (patched into the session's classes); a
    read-back's event is its end, on the thread that read it (``readers``).

    While ``expect_set_ups``, each check but the last waits for the next batch's upload to be under way before it
    reads the light, and for the next batch's gate to be loading before it ends: set-ups made at the next batch's start
    instead never end those waits."""

    def __init__(self, monkeypatch):
        self.batch: int | None = None
        self.checking = self.light_seen = False
        self.expect_set_ups = True
        self.events: list[tuple[int, str]] = []  # (batch, "read <instrument>", "next upload", "upload", "light"...)
        self.readers: dict[str, set[str]] = {}  # instrument -> the threads that read it back in checks
        self.uploads = 0
        self.upload_started, self.gate_started = threading.Event(), threading.Event()
        self.before_read: dict[str, object] = {}  # instrument -> a callable run before its read-back in a check
        self.after_read: dict[str, object] = {}  # ... and after it
        names: dict[int, str] = {}
        original_take, original_watch = BatchGuard.take, BatchGuard._watch
        original_check, original_upload = BatchGuard._check_and_cure, AwgTimeBinProcessor.load_batch
        original_light, original_capture = LinkHealth.read_light, LinkAcquisition._capture
        original_start, original_server = LinkAcquisition.start_next_upload, LinkAcquisition.start_next_server_set_up
        original_gate, original_ahead = LinkSetup._load_gate, LinkAcquisition._start_server_ahead
        original_evidence = session_guard.settings_evidence

        def expecting() -> bool:
            return self.expect_set_ups and self.checking and self.batch < BATCHES - 1

        def take(guard, batch, *args, **kwargs):
            self.batch = batch
            return original_take(guard, batch, *args, **kwargs)

        def check(guard):
            self.checking, self.light_seen = True, False
            try:
                found = original_check(guard)
                if expecting() and (self.batch, "server set-up started") in self.events:
                    assert self.gate_started.wait(timeout=60), f"batch {self.batch + 2}'s server set-up not under way"
                return found
            finally:
                self.checking = False

        def watch(guard, name):
            settings = original_watch(guard, name)
            names[id(settings)] = name
            return settings

        def evidence(settings):
            name, batch = names.get(id(settings), "?"), self.batch
            if self.checking and name in self.before_read:
                self.before_read[name]()
            found = original_evidence(settings)
            if self.checking:
                self.events.append((batch, f"read {name}"))
                self.readers.setdefault(name, set()).add(threading.current_thread().name)
                if name in self.after_read:
                    self.after_read[name]()
            return found

        def start_next_upload(link):
            self.events.append((self.batch, "next upload"))
            return original_start(link)

        def start_next_server_set_up(link):
            self.events.append((self.batch, "next server set-up"))
            return original_server(link)

        def start_server_ahead(link, plan):
            if self.checking:
                self.events.append((self.batch, "server set-up started"))
            return original_ahead(link, plan)

        def upload(processor, *args, **kwargs):
            self.uploads += self.batch is not None  # (the set-up's pilots and nulling before the batches: not)
            if self.checking:
                self.events.append((self.batch, "upload"))
                self.upload_started.set()
            return original_upload(processor, *args, **kwargs)

        def load_gate(link, segment, *args, **kwargs):
            worker = threading.current_thread().name.startswith("qslab-server-set-up")
            if self.checking:
                self.events.append((self.batch, f"gate {segment} on {'its worker' if worker else 'the check'}"))
                self.gate_started.set()
            elif self.batch is not None:
                self.events.append((self.batch, f"batch's gate {segment}"))
            return original_gate(link, segment, *args, **kwargs)

        def light(link, *args, **kwargs):
            if self.checking and not self.light_seen:
                if expecting():
                    assert self.upload_started.wait(timeout=60), f"batch {self.batch + 2}'s upload not under way"
                    self.upload_started.clear()
                self.events.append((self.batch, "light"))
                self.light_seen = True
            return original_light(link, *args, **kwargs)

        def capture(link, segment, images):
            self.gate_started.clear()
            self.events.append((self.batch, f"capture {segment}"))
            return original_capture(link, segment, images)

        monkeypatch.setattr(BatchGuard, "take", take)
        monkeypatch.setattr(BatchGuard, "_check_and_cure", check)
        monkeypatch.setattr(BatchGuard, "_watch", watch)
        monkeypatch.setattr(session_guard, "settings_evidence", evidence)
        monkeypatch.setattr(AwgTimeBinProcessor, "load_batch", upload)
        monkeypatch.setattr(LinkSetup, "_load_gate", load_gate)
        monkeypatch.setattr(LinkHealth, "read_light", light)
        monkeypatch.setattr(LinkAcquisition, "_capture", capture)
        monkeypatch.setattr(LinkAcquisition, "start_next_upload", start_next_upload)
        monkeypatch.setattr(LinkAcquisition, "start_next_server_set_up", start_next_server_set_up)
        monkeypatch.setattr(LinkAcquisition, "_start_server_ahead", start_server_ahead)


def test_the_next_batch_is_set_up_during_the_check_each_party_once_its_instruments_are_read_back(
        calibrated_store_at, tmp_path, monkeypatch):
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    watch = Watch(monkeypatch)
    result = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "ahead", store=store, progress=False)
    assert result["verified"]
    assert watch.uploads == 2 * BATCHES  # each layer's data once: the batch's layer 1 took the upload the check sent
    for batch in range(BATCHES - 1):
        check = [event for b, event in watch.events if b == batch and not event.startswith("capture")]
        steps = [event for event in check if event.startswith(("read", "next", "light"))]  # (not the workers')
        reads = sorted(step for step in steps if step.startswith("read"))
        assert reads == sorted(f"read {name}" for name in ("client_awg", *SERVER, *OTHERS)), check  # each once
        assert steps.index("read client_awg") < steps.index("next upload") < steps.index("light"), check
        assert max(steps.index(f"read {name}") for name in SERVER) < steps.index("light"), check
        assert steps.index("light") < steps.index("next server set-up"), check
        assert "upload" in check and "gate 1 on its worker" in check, check  # on their workers, meanwhile
    assert watch.readers == {name: {f"qslab-read-back-{name}_0"} for name in ("client_awg", *SERVER, *OTHERS)}
    layer_1_gates = [batch for batch, event in watch.events if event == "batch's gate 1"]
    assert layer_1_gates == [0], watch.events  # batch 1's own; each next batch's layer 1 took the one its check made
    monkeypatch.setattr(LinkAcquisition, "start_next_upload", lambda link: None)
    monkeypatch.setattr(LinkAcquisition, "start_next_server_set_up", lambda link: None)
    watch.uploads, watch.batch, watch.expect_set_ups = 0, None, False
    plain = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "plain", store=store, progress=False)
    assert watch.uploads == 2 * BATCHES
    for ahead, alone in zip(recorded(Path(result["file"])), recorded(Path(plain["file"])), strict=True):
        np.testing.assert_array_equal(ahead, alone)  # the same light, value for value


def test_the_instruments_are_read_back_at_once_not_one_after_another(calibrated_store_at, tmp_path, monkeypatch):
    """The client's AWG is read back only once the digitizer, the station's last instrument, has been: were the
    read-backs one after another, in any order that starts with the client's (its upload waits for it), the check would
    never end."""
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    watch = Watch(monkeypatch)
    digitizer_read = threading.Event()

    def after_digitizer():
        assert digitizer_read.wait(timeout=60), "the client's AWG was read back before the digitizer"
        digitizer_read.clear()

    watch.before_read["client_awg"], watch.after_read["digitizer"] = after_digitizer, digitizer_read.set
    result = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "out", store=store, progress=False,
                         embedded_bench=True)
    assert result["verified"]
    for batch in range(BATCHES):
        steps = [event for b, event in watch.events if b == batch and event.startswith("read")]
        assert steps.index("read digitizer") < steps.index("read client_awg"), steps


def test_a_check_that_finds_a_fault_ends_the_upload_first_and_the_batch_is_taken_again_with_its_own_data(
        calibrated_store_at, tmp_path, monkeypatch):
    store = RecordStore(calibrated_store_at(tmp_path / "records"))
    faulty = 1  # the laser drops 1 dB in the check after this batch, once the next upload is under way
    times: dict[str, float] = {}
    vacuum_entered = threading.Event()
    played: list[tuple[int, np.ndarray]] = []
    original_start, original_upload = LinkAcquisition.start_next_upload, AwgTimeBinProcessor.load_batch
    original_vacuum, original_capture = LinkHealth.read_vacuum, LinkAcquisition._capture
    original_ahead, handed_on = LinkAcquisition._start_client_ahead, []

    def start_next_upload(link):
        original_start(link)
        if watch.batch == faulty and "injected" not in times:
            times["injected"] = time.monotonic()
            link.station.bench.inject("power-drop@laser:db=1,after=0")

    def upload(processor, *args, **kwargs):
        if watch.checking and watch.batch == faulty and "upload ended" not in times:
            # the upload is still going when the check reads the vacuum: the reading must wait for it
            vacuum_entered.wait(timeout=30)
            time.sleep(0.1)
            try:
                return original_upload(processor, *args, **kwargs)
            finally:
                times["upload ended"] = time.monotonic()
        return original_upload(processor, *args, **kwargs)

    def read_vacuum(link, *args, **kwargs):
        if "injected" in times and "vacuum" not in times:
            vacuum_entered.set()
            original_stop = link.client_awg.stop

            def stop():
                times.setdefault("vacuum", time.monotonic())  # the client's AWG stopped for the vacuum reading
                return original_stop()

            link.client_awg.stop = stop
            try:
                return original_vacuum(link, *args, **kwargs)
            finally:
                del link.client_awg.stop
        return original_vacuum(link, *args, **kwargs)

    def capture(link, segment, images):
        original_capture(link, segment, images)
        if segment == 1:
            played.append((watch.batch, link.station.bench.state.last_capture.session.x_hat.copy()))

    def start_client_ahead(link, data, index):
        if index:  # the next layer's upload, started once the client's record of this one was read
            handed_on.append(watch.batch)
        return original_ahead(link, data, index)

    monkeypatch.setattr(LinkAcquisition, "start_next_upload", start_next_upload)
    monkeypatch.setattr(AwgTimeBinProcessor, "load_batch", upload)
    monkeypatch.setattr(LinkHealth, "read_vacuum", read_vacuum)
    monkeypatch.setattr(LinkAcquisition, "_capture", capture)
    monkeypatch.setattr(LinkAcquisition, "_start_client_ahead", start_client_ahead)
    watch = Watch(monkeypatch)  # outermost: it sees the upload start before the one above holds it back
    result = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path / "out", store=store, progress=False,
                         embedded_bench=True)

    assert result["verified"]
    actions = [action["action"] for action in result["faults"]["actions"]]
    assert "re-calibrated" in actions and "repeated" in actions, actions
    assert times["upload ended"] < times["vacuum"]  # the upload under way ended before the client's AWG was stopped
    takes = [x_hat for batch, x_hat in played if batch == faulty]
    assert len(takes) >= 2  # taken again after the cure (its layer 1 captured again if a record clipped)
    for again in takes[1:]:
        np.testing.assert_array_equal(again, takes[0])  # with its own data, not the next batch's sent meanwhile
    # the batch's two layers again, and the next batch's upload that the cure dropped (made again by the next check);
    # and two more for each layer 1 taken again after the server's record clipped (whether one does follows the
    # noise's bits): its data loaded again, as layer 2's had been sent once the client's record was read, then those
    assert len(handed_on) >= BATCHES + 1
    assert watch.uploads == 2 * BATCHES + 3 + 2 * (len(handed_on) - (BATCHES + 1))
