"""A session with a curious server on the bench (qslab session --curious-server): the rest of the session
unchanged, the counts recorded under /curious_server, replay recomputing the outcome exactly (and noticing
recorded counts that were changed), a declared candidate set's capped and exact figures, and usage errors."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import h5py
import pytest
from station_fixtures import CLEAN_SETTINGS, patient_config_file

from qslab.analysis import recording
from qslab.analysis.data_leakage_curious import CuriousSpec, attack_outcome, streamed_attack_outcome
from qslab.analysis.replay import replay
from qslab.sequences.cli import main
from qslab.sequences.config import load_config
from qslab.sequences.session import run_session

CONFIG = patient_config_file()  # lab_config.toml with a 60 s I/O timeout: runs compared are not moved by load
SETTINGS = CLEAN_SETTINGS  # the clean session's (station/conftest.py: patient_clean_session)
UNCHANGED = ("accuracy", "verified", "verification", "weight_leakage_bits_per_mode", "data_leakage_bits_per_bin",
             "mu_photons", "gain")


@pytest.fixture(scope="module")
def sessions(patient_clean_session, tmp_path_factory):
    """(the clean session, the same with a curious server on the records the clean one left: station/conftest.py)."""
    clean = patient_clean_session.results
    store = patient_clean_session.store_copy(tmp_path_factory.mktemp("calibration"))
    curious = run_session(load_config(CONFIG), replace(SETTINGS, candidate_set=50, curious_server=CuriousSpec(
        "delay", seed=3, train_images=600, candidates=50).to_json()), out_dir=tmp_path_factory.mktemp("curious"),
        store=store, progress=False)
    return clean, curious


def test_the_curious_server_changes_nothing_else_and_reads_the_digits(sessions):
    clean, curious = sessions
    for key in UNCHANGED:
        assert curious[key] == clean[key], key
    outcome = curious["curious_server"]
    assert outcome["kind"] == "delay" and outcome["images"] == 20 and outcome["candidates"] == 50
    assert outcome["accuracy"] > 0.3                      # chance is 0.1; 20 images: a loose floor
    assert outcome["identification_rate"] >= 0.9
    assert outcome["identification_fano_bits"] <= math.log2(50)
    assert "curious_server" not in clean


def test_the_candidate_set_caps_the_bound_and_gives_the_exact_value(sessions):
    clean, curious = sessions
    data = curious["security_report"]["data_leakage"]
    assert curious["data_leakage_bound_bits_per_query"] == pytest.approx(math.log2(50))
    assert clean["data_leakage_bound_bits_per_query"] > 1000
    exact = data["finite_set"]["exact_holevo_bits_per_query"]
    assert exact <= math.log2(50) + 1e-9 and exact > 0.99 * math.log2(50)  # 784 rows: essentially all of it


def test_the_counts_are_recorded_and_replay_recomputes_the_outcome_exactly(sessions, tmp_path):
    _, curious = sessions
    path = curious["file"]
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == 5
        assert f["curious_server/counts"].shape == (20, 2 * (392 + 1))
        assert f["curious_server/counted_rows"].shape == (20,)
    with recording.SessionFile.open(path) as session:
        spec, counts, rows = session.curious_server
        assert spec["kind"] == "delay" and counts.sum() > 0 and rows.min() > 700
    replayed = replay(path)
    assert replayed["changes"] == {} and replayed["curious_server"] == curious["curious_server"]
    # a copy whose counts were changed: replay tells the recorded outcome from the recomputed one
    copy = tmp_path / "changed.h5"
    copy.write_bytes(Path(path).read_bytes())
    with h5py.File(copy, "r+") as f:
        f["curious_server/counts"][:] = f["curious_server/counts"][()][::-1]
    assert "curious_server" in replay(copy)["changes"]


def test_the_streamed_outcome_equals_the_in_memory_one_on_the_whole_arrays(sessions):
    """The session and replay read the counts back a slice at a time (streamed_attack_outcome); the in-memory route on
    the whole arrays (attack_outcome) gives the very same outcome, whatever the slices."""
    _, curious = sessions
    with recording.SessionFile.open(curious["file"]) as session:
        spec, counts, rows = session.curious_server
        images = session.images
        whole = attack_outcome(CuriousSpec.from_json(spec), counts, rows, images.label, images.index)
        outputs = counts.shape[1]
        sliced = [streamed_attack_outcome(CuriousSpec.from_json(spec), lambda: session.curious_chunks(values))
                  for values in (3 * outputs, 7 * outputs, None)]  # 3 and 7 images a slice, and all at once
    assert whole == curious["curious_server"]
    assert all(outcome == whole for outcome in sliced)


@pytest.mark.parametrize("args,message", [
    (["--images", "20", "--candidate-set", "10"], "expected L >= 20"),
    (["--curious-residual-amplitude", "0.01"], "needs --curious-server"),
    (["--curious-server", "homodyne"], "invalid choice"),
])
def test_usage_errors_are_one_line(args, message, capsys, tmp_path):
    try:
        code = main(["session", "--config", str(CONFIG), "--out", str(tmp_path), *args])
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
