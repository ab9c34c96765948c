"""`qslab simulate`, `operating-point` and `sweep` on the shipped network (small image counts)."""

import json

import numpy as np
import pytest

from qslab.analysis import data_leakage, weight_leakage
from qslab.analysis.client_measurement import client_snr, snr_factor
from qslab.analysis.network import ClosedFormPhysicsEngine, load_weights, secure_accuracies
from qslab.analysis.verified_planning import BoundConditions, expected_verified_bound_bits
from qslab.sequences import operating_point as op
from qslab.sequences.cli import main
from qslab.sequences.simulation import (SimulationSettings, image_batches, layer_inputs, load_test_set, physics_engine,
                                       pooled_samples, record_chunks, run_seed_by_layer, seed_verification, simulate)

SIMULATE_KEYS = {"accuracy", "accuracy_std", "weight_leakage_bits_per_mode", "data_leakage_bits_cramer_rao",
                 "data_leakage_bits_prx", "data_leakage_bits_per_bin", "mu", "gain", "verified"}


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_simulate_physics_json_and_reproducibility(capsys):
    argv = ["simulate", "--mu", "3", "--gain", "1.3", "--images", "300", "--seeds", "2", "--json"]
    assert main(argv) == 0
    first = last_json(capsys)
    assert SIMULATE_KEYS <= first.keys()
    assert first["verified"] is True and len(first["verification"]) == 2
    assert 0.5 < first["accuracy"] <= 1.0
    assert first["weight_leakage_bits_per_mode"] == pytest.approx(weight_leakage.weight_leakage_bits_per_mode(3, 1.3, 392))
    # The bound at the finite-size limits can only be looser than the nominal one.
    assert first["weight_leakage_bits_per_mode_at_limits"] >= first["weight_leakage_bits_per_mode"]
    assert main(argv) == 0
    assert last_json(capsys)["accuracies"] == first["accuracies"]


def test_an_engine_kept_across_seeds_draws_what_a_fresh_one_draws():
    """simulate keeps one LinkEngine for all seeds: each seed's outcomes and records are those of a fresh engine."""
    settings = SimulationSettings(mu=6, gain=1.3, images=1500, seeds=2, verify_fraction=0.02)
    weights, _ = load_weights()
    x, labels = load_test_set(settings.images)
    kept = physics_engine(settings)
    assert kept.first_layer_batches == 2  # 1500 images: two batches of first-layer inputs kept for the next seeds
    shared, batches = [], image_batches(x)  # the same batch arrays for both seeds, as simulate passes them
    for seed in (7, 8):
        shared.append(run_seed_by_layer(settings, weights, x, labels, seed, engine=kept, batches=batches))
        shared[-1] += ({layer: output.x_meas_snu for layer, output in kept.outputs.items()},)
    assert kept._first_kept == 2
    kept_data = [data for entries in kept._first_inputs.values() for data, _ in entries]
    assert len(kept_data) == 2 and all(data is batch for data, batch in zip(kept_data, batches))  # those arrays
    for seed, (accuracy, pairs, outcomes) in zip((7, 8), shared):
        fresh = physics_engine(settings)
        fresh_accuracy, fresh_pairs = run_seed_by_layer(settings, weights, x, labels, seed, engine=fresh)
        assert accuracy == fresh_accuracy and len(pairs) == len(fresh_pairs) > 0
        for layer, outcome in outcomes.items():  # the client's outcomes of the last batch, bit for bit
            assert np.array_equal(outcome, fresh.outputs[layer].x_meas_snu)
        for (layer, record), (fresh_layer, fresh) in zip(pairs, fresh_pairs):
            assert layer == fresh_layer
            assert np.array_equal(record.row_indices, fresh.row_indices)
            assert np.array_equal(record.returned_quadratures_snu, fresh.returned_quadratures_snu)
    unkept = physics_engine(settings)
    unkept.first_layer_batches = 0  # nothing kept: every call encodes its data and computes <X_meas> afresh
    assert run_seed_by_layer(settings, weights, x, labels, 8, engine=unkept)[0] == shared[1][0]
    assert all(np.array_equal(outcome, unkept.outputs[layer].x_meas_snu) for layer, outcome in shared[1][2].items())
    assert simulate(settings, progress=False)["accuracies"] == [
        run_seed_by_layer(settings, weights, x, labels, seed)[0] for seed in (0, 1)]


