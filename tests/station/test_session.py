"""The lab session on the virtual bench: results, recording, replay, interruption and resume."""

from __future__ import annotations

import gc
import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from station_fixtures import CLEAN_SETTINGS, patient_config_file

from qslab.analysis import recording
from qslab.analysis.estimate import Estimate
from qslab.analysis.replay import replay
from qslab.calibration.records import RecordStore
from qslab.sequences import session as session_module
from qslab.sequences.cli import main
from qslab.sequences.config import load_config
from qslab.sequences.protocol.setup import CHECK_AVERAGING_S
from qslab.sequences.session import run_session

CONFIG = patient_config_file()  # lab_config.toml with a 60 s I/O timeout: runs compared are not moved by load
SETTINGS = CLEAN_SETTINGS  # 20 images, 2 batches
COMPARED = ("accuracy", "verified", "weight_leakage_bits_per_mode", "weight_leakage_bits_per_mode_nominal",
            "data_leakage_bits_cramer_rao", "data_leakage_bits_per_bin", "data_leakage_bound_bits_per_query", "mu_photons", "gain", "verification")


@pytest.fixture(scope="module")
def store(patient_clean_session, tmp_path_factory):
    """The bench's calibration records as the clean session left them (with its channel record), a writable copy."""
    return patient_clean_session.store_copy(tmp_path_factory.mktemp("calibration"))


@pytest.fixture(scope="module")
def clean(patient_clean_session):
    """READ-ONLY: the clean session's results (station/conftest.py: run once per test run, SETTINGS on CONFIG)."""
    return patient_clean_session.results


def test_session_classifies_verifies_and_closes_safe(clean):
    assert clean["images"] == 20 and clean["accuracy"] >= 0.9
    assert clean["verified"] is True
    assert clean["safe_state"]["safe"] is True
    assert abs(clean["mu_photons"] - 6.0) < 0.1  # the VOA was set for mu from the photons record
    v = clean["verification"]
    # the honest round trip the bench models: forward x processor^2 x return, the detector referred out
    assert 0.5 < v["transmittance_hat"] < 0.8 and v["transmittance_min"] < v["transmittance_hat"]
    assert v["excess_noise_hat_snu"] < 0.01
    assert clean["weight_leakage_bits_per_mode_nominal"] < clean["weight_leakage_bits_per_mode"]
    assert 0 < clean["data_leakage_bits_cramer_rao"] < clean["data_leakage_bits_per_bin"] < 0.1
    # figures off (tests/conftest.py): none drawn, no empty figure directory left, and the results say so
    assert clean["figures"] is None and not Path(clean["file"]).with_suffix("").exists()


def test_a_batch_and_the_check_after_it_ask_the_instruments_for_tens_of_milliseconds(patient_clean_session):
    """Instrument time between the first two batches' starts: the first batch's layers (the VOA's moves) and the
    health check after it, whose 10 monitor readings take CHECK_AVERAGING_S each; with the meter's power-on
    averaging (0.1 s, as before the check set its own) they alone took 1 s per batch."""
    first_s, second_s = patient_clean_session.instrument_s_at_batches[:2]
    assert 10 * CHECK_AVERAGING_S <= second_s - first_s < 0.1


