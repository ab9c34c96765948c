"""Fixtures for the whole suite: what many test files need and is costly to make, made once per test run and
shared by the xdist workers (tests/shared_once.py). Shared means read-only; a test that writes takes a copy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from shared_once import copy_of, made_once

ROOT = Path(__file__).resolve().parents[1]


def _calibrate_the_bench(directory: Path) -> None:
    from qslab.calibration.records import RecordStore
    from qslab.sequences.config import load_config
    from qslab.sequences.session import SessionSettings, run_session

    settings = SessionSettings(images=1, mu=6.0, gain=1.3, seed=3, batch_images=1, verify_fraction=0.05,
                               failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=20)
    run_session(load_config(ROOT / "lab_config.toml"), settings, out_dir=directory / "warm",
                store=RecordStore(directory), progress=False)
    # the channel record a later session reuses while it is valid (docs/DECISIONS.md Z): the pilots of a session on a
    # calibrated bench, as every later session measures them, not the warm session's (taken after the calibrations'
    # acquisitions), so no test's result depends on whether it ran before or after a record expired
    run_session(load_config(ROOT / "lab_config.toml"), settings, out_dir=directory / "settled",
                store=RecordStore(directory), progress=False, fresh_channel=True)


@pytest.fixture(scope="session")
def bench_calibration(tmp_path_factory) -> Path:
    """READ-ONLY: a record store holding every calibration of lab_config.toml's bench, written by the pre-flight
    of a one-image session (its file in ``warm/``), as the first session in an empty store would write them, and the
    channel record of a second one (``settled/``).
    The bench is seeded, so every test file that used to calibrate its own bench got these same records."""
    return made_once(tmp_path_factory, "bench-calibration", _calibrate_the_bench)


@pytest.fixture(scope="session")
def calibrated_store_at(bench_calibration) -> Callable[[Path], Path]:
    """``calibrated_store_at(directory)``: ``directory`` (made if missing) holding a writable copy of
    bench_calibration's records and its warm/ session; returns ``directory``."""
    return lambda directory: copy_of(bench_calibration, directory)


def _mnist_moments_file(directory: Path) -> None:
    import json

    import numpy as np

    from qslab.analysis.data_leakage_report import compute_mnist_moments

    moments, provenance = compute_mnist_moments()
    arrays = {f"{name}{i}": getattr(m, name) for i, m in enumerate(moments)
              for name in ("matrix", "eigenvalues", "replicate_eigenvalues")}
    np.savez(directory / "moments.npz", **arrays, samples=np.array([m.samples for m in moments]),
             provenance=np.array(json.dumps(provenance)))


@pytest.fixture(scope="session")
def mnist_train_moments(tmp_path_factory):
    """(per-layer SecondMoments, provenance) of the 60,000 MNIST training images through the shipped weights, as
    data_leakage_report.compute_mnist_moments computes them (about 20 s of CPU): computed once per run."""
    import json

    import numpy as np

    from qslab.analysis.data_leakage_bound import SecondMoments

    with np.load(made_once(tmp_path_factory, "mnist-train-moments", _mnist_moments_file) / "moments.npz") as data:
        moments = [SecondMoments(data[f"matrix{i}"], data[f"eigenvalues{i}"], int(samples),
                                 data[f"replicate_eigenvalues{i}"]) for i, samples in enumerate(data["samples"])]
        return moments, json.loads(str(data["provenance"]))
