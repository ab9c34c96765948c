"""Sessions end to end, calibrations included, on the example stations of a second family (issue 15, "Prove the roles
with a second family"): the AlazarTech ATS9373 digitizer (sequences/examples/lab_config.alazar.toml) and the Tektronix
AWG70002A as the client's AWG (lab_config.awg70000.toml). Each runs from a fresh calibration store, and its accuracy
and verification must agree with the default station's within their statistical spread: the correct counts'
Clopper-Pearson intervals overlap, both verifications accept, and T and eps differ by less than four combined sigmas
(each sigma read off the session's own one-sided limit: (limit - estimate) / z). The example configs must differ from
lab_config.toml in the keys the hardware requires and nothing else; the protocol and station code name no family."""

from __future__ import annotations

import ast
import json
import math
import tomllib
from pathlib import Path

import h5py
import pytest
from station_fixtures import patient_config

from qslab.analysis.binomial import clopper_pearson
from qslab.calibration.records import RecordStore
from qslab.sequences.config import DRIVERS, load_config
from qslab.sequences.session import SessionSettings, run_session

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "sequences" / "examples"
STATIONS = {"default": ROOT / "lab_config.toml", "alazar": EXAMPLES / "lab_config.alazar.toml",
            "awg70000": EXAMPLES / "lab_config.awg70000.toml"}
SETTINGS = SessionSettings(images=30, mu=6.0, gain=1.3, seed=3, batch_images=10, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=30)
COMBINED_SIGMAS = 4.0
# What each example station changes, and why (the hardware requires it): the rest of the file is the default's.
ALAZAR_CHANGES = {
    "protocol.symbol_rate_hz": 2.5e8,             # 8 samples per symbol at the card's 2 GS/s on two channels
    "bench.server.symbol_rate_hz": 2.5e8,
    "instruments.digitizer.driver": "alazar_ats9373",
    "bench.instruments.digitizer": "alazar_ats9373",
    "roles.client_receiver.adc_bits": 12,          # its 12-bit ADC
    "roles.server_receiver.adc_bits": 12,
    "bench.digitizer.adc_bits": 12,
    "roles.client_receiver.detector.bandwidth_hz": 4e8,  # a band within its 1 GHz Nyquist band
    "roles.server_receiver.detector.bandwidth_hz": 4e8,
    "roles.client_receiver.detector.model": "400 MHz balanced detector (PDB470C class band)",
    "roles.server_receiver.detector.model": "400 MHz balanced detector (PDB470C class band)",
    "bench.client_receiver.bandwidth_hz": 4e8,
    "bench.server_receiver.bandwidth_hz": 4e8,
}
AWG70000_CHANGES = {
    "instruments.client_awg.driver": "tektronix_awg70002a",
    "bench.instruments.client_awg": "tektronix_awg70002a",
    "instruments.client_awg.limits.amplitude_max_vpp": 0.5,  # its largest direct-output amplitude
    "roles.client_processor.beam_splitter_driver_gain": 14.0,  # RF drivers of twice the gain
    "roles.client_processor.phase_driver_gain": 16.0,
    "bench.client_processor.beam_splitter_driver_gain": 14.0,
    "bench.client_processor.phase_driver_gain": 16.0,
}


def _flat(table: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        flat.update(_flat(value, path + ".") if isinstance(value, dict) else {path: value})
    return flat


def _read(path: Path) -> dict:
    return _flat(tomllib.loads(path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def sessions(tmp_path_factory, calibrated_store_at) -> dict[str, dict]:
    """One session per station, each example station from an empty calibration store (the session runs every
    calibration); the default station, the reference, on the records its own first session writes into an empty
    store (tests/conftest.py's bench_calibration, made once per run). Each with a 60 s I/O timeout
    (station_fixtures.patient_config): a busy host must not fail a session by a reply's delay."""
    results = {}
    for name, path in STATIONS.items():
        directory = tmp_path_factory.mktemp(name)
        calibration = directory / "calibration"
        if name == "default":
            calibrated_store_at(calibration)
        config = load_config(patient_config(directory, path))
        results[name] = run_session(config, SETTINGS, out_dir=directory / "sessions",
                                    store=RecordStore(calibration), progress=False)
    return results


@pytest.mark.parametrize(("name", "changes"), [("alazar", ALAZAR_CHANGES), ("awg70000", AWG70000_CHANGES)])
def test_the_example_station_differs_from_the_default_only_where_the_hardware_requires(name, changes):
    default, example = _read(STATIONS["default"]), _read(STATIONS[name])
    differing = {key: example.get(key) for key in default.keys() | example.keys() if default.get(key) != example.get(key)}
    assert differing == changes
    load_config(STATIONS[name])  # and it validates


@pytest.mark.parametrize(("name", "instrument", "driver_class"), [("alazar", "digitizer", "AlazarATS9373"),
                                                                 ("awg70000", "client_awg", "TektronixAWG70002A")])
def test_a_session_runs_end_to_end_with_the_second_family_and_closes_safe(sessions, name, instrument, driver_class):
    result = sessions[name]
    assert result["images"] == SETTINGS.images and result["safe_state"]["safe"] is True
    assert result["faults"]["outcome"] == "completed"
    with h5py.File(result["file"], "r") as f:
        snapshot = json.loads(f["meta/station_snapshot_json"][()])
    assert snapshot["instruments"][instrument]["__class__"].endswith("." + driver_class)  # the family that ran


@pytest.mark.parametrize("name", ["alazar", "awg70000"])
def test_accuracy_agrees_with_the_default_stations_within_binomial_intervals(sessions, name):
    default, other = sessions["default"], sessions[name]
    assert default["accuracy"] >= 0.8  # the default classifies (else the comparison says nothing)
    low_d, high_d = clopper_pearson(default["correct"], default["images"], 0.99)
    low_o, high_o = clopper_pearson(other["correct"], other["images"], 0.99)
    assert low_o <= high_d and low_d <= high_o, (default["correct"], other["correct"], default["images"])


@pytest.mark.parametrize("name", ["alazar", "awg70000"])
def test_verification_accepts_and_agrees_with_the_default_stations(sessions, name):
    d, o = sessions["default"]["verification"], sessions[name]["verification"]
    assert sessions[name]["verified"] is True and o["accepted"] is True and d["accepted"] is True
    assert o["n_samples"] == d["n_samples"] > 0  # the same rows verified: the same seed and layer shapes
    for estimate, limit in (("transmittance_hat", "transmittance_min"), ("excess_noise_hat_snu", "excess_noise_max_snu")):
        sigma = math.hypot(*((abs(v[limit] - v[estimate]) / v["z"]) for v in (d, o)))
        assert 0 < sigma and abs(o[estimate] - d[estimate]) < COMBINED_SIGMAS * sigma, (estimate, d[estimate],
                                                                                         o[estimate], sigma)
    assert abs(sessions[name]["mu_photons"] - sessions["default"]["mu_photons"]) < 0.1  # the VOA set for mu alike


def test_the_protocol_and_the_station_name_no_driver_family():
    """A session with either family runs through the roles: no driver name in the code that runs it."""
    files = [*sorted((ROOT / "sequences" / "protocol").glob("*.py")),
             *(ROOT / "sequences" / name for name in ("station.py", "session.py", "calibrations.py",
                                                      "station_calibration.py", "instrument_probe.py"))]
    for path in files:
        literals = {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)}
        assert not literals & set(DRIVERS), (path.name, literals & set(DRIVERS))