def test_first_layer_inputs_made_ahead_on_another_thread_are_the_ones_the_layers_use():
    """simulate has the verification thread make the first seed's first-layer encodings ahead
    (LinkEngine.prepare_first_layer): the layers take those very arrays, and the seed draws what an engine that made
    them in passing draws; more batches than first_layer_batches are made in passing, and an error made ahead is
    raised where the layer needs the inputs."""
    from concurrent.futures import ThreadPoolExecutor

    from qslab.analysis.blas_threads import one_blas_thread

    settings = SimulationSettings(mu=6, gain=1.3, images=2500, seeds=1, verify_fraction=0.02)
    weights, _ = load_weights()
    x, labels = load_test_set(settings.images)
    batches = image_batches(x)
    ahead, in_passing = physics_engine(settings), physics_engine(settings)
    ahead.first_layer_batches = 2  # the third batch is made in passing
    submitted = []
    # under one BLAS thread, as simulate: the float32 products' bits follow OpenBLAS's thread count
    with ThreadPoolExecutor(1) as executor, one_blas_thread():
        def submit(function, *args):
            submitted.append(executor.submit(function, *args))
            return submitted[-1]
        ahead.prepare_first_layer(weights[0], batches, submit)
        accuracy, pairs = run_seed_by_layer(settings, weights, x, labels, 3, engine=ahead, batches=batches)
    assert len(submitted) == 2 and ahead._first_kept == 2
    kept = [(data, prepared) for entries in ahead._first_inputs.values() for data, prepared in entries]
    assert all(data is batch for (data, _), batch in zip(kept, batches[:2]))
    assert all(prepared is future for (_, prepared), future in zip(kept, submitted))
    passing_accuracy, passing_pairs = run_seed_by_layer(settings, weights, x, labels, 3, engine=in_passing)
    assert passing_accuracy == accuracy and len(pairs) == len(passing_pairs) > 0
    assert all(np.array_equal(record.returned_quadratures_snu, passing.returned_quadratures_snu)
               for (_, record), (_, passing) in zip(pairs, passing_pairs))
    assert all(np.array_equal(output.x_meas_snu, in_passing.outputs[layer].x_meas_snu)
               for layer, output in ahead.outputs.items())

    failing = physics_engine(settings)

    def refuse(function, *args):
        from concurrent.futures import Future

        future = Future()
        future.set_exception(ValueError("made ahead and refused"))
        return future
    failing.prepare_first_layer(weights[0], batches, refuse)
    with pytest.raises(ValueError, match="made ahead and refused"):
        run_seed_by_layer(settings, weights, x, labels, 3, engine=failing, batches=batches)


