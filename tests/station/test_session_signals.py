"""Real signals sent to `qslab session` at chosen moments; the bench is read back over its own sockets afterwards.

The bench runs in its own process (gated_bench.py) so it outlives the session and can hold chosen messages: the
test arms a hold at a counted message before the session starts (a calibration's first acquisition, the settings
check after a chosen batch), or while the session is held (the close's first command), waits until it holds, sends
the signal, waits until the kernel has delivered it, and releases. Nothing depends on how fast anything runs: the
session cannot go past the moment meant while the test looks. A SIGKILL is sent while held, once the file has
committed the batches handed over before the hold; the resume then meets the bench renewed (a fresh one at the same
addresses), and the uninterrupted reference runs on a gated bench of its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from held_bench import HANG_GUARD_S, SETTINGS_CHECK, GatedBench, Lines, images_committed, recorded_differences
from station_fixtures import patient_config

from qslab.analysis import recording
from qslab.calibration.records import RecordStore
from qslab.sequences.config import load_config
from qslab.sequences.session import SessionSettings, run_session

# Between two looks at the session file: the test waits for a state, re-checked every POLL_S, so the interval only adds
# up to POLL_S to the wait (a batch takes hundreds of ms); without it the test spins a core against the very session
# it waits for (on 2 cores under xdist: the session, the other worker and this loop).
POLL_S = 0.005
SETTINGS = SessionSettings(images=1, mu=6.0, gain=1.3, seed=3, batch_images=1, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=20)


class Session:
    """`qslab session --json` in a child process."""

    def __init__(self, config: Path, out: Path, calibration_dir: Path, images: int, batch_images: int):
        self.out_dir = out
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qslab.sequences.cli", "session", "--config", str(config), "--json",
             "--images", str(images), "--batch-images", str(batch_images), "--seed", "3", "--out", str(out),
             "--calibration-dir", str(calibration_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout, self.stderr = Lines(self.process.stdout), Lines(self.process.stderr)

    def send(self, signum: int) -> None:
        """Send ``signum`` and wait until the kernel has delivered it (no longer pending for the process)."""
        self.process.send_signal(signum)
        bit = 1 << (signum - 1)
        status = Path(f"/proc/{self.process.pid}/status")
        while self.process.poll() is None:
            pending = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if not (int(pending["SigPnd"], 16) | int(pending["ShdPnd"], 16)) & bit:
                return

    def wait_images(self, images: int) -> int:
        """Until the session file commits at least ``images`` images (read as any SWMR reader would); how many."""
        return images_committed(self.out_dir, self.process, images, POLL_S)

    def finish(self) -> tuple[int, dict, str]:
        code = self.process.wait(timeout=HANG_GUARD_S)
        out, err = self.stdout.text(), self.stderr.text()
        return code, json.loads(out.strip().splitlines()[-1]), err


@pytest.fixture(scope="module")
def store(calibrated_store_at, tmp_path_factory):
    """The bench's calibration records (tests/conftest.py: made once per run, here a writable copy)."""
    return calibrated_store_at(tmp_path_factory.mktemp("calibration"))


@pytest.fixture
def bench():
    served = GatedBench()
    yield served
    served.stop()


def _assert_read_back_safe(bench: GatedBench, report: dict) -> None:
    assert report["safe_state"]["safe"] is True, report["safe_state"]
    state = bench.read_back()
    assert not any(state.values()), {name: on for name, on in state.items() if on}


def test_sighup_during_a_calibration_stops_before_the_next_one_with_the_station_read_back_off(bench, tmp_path):
    bench.hold_at(1, r"^:DIGitize")  # the session's first acquisition: its first calibration's
    session = Session(bench.config(tmp_path), tmp_path / "out", tmp_path / "fresh-calibrations", 20, 10)
    assert bench.wait_held(session.process, "the first acquisition").startswith("held digitizer ")
    session.stdout.wait_for(r"running it now", session.process)  # said before the calibration started
    session.send(signal.SIGHUP)
    bench.release()
    code, report, err = session.finish()
    assert code == 128 + signal.SIGHUP, err
    assert report["signal"] == "SIGHUP" and report["file"] is None and report["images_written"] == 0
    stopped = [line for line in err.splitlines() if "stopped by SIGHUP before the" in line]
    assert len(stopped) == 1 and "calibration: the station was closed" in stopped[0] and "(read back)" in stopped[0]
    assert "Exception ignored" not in err
    _assert_read_back_safe(bench, report)


def _stop_in_the_check_after(bench: GatedBench, tmp_path: Path, store: Path, batch: int, images: int = 60) -> Session:
    """An ``images``-image session (10 a batch), held in the settings check after batch ``batch`` (1-based): the
    batches before it handed to the writer, this one taken and not yet. The hold is armed before the session starts."""
    bench.hold_at(batch + 1, SETTINGS_CHECK)  # the first is the guard's start
    session = Session(bench.config(tmp_path), tmp_path / "out", store, images, 10)
    assert bench.wait_held(session.process, f"the settings check after batch {batch}").startswith("held laser ")
    return session


