"""benchmarks/bench_session_ab.py's own arithmetic: the sign test against scipy's exact binomial test, the bench
time scale set in a copy of the config (every other line as it was), and ``--served``'s bench: a config whose bench
instruments answer at the served addresses, and no bench process left once it is done."""

from __future__ import annotations

import importlib.util
import socket
import tomllib
from pathlib import Path

import pytest
import pyvisa
from scipy.stats import binomtest

from qslab.sequences.config import served_config_text

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


def test_the_served_config_moves_only_the_bench_instruments_addresses():
    text = (ROOT / "lab_config.toml").read_text()
    bench_names = [name for name, table in tomllib.loads(text)["instruments"].items() if table["address"] == "bench"]
    addresses = {name: f"TCPIP::127.0.0.1::{5000 + k}::SOCKET" for k, name in enumerate(bench_names)}
    served = served_config_text(text, {**addresses, "not_in_the_config": "TCPIP::127.0.0.1::1::SOCKET"})
    instruments = tomllib.loads(served)["instruments"]
    assert {name: instruments[name]["address"] for name in bench_names} == addresses
    differing = [(a, b) for a, b in zip(text.splitlines(), served.splitlines(), strict=True) if a != b]
    assert len(differing) == len(bench_names)
    assert all(a.strip() == 'address = "bench"' for a, _ in differing)


def test_the_served_bench_answers_at_the_configs_addresses_and_is_gone_afterwards(tmp_path):
    config = AB.config_at(ROOT, None, tmp_path)
    with AB.served_bench(AB.importable(ROOT, tmp_path / "shim"), config) as served:
        address = tomllib.loads(served.read_text())["instruments"]["laser"]["address"]
        manager = pyvisa.ResourceManager("@py")
        try:
            laser = manager.open_resource(address, read_termination="\n", write_termination="\n", timeout=10_000)
            assert laser.query("*IDN?").strip()
            laser.close()
        finally:
            manager.close()
    _, host, port, _ = address.split("::")
    with pytest.raises(ConnectionRefusedError):  # the bench process has ended and closed its ports
        socket.create_connection((host, int(port)), timeout=5).close()