def test_first_layer_inputs_made_ahead_keep_the_callers_numpy_error_state():
    """`qslab simulate` silences numpy's floating-point warnings on absurd inputs (they are reported once, as a
    result that is not finite): the encodings made ahead on another thread run under the caller's error state too,
    so an overflow there warns, raises or stays silent exactly as it would have where the layer needs them."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    settings = SimulationSettings(mu=1e300, gain=1.3, images=3, seeds=1)  # <X_meas> overflows: inf - inf
    weights, _ = load_weights()
    x, _ = load_test_set(settings.images)
    with ThreadPoolExecutor(1) as executor:
        for state, expected in (({}, None), ({"invalid": "raise"}, FloatingPointError)):
            engine = physics_engine(settings)
            with np.errstate(**{"all": "ignore", **state}), warnings.catch_warnings():
                warnings.simplefilter("error")  # a warning from the worker would fail the made-ahead future
                engine.prepare_first_layer(weights[0], [x], executor.submit)
                (_, prepared), = (entry for entries in engine._first_inputs.values() for entry in entries)
                if expected is None:
                    assert not np.all(np.isfinite(prepared.result().means))
                else:
                    with pytest.raises(expected):
                        prepared.result()


def test_the_link_engine_given_unnormalised_inputs_encodes_them_as_the_normalised_ones():
    """Physics mode passes each layer's input as it is (engine_normalises): the link model's unit_vectors normalises
    it. Against the route that normalised it first (network.normalize_rows, then unit_vectors again): the same
    decisions and the same verified rows; outcomes and returned samples within float32 rounding of the encoding."""
    from qslab.analysis.network import normalize_rows, predict_secure, relu

    settings = SimulationSettings(mu=6, gain=1.3, images=400, seeds=1, verify_fraction=0.02)
    weights, _ = load_weights()
    x, _ = load_test_set(settings.images)
    direct, twice = physics_engine(settings), physics_engine(settings)
    decisions = predict_secure(weights, x, direct, np.random.default_rng(3), engine_normalises=True)
    rng, a = np.random.default_rng(3), x
    for index, w in enumerate(weights):  # the secure pass with the inputs normalised before the engine
        y = twice(index, w, normalize_rows(a), rng)
        a = relu(y) if index < len(weights) - 1 else y
    assert np.array_equal(decisions, np.argmax(a, axis=1))
    for layer, output in twice.outputs.items():
        other = direct.outputs[layer]
        assert np.array_equal(other.verification.row_indices, output.verification.row_indices)
        assert np.array_equal(other.verification.measure_p, output.verification.measure_p)
        # float32 rounding of the encoding, carried through sums over hundreds of modes: a few float32 epsilons of the
        # value (the CPU's SIMD paths round differently: up to 2.1e-6 relative was seen on an AVX-512 machine)
        close = {"rtol": 64 * np.finfo(np.float32).eps, "atol": 1e-5}
        np.testing.assert_allclose(other.x_meas_snu, output.x_meas_snu, **close)
        np.testing.assert_allclose(other.verification.returned_quadratures_snu,
                                   output.verification.returned_quadratures_snu, **close)
    assert direct.outputs[0].verification.row_indices.size > 0


def test_the_mode_shares_batch_by_batch_are_those_of_the_whole_set():
    """mode_shares_of computes the largest mode shares a batch at a time: the maxima over the whole set's inputs."""
    from qslab.analysis.security_report import largest_mode_share
    from qslab.sequences.simulation import mode_shares_of

    weights, _ = load_weights()
    x, _ = load_test_set(2500)  # two full batches and a half one
    whole = [largest_mode_share(inputs) for inputs in layer_inputs(weights, x)]
    assert mode_shares_of(weights, x) == whole
    assert 0.0 < whole[0] < whole[1] < 1.0


def test_simulate_paper_mode_uses_the_authors_mapping(capsys):
    assert main(["simulate", "--mu", "6", "--gain", "1.3", "--images", "200", "--seeds", "1", "--mode", "paper", "--json"]) == 0
    result = last_json(capsys)
    assert result["verified"] is None
    assert result["scaling_f"] == pytest.approx(np.sqrt(6 * snr_factor(1.3)))


def test_physics_model_accuracy_agrees_with_closed_form_noise():
    """Two routes to the same accuracy: the optical model and the closed-form noise of docs/PHYSICS.md 10.3."""
    mu, gain, images = 0.15, 1.3, 2000  # low SNR, where accuracy is far from saturation and sensitive to the noise
    physics = simulate(SimulationSettings(mu=mu, gain=gain, images=images, seeds=3, verify_fraction=0.0), progress=False)
    weights, _ = load_weights()
    x, labels = load_test_set(images)
    closed = secure_accuracies(weights, x, labels, ClosedFormPhysicsEngine(mu, gain), seeds=[10, 11, 12])
    assert 0.3 < physics["accuracy"] < 0.97  # the comparison is only sensitive away from saturation
    stderr = np.sqrt(physics["accuracy"] * (1 - physics["accuracy"]) / images / 3) * np.sqrt(2)
    assert physics["accuracy"] == pytest.approx(closed.mean(), abs=5 * stderr)


