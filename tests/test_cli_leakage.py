"""`qslab leakage`: the table, the JSON line, the figure, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from qslab.analysis.weight_leakage import holevo_verified_bits
from qslab.sequences.cli import main

REQUIRED_KEYS = {"weight_leakage_bits_per_mode", "weight_leakage_bits_per_real_weight", "data_leakage_bits_cramer_rao",
                 "data_leakage_bits_prx", "excess_noise_snu", "client_snr", "inputs"}


def run(capsys, *argv):
    code = main(["leakage", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_on_last_line_at_the_paper_point(capsys):
    code, out, err = run(capsys, "--mu", "6", "--gain", "1.3", "--json")
    assert code == 0 and err == ""
    payload = json.loads(out.strip().splitlines()[-1])
    assert REQUIRED_KEYS <= payload.keys()
    assert payload["weight_leakage_bits_per_mode"] == pytest.approx(2 * 0.0325414846, rel=1e-8)
    assert payload["weight_leakage_bits_per_real_weight"] == pytest.approx(0.0325414846, rel=1e-8)
    assert payload["data_leakage_bits_prx"] == pytest.approx(0.1865963910, rel=1e-8)
    assert payload["excess_noise_snu"] == pytest.approx(0.6 / 1.3 / 392)
    assert payload["inputs"] == {"mu": 6.0, "gain": 1.3, "modes": 392, "rows": 794, "transmittance": 1.0, "technical_noise": 0.0, "queries": 1}


def test_transmittance_and_technical_noise_are_passed_to_eq2(capsys):
    code, out, _ = run(capsys, "--mu", "2", "--gain", "1.2", "--transmittance", "0.9", "--technical-noise", "0.02", "--modes", "100", "--json")
    payload = json.loads(out.strip().splitlines()[-1])
    eps = (2 * 1.2 - 2) / (1.2 * 100) + 0.02
    assert payload["weight_leakage_bits_per_mode"] == pytest.approx(holevo_verified_bits(5.0, 0.9, eps), rel=1e-12)


def test_table_is_readable_without_json(capsys):
    code, out, _ = run(capsys, "--mu", "6", "--gain", "1.3")
    assert code == 0 and "weight leakage" in out and "{" not in out


@pytest.mark.parametrize("argv, option", [
    (["--mu", "-1", "--gain", "1.3"], "--mu"),
    (["--mu", "abc", "--gain", "1.3"], "--mu"),
    (["--mu", "nan", "--gain", "1.3"], "--mu"),
    (["--mu", "6", "--gain", "0.9"], "--gain"),
    (["--mu", "6", "--gain", "1.3", "--transmittance", "0"], "--transmittance"),
    (["--mu", "6", "--gain", "1.3", "--transmittance", "1.5"], "--transmittance"),
    (["--mu", "6", "--gain", "1.3", "--modes", "0"], "--modes"),
    (["--mu", "6", "--gain", "1.3", "--modes", "2.5"], "--modes"),
    (["--mu", "6", "--gain", "1.3", "--technical-noise", "-0.1"], "--technical-noise"),
])
def test_invalid_input_gets_one_line_and_status_2(capsys, argv, option):
    with pytest.raises(SystemExit) as exc:
        main(["leakage", *argv])
    _, err = capsys.readouterr()
    assert exc.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "expected" in lines[0] and "Traceback" not in err


def test_map_writes_a_png(tmp_path, capsys):
    path = tmp_path / "leakage.png"
    code, out, _ = run(capsys, "--mu", "6", "--gain", "1.3", "--map", str(path), "--json")
    assert code == 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out.strip().splitlines()[-1])["map"] == str(path)


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "qslab.sequences.cli", "leakage", "--mu", "6", "--gain", "1.3", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert json.loads(result.stdout.strip().splitlines()[-1])["weight_leakage_bits_per_mode"] > 0


def test_help_names_every_unit():
    result = subprocess.run([sys.executable, "-m", "qslab.sequences.cli", "leakage", "--help"], capture_output=True, text=True, timeout=120)
    for phrase in ("photons", "linear", "SNU", "(0, 1]"):
        assert phrase in result.stdout


def _bound(capsys, *argv) -> dict:
    code, out, _ = run(capsys, "--mu", "6", "--gain", "1.3", "--json", *argv)
    assert code == 0
    return json.loads(out.strip().splitlines()[-1])


def test_the_data_leakage_upper_bound_per_query_per_symbol_and_over_queries(capsys):
    """At G = 1.3, a quantum-limited amplifier and no loss: docs/PHYSICS.md 17.5's 445.46 bits per layer-1 query
    at C's central value; the reported figure adds C's sampling error at its share, so it lies just above."""
    one = _bound(capsys)
    layer = one["data_leakage_bound"]["layers"][0]
    assert one["data_leakage_bound"]["photons_upper"] == pytest.approx(3 / 13, rel=1e-12)
    assert 784 * layer["per_row_bits"] == pytest.approx(445.46, abs=0.01)
    assert 445.46 < one["data_leakage_bound_bits_per_query"] < 445.46 * 1.05
    assert one["data_leakage_bound_bits_per_symbol"] * 392 == pytest.approx(one["data_leakage_bound_bits_per_query"])
    three = _bound(capsys, "--queries", "3")
    assert three["data_leakage_bound_bits_cumulative"] == pytest.approx(3 * one["data_leakage_bound_bits_per_query"])
    capped = _bound(capsys, "--queries", "3", "--candidates", "2000")
    assert capped["data_leakage_bound_bits_cumulative"] == pytest.approx(np.log2(2000))
    noisy = _bound(capsys, "--noise-figure", "3.8", "--loss-per-pass", "0.5")
    nf = 10 ** 0.38
    assert noisy["data_leakage_bound"]["photons_upper"] == pytest.approx(0.5 * (nf - 1 / 1.3) * 10 ** -0.05, rel=1e-12)


def test_the_table_labels_the_paper_s_forms_as_estimates_not_bounds(capsys):
    code, out, _ = run(capsys, "--mu", "6", "--gain", "1.3")
    assert code == 0 and "data leakage (upper bound)" in out
    assert "the arXiv Cramer-Rao estimate, not a bound" in out and "exact" not in out
