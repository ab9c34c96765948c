"""Hostile input that reaches a connected station (issue 17): a calibration record holding a value no working
station measures (zero or negative) stops the session with one line naming the record and the key, the safe-state
line read back, exit 1; before, it ended in "math domain error" or a wrong operating point."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from qslab.calibration.records import RecordStore
from qslab.calibration.result import CalibrationResult
from qslab.analysis.estimate import Estimate
from qslab.sequences.cli import main
from qslab.sequences.session import SessionSettings
from qslab.sequences.station_calibration import ImplausibleRecord, check_plausible

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=1, mu=6.0, gain=1.3, seed=3, batch_images=1, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=1)


@pytest.fixture(scope="module")
def calibrated(calibrated_store_at, tmp_path_factory) -> Path:
    """The records a one-image session's pre-flight wrote, its file in warm/ (tests/conftest.py, a copy)."""
    return calibrated_store_at(tmp_path_factory.mktemp("calibration"))


def test_every_record_a_session_writes_is_plausible(calibrated):
    """The rule refuses nothing a working station measures (every record of the bench's calibrations)."""
    records = RecordStore(calibrated).records()
    assert len(records) >= 7
    for record in records:
        check_plausible(record)


def _edited_copy(source: Path, target: Path, kind: str, instrument: str, key: str, value: float) -> str:
    """A copy of the store with a newer record of (kind, instrument) in which ``key`` holds ``value`` (written through
    the store, so its content hash is valid: as a rogue or buggy calibration would leave it)."""
    shutil.copytree(source, target)
    store = RecordStore(target)
    original = store.require_parameter(kind, instrument, key)
    parameters = {**original.parameters, key: replace(original.parameters[key], value=value)}
    return store.write(CalibrationResult(kind, instrument, parameters, raw=original.raw,
                                         conditions=original.conditions)).id


IMPLAUSIBLE = {
    "no photons per monitor watt": ("photons", "server_output", "server.photons_per_monitor_w", 0.0),
    "negative shot-noise unit": ("homodyne", "server_receiver", "server_receiver.shot_noise_variance_v2", -1e-6),
    "amplifier gain below 1": ("amplifier", "client_amplifier", "client_amplifier.gain", 0.0),
    "efficiency above 1": ("homodyne", "client_receiver", "client_receiver.efficiency", 1.7),
}


@pytest.mark.parametrize("case", sorted(IMPLAUSIBLE))
def test_an_implausible_record_stops_the_session_in_one_line_with_the_safe_state(calibrated, tmp_path, capsys, case):
    kind, instrument, key, value = IMPLAUSIBLE[case]
    record_id = _edited_copy(calibrated, tmp_path / "store", kind, instrument, key, value)
    with pytest.raises(ImplausibleRecord, match=key):
        check_plausible(RecordStore(tmp_path / "store").get(record_id))
    code = main(["session", "--config", str(CONFIG), "--images", "2", "--batch-images", "1", "--calibration-dir",
                 str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("qslab session: error:")]
    assert len(errors) == 1 and record_id in errors[0] and key in errors[0], captured.err
    assert "Traceback" not in captured.err and "math domain" not in captured.err
    assert "the station was closed: lasers off, drives at zero, shutters closed (read back)" in captured.err
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["error_type"] == "ImplausibleRecord" and report["safe_state"]["safe"] is True


def test_replay_refuses_an_implausible_record_in_one_line(calibrated, tmp_path, capsys):
    record_id = _edited_copy(calibrated, tmp_path / "store", *IMPLAUSIBLE["amplifier gain below 1"][:3], -3.0)
    session = next((calibrated / "warm").glob("session-*.h5"))
    code = main(["replay", str(session), "--calibration-dir", str(tmp_path / "store"), "--calibration", record_id])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and record_id in err[0] and "client_amplifier.gain" in err[0], err


def test_zero_mu_in_a_photons_record_is_refused_by_replay(calibrated, tmp_path, capsys):
    store = RecordStore(tmp_path / "store")
    record = store.write(CalibrationResult("photons", "server_output",
                                           {"server.photons_per_symbol": Estimate(0.0, 0.1, "photons")}))
    session = next((calibrated / "warm").glob("session-*.h5"))
    code = main(["replay", str(session), "--calibration-dir", str(tmp_path / "store"), "--calibration", record.id])
    err = capsys.readouterr().err
    assert code == 2 and "server.photons_per_symbol = 0" in err, err