def test_the_verification_from_sums_is_the_pooled_arrays_verification():
    """seed_verification (float32 block sums, analysis.verified_samples.Float32Samples) against the array route it
    replaced: verification.verify on the pooled float64 samples, and each layer's bound from its pooled samples."""
    from qslab.analysis import verification
    from qslab.analysis.failure_budget import report_budget
    from qslab.analysis.security_report import has_enough_verification, largest_mode_share, layer_bound

    settings = SimulationSettings(mu=6, gain=1.3, images=600, seeds=1, verify_fraction=0.02)
    weights, _ = load_weights()
    x, labels = load_test_set(settings.images)
    _, pairs = run_seed_by_layer(settings, weights, x, labels, seed=4)
    records = [record for _, record in pairs]
    sent, returned = pooled_samples(records)
    offset = 0
    for piece, piece_returned in record_chunks(records):  # the same samples in the same order, as float32 (pieces
        # share one buffer: each is checked before the next is written)
        assert np.array_equal(piece.ravel(), sent[offset:offset + piece.size].astype(np.float32))
        assert np.array_equal(piece_returned.ravel(), returned[offset:offset + piece.size].astype(np.float32))
        offset += piece.size
    assert offset == sent.size > 100_000

    summed, bound = seed_verification(settings, pairs, weights, x)
    honest = verification.ChannelHypothesis.honest(settings.gain, 392)
    arrays = verification.verify(sent, returned, settings.mu, honest, failure_probability=settings.failure_probability,
                                 false_alarm=settings.false_alarm).to_dict()
    assert summed.keys() == arrays.keys() and summed["accepted"] == arrays["accepted"]
    # float32 sums round the estimates at ~1e-8 relative; the bits see T_min through 1 - T_min (~3e-3 here), which
    # amplifies that ~1e2-fold: still 1e-4 of their statistical spread (T's is 1/sqrt(sum q^2) ~ 1e-4)
    for key, value in arrays.items():
        if isinstance(value, float):
            rel = 1e-4 if key.startswith("chi_bits") else 1e-6
            assert summed[key] == pytest.approx(value, rel=rel, abs=1e-12), key
        else:
            assert summed[key] == value, key

    by_layer = [[r for layer, r in pairs if layer == index] for index in range(2)]
    samples = [pooled_samples(records) if records else (np.empty(0), np.empty(0)) for records in by_layer]
    rows = [sum(r.row_indices.size for r in records) for records in by_layer]
    budget = report_budget(settings.failure_probability, None,
                           [f"layer{i + 1}" for i in range(2) if has_enough_verification(rows[i], samples[i][0].size)])
    detector = verification.ServerDetector()
    for index, layer in enumerate(bound.layers):
        expected = layer_bound(f"layer{index + 1}", *samples[index], rows[index], mu_upper_photons=6, mu_photons=6,
                               modes=392, mode_share=largest_mode_share(layer_inputs(weights, x)[index]),
                               honest_noise_per_share_snu=2 * (1 - 1 / 1.3), budget=budget, detector=detector,
                               honest=honest, tester=detector, false_alarm=settings.false_alarm / 2)
        assert (layer.method, layer.samples, layer.verified_rows, layer.accepted) == (
            expected.method, expected.samples, expected.verified_rows, expected.accepted)
        for name in ("bits_per_mode", "transmittance_min", "excess_noise_max_snu", "average_mode_bits_per_mode"):
            if getattr(expected, name) is not None:
                rel = 1e-4 if "bits" in name else 1e-6
                assert getattr(layer, name) == pytest.approx(getattr(expected, name), rel=rel), name
    assert bound.layers[0].verified  # the run verified enough of layer 1 for a verified bound


def test_per_bin_data_leakage_is_reported_per_layer():
    result = simulate(SimulationSettings(mu=3, gain=1.3, images=50, seeds=1), progress=False)
    exact = result["data_leakage_per_bin"]
    assert set(exact["per_layer"]) == {"layer1", "layer2"}
    assert exact["per_layer"]["layer1"]["reuses"] == 784 and exact["per_layer"]["layer2"]["reuses"] == 10
    assert result["data_leakage_bits_per_bin"] == max(v["mean"] for v in exact["per_layer"].values()) > 0


def test_least_leakage_point_beats_a_brute_force_grid():
    snr = 2.0
    conditions = BoundConditions(transmittance=0.95, mode_share=0.05)
    mu, gain = op.least_leakage_at_snr(snr, conditions)
    assert client_snr(mu, gain) == pytest.approx(snr, rel=1e-9)
    best = expected_verified_bound_bits(mu, gain, conditions)
    mus = np.geomspace(0.1, 100, 300)[:, None]
    gains = 1 + np.geomspace(1e-3, 10, 300)[None, :]
    feasible = client_snr(mus, gains) >= snr
    with np.errstate(all="ignore"):
        brute = expected_verified_bound_bits(mus, gains, conditions)[feasible].min()
    assert best <= brute * 1.01


