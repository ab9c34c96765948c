"""Hostile and broken input (issue 17): each listed case is one stderr line naming the thing and what was expected,
exit 2, no traceback, no NaN printed as a result, and nothing switched on. The cases that need a connected station
(an implausible calibration record, the safe-state line) are in tests/station/test_hostile_session.py."""

from __future__ import annotations

import os
import re
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
from cli_capture import cli
from qslab.sequences.config import ConfigError, loads_config
from test_fuzz_cli import SETTINGS, refused_in_one_line, write_session

ROOT = Path(__file__).resolve().parents[1]
CONFIG_TEXT = (ROOT / "lab_config.toml").read_text()
LONG = "a" * 5000


def no_station():
    """A LabStation that fails the test if anything tries to connect."""
    return mock.patch("qslab.sequences.station.LabStation.__init__",
                      side_effect=AssertionError("the station was connected for input that should be refused"))


# --- paths given on the command line -------------------------------------------------------------

def _path_cases(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """case -> (argv, words the one line must name)."""
    a_file = tmp / "a-file"
    a_file.write_text("")
    proc_self = os.path.relpath("/proc/self", tmp)  # up four levels, then proc/self, from a test's directory
    return {
        "--out inside a file": (["session", "--out", str(a_file / "x")], ["--out", "ot a directory"]),
        "--out in /proc": (["session", "--out", "/proc"], ["--out", "/proc"]),
        "--out 5000 characters": (["session", "--out", str(tmp / LONG)], ["--out", "5", "characters"]),
        "--calibration-dir a file": (["session", "--calibration-dir", str(a_file)],
                                     ["--calibration-dir", "not a directory"]),
        "--calibration-dir relative to /proc/self": (["session", "--calibration-dir", proc_self],
                                                    ["--calibration-dir", "proc/self"]),
        "--calibration-dir 5000 characters": (["session", "--calibration-dir", str(tmp / LONG)],
                                              ["--calibration-dir", "characters"]),
        "--resume 5000 characters": (["session", "--resume", str(tmp / LONG)], ["--resume", "characters"]),
        "--resume empty": (["session", "--resume", ""], ["--resume", "empty"]),
        "--resume a directory": (["session", "--resume", str(tmp)], ["--resume", "no such file"]),
        "replay 5000 characters": (["replay", str(tmp / LONG)], ["characters", "cannot be opened"]),
    }


@pytest.mark.parametrize("case", sorted(_path_cases(Path("/tmp"))))
def test_a_bad_path_is_one_line_before_anything_is_switched_on(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QSLAB_CALIBRATION_DIR", raising=False)
    argv, names = _path_cases(tmp_path)[case]
    with no_station():
        code, _, err = cli(*argv)
    assert code == 2, (code, err)
    lines = [line for line in err.strip().splitlines() if "no lab_config.toml here" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert len(lines[0]) < 400, lines[0]  # a 5000-character path is shown cut
    for name in names:
        assert name in lines[0], (name, lines[0])


# --- the config ------------------------------------------------------------------------------------

def _bench_key(text: str, table: str, key: str, value: str) -> str:
    pattern = re.compile(rf"(\[bench\.{re.escape(table)}\][^\[]*?^{key} = )[^\n#]*", re.M | re.S)
    changed, count = pattern.subn(lambda m: m.group(1) + value + " ", text, count=1)
    assert count == 1, (table, key)
    return changed


CONFIG_CASES = {
    "5000-deep nested array": (CONFIG_TEXT.replace("[station]", "[station]\nnested = " + "[" * 5000 + "]" * 5000, 1),
                               "nested too deep"),
    "reference LO power 1e308 W": (_bench_key(CONFIG_TEXT, "client_receiver", "reference_lo_power_w", "1e308"),
                                   "bench.client_receiver.reference_lo_power_w"),
    "detector gain 1e300 V/W": (_bench_key(CONFIG_TEXT, "server_receiver", "gain_v_per_w", "1e300"),
                                "bench.server_receiver.gain_v_per_w"),
    "bench on every interface": (CONFIG_TEXT.replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1), "bench.host"),
    "bench on a LAN address": (CONFIG_TEXT.replace('host = "127.0.0.1"', 'host = "192.168.1.20"', 1), "bench.host"),
    "allow_non_loopback not a bool": (CONFIG_TEXT.replace('host = "127.0.0.1"', 'host = "127.0.0.1"\n'
                                                          'allow_non_loopback = "yes"', 1),
                                      "bench.allow_non_loopback"),
    "failure probability 5e-324": (CONFIG_TEXT.replace("[protocol]", "[protocol]\nfailure_probability = 5e-324", 1)
                                   if "failure_probability" not in CONFIG_TEXT.split("[protocol]")[1].split("[")[0]
                                   else re.sub(r"^failure_probability = .*$", "failure_probability = 5e-324",
                                               CONFIG_TEXT, count=1, flags=re.M),
                                   "protocol.failure_probability"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_hostile_config_is_one_config_error_naming_the_key(case):
    text, key = CONFIG_CASES[case]
    with pytest.raises(ConfigError) as refused:
        loads_config(text, "hostile.toml")
    message = str(refused.value)
    assert key in message and "\n" not in message and len(message) < 600, message


def test_a_session_with_the_bench_on_every_interface_is_refused_in_one_line(tmp_path):
    path = tmp_path / "lab_config.toml"
    path.write_text(CONFIG_CASES["bench on every interface"][0])
    with no_station():
        code, _, err = cli("session", "--config", str(path), "--out", str(tmp_path / "out"))
    refused_in_one_line(code, err, "session", "bench.host", "loopback")


def test_non_loopback_is_served_only_when_the_operator_says_so():
    from qslab.instruments.sim.server import Bench, check_loopback

    assert check_loopback("127.0.0.1") == "127.0.0.1" and check_loopback("::1") == "::1"
    assert check_loopback("localhost") == "localhost"
    with pytest.raises(ValueError, match=r"\[bench\] host = '0.0.0.0'"):
        Bench(host="0.0.0.0")
    assert Bench(host="0.0.0.0", allow_non_loopback=True).host == "0.0.0.0"
    text = CONFIG_TEXT.replace('host = "127.0.0.1"', 'host = "0.0.0.0"\nallow_non_loopback = true', 1)
    assert loads_config(text).bench_table["host"] == "0.0.0.0"


def test_bench_serve_refuses_a_non_loopback_host_in_one_line(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text('[bench]\nhost = "0.0.0.0"\n')
    code, _, err = cli("bench", "serve", "--config", str(path))
    refused_in_one_line(code, err, "bench", "[bench] host", "--allow-non-loopback")


# --- a resume trusts nothing the file says -----------------------------------------------------------

RESUME_SETTINGS = {
    "weights outside the package": ({"weights": "/".join([".."] * 4 + ["etc", "passwd"])}, "weights"),
    "zero images": ({"images": 0}, "images"),
    "negative batch": ({"batch_images": -10}, "batch_images"),
    "verify fraction 2": ({"verify_fraction": 2.0}, "verify_fraction"),
    "failure probability 5e-324": ({"failure_probability": 5e-324}, "failure_probability"),
    "images a string": ({"images": "300"}, "images"),
    "NaN mu": ({"mu": float("nan")}, "mu"),
    "unknown key": ({"shell": "rm -rf /"}, "shell"),
}


@pytest.mark.parametrize("case", sorted(RESUME_SETTINGS))
def test_resume_refuses_recorded_settings_it_would_not_accept_from_the_config(tmp_path, case):
    """A file's settings_json (checksummed, so as an edit would leave it) is checked like the config before anything
    is connected: exit 2, one line naming the file and the key."""
    change, key = RESUME_SETTINGS[case]
    path = write_session(tmp_path / "edited.h5", settings_json={**SETTINGS, **change}, batches=1)
    with h5py.File(path, "r+") as file:  # an aborted session: resumable
        file["status"][()] = np.bytes_(b"aborted".ljust(16, b"\0"))
    opened = []
    with no_station(), mock.patch("qslab.analysis.network.load_weights", side_effect=opened.append):
        code, _, err = cli("session", "--resume", str(path))
    lines = [line for line in err.strip().splitlines() if "no lab_config.toml here" not in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in lines[0] and key in lines[0], lines[0]
    assert not opened


# --- replay --------------------------------------------------------------------------------------------

def test_replay_failure_probability_below_what_the_bounds_evaluate_is_one_line(tmp_path):
    path = write_session(tmp_path / "s.h5")
    code, _, err = cli("replay", str(path), "--failure-probability", "5e-324")
    refused_in_one_line(code, err, "replay", "--failure-probability", "1e-100")
    code, out, err = cli("replay", str(path), "--failure-probability", "1e-100")
    assert code == 0 and err == "", err
    assert not re.search(r"\bnan\b|\binf\b", out, re.I), out


@pytest.mark.parametrize("command", [["leakage", "--mu", "6", "--gain", "1.3", "--from-calibration"],
                                     ["operating-point", "--target-accuracy", "0.9"]])
def test_every_failure_probability_option_refuses_what_the_bounds_cannot_evaluate(command):
    code, _, err = cli(*command, "--failure-probability", "5e-324")
    refused_in_one_line(code, err, command[0], "--failure-probability", "1e-100")


def _set(name: str, value):
    def edit(file: h5py.File) -> None:
        data = file[name][()]
        data.flat[0] = value
        file[name][...] = data
    return edit


RECORDED_VALUES = {
    "NaN client quadrature": (_set("layers/0/client_quadratures_snu", np.nan), "client_quadratures_snu"),
    "inf sent quadrature": (_set("layers/1/verification/sent_snu", np.inf), "sent_snu"),
    "-inf returned quadrature": (_set("layers/0/verification/returned_snu", -np.inf), "returned_snu"),
    "label 200": (_set("images/label", 200), "/images/label"),
    "negative index": (_set("images/index", -5), "/images/index"),
    "index beyond MNIST": (_set("images/index", 10_000), "/images/index"),
    "prediction 12": (_set("images/prediction", 12), "/images/prediction"),
}


@pytest.mark.parametrize("case", sorted(RECORDED_VALUES))
def test_replay_refuses_values_no_session_records(tmp_path, case):
    edit, name = RECORDED_VALUES[case]
    path = write_session(tmp_path / "s.h5")
    with h5py.File(path, "r+") as file:
        edit(file)
    code, out, err = cli("replay", str(path))
    refused_in_one_line(code, err, "replay", str(path), name)
    assert out == ""
