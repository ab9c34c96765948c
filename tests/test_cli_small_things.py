"""What a user hit (issue 16, section 5): each refusal is one line, help says what differs, sweep.json can be rerun."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from qslab.analysis.network import default_weights_path

from cli_capture import cli
from shared_once import copy_of

ROOT = Path(__file__).resolve().parents[1]


def test_an_unreachable_scheduler_is_one_line_within_seconds(tmp_path):
    """Dask's own account of the wait ("... after 5 s") shows the 5 s connect timeout was the one applied (Dask's
    default is 30 s), whatever the host's load; the clock is only a hang guard."""
    start = time.monotonic()
    code, out, err = cli("sweep", "--scheduler", "tcp://127.0.0.1:1", "--mu-points", "2", "--gains", "1.3",
                         "--out", str(tmp_path))
    assert time.monotonic() - start < 120
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1 within 5 s" in err and "Traceback" not in err
    assert "Timed out trying to connect to tcp://127.0.0.1:1 after 5 s" in err, err


@pytest.mark.parametrize("command", [["simulate", "--mu", "6", "--gain", "1.3", "--images", "1", "--seeds", "1"],
                                     ["sweep", "--mu-points", "2", "--gains", "1.3"],
                                     ["operating-point", "--target-accuracy", "0.9", "--images", "10", "--seeds", "1"]])
def test_a_weights_file_that_is_not_an_npz_is_one_clear_line(tmp_path, command):
    weights = tmp_path / "weights.npz"
    weights.write_text("W0 = [[1, 2], [3, 4]]\n")
    code, out, err = cli(*command, "--weights", str(weights), *(["--out", str(tmp_path)] if "sweep" in command else []))
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "not an .npz archive" in err and "pickle" not in err


def test_a_failed_hardware_session_leaves_its_log_but_no_empty_figure_directory(tmp_path):
    """Every instrument on a port that refuses: the station fails at *IDN? before anything is drawn."""
    text = (ROOT / "lab_config.hardware.toml").read_text()
    config = tmp_path / "lab_config.toml"
    config.write_text(re.sub(r"TCPIP0?::192\.168\.1\.\d+::(hislip0::INSTR|5025::SOCKET)",
                             "TCPIP::127.0.0.1::1::SOCKET", text))
    out, store = tmp_path / "out", tmp_path / "cal"
    code, _, err = cli("session", "--config", str(config), "--out", str(out), "--calibration-dir", str(store))
    assert code == 1 and "cannot be reached" in err
    assert [path.suffix for path in out.iterdir()] == [".log"]  # the log says what happened; no empty directory
    assert "StationError" in next(out.iterdir()).read_text()
    code, _, err = cli("calibrate", "photons", "--config", str(config), "--calibration-dir", str(store))
    assert code == 1 and not list((store / "figures").iterdir())


def test_calibrate_help_per_kind_differs_from_the_command_help():
    general = cli("calibrate", "--help")
    every = cli("calibrate", "all", "--help")
    photons = cli("calibrate", "photons", "--help")
    assert general[0] == every[0] == photons[0] == 0
    assert len({general[1], every[1], photons[1]}) == 3
    assert every[1].startswith("usage: qslab calibrate all") and "homodyne" in every[1] and "channel" in every[1]
    assert photons[1].startswith("usage: qslab calibrate photons") and "photons per symbol" in photons[1]
    assert "--config FILE" in photons[1]  # the options are still listed
    assert cli("calibrate", "--help", "photons")[1] == general[1]


def test_train_help_says_each_thing_once():
    code, out, _ = cli("train", "--help")
    assert code == 0 and out.count("Adam step size") == 1


def test_sweep_json_holds_the_settings_and_provenance_of_a_rerun(tmp_path):
    code, out, err = cli("sweep", "--mu-min", "0.5", "--mu-max", "20", "--mu-points", "2", "--gains", "1.3",
                         "--images", "50", "--seeds", "1", "--workers", "1", "--out", str(tmp_path), "--json")
    assert code == 0, err
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["schema"] == "qslab.sweep" and record["schema_version"] == 1
    assert record["settings"] | {"scheduler": None} == {"mu_min": 0.5, "mu_max": 20.0, "mu_points": 2, "gains": [1.3],
                                                       "images": 50, "seeds": [0], "modes": 392, "scheduler": None}
    assert record["weights"]["shipped"] is True
    assert record["weights"]["sha256"] == hashlib.sha256(default_weights_path().read_bytes()).hexdigest()
    assert {"qslab_version", "git_revision", "python", "numpy", "dask", "created_utc"} <= set(record["provenance"])
    assert record["points"] == json.loads(out.splitlines()[-1])["points"] and len(record["points"]) == 2
    assert record["data"] == "the first 50 images of the official MNIST test set, noise seeds [0]"
    rerun = record["rerun"].split()  # the command it records evaluates the very same points
    assert rerun[:2] == ["qslab", "sweep"]
    code, out, err = cli(*rerun[1:], "--workers", "1", "--out", str(tmp_path / "again"), "--json")
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "sweep.json").read_text())
    assert again["points"] == record["points"] and again["settings"] == record["settings"]


def _bars(err: str, description: str) -> list[str]:
    """The last state of each tqdm bar named ``description`` in captured stderr (tqdm redraws with \\r)."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith(description)]


def test_the_operating_point_search_shows_its_progress(tmp_path):
    code, out, err = cli("operating-point", "--target-accuracy", "0.8", "--images", "100", "--seeds", "1")
    assert code == 0, err
    assert "15/15" in _bars(err, "operating point: accuracy search")[-1]  # the first run, then 14 bisection steps
    code, out, err = cli("operating-point", "--max-weight-leakage", "3", "--max-data-leakage", "0.01", "--images", "100",
                         "--seeds", "1")
    assert code == 0, err
    done = _bars(err, "operating point: gains under the caps")[-1]
    assert "100%" in done and re.search(r"(\d+)/\1", done)
    code, out, err = cli("operating-point", "--target-accuracy", "0.8", "--images", "100", "--seeds", "1", "--json")
    assert code == 0 and not _bars(err, "operating point")  # --json: a script reads the output, no bars


def test_calibrations_show_a_bar_per_kind_in_calibrate_all_and_in_the_session(tmp_path, monkeypatch,
                                                                              first_cli_session):
    from qslab.sequences import calibrations

    # a session in an empty store (tests/conftest.py runs it once, progress bars on)
    code, err = first_cli_session["code"], first_cli_session["stderr"]
    assert code == 0, err
    store = copy_of(first_cli_session["calibration"], tmp_path / "cal")
    bars = _bars(err, "calibrations")  # the session's pre-flight runs the five missing kinds, naming each
    assert "5/5" in bars[-1] and all(any(kind in bar for bar in bars) for kind in calibrations.KIND_NAMES[:5])
    code, out, err = cli("calibrate", "channel", "--calibration-dir", str(tmp_path / "empty"))
    assert code == 1 and not _bars(err, "calibrations") and len(err.splitlines()) == 1  # one kind: its error alone
    ran = []
    monkeypatch.setattr(calibrations, "record_kind", lambda kind, *args: ran.append(kind) or [])
    code, out, err = cli("calibrate", "all", "--calibration-dir", str(store))
    assert code == 0 and ran == list(calibrations.KIND_NAMES), err
    bars = _bars(err, "calibrations")
    assert f"{len(ran)}/{len(ran)}" in bars[-1] and all(any(kind in bar for bar in bars) for kind in ran)
