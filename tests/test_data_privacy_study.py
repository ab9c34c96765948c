"""qslab data-privacy (analysis/data_privacy_study.py): the table against the bound functions and the derivation's
reference values at spot values, the conclusion, the CLI's JSON, cache and bad input."""

import json
import math

import pytest

from cli_capture import cli
from qslab.analysis import data_privacy_study as study
from qslab.analysis.data_leakage_bound import gaussian_bound
from qslab.analysis.data_leakage_report import load_moments
from qslab.analysis.weight_leakage import holevo_verified_bits

LAMBDA = load_moments()[0][0].eigenvalues


@pytest.fixture(scope="module")
def bounds_only():
    return study.run_study(study.StudySettings(gains=(1.04, 1.1, 1.3, 2.0), added_photons=(0.0, 1e-4, 1e-3, 1e-2, 0.1),
                                               queries=(1, 10, 1000), attacks=False), LAMBDA)


@pytest.mark.parametrize("gain,per_query", [(1.04, 76.08), (1.1, 178.58), (1.3, 445.46), (2.0, 936.73)])
def test_gain_table_matches_the_bound_and_the_reference_values(bounds_only, gain, per_query):
    row = next(r for r in bounds_only["gain"] if r["gain"] == gain)
    n = 1 - 1 / gain
    assert row["bound_bits_per_query"] == pytest.approx(gaussian_bound(n, LAMBDA, 784).per_query_bits, rel=1e-12)
    assert row["bound_bits_per_query"] == pytest.approx(per_query, abs=0.01)
    # same client SNR: F = 2 mu g(G) equal to the reference's
    assert 2 * row["mu_same_F"] * study.client_gain_factor(gain) == pytest.approx(2 * 6.0 * study.client_gain_factor(1.3))


@pytest.mark.parametrize("added,per_query,weight", [(0.0, 445.5, 0.065), (1e-4, 410.6, 0.074), (1e-3, 337.3, 0.148),
                                                   (1e-2, 206.6, 0.618), (0.1, 68.7, 2.107)])
def test_noise_table_matches_the_reference_values(bounds_only, added, per_query, weight):
    row = next(r for r in bounds_only["noise"] if r["added_photons"] == added)
    assert row["bound_bits_per_query"] == pytest.approx(per_query, abs=0.06)
    assert row["weight_bits_per_mode"] == pytest.approx(weight, abs=6e-4)
    eps = 2 * (3 / 13) / 392 + 2 * added
    assert row["excess_noise_accepted_snu"] == pytest.approx(eps)
    assert row["weight_bits_per_mode"] == pytest.approx(holevo_verified_bits(13.0, 1.0, eps))


def test_queries_add_until_a_declared_candidate_set_caps_them(bounds_only):
    q = {r["queries"]: r["bound_bits_per_image"] for r in bounds_only["queries"]}
    assert q[10] == pytest.approx(10 * q[1]) and q[1000] == pytest.approx(1000 * q[1])
    capped = study.run_study(study.StudySettings(queries=(1, 10), candidates=10_000, attacks=False), LAMBDA)
    assert all(r["bound_bits_per_image"] == pytest.approx(math.log2(10_000)) for r in capped["queries"])


def test_the_conclusion_says_no_setting_gives_both_headlines(bounds_only):
    assert bounds_only["conclusion"].startswith("No studied setting gives both parties the paper's headline")
    # and it would say so if one did: a gain so low that the bound falls under 0.01 bit/symbol
    tiny = study.run_study(study.StudySettings(gains=(1.0005,), added_photons=(0.0,), queries=(1,), attacks=False),
                           LAMBDA)
    assert tiny["gain"][0]["bound_bits_per_symbol"] < 0.01
    assert "keep both" in tiny["conclusion"]


def test_cli_json_table_cache_and_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["data-privacy", "--gains", "1.1,1.3", "--added-photons", "0,0.01", "--queries", "1,4",
            "--train-images", "200", "--test-images", "100", "--accuracy-images", "0", "--json",
            "--figure", str(tmp_path / "study.png")]
    code, out, err = cli(*args)
    assert code == 0, err
    assert out.splitlines()[0].startswith("conclusion: No studied setting")
    result = json.loads(out.strip().splitlines()[-1])
    assert (tmp_path / "study.png").stat().st_size > 10_000
    assert {"per_bin", "delay", "mode_sorter"} == set(result["gain"][0]["attack_accuracy"])
    assert set(result["noise"][1]["attack_accuracy"]) == {"per_bin", "mode_sorter"}
    assert len(list((tmp_path / "cache" / "qslab").glob("data-privacy-*.json"))) == 1
    code, again, _ = cli(*args)
    assert code == 0 and json.loads(again.strip().splitlines()[-1])["gain"] == result["gain"]


@pytest.mark.parametrize("args,message", [(["--gains", "1.3,abc"], "--gains"), (["--gains", "1,1.3"], "gain > 1"),
                                          (["--test-images", "3"], "--test-images")])
def test_cli_bad_input_is_one_line_and_exit_2(args, message):
    code, _, err = cli("data-privacy", "--no-attacks", *args)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
