"""Fixtures for the whole suite: what many test files need and is costly to make, made once per test run and
shared by the xdist workers (tests/shared_once.py). Shared means read-only; a test that writes takes a copy."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings
import h5py_lock
from shared_once import copy_of, made_once

ROOT = Path(__file__).resolve().parents[1]

# No outcome may depend on the host's speed (issue 18): Hypothesis's per-example deadline (200 ms by default) fails
# an example that a loaded host once ran slowly (tests/test_units.py failed so in CI: 276 ms, then 0.15 ms).
settings.register_profile("qslab", deadline=None)
settings.load_profile("qslab")
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

if os.environ.get("PYTEST_XDIST_WORKER") and not any(name in os.environ for name in BLAS_THREADS):
    # One BLAS thread per xdist worker (and per process a test starts): `pytest -n 3` already keeps
    # both cores busy, and OpenBLAS's own threads on top spin-wait for a core. On this 2-core machine under
    # load, a 2000 x 2000 complex eigvalsh took 2.6 s of CPU with one thread and 32 s with two. Results do not
    # depend on it (no test compares numbers across thread counts); set any of BLAS_THREADS to choose yourself.
    os.environ.update(dict.fromkeys(BLAS_THREADS, "1"))
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # for a BLAS already loaded (e.g. numpy imported by a plugin before this file)

# Figures (calibration/figures.py) are drawn only where a test looks at them (the figures_drawn fixture, or a fixture
# that sets $QSLAB_FIGURES itself): drawing them everywhere was about a third of the suite's CPU (issue 18's goal 4:
# 650 PNGs in a run, ~0.3 s of matplotlib each).
os.environ["QSLAB_FIGURES"] = "off"


@pytest.fixture(autouse=True)
def h5py_lock_left_free():
    """After every test, h5py's global lock is held by no thread (tests/h5py_lock.py: a lock left held hung a later
    test's session for good; this fails the test that left it instead)."""
    yield
    if not h5py_lock.free():
        pytest.fail(h5py_lock.describe_holder(), pytrace=False)


