"""`qslab monitor` without a browser: the status stream, the lock-free incremental reader, following the newest
session, the page's escaping and the command line. The live bench session is tests/test_monitor_browser.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from qcodes.instrument import Instrument
from qcodes.validators import Numbers

from qslab.analysis.recording import PIXELS_PER_IMAGE, LayerBatch, LayerShape, SessionWriter, new_run_id
from qslab.analysis.recording.writer import _refuse_readers
from qslab.sequences.monitor import live_numbers, page
from qslab.sequences.monitor.follower import SessionFollower
from qslab.sequences.monitor.live_session import LiveSession
from qslab.sequences.monitor.status import StatusPublisher, cached_readings, stream_path
from qslab.sequences.monitor.stream_reader import StationStatus
from qslab.sequences.session_guard import FaultReport

from cli_capture import cli

LAYERS = [LayerShape(rows=4, modes=8)]
MEASURED = {name: {"value": value, "uncertainty": sigma} for name, (value, sigma) in {
    "mu_photons": (6.0, 0.05), "gain": (1.3, 0.01), "server_efficiency": (0.8, 0.01),
    "server_electronic_noise_snu": (0.05, 0.001), "transmittance": (0.6, 0.01)}.items()}


def new_session(directory: Path, images: int = 30) -> SessionWriter:
    meta = {"config_toml": "[station]\n", "station_snapshot_json": {}, "provenance_json": {}, "seeds_json": {},
            "settings_json": {"images": images, "batch_images": 10, "failure_probability": 1e-10,
                              "false_alarm": 1e-3, "max_weight_leakage_bits_per_mode": 500.0},
            "calibrations_json": {"records": {}, "measured": MEASURED}}
    run_id = new_run_id()
    return SessionWriter.create(directory / f"session-{run_id}.h5", LAYERS, meta, qslab_version="0", git_revision="x",
                                run_id=run_id)


def append(writer: SessionWriter, count: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng([seed, writer.batches_written])
    first = writer.images_written
    sent = rng.normal(0.0, 2.0, (count, 2, 8)).astype(np.float32)
    returned = (0.7 * sent + rng.normal(0.0, 1.0, sent.shape)).astype(np.float32)
    labels = rng.integers(0, 10, count)
    writer.append_batch(np.arange(first, first + count), labels,
                        rng.integers(0, 256, (count, PIXELS_PER_IMAGE), dtype=np.uint8), labels * (np.arange(count) % 4 > 0),
                        [LayerBatch(rng.normal(size=(count, 4)).astype(np.float32), np.array([0, 2]),
                                    rng.integers(0, 2, (count, 2)).astype(bool), sent, returned)])


# --- the reader ---------------------------------------------------------------------------------------

HOLD_OPEN = """
import sys, h5py
from qslab.sequences.monitor.live_session import open_lock_free
handle = open_lock_free(sys.argv[1]) if sys.argv[2] == "monitor" else h5py.File(sys.argv[1], "r", libver="latest", swmr=True)
print("open", flush=True)
sys.stdin.read()
"""


def test_the_monitor_holds_no_lock_while_it_reads(tmp_path):
    """What a resume checks before it replaces a file (nobody holds it open) passes while the monitor reads it,
    and fails while an ordinary HDF5 reader does (the check can fail)."""
    import subprocess
    import sys

    from qslab.analysis.recording import RecordingError

    with new_session(tmp_path) as writer:
        append(writer)
        for reader, refused in (("monitor", False), ("ordinary", True)):
            child = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(writer.path), reader], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            try:
                assert child.stdout.readline().strip() == "open"
                if refused:
                    with pytest.raises(RecordingError, match="open in another process"):
                        _refuse_readers(writer.path)
                else:
                    _refuse_readers(writer.path)
            finally:
                child.stdin.close()
                child.wait(timeout=120)


def test_batches_are_read_as_they_are_committed_and_only_once(tmp_path):
    with new_session(tmp_path) as writer:
        live = LiveSession(writer.path)
        assert live.poll() and live.images_written == 0 and live.status == "running"
        for batch in range(3):
            append(writer)
            assert live.poll() is True and live.batches_written == batch + 1
            assert live.poll() is False  # nothing new
        labels = np.concatenate(live.labels)
        assert live.images_written == 30 and labels.size == 30 and live.run_id == writer.path.stem[8:]
        assert live.samples().sizes[0] == 3 * 10 * 2 * 8 and live.verified_rows == [[2, 2, 2]]
        writer.finish({"accuracy": 0.5})
    assert live.poll() is True and live.status == "complete" and live.results == {"accuracy": 0.5}


def test_the_follower_computes_the_numbers_and_moves_to_a_newer_session(tmp_path):
    follower = SessionFollower(tmp_path, analysis_interval_s=0.0)
    assert "no session-*.h5" in follower.refresh()["waiting"]
    assert "no session-*.h5" in SessionFollower(tmp_path / "not yet made").refresh()["waiting"]
    assert "to be created" in SessionFollower(tmp_path / "session-X.h5").refresh()["waiting"]
    with new_session(tmp_path) as first:
        append(first)
        view = follower.refresh()
        assert view["file"] == str(first.path) and view["progress"]["images_done"] == 10
        assert view["progress"]["batches_total"] == 3 and view["error"] is None
        correct = int(np.sum(np.concatenate(follower.session.predictions) == np.concatenate(follower.session.labels)))
        assert view["accuracy"]["correct"] == correct and 0 < correct < 10
        assert view["verification"]["transmittance_hat"] == pytest.approx(0.7 ** 2 / 0.8, rel=0.2)
        assert view["leakage"]["cap_bits_per_mode"] == 500.0 and view["leakage"]["spent_bits_per_mode"] > 0
        append(first)
        view = follower.refresh()
        assert view["history"]["images"] == [10, 20] and view["analysed_images"] == 20
    with new_session(tmp_path) as second:  # a newer run id: the next session
        view = follower.refresh()
        assert view["file"] == str(second.path) and view["progress"]["images_done"] == 0
        assert view["history"]["images"] == []


def test_an_analysis_that_failed_is_taken_again_without_a_new_batch(tmp_path, monkeypatch):
    """A look whose analysis failed (here once, as a read while the session wrote its results could) says so and the
    next look analyses the same batches again: the session's last batch is analysed even though no batch follows
    (found under load: the page kept its numbers of 20 of 30 images after the session completed)."""
    follower = SessionFollower(tmp_path, analysis_interval_s=0.0)
    security = live_numbers.security
    failures = []

    def fails_once(session):
        if not failures:
            failures.append(session.images_written)
            raise OSError("the file was being written")
        return security(session)

    with new_session(tmp_path) as writer:
        for _ in range(3):
            append(writer)
        monkeypatch.setattr(live_numbers, "security", fails_once)
        view = follower.refresh()
        assert failures == [30] and "the analysis of 30 images failed" in view["error"]
        assert view["analysed_images"] == 0
        writer.finish({"accuracy": 0.5})
    view = follower.refresh()
    assert view["status"] == "complete" and view["error"] is None
    assert view["analysed_images"] == 30 and view["history"]["images"] == [30]


def test_a_file_being_created_or_foreign_is_an_error_in_the_view_not_an_exception(tmp_path):
    path = tmp_path / f"session-{new_run_id()}.h5"
    path.write_bytes(b"not yet HDF5")
    view = SessionFollower(tmp_path).refresh()
    assert view["error"] and str(path) in view["error"] and view["status"] == "unknown"


# --- the status stream --------------------------------------------------------------------------------

class CachedOnly(Instrument):
    """A qcodes instrument whose getter fails: a reading taken from it must come from the cache."""

    def __init__(self, name: str):
        super().__init__(name)
        self.gets = 0
        self.add_parameter("power_dbm", unit="dBm", get_cmd=self._get, set_cmd=lambda value: None, vals=Numbers())
        self.add_parameter("output_enabled", get_cmd=self._get, set_cmd=lambda value: None)

    def _get(self):
        self.gets += 1
        raise AssertionError("the status stream sent a query")


class Spec:
    category = "laser"


class Config:
    spec = Spec()


class Connection:
    def __init__(self, driver):
        self.driver, self.config = driver, Config()


class Station:
    def __init__(self, driver):
        self.connections = {driver.name: Connection(driver)}


class Link:
    laser_power_dbm, ranges_v, layers = 10.0, {"client_receiver": 0.1}, []

    class calibration:
        records = {"photons/server_output/photons-x": {}}


@pytest.fixture
def laser():
    driver = CachedOnly("monitor_test_laser")
    yield driver
    driver.close()


def test_readings_come_from_the_drivers_caches_without_a_query(laser, tmp_path):
    assert cached_readings(Station(laser)) == {"monitor_test_laser": {"category": "laser", "values": {}}}
    laser.power_dbm(9.5)
    laser.output_enabled(True)
    values = cached_readings(Station(laser))["monitor_test_laser"]["values"]
    assert values == {"power_dbm": {"value": 9.5, "unit": "dBm"}, "output_enabled": {"value": True, "unit": ""}}
    assert laser.gets == 0


def test_the_stream_is_whole_lines_and_a_failure_never_reaches_the_session(laser, tmp_path, caplog):
    session = tmp_path / "session-X.h5"
    report = FaultReport(["timeout@laser"])
    laser.power_dbm(10.0)
    publisher = StatusPublisher.beside(session, Station(laser), Link(), report, tmp_path / "cal")
    report.act("retried", "laser", "'SOUR1:POW?': timed out (attempt 1 of 3)")
    publisher.batch(1)
    publisher.batch(2)
    lines = [json.loads(line) for line in stream_path(session).read_text().splitlines()]
    assert [line["event"] for line in lines] == ["start", "batch", "batch"]
    assert lines[0]["records"] == ["photons/server_output/photons-x"] and lines[0]["injected"] == ["timeout@laser"]
    assert [len(line["actions"]) for line in lines] == [0, 1, 0]  # each action once, when it happened
    status = StationStatus.beside(session)
    with open(stream_path(session), "ab") as stream:
        stream.write(b'{"event": "batch", "batches_done": 3')  # a line still being written
    assert status.poll() and status.batches_done == 2 and len(status.actions) == 1
    assert status.readings["monitor_test_laser"]["values"]["power_dbm"]["value"] == 10.0
    with open(stream_path(session), "ab") as stream:
        stream.write(b"}\n")
    assert status.poll() and status.batches_done == 3
    publisher.stopped(RuntimeError("batch 4: the laser no longer answers\ntraceback lines"))
    assert status.poll() and status.stopped == {"error": "batch 4: the laser no longer answers",
                                                "error_type": "RuntimeError"}

    gone = StatusPublisher(tmp_path / "missing" / "session-Y.h5", Station(laser), Link(), report)
    with caplog.at_level(logging.WARNING):
        gone.batch(1)
        gone.stopped(RuntimeError("stop"))  # disabled after the first failure: silent
    assert sum("status stream" in record.message for record in caplog.records) == 1


# --- the page and the command -------------------------------------------------------------------------

def test_text_from_the_file_or_the_stream_is_escaped():
    view = {"faults": {"injected": ["<b>x</b>"], "fired": [],
                       "actions": [{"batch": 2, "action": "retried", "instrument": "laser", "detail": "<script>1</script>"}]}}
    text = page.faults_html(view)
    assert "<script>" not in text and "&lt;script&gt;" in text and "&lt;b&gt;" in text
    assert page.cell("k", 0.1 + 0.2) == '<td data-key="k" data-value="0.30000000000000004">0.3</td>'


def test_the_command_line(tmp_path, monkeypatch):
    from qslab.sequences.commands import monitor as monitor_command

    # run in this process, the monitor would lower this test worker's priority for good (os.nice: its own process's)
    monkeypatch.setattr(monitor_command, "_lower_priority", lambda: None)
    code, out, err = cli("monitor", str(tmp_path / "nowhere"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no such session file or directory" in err
    code, out, err = cli("monitor", str(tmp_path), "--json")
    assert code == 2 and "--json needs --once" in err
    code, out, err = cli("monitor", str(tmp_path), "--port", "70000")
    assert code == 2 and "--port" in err
    code, out, _ = cli("monitor", str(tmp_path), "--once", "--json")
    assert code == 0 and "no session-*.h5" in json.loads(out.splitlines()[-1])["waiting"]
    with new_session(tmp_path) as writer:
        append(writer)
        code, out, _ = cli("monitor", str(writer.path), "--once")
    assert code == 0 and "batches 1 of 3, images 10 of 30" in out and "of a 500 cap" in out
    code, out, _ = cli("monitor", "--help")
    assert code == 0 and "(0.05..60, default 1)" in out and "no credentials" in out


def test_only_loopback_counts_as_loopback():
    from qslab.sequences.monitor.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("no such host.invalid")