def test_best_point_under_caps_respects_them_and_beats_a_grid():
    """Defect 5: the caps bind the verified bound at the stated conditions and the largest data-leakage form."""
    cap_w, cap_d = 0.1, 0.01
    conditions = BoundConditions(mode_share=0.05)
    mu, gain = op.best_snr_under_caps(cap_w, cap_d, conditions)
    assert expected_verified_bound_bits(mu, gain, conditions) <= cap_w * (1 + 1e-9)
    assert data_leakage.prx_bits(gain, 392, 794) <= cap_d and data_leakage.cramer_rao_arxiv_bits(gain, 392) <= cap_d
    assert weight_leakage.weight_leakage_bits_per_mode(mu, gain, 392) < cap_w  # the nominal figure is far below
    mus = np.geomspace(0.01, 100, 400)[:, None]
    gains = 1 + np.geomspace(1e-3, 10, 400)[None, :]
    with np.errstate(all="ignore"):
        ok = (expected_verified_bound_bits(mus, gains, conditions) <= cap_w) & (op.data_leakage_bits(gains) <= cap_d)
    assert client_snr(mu, gain) >= client_snr(mus, gains)[ok].max() * 0.995


def test_the_planned_bound_is_what_a_simulated_verification_reports():
    """An independent route to expected_verified_bound_bits: simulated verified samples of an honest client at
    the stated T and sample count, through analysis.verification and the session's layer bound."""
    from qslab.analysis import verification
    from qslab.analysis.failure_budget import FailureBudget
    from qslab.analysis.security_report import layer_bound

    mu, gain, t, m, share = 2.0, 1.3, 0.9, 200_000, 0.05
    conditions = BoundConditions(transmittance=t, samples=m, mode_share=share, limits=2)
    budget = FailureBudget.split(1e-10, [("layer1.transmittance", 1, ""), ("layer1.excess_noise", 1, "")])
    rng = np.random.default_rng(2)
    bounds = []
    for _ in range(20):
        q = rng.normal(0, np.sqrt(2 * mu), m)
        y = np.sqrt(t) * q + rng.normal(0, np.sqrt(1 + (2 - 2 / gain) / 392), m)
        honest = verification.ChannelHypothesis.honest(gain, 392, t)
        layer = layer_bound("layer1", q, y, 10, mu_upper_photons=mu, mu_photons=mu, modes=392, mode_share=share,
                            honest_noise_per_share_snu=2 - 2 / gain, budget=budget,
                            detector=verification.ServerDetector(), honest=honest,
                            tester=verification.ServerDetector(), false_alarm=1e-3)
        bounds.append(layer.bits_per_mode)
    assert np.median(bounds) == pytest.approx(float(expected_verified_bound_bits(mu, gain, conditions)), rel=0.05)


def test_operating_point_for_target_accuracy(capsys):
    assert main(["operating-point", "--target-accuracy", "0.9", "--images", "300", "--seeds", "1", "--json"]) == 0
    result = last_json(capsys)
    assert SIMULATE_KEYS <= result.keys()
    assert result["search"]["goal"] == "target_accuracy"
    assert result["accuracy"] >= 0.9  # the full re-simulation at the chosen point keeps the promise


def test_operating_point_needs_one_goal(capsys):
    assert main(["operating-point", "--images", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--target-accuracy" in err[0]


def test_operating_point_unreachable_target_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(op, "physics_accuracy", lambda *args, **kwargs: 0.5)
    assert main(["operating-point", "--target-accuracy", "0.99", "--images", "100", "--seeds", "1"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line]  # progress bars aside
    assert len(err) == 1 and "not reached" in err[0]


def test_sweep_on_a_local_dask_cluster(tmp_path, capsys):
    argv = ["sweep", "--mu-min", "0.05", "--mu-max", "20", "--mu-points", "3", "--gains", "1.2", "1.5",
            "--images", "200", "--seeds", "1", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    result = last_json(capsys)
    points = result["points"]
    assert len(points) == 6 and (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    for gain in (1.2, 1.5):
        curve = sorted((p for p in points if p["gain"] == gain), key=lambda p: p["mu"])
        assert curve[-1]["accuracy"] > curve[0]["accuracy"] + 0.2


@pytest.mark.parametrize("mode", ["paper", "physics"])
def test_simulate_gives_the_same_bits_whatever_openblas_threads_the_environment_sets(mode, tmp_path):
    """A threaded OpenBLAS splits some products' sums (the per-bin leakage's hidden activations, the paper model's
    products): `qslab simulate` computes on one BLAS thread, so a seed's --json is the same under any setting (before:
    paper mode's per-bin leakage and worst-mode bound moved in their last digits between 1 and 2 threads)."""
    import os
    import subprocess
    import sys

    reports = []
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-m", "qslab", "simulate", "--mu", "6", "--gain", "1.3", "--mode", mode,
                               "--images", "300", "--seeds", "1", "--json"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-500:]
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert [key for key in reports[0] if reports[0][key] != reports[1][key]] == []