def test_sigterm_mid_batch_keeps_every_batch_marks_the_file_aborted_and_leaves_the_station_off(bench, store, tmp_path):
    session = _stop_in_the_check_after(bench, tmp_path, store, 3)
    session.send(signal.SIGTERM)
    bench.release()
    code, report, err = session.finish()
    assert code == 128 + signal.SIGTERM, err
    kept = report["images_written"]
    assert kept == 30  # the batch under way (3) was finished and recorded, no more
    with recording.SessionFile.open(report["file"]) as partial:
        assert partial.status == "aborted" and partial.images_written == kept
        assert "SIGTERM" in partial.detail
    assert report["signal"] == "SIGTERM" and report["resume"] == f"qslab session --resume {report['file']}"
    line = next(line for line in err.splitlines() if "stopped by SIGTERM" in line)
    assert "lasers off" in line and f"keeps {kept} images" in line
    _assert_read_back_safe(bench, report)


def test_a_second_signal_while_closing_does_not_cut_the_close_short(bench, store, tmp_path):
    session = _stop_in_the_check_after(bench, tmp_path, store, 1)
    session.send(signal.SIGINT)
    bench.hold_at(1, r"SOUR1:POW:STAT 0")  # armed while the session is held: the close's first command, the laser off
    bench.release()
    assert bench.wait_held(session.process, "the close's first command").startswith("held laser ")
    session.send(signal.SIGTERM)
    bench.release()
    code, report, err = session.finish()
    assert code == 128 + signal.SIGINT, err
    assert report["signal"] == "SIGINT" and "Traceback" not in err
    _assert_read_back_safe(bench, report)


def test_a_command_refused_once_while_closing_is_sent_again_and_read_back(store, tmp_path):
    """scpi-error armed before batch 2 of a 20-image session lands on the close's shutter command: retried.

    after=5: the attenuator handles five messages in batch 2 (layer 2's attenuation with its error check: layer 1's was
    set in the check before the batch; its settings read back, the shutter closed, then its mode and attenuation read
    back and the shutter opened again around the check's monitor readings: one message each), so the first command
    after them is the close's; the first assertions say so if that count ever changes."""
    results = run_session(load_config(patient_config(tmp_path)), replace(SETTINGS, images=20, batch_images=10),
                          out_dir=tmp_path, store=RecordStore(store), progress=False, faults=["scpi-error:after=5"])
    fired = results["faults"]["fired"]
    assert [f["message"] for f in fired] == ["OUTP1:STAT 0;:SYST:ERR?"]  # the attenuator's shutter, closing
    assert results["safe_state"]["safe"] is True
    assert list(results["safe_state"]["retried"]) == ["attenuator"]
    assert "-222" in results["safe_state"]["retried"]["attenuator"][0]


def test_a_persistent_refusal_while_closing_says_which_output_is_in_what_state(store, tmp_path, capsys):
    from qslab.sequences.cli import main

    code = main(["session", "--config", str(patient_config(tmp_path)), "--images", "20", "--batch-images", "10",
                 "--json", "--calibration-dir", str(store), "--out", str(tmp_path),
                 "--inject-fault", "scpi-error:after=5,persistent"])  # on the close, as above
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 1
    safe = report["safe_state"]
    assert safe["safe"] is False and list(safe["errors"]) == ["attenuator"]
    assert safe["instruments"]["attenuator"] == {"att1.shutter_open": False, "att2.shutter_open": False}
    line = next(line for line in captured.err.splitlines() if "NOT SAFE" in line)
    assert "attenuator: InstrumentError" in line and "att1.shutter_open off, att2.shutter_open off" in line


COMPARED = ("accuracy", "verified", "weight_leakage_bits_per_mode", "weight_leakage_bits_per_mode_nominal",
            "data_leakage_bits_cramer_rao", "data_leakage_bits_per_bin", "data_leakage_bound_bits_per_query", "mu_photons", "gain", "verification")


def _kill_after(bench: GatedBench, tmp_path: Path, store: Path, batches: int) -> tuple[Session, Path]:
    """SIGKILL a 30-image session held in the settings check after batch ``batches + 1``, once its file has committed
    the ``batches`` batches handed to the writer before it (the one taken under the hold is never handed over)."""
    session = _stop_in_the_check_after(bench, tmp_path, store, batches + 1, images=30)
    assert session.wait_images(10 * batches) == 10 * batches
    path = next(session.out_dir.glob("session-*.h5"))
    session.process.kill()
    assert session.process.wait(timeout=HANG_GUARD_S) == -signal.SIGKILL
    return session, path


@pytest.fixture(scope="module")
def clean_run(store, tmp_path_factory) -> dict:
    """READ-ONLY: the --json report of an uninterrupted 30-image session from the command line, the reference every
    kill below must end on; one run serves each kill point. On a gated bench of its own, started as the kills' are
    (lab_config.toml's [bench]: seed, time scale), so that it is the same station as the killed session's (its
    identity and config; the embedded bench reads the same bits, test_served_bench_bits.py)."""
    from qslab.sequences.cli import main

    directory = tmp_path_factory.mktemp("clean")
    served = GatedBench()
    try:
        config = served.config(directory)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(["session", "--config", str(config), "--out", str(directory / "clean"), "--images", "30",
                         "--batch-images", "10", "--seed", "3", "--calibration-dir", str(store), "--json"]) == 0
    finally:
        served.stop()
    return json.loads(out.getvalue().strip().splitlines()[-1])


