"""The CLI end to end under bad input (hypothesis): `qslab replay` on truncated, flipped and semantically broken
session files, `qslab session --config` on mutated configs, `qslab leakage` and `qslab simulate` with bad numbers.
Every refusal is exit status 2 (or 1) with exactly one stderr line and no traceback; a run that goes through exits 0
with nothing on stderr (no numpy warnings). The bench is never started for a config that does not load."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tomllib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qslab.analysis.recording import LayerBatch, LayerShape, SessionWriter
from qslab.calibration.records import RecordStore
from qslab.calibration.result import CalibrationResult, Estimate
from qslab.sequences.cli import main
from qslab.sequences.config import ConfigError, loads_config
from byte_damage import damaged

ROOT = Path(__file__).resolve().parents[1]
CONFIG_TEXT = (ROOT / "lab_config.toml").read_text()
FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def cli(*argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `qslab ARGV`; any exception escaping main() fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse refusals
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def refused_in_one_line(code: int, err: str, command: str, *names: str) -> str:
    assert code in (1, 2), (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"qslab {command}: error:"), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# --- qslab replay ---------------------------------------------------------------------------------

LAYERS = [LayerShape(rows=6, modes=392), LayerShape(rows=10, modes=3)]
SETTINGS = {"images": 4, "mu": 6.0, "gain": 1.3, "seed": 0, "batch_images": 2, "verify_fraction": 0.5,
            "failure_probability": 1e-10, "laser_power_dbm": 10.0, "weights": None, "false_alarm": 1e-3,
            "exact_leakage_images": 4}
MEASURED = {"mu_photons": {"value": 6.0, "uncertainty": 0.05}, "gain": {"value": 1.3, "uncertainty": 0.01},
            "transmittance": {"value": 0.6, "uncertainty": 0.01},
            "excess_noise_snu": {"value": 0.001, "uncertainty": 0.001},
            "server_efficiency": {"value": 0.85, "uncertainty": 0.01},
            "server_electronic_noise_snu": {"value": 0.04, "uncertainty": 0.001}}


def write_session(path: Path, settings_json=None, calibrations_json=None, batches: int = 2) -> Path:
    """A small session file written with qslab.analysis.recording directly (2 batches of 2 images), as a session would."""
    meta = {"config_toml": CONFIG_TEXT, "station_snapshot_json": {}, "provenance_json": {},
            "settings_json": SETTINGS if settings_json is None else settings_json, "seeds_json": {"session": 0},
            "calibrations_json": ({"records": {}, "measured": MEASURED} if calibrations_json is None
                                  else calibrations_json)}
    rng = np.random.default_rng(0)
    with SessionWriter.create(path, LAYERS, meta, qslab_version="0.1.0", git_revision="abc") as writer:
        for batch in range(batches):
            layers = []
            for shape in LAYERS:
                rows = np.array([0, 2])
                layers.append(LayerBatch(rng.normal(size=(2, shape.rows)).astype(np.float32), rows,
                                         rng.random((2, 2)) < 0.5,
                                         rng.normal(0, 2, (2, 2, shape.modes)).astype(np.float32),
                                         rng.normal(0, 2, (2, 2, shape.modes)).astype(np.float32)))
            writer.append_batch(np.arange(2 * batch, 2 * batch + 2), rng.integers(0, 10, 2),
                                rng.integers(0, 256, (2, 784), dtype=np.uint8), rng.integers(0, 10, 2), layers)
        if batches:
            writer.finish({"accuracy": 0.5})
    return path


class Quiet(tuple):
    def __repr__(self) -> str:
        return "<session file>"


@pytest.fixture(scope="module")
def session_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("replay")
    path = write_session(directory / "valid.h5")
    return Quiet((directory, path.read_bytes()))


def test_the_small_session_file_replays(session_file, tmp_path):
    """The fuzz material is a file `qslab replay` accepts (so the mutations below start from a good one)."""
    path = tmp_path / "s.h5"
    path.write_bytes(session_file[1])
    code, out, err = cli("replay", str(path))
    assert code == 0 and err == "" and "test accuracy" in out


@FUZZ
@given(position=st.floats(0, 1, exclude_max=True), kind=st.sampled_from(["truncate", "flip", "zero"]),
       span=st.integers(1, 64), xor=st.integers(1, 255))
def test_replay_of_a_damaged_file_is_one_line(session_file, position, kind, span, xor):
    """Truncated, flipped or zeroed bytes: exit 0 (the damage missed everything replay reads) or one line naming
    the file."""
    directory, valid = session_file
    data = damaged(valid, position, kind, span, xor)
    path = directory / "mutated.h5"
    path.write_bytes(bytes(data))
    code, _, err = cli("replay", str(path))
    if code != 0:
        refused_in_one_line(code, err, "replay", str(path))
    else:
        assert err == ""


def _without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


BROKEN_META = {
    "no measured values": dict(calibrations_json={"records": {}}),
    "measured is a list": dict(calibrations_json={"measured": [1, 2]}),
    "mu missing": dict(calibrations_json={"measured": _without(MEASURED, "mu_photons")}),
    "mu not a number": dict(calibrations_json={"measured": {**MEASURED, "mu_photons": {"value": "six"}}}),
    "mu NaN": dict(calibrations_json={"measured": {**MEASURED, "mu_photons": {"value": math.nan}}}),
    "mu negative": dict(calibrations_json={"measured": {**MEASURED, "mu_photons": {"value": -6.0}}}),
    "gain below 1": dict(calibrations_json={"measured": {**MEASURED, "gain": {"value": 0.5}}}),
    "efficiency above 1": dict(calibrations_json={"measured": {**MEASURED, "server_efficiency": {"value": 2.0}}}),
    "negative uncertainty": dict(calibrations_json={"measured": {**MEASURED, "gain": {"value": 1.3,
                                                                                      "uncertainty": -1}}}),
    "settings a list": dict(settings_json=[1]),
    "settings empty": dict(settings_json={}),
    "failure probability text": dict(settings_json={**SETTINGS, "failure_probability": "small"}),
    "failure probability 2": dict(settings_json={**SETTINGS, "failure_probability": 2.0}),
    "exact images text": dict(settings_json={**SETTINGS, "exact_leakage_images": "all"}),
    "no batch committed": dict(batches=0),
}


@pytest.mark.parametrize("case", sorted(BROKEN_META))
def test_replay_of_a_file_with_broken_meta_is_one_line(tmp_path, case):
    """A structurally valid file whose settings or calibrated values the analysis cannot use: exit 2, one line
    naming the file (these used to end in KeyError/TypeError tracebacks or in unnamed messages)."""
    path = write_session(tmp_path / "broken.h5", **BROKEN_META[case])
    code, _, err = cli("replay", str(path))
    refused_in_one_line(code, err, "replay", str(path))


def test_replay_of_things_that_are_not_session_files_is_one_line(tmp_path):
    """Missing file, directory, empty file, text, a calibration record: exit 2, one line naming the path."""
    record = RecordStore(tmp_path / "store").write(CalibrationResult("photons", "server_output",
                                                                     {"server.photons_per_symbol": Estimate(6, 0.1)}))
    (tmp_path / "empty.h5").write_bytes(b"")
    (tmp_path / "text.h5").write_text("not hdf5\n")
    (tmp_path / "dir.h5").mkdir()
    for path in (tmp_path / "missing.h5", tmp_path / "dir.h5", tmp_path / "empty.h5", tmp_path / "text.h5",
                 record.path):
        code, _, err = cli("replay", str(path))
        refused_in_one_line(code, err, "replay", str(path))


def test_replay_with_a_bad_calibration_id_or_a_corrupt_store_is_one_line(session_file, tmp_path):
    """--calibration with an id that is no record (or a path), or with a corrupt file in the store: one line."""
    path = tmp_path / "s.h5"
    path.write_bytes(session_file[1])
    store = tmp_path / "store"
    store.mkdir()
    for record_id in ("nope", "../s", str(path), "x" * 300):
        code, _, err = cli("replay", str(path), "--calibration", record_id, "--calibration-dir", str(store))
        refused_in_one_line(code, err, "replay")
    (store / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    code, _, err = cli("replay", str(path), "--calibration", "broken", "--calibration-dir", str(store))
    refused_in_one_line(code, err, "replay", "broken.h5")


# --- qslab session --config BAD ------------------------------------------------------------------------

KEY_LINES = [i for i, line in enumerate(CONFIG_TEXT.splitlines()) if "=" in line and not line.lstrip().startswith("#")]
JUNK = st.sampled_from(["", "nan", "inf", "-1e400", "\"\"", "[]", "{}", "true", "'bench", "0x", "1e999", "=",
                        "\"ünï\"", "[[x]]", "9" * 30, "\"TCPIP::nowhere\""])


@st.composite
def mutated_config(draw) -> bytes:
    lines = CONFIG_TEXT.splitlines(keepends=True)
    kind = draw(st.sampled_from(["delete", "value", "insert", "truncate", "bytes"]))
    index = draw(st.sampled_from(KEY_LINES))
    if kind == "delete":
        del lines[index]
    elif kind == "value":
        key = lines[index].split("=", 1)[0]
        lines[index] = f"{key}= {draw(JUNK)}\n"
    elif kind == "insert":
        lines.insert(index, draw(st.sampled_from(["[station]\n", "bogus_key = 1\n", "[[roles]]\n", "x\n"])))
    text = "".join(lines).encode()
    if kind == "truncate":
        text = text[:draw(st.integers(0, len(text) - 1))]
    elif kind == "bytes":
        position = draw(st.integers(0, len(text) - 1))
        text = text[:position] + draw(st.binary(min_size=1, max_size=8)) + text[position + 1:]
    return text


def _loads(data: bytes) -> bool:
    try:
        loads_config(data.decode("utf-8"))
    except (ConfigError, UnicodeDecodeError):
        return False
    return True


@FUZZ
@given(data=mutated_config())
def test_session_with_a_mutated_config_is_one_line_and_never_starts_the_bench(tmp_path_factory, data):
    """A config that does not load: exit 2 and one line naming the file (and, for a bad key, the key), before any
    instrument or bench is touched."""
    assume(not _loads(data))
    directory = tmp_path_factory.mktemp("config")
    path = directory / "lab_config.toml"
    path.write_bytes(data)
    with mock.patch("qslab.sequences.station.LabStation.connect", side_effect=AssertionError("the bench was started")):
        code, _, err = cli("session", "--config", str(path), "--calibration-dir", str(directory / "cal"),
                           "--out", str(directory / "out"))
    assert code == 2
    refused_in_one_line(code, err, "session", str(path))
    assert not (directory / "cal").exists() and not (directory / "out").exists()


def test_session_with_an_unreadable_config_is_one_line(tmp_path):
    """Missing file, directory, Latin-1 text, binary: exit 2, one line, nothing started."""
    (tmp_path / "dir.toml").mkdir()
    (tmp_path / "latin1.toml").write_bytes(b"[station]\nname = \"caf\xe9\"\n")
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    with mock.patch("qslab.sequences.station.LabStation.connect", side_effect=AssertionError("the bench was started")):
        for name in ("missing.toml", "dir.toml", "latin1.toml", "binary.toml"):
            code, _, err = cli("session", "--config", str(tmp_path / name))
            refused_in_one_line(code, err, "session", name)


@pytest.mark.parametrize("option", ["--images", "--mu", "--gain", "--seed", "--batch-images"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "abc", "1e999", "9" * 400, ""])
def test_session_options_with_bad_numbers_are_one_line(tmp_path, option, value):
    """Numbers out of range or not numbers: argparse's one line (exit 2) naming the option (a value the option
    accepts meets the missing config instead, also one line)."""
    config = str(tmp_path / "missing.toml")
    with mock.patch("qslab.sequences.station.LabStation.connect", side_effect=AssertionError("the bench was started")):
        code, _, err = cli("session", "--config", config, option, value)
    if option in err:
        refused_in_one_line(code, err, "session", option, "expected")
    else:
        refused_in_one_line(code, err, "session", config)


# --- qslab leakage / simulate with bad numbers -------------------------------------------------------

NUMBERS = st.one_of(
    st.sampled_from(["0", "-0", "1", "1.0000001", "nan", "-inf", "inf", "1e308", "1e-320", "5e-324", "1e400", "",
                     " 6", "6 ", "0x10", "1_000", "1e", "--", "六", "9" * 400, "-" + "9" * 30]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str))
LEAKAGE_OPTIONS = ["--mu", "--gain", "--modes", "--rows", "--transmittance", "--technical-noise", "--queries"]


@settings(max_examples=150, deadline=None)
@given(values=st.dictionaries(st.sampled_from(LEAKAGE_OPTIONS), NUMBERS, min_size=1, max_size=4))
def test_leakage_with_bad_numbers_is_a_result_or_one_line(values):
    """Any numbers: exit 0 with finite figures and a clean stderr, or exit 2 and one line (argparse, or the bounds
    not finite at these inputs); never a traceback, an OverflowError or numpy warnings."""
    argv = {"--mu": "6", "--gain": "1.3", **values}
    code, out, err = cli("leakage", *[part for item in argv.items() for part in item], "--json")
    if code == 0:
        assert err == ""
        payload = json.loads(out.strip().splitlines()[-1])
        assert all(math.isfinite(v) for v in payload.values() if isinstance(v, float))
    else:
        refused_in_one_line(code, err, "leakage")


def test_leakage_map_to_an_unwritable_place_is_one_line(tmp_path):
    for target in (tmp_path / "no" / "such" / "dir" / "map.png", tmp_path / "map.unknownformat"):
        code, _, err = cli("leakage", "--mu", "6", "--gain", "1.3", "--map", str(target))
        refused_in_one_line(code, err, "leakage", str(target))


@settings(max_examples=12, deadline=None)
@given(mu=st.sampled_from(["1e-300", "1e300", "1e308", "6", "0", "nan", "-1"]),
       gain=st.sampled_from(["1.0000001", "1e300", "1.3", "1", "inf"]),
       mode=st.sampled_from(["physics", "paper"]), verify=st.sampled_from(["0", "1", "0.5", "2", "nan"]))
def test_simulate_with_bad_numbers_is_a_result_or_one_line(mu, gain, mode, verify):
    """One image, one seed: exit 0 with finite figures, or one line (exit 2); never a traceback."""
    code, out, err = cli("simulate", "--images", "1", "--seeds", "1", "--mu", mu, "--gain", gain, "--mode", mode,
                         "--verify-fraction", verify, "--json")
    if code == 0:
        assert err == ""
    else:
        refused_in_one_line(code, err, "simulate")


@pytest.mark.parametrize("weights", ["/nonexistent/w.npz", "lab_config.toml"])
def test_simulate_with_a_bad_weights_file_is_one_line(weights):
    code, _, err = cli("simulate", "--images", "1", "--seeds", "1", "--mu", "6", "--gain", "1.3",
                       "--weights", str(ROOT / weights) if not weights.startswith("/") else weights)
    refused_in_one_line(code, err, "simulate", Path(weights).name)


def test_the_valid_config_loads():
    """The mutations start from a config that loads (else every mutated config would be refused trivially)."""
    assert tomllib.loads(CONFIG_TEXT) and _loads(CONFIG_TEXT.encode())
