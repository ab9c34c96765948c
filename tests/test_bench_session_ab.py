"""benchmarks/bench_session_ab.py's own arithmetic: the sign test against scipy's exact binomial test, the bench
time scale set in a copy of the config (every other line as it was), and --phases' steps and per-pair differences."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("bench_session_ab", ROOT / "benchmarks" / "bench_session_ab.py")
AB = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(AB)


@pytest.mark.parametrize(("wins", "pairs"), [(0, 8), (3, 8), (4, 8), (8, 8), (1, 6), (9, 10), (5, 5)])
def test_the_sign_test_is_the_exact_two_sided_binomial_test(wins, pairs):
    assert AB.sign_test_p(wins, pairs) == pytest.approx(binomtest(wins, pairs, 0.5).pvalue, rel=1e-12)


def test_the_time_scale_is_set_in_a_copy_of_the_config_and_nothing_else_changes(tmp_path):
    original = (ROOT / "lab_config.toml").read_text().splitlines()
    changed = AB.config_at(ROOT, 1.0, tmp_path).read_text().splitlines()
    differing = [(a, b) for a, b in zip(original, changed, strict=True) if a != b]
    assert differing == [("time_scale = 0.01", "time_scale = 1.0")]
    (tmp_path / "as-configured").mkdir()
    assert AB.config_at(ROOT, None, tmp_path / "as-configured").read_text().splitlines() == original


def test_every_step_phases_times_exists_in_this_tree():
    """A renamed step would leave --phases silently without it (an older tree may lack one; this one may not)."""
    for label, module, owner, method, layer in AB.PHASES:
        assert callable(getattr(getattr(importlib.import_module(module), owner), method)), label
        assert layer in ("segment", "plan", "") and ("{}" in label) == bool(layer), label


def test_phase_differences_are_per_pair_medians_over_the_steps_both_trees_timed():
    base = [{"a": 10.0, "b": 5.0, "old": 1.0}, {"a": 12.0, "b": 5.0}, {"a": 11.0, "b": 6.0}]
    this = [{"a": 9.0, "b": 6.0, "new": 2.0}, {"a": 13.0, "b": 4.0}, {"a": 8.0, "b": 6.5}]
    assert AB.phase_differences(base, this) == {"a": (-1.0, 2, 3), "b": (0.5, 1, 3)}
    assert AB.phase_differences([], []) == {}