def _assert_same_report_but_the_passes(resumed: dict, clean: dict) -> None:
    """The security report of a resumed session equals the clean run's, but for the passes of the light (DECISIONS AI):
    the killed writer noted in its lock, before the light, the batch it took under the hold (10 images of weights and
    data, never recorded), and the resume ran the set-up again (its leakage nulling). So each layer's weights met the
    clean run's set-up passes twice and 10 images more, each at g(mu), and 40 images' data went out for 30 inputs."""
    report, reference = resumed["security_report"], clean["security_report"]
    assert report["failure_budget"] == reference["failure_budget"]
    data, clean_data = report["data_leakage"], reference["data_leakage"]
    assert {k: v for k, v in data.items() if k not in ("takes", "cumulative_bits")} == \
        {k: v for k, v in clean_data.items() if k not in ("takes", "cumulative_bits")}
    assert (clean_data["takes"], data["takes"]) == (30, 40)
    assert data["cumulative_bits"] == pytest.approx(clean_data["cumulative_bits"] * 40 / 30, rel=1e-12)
    weight, clean_weight = report["weight_leakage"], reference["weight_leakage"]
    totals = ("images_sent_per_layer", "cumulative_bits_per_mode", "cumulative_bits_per_mode_per_layer",
              "cumulative_bits_per_weight", "per_client_bits")
    assert {k: v for k, v in weight.items() if k not in totals} == \
        {k: v for k, v in clean_weight.items() if k not in totals}
    queries = weight["queries"]
    set_up = [sent - queries for sent in clean_weight["images_sent_per_layer"]]
    assert all(n > 0 for n in set_up)
    assert weight["images_sent_per_layer"] == [queries + 2 * n + 10 for n in set_up]
    for layer, n, total, clean_total in zip(weight["layers"], set_up, weight["cumulative_bits_per_mode_per_layer"],
                                            clean_weight["cumulative_bits_per_mode_per_layer"]):
        assert total == pytest.approx(clean_total + (n + 10) * layer["unverified_bits_per_mode"], rel=1e-12)


@pytest.mark.parametrize("killed_after", [1, 2])
def test_kill_9_at_a_chosen_batch_then_resume_from_the_command_line_ends_where_a_clean_run_does(
        bench, store, clean_run, tmp_path, capsys, killed_after):
    """Killed while held in the check after batch ``killed_after + 1``, the file committed exactly the batches before
    it; the resume meets a fresh bench at the same addresses (a served one's I/O timeout: the hang guard, so no read is
    sent again under load, docs/DECISIONS.md T) and must end where the clean run did, bit for bit."""
    from qslab.sequences.cli import main

    clean = clean_run
    session, path = _kill_after(bench, tmp_path, store, killed_after)
    with recording.SessionFile.open(path) as crashed:
        assert crashed.status == "running" and crashed.swmr and crashed.images_written == 10 * killed_after
        kept = crashed.images_written
    assert json.loads((path.parent / f".{path.name}.writer").read_text())["pid"] == session.process.pid
    bench.renew()  # what a bench started afresh reads, at the addresses the file's config names
    config = bench.config(tmp_path)  # the killed session's, unchanged

    other = tmp_path / "other-seed.toml"
    other.write_text(re.sub(r"(?m)^(\[bench\]\n(?:#.*\n)*)seed = \d+", r"\g<1>seed = 77", config.read_text()))
    assert "seed = 77" in other.read_text()
    assert main(["session", "--config", str(other), "--resume", str(path), "--json",
                 "--calibration-dir", str(store)]) == 1
    refused = capsys.readouterr()
    assert "recorded on another station (config: bench.seed: " in refused.err and "--allow-different-station" \
        in refused.err
    assert "the station was not connected" in refused.err  # refused before anything was switched on

    assert main(["session", "--config", str(config), "--resume", str(path), "--json",
                 "--calibration-dir", str(store)]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert recorded_differences(path, clean["file"]) == []  # every batch, before and after the kill, array by array
    for key in COMPARED:
        assert resumed[key] == clean[key], key
    _assert_same_report_but_the_passes(resumed, clean)
    with recording.SessionFile.open(path) as done, recording.SessionFile.open(clean["file"]) as reference:
        assert done.status == "complete" and done.images_written == 30
        (record,) = done.resumes
        measured = reference.calibrations["measured"]
    assert record["after_crash_of"]["pid"] == session.process.pid and record["station_differences"] == []
    assert set(record["station"]) == set(load_config(config).instruments)
    assert record["images_before"] == kept and record["calibration_records"]
    for key in ("mu_per_layer", "attenuation_db_per_layer"):  # the resumed set-up is the uninterrupted one's
        assert record["set_up"][key] == measured[key], key
    assert not (path.parent / f".{path.name}.writer").exists()