@pytest.fixture
def figures_drawn(monkeypatch) -> None:
    """This test's sessions and calibrations draw their figures (in this process and in those it starts)."""
    monkeypatch.setenv("QSLAB_FIGURES", "on")


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
    data_leakage_report.compute_mnist_moments computes them (5-9 s of CPU): computed once per run."""
    import json

    import numpy as np

    from qslab.analysis.data_leakage_bound import SecondMoments

    with np.load(made_once(tmp_path_factory, "mnist-train-moments", _mnist_moments_file) / "moments.npz") as data:
        moments = [SecondMoments(data[f"matrix{i}"], data[f"eigenvalues{i}"], int(samples),
                                 data[f"replicate_eigenvalues{i}"]) for i, samples in enumerate(data["samples"])]
        return moments, json.loads(str(data["provenance"]))


def _first_cli_session(directory: Path) -> None:
    """`qslab session` (in-process, progress bars on) in an empty calibration store, its pre-flight calibrating every
    kind; every figure saved is checked as it is drawn (tests/figure_checks.py)."""
    import json

    from cli_capture import cli
    from figure_checks import record_figures

    from qslab.calibration import figures

    with pytest.MonkeyPatch.context() as monkeypatch, record_figures(monkeypatch) as saved, figures.in_place():
        monkeypatch.setenv("QSLAB_FIGURES", "on")
        code, out, err = cli("session", "--config", str(ROOT / "lab_config.toml"), "--images", "4", "--batch-images",
                             "2", "--calibration-dir", str(directory / "calibration"), "--out", str(directory / "out"))
    (directory / "run.json").write_text(json.dumps({"code": code, "stdout": out, "stderr": err,
                                                    "figures": [[path, problems] for path, problems in saved]}))


@pytest.fixture(scope="session")
def first_cli_session(tmp_path_factory) -> dict:
    """READ-ONLY: what `qslab session --images 4 --batch-images 2` printed and drew in an empty calibration store
    (made once per run: its pre-flight calibrates from scratch, which several tests look at): ``code``, ``stdout``,
    ``stderr`` (with the progress bars), ``figures`` ([path, problems] per figure saved) and ``calibration`` (the
    store it wrote; take a copy to write)."""
    import json

    directory = made_once(tmp_path_factory, "first-cli-session", _first_cli_session)
    return {**json.loads((directory / "run.json").read_text()), "calibration": directory / "calibration"}


# --- distribution over the xdist workers (`pytest -n 3`: xdist's default --dist load, scheduled here) --------------

COSTS = Path(__file__).with_name("item_costs.txt")
TESTS = Path(__file__).parent
SHARED_FIXTURE = re.compile(r"""@pytest\.fixture\([^)]*scope\s*=\s*["'](?:module|class|package)["']""")


@functools.cache
def shares_a_fixture(path: str) -> bool:
    """Whether the test file (a path relative to the repository) defines a module-, class- or package-scoped fixture.
    Such a fixture is made once per worker that runs a test of the file, so the file's tests go to one worker.
    Read from the source, because xdist's controller schedules by test id without collecting."""
    file = ROOT / path
    return file.suffix == ".py" and file.is_file() and SHARED_FIXTURE.search(file.read_text()) is not None


def work_unit(nodeid: str) -> str:
    """What goes to one worker: the whole file when its tests share a fixture, else the test alone."""
    path = nodeid.split("::", 1)[0]
    return path if shares_a_fixture(path) else nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under the default --dist load: xdist's scope scheduling, a scope being a work_unit, handed out in the order of
    the collection (pyproject.toml: --no-loadscope-reorder), which pytest_collection_modifyitems sorts longest
    first. An explicit --dist other than load is left to xdist."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return SharedFixtureScheduling(config, log)


def _item_costs() -> dict[str, float]:
    """Seconds per test id from tests/item_costs.txt (benchmarks/bench_suite.py --save-costs writes it); a test not
    listed costs 0. Only the order of the work depends on it, never a test's outcome."""
    if not COSTS.exists():
        return {}
    costs = {}
    for line in COSTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            seconds, nodeid = line.split(maxsplit=1)
            costs[nodeid] = float(seconds)
    return costs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The work units (work_unit) in decreasing order of their known cost, so the workers end together rather
    than one waiting on a long tail; each unit's tests stay in their file's order, and unlisted units keep theirs."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(work_unit(item.nodeid), []).append(item)
    costs = _item_costs()
    ranked = sorted(units.values(), key=lambda unit: -sum(costs.get(item.nodeid, 0.0) for item in unit))
    items[:] = [item for unit in second_starts_apart(ranked) for item in unit]


def made_once_fixtures(unit: list[pytest.Item]) -> set[str]:
    """The fixtures (direct or through others) of a unit's tests that build a shared_once.made_once directory."""
    names = set()
    for item in unit:
        for name, definitions in item._fixtureinfo.name2fixturedefs.items():
            if any(_builds_once(definition.func) for definition in definitions):
                names.add(name)
    return names


@functools.cache
def _builds_once(function) -> bool:
    import inspect

    try:
        return "made_once(" in inspect.getsource(function)
    except (OSError, TypeError):  # a plugin's fixture without source
        return False


def second_starts_apart(ranked: list[list[pytest.Item]]) -> list[list[pytest.Item]]:
    """``ranked`` with the largest unit that needs none of the first unit's made-once fixtures moved second.

    Under `pytest -n N` the first units start together, one per worker; when both need the same made-once
    fixture (e.g. bench_calibration, several seconds of calibrations), one worker idles on its lock while the other
    builds it. The rest of the order is unchanged."""
    if len(ranked) < 3:
        return ranked
    first = made_once_fixtures(ranked[0])
    for index in range(1, len(ranked)):
        if not made_once_fixtures(ranked[index]) & first:
            return [ranked[0], ranked[index], *ranked[1:index], *ranked[index + 1:]]
    return ranked