def test_the_file_follows_the_schema_and_plain_h5py_reads_it(clean):
    path = clean["file"]
    recording.validate(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["schema"].decode() == "qslab.session"
        assert f["layers/0/client_quadratures_snu"].shape == (20, 784)
        assert f["layers/1/client_quadratures_snu"].shape == (20, 10)
        assert f["images/pixels"].shape == (20, 784)
        settings = json.loads(bytes(f["meta/settings_json"][()]).decode()) if "meta/settings_json" in f else None
    with recording.SessionFile.open(path) as session:
        assert session.status == "complete" and session.images_written == 20
        assert session.settings["seed"] == 3
        assert session.results["accuracy"] == clean["accuracy"]
        assert any(key.startswith("channel/link/") for key in session.calibrations["records"])
    assert settings is None or settings["images"] == 20


def test_replay_reproduces_the_live_numbers_exactly(clean):
    replayed = replay(clean["file"])
    assert replayed["changes"] == {}
    for key in COMPARED:
        assert replayed[key] == clean[key], key


def test_the_data_leakage_bound_is_gaussian_bound_on_the_recorded_calibration(clean):
    """The session's data-leakage upper bound, recomputed by hand from the file's calibrated values: N at the
    budget's limits of G, the noise figure and the processor loss (each at the normal quantile of its share),
    then data_leakage_bound.gaussian_bound on the shipped MNIST spectrum, plus C's sampling error at its share."""
    from scipy.stats import norm

    from qslab.analysis.data_leakage_bound import gaussian_bound
    from qslab.analysis.data_leakage_report import declared_moments

    with recording.SessionFile.open(clean["file"]) as session:
        m = session.calibrations["measured"]
    terms = clean["security_report"]["failure_budget"]["terms"]
    share = clean["failure_probability"] / len(terms)
    assert {"processor_loss_per_pass_db", "data_second_moments"} <= {t["name"] for t in terms}
    gain = m["gain"]["value"] + norm.isf(share / 2) * m["gain"]["uncertainty"]
    nf = 10 ** ((m["amplifier_noise_figure_db"]["value"] + norm.isf(share) * m["amplifier_noise_figure_db"]
                 ["uncertainty"]) / 10)
    loss = max(m["processor_loss_per_pass_db"]["value"] - norm.isf(share) * m["processor_loss_per_pass_db"]
               ["uncertainty"], 0.0)                      # a loss is never below 0 dB
    photons = 0.5 * (nf - 1 / gain) * 10 ** (-loss / 10)
    report = clean["security_report"]["data_leakage"]
    assert report["photons_upper"] == pytest.approx(photons, rel=1e-9)
    moments, _ = declared_moments()
    for layer, mom, rows in zip(report["layers"], moments, (784, 10)):
        bound = gaussian_bound(photons, mom.eigenvalues, rows, modes=392)
        sigma = mom.per_row_bound_uncertainty_bits(photons)
        assert layer["per_query_bits"] == pytest.approx(rows * (bound.per_row_bits + norm.isf(share) * sigma), rel=1e-9)
        assert layer["per_symbol_bits"] * 392 == pytest.approx(layer["per_query_bits"], rel=1e-12)
    assert clean["data_leakage_bound_bits_per_query"] == report["layers"][0]["per_query_bits"]
    assert clean["data_leakage_bound_bits_cumulative"] == pytest.approx(20 * report["layers"][0]["per_query_bits"])
    assert replay(clean["file"])["security_report"]["data_leakage"] == report


def test_replay_with_a_lossier_processor_record_lowers_only_the_data_leakage_bound(clean, tmp_path):
    """`qslab replay --calibration <processor record>`: its loss per pass replaces the session's, and only the
    data-leakage bound moves (down: the processor's second pass attenuates the returned noise)."""
    from qslab.calibration.result import CalibrationResult
    from qslab.sequences.commands.replay import override_from_record

    record = RecordStore(tmp_path).write(CalibrationResult("processor", "client_processor", {
        "client_processor.loss_per_pass_db": Estimate(3.0, 0.01, "dB")}))
    replayed = replay(clean["file"], override_from_record(record))
    assert set(replayed["changes"]) == {"data_leakage_bound_bits_per_query", "data_leakage_bound_bits_cumulative"}
    assert replayed["security_report"]["data_leakage"]["loss_per_pass_db_lower"] == pytest.approx(
        3.0 - 0.01 * {t["name"]: t["sigmas"] for t in clean["security_report"]["failure_budget"]["terms"]}[
            "processor_loss_per_pass_db"])
    assert replayed["data_leakage_bound_bits_per_query"] < clean["data_leakage_bound_bits_per_query"]


def test_replay_with_another_mu_reports_what_changed(clean):
    replayed = replay(clean["file"], {"mu_photons": Estimate(8.0, 0.1)})
    assert replayed["accuracy"] == clean["accuracy"]  # the measurements do not change
    assert set(replayed["changes"]) >= {"mu_photons_upper", "weight_leakage_bits_per_mode_nominal"}
    assert replayed["weight_leakage_bits_per_mode_nominal"] > clean["weight_leakage_bits_per_mode_nominal"]


def test_replay_with_a_channel_record_changes_what_depends_on_t_and_nothing_else(clean, store, tmp_path, capsys):
    """`qslab replay --calibration <channel record>` (the honest link: T, sqrt(eta_s T), eps): the session's own
    record reproduces the results exactly; a record of T = 0.3 moves the acceptance threshold on the amplitude
    to sqrt(eta_s 0.3) less its 3-sigma margin, and nothing that does not depend on the honest link moves."""
    import math

    from qslab.calibration.result import CalibrationResult

    def replayed(*options) -> dict:
        assert main(["replay", clean["file"], "--json", *options]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    with recording.SessionFile.open(clean["file"]) as session:
        own = next(v["id"] for k, v in session.calibrations["records"].items() if k.startswith("channel/link/"))
        eta = session.calibrations["measured"]["server_efficiency"]["value"]
        own_amplitude = Estimate(**session.calibrations["measured"]["amplitude_transmittance"])
    base = replayed()
    same = replayed("--calibration", own, "--calibration-dir", str(store.directory))
    assert same["changes"] == {} and same["verification"] == base["verification"]
    other_store = RecordStore(tmp_path)
    amplitude = Estimate(math.sqrt(eta * 0.3), 0.001)
    record = other_store.write(CalibrationResult("channel", "link", {
        "channel.transmittance": Estimate(0.3, 0.01), "channel.amplitude_transmittance": amplitude,
        "channel.excess_noise_snu": Estimate(0.02, 0.002, "SNU")}))
    other = replayed("--calibration", record.id, "--calibration-dir", str(tmp_path))
    depends_on_t = {"amplitude_threshold", "variance_threshold_snu", "false_alarm_probability", "accepted",
                    "detection_power", "alternative"}  # the honest hypothesis's test; the estimates are the data's
    moved = {k for k in base["verification"] if other["verification"][k] != base["verification"][k]}
    assert {"amplitude_threshold", "variance_threshold_snu"} <= moved <= depends_on_t, moved
    # the statistical margin below the honest limit is the session's own (its samples), scaled by sqrt(var0): the
    # record's eps (0.02 SNU) against the session's changes var0 = 1 + v_el + eta eps by well under 5 %
    margin = own_amplitude.lower(3.0) - base["verification"]["amplitude_threshold"]
    assert 0.0 < margin < 0.01
    assert other["verification"]["amplitude_threshold"] == pytest.approx(amplitude.lower(3.0) - margin,
                                                                         abs=0.05 * margin)
    assert other["verification"]["amplitude_threshold"] < base["verification"]["amplitude_threshold"] - 0.1
    assert {k for k in base if k not in ("verification", "changes") and other[k] != base[k]} == set()


def test_interrupted_session_is_safe_readable_and_resumes_to_the_clean_result(clean, store, tmp_path, monkeypatch):
    original = session_module.run_batch
    calls, frozen, frozen_before = [], [], gc.get_freeze_count()

    def interrupted(link, layers, pixels, seed, batch, **kwargs):
        calls.append(batch)
        frozen.append(gc.get_freeze_count())  # the objects older than the batches: out of the collector's full passes
        if batch == 1:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the session
        return original(link, layers, pixels, seed, batch, **kwargs)

    monkeypatch.setattr(session_module, "run_batch", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught:
        run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path, store=store, progress=False)
    assert min(frozen) > frozen_before + 10_000 and gc.get_freeze_count() == frozen_before  # given back on Ctrl-C
    path = next(tmp_path.glob("session-*.h5"))
    assert "--resume" in " ".join(getattr(caught.value, "__notes__", []))
    with recording.SessionFile.open(path) as partial:
        assert partial.status == "aborted" and partial.images_written == 10
    monkeypatch.setattr(session_module, "run_batch", original)
    resumed = run_session(load_config(CONFIG), SETTINGS, out_dir=tmp_path, store=store, resume=path, progress=False)
    assert resumed["safe_state"]["safe"] is True
    for key in COMPARED:
        assert resumed[key] == clean[key], key
    with recording.SessionFile.open(path) as a, recording.SessionFile.open(clean["file"]) as b:
        assert np.array_equal(a.client_quadratures_snu(0), b.client_quadratures_snu(0))
        assert np.array_equal(a.verification(0).returned_snu, b.verification(0).returned_snu)


def test_replay_cli_refuses_a_foreign_file_in_one_line(tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    assert main(["replay", str(foreign)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "foreign.h5" in err[0] and "qslab replay: error:" in err[0]


def test_cli_attack_is_caught_and_reported_with_the_safe_state(store, tmp_path, capsys):
    code = main(["session", "--config", str(CONFIG), "--images", "20", "--batch-images", "10",
                 "--calibration-dir", str(store.directory), "--out", str(tmp_path), "--attack", "tap=0.05", "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 1 and "verification failed" in captured.err
    assert report["safe_state"]["safe"] is True
    assert main(["session", "--attack", "tap=2"]) == 2  # a bad spec: one line, nothing started
    assert "tap fraction must lie in [0, 1]" in capsys.readouterr().err


def test_the_receivers_dc_levels_are_taken_out_of_every_record(patient_clean_session):
    """The DC-coupled receivers sit tens of SNU off zero (their LO's unbalanced share, CMRR 27-30 dB); each
    record's own vacuum tail takes it out, so the tail reads ~0 SNU (its halves agree) and verification holds.
    Read after each of the clean session's two batches (station/conftest.py spies on session.run_batch)."""
    from qslab.instruments.sim.link.receivers import RECEIVERS

    results, seen = patient_clean_session.results, patient_clean_session.dc_levels
    assert results["verified"] is True and results["verification"]["excess_noise_hat_snu"] < 0.02
    assert len(seen) == 2
    for tails, raw_dc_snu in seen:
        assert set(tails) == set(RECEIVERS)
        assert all(abs(raw_dc_snu[name]) > 20.0 for name in RECEIVERS)  # what the DSP had to take out
        assert all(abs(tails[name]) < 0.05 for name in RECEIVERS), tails  # 0.011 SNU rms


def test_the_session_stops_cleanly_before_the_batch_that_would_exceed_its_leakage_cap(store, tmp_path, clean):
    """DECISIONS O, AI: the 10-row layer is unverified, so every image its weights are sent to costs g(mu), about 4.2
    bit/mode: the set-up's leakage nulling first (the clean session's count beyond its 20 images), then 10 per batch.
    A cap halfway between one batch and two keeps the first and stops before the second, with a complete file; a
    cap below the set-up's own passes allows no batch."""
    layer2 = clean["security_report"]["weight_leakage"]["layers"][1]
    assert not layer2["verified"]
    set_up = clean["weight_images_per_layer"][1] - clean["images"]
    assert set_up > 0
    cap = (set_up + 15) * layer2["unverified_bits_per_mode"]
    result = run_session(load_config(CONFIG), replace(SETTINGS, max_weight_leakage_bits_per_mode=cap),
                         out_dir=tmp_path, store=store, progress=False)
    weight = result["security_report"]["weight_leakage"]
    assert result["images"] == 10 and result["stopped_at_leakage_cap"]["images"] == 10
    assert result["weight_images_per_layer"][1] == set_up + 10
    assert result["stopped_at_leakage_cap"]["projected_bits_per_mode"] > cap
    assert weight["cumulative_bits_per_mode"] == pytest.approx(
        (set_up + 10) * weight["layers"][1]["unverified_bits_per_mode"])
    assert weight["cumulative_bits_per_mode"] <= cap
    assert result["safe_state"]["safe"] is True
    replayed = replay(result["file"])
    assert replayed["status"] == "complete" and replayed["weight_leakage_bits_per_mode_cumulative"] == pytest.approx(
        weight["cumulative_bits_per_mode"])
    with pytest.raises(session_module.SessionAborted, match="allows no batch"):
        run_session(load_config(CONFIG), replace(SETTINGS, max_weight_leakage_bits_per_mode=(set_up + 5) * layer2[
            "unverified_bits_per_mode"]), out_dir=tmp_path, store=store, progress=False)


def test_security_budget_tells_the_lab_what_a_target_needs(store, capsys):
    """`qslab security-budget` from the records: the largest mu it names meets the target at the stated conditions."""
    from qslab.analysis.verified_planning import BoundConditions, expected_verified_bound_bits

    assert main(["security-budget", "--config", str(CONFIG), "--calibration-dir", str(store.directory),
                 "--images", "200", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert any("largest mu meeting 0.1 bit/mode" in line for line in out[:-1])
    conditions = BoundConditions(**{**result["conditions"], "mode_share": max(l["mode_share"] for l in result["layers"])})
    assert {layer["dominant"] for layer in result["layers"]} <= {"loss", "excess noise"}
    assert result["largest_mu_photons"] < 0.1  # at the bench's T ~ 0.55 a verified 0.1 bit/mode needs tiny mu
    assert float(expected_verified_bound_bits(result["largest_mu_photons"], 1.3, conditions)) <= 0.1 * 1.01


def _assert_same_figures(streamed, pooled, where=""):
    """Floats within 1e-12 relative (the same sums in another order), or 1e-12 absolute for a figure near 0 (the excess
    noise estimate is a difference of sums of order 1 SNU: their rounding, not its own size, sets its error),
    everything else exactly."""
    if isinstance(pooled, dict):
        assert streamed.keys() == pooled.keys(), where
        for key in pooled:
            _assert_same_figures(streamed[key], pooled[key], f"{where}.{key}")
    elif isinstance(pooled, list):
        assert len(streamed) == len(pooled), where
        for index, (a, b) in enumerate(zip(streamed, pooled)):
            _assert_same_figures(a, b, f"{where}[{index}]")
    elif isinstance(pooled, float):
        assert streamed == pytest.approx(pooled, rel=1e-12, abs=1e-12), where
    else:
        assert streamed == pooled, where


def test_the_streamed_results_equal_the_pooled_computation_on_the_whole_arrays(clean, monkeypatch):
    """The session keeps sums, never its batches: its results against session_results on the file's arrays pooled
    in memory (the computation before streaming), and a replay reading 1000 numbers at a time."""
    from qslab.analysis import mnist
    from qslab.analysis import replay as replay_module
    from qslab.analysis.measured_values import MeasuredValues
    from qslab.analysis.session_results import session_results

    with recording.SessionFile.open(clean["file"]) as session:
        settings, layers = session.settings, session.layers
        verification = [session.verification(k) for k in range(len(layers))]
        pooled = session_results(
            labels=session.images.label, layer1_quadratures_snu=session.client_quadratures_snu(0),
            last_quadratures_snu=session.client_quadratures_snu(len(layers) - 1),
            layer1_inputs=mnist.preprocess(session.images.pixels),
            verification_samples=[(v.sent_snu, v.returned_snu) for v in verification],
            measured=MeasuredValues.from_json(session.calibrations["measured"]), modes=layers[0].modes,
            rows=[layer.rows for layer in layers], failure_probability=settings["failure_probability"],
            false_alarm=settings["false_alarm"], exact_leakage_images=settings["exact_leakage_images"],
            verified_rows=[sum(np.size(r) for r in v.rows) for v in verification],
            weight_images_sent=session.weight_images_sent, data_images_sent=session.data_images_sent)
    assert pooled["security_report"]["weight_leakage"]["layers"][0]["verified"]  # the estimates are exercised
    live = {key: clean[key] for key in pooled}
    _assert_same_figures(live, pooled)
    monkeypatch.setattr(replay_module, "CHUNK_VALUES", 1000)
    replayed = replay(clean["file"])
    _assert_same_figures({key: replayed[key] for key in pooled}, pooled)
    assert replayed["changes"] == {}
