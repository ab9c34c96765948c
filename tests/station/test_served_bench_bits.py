"""The same seed and the same commands read the same bits on the bench embedded in a session, on the bench a session
forks (what `qslab session` serves its bench with) and on a bench served in its own process (lab_config.toml's
[bench]: "reproduce every reading bit for bit").

Why a threaded BLAS in the served bench: a threaded OpenBLAS splits some products' sums (a batch's client means are
a [b, 2N] x [2N, rows] float32 product), so a served bench computing at its process's default thread count read other
last bits than the embedded one, computing inside the session's one-thread window: one ADC code (0.0103 SNU) in one
client quadrature of two of this session's three batches. The bench now computes every acquisition on one thread
(qslab.analysis.blas_threads), whatever its process's settings."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tomllib
from pathlib import Path

from held_bench import GatedBench, recorded_differences

from qslab.analysis import recording
from qslab.instruments.sim.bench_process import ForkedBench
from qslab.instruments.sim.server import observing_bench_starts
from qslab.sequences.cli import main
from qslab.sequences.config import served_config_text
from qslab.sequences.session_guard import observing_arms

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "lab_config.toml"
REPORTED = ("accuracy", "mu_photons", "gain", "verified", "weight_leakage_bits_per_mode", "data_leakage_bits_per_bin",
            "verification")
THREADED_BLAS = {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def _session(config: Path, directory: Path, calibrated_store_at) -> dict:
    """`qslab session --json`, 30 images in batches of 10, seed 3, on a copy of the bench's calibration records (the
    same for both benches: the bits compared are the session's own acquisitions): its report."""
    store = calibrated_store_at(directory / "calibration")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["session", "--config", str(config), "--out", str(directory / "out"), "--images", "30",
                     "--batch-images", "10", "--seed", "3", "--calibration-dir", str(store), "--json"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_a_session_reads_the_same_bits_on_the_embedded_forked_and_served_benches_with_threaded_blas(
        tmp_path, calibrated_store_at):
    started = []
    with observing_bench_starts(started.append):  # a bench observed here is served by this process
        embedded = _session(CONFIG, tmp_path / "embedded", calibrated_store_at)
    assert len(started) == 1
    with observing_arms(lambda station, batch: started.append(list(station.benches))):
        forked = _session(CONFIG, tmp_path / "forked", calibrated_store_at)
    assert [type(bench) for bench in started[-1]] == [ForkedBench] and started[-1][0].pid is None  # stopped
    served = GatedBench(env={**os.environ, **THREADED_BLAS})  # as `qslab bench serve` on a host with 2 cores
    try:
        on_served = _session(served.config(tmp_path), tmp_path / "served", calibrated_store_at)
    finally:
        served.stop()
    with recording.SessionFile.open(embedded["file"]) as written:
        assert written.batches_written == 3
    for other in (forked, on_served):
        assert recorded_differences(embedded["file"], other["file"]) == []
        assert {key: embedded[key] for key in REPORTED} == {key: other[key] for key in REPORTED}


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
