"""Lab-session throughput on the embedded bench vs the direct physics simulation, and replay throughput.

In one process: (1) the direct simulation of the secure-inference issue (qslab.sequences.simulation.run_seed,
physics mode, 1 % of rows verified) on the same images; (2) a full `qslab session` on the virtual
bench (calibration records prepared beforehand and reused, so only the session itself is timed:
pre-flight, uploads, every acquisition through pyvisa-py and the emulators, the DSP, the verification
after every batch, the HDF5 recording), then again with twice the images, so that the per-image cost
without the fixed set-up (pilots, leakage nulling, uploads) is the difference; (3) `qslab replay` of
that file. Prints images/s of each and the ratios session/physics (goal <= 3).

    python benchmarks/bench_session.py [--images 1000] [--batch-images 100]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

from qslab.analysis.network import load_weights  # noqa: E402
from qslab.analysis.replay import replay  # noqa: E402
from qslab.calibration.records import RecordStore  # noqa: E402
from qslab.sequences.calibrations import KIND_NAMES  # noqa: E402
from qslab.sequences.config import load_config  # noqa: E402
from qslab.sequences.session import SessionSettings, run_session  # noqa: E402
from qslab.sequences.simulation import SimulationSettings, load_test_set, run_seed  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "lab_config.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--batch-images", type=int, default=100, help="images per acquisition (default 100)")
    args = parser.parse_args()
    config = load_config(CONFIG)
    work = Path(tempfile.mkdtemp(prefix="qslab_bench_session_"))
    store = RecordStore(work / "calibration")
    settings = SessionSettings(images=args.images, mu=6.0, gain=1.3, seed=0, batch_images=args.batch_images,
                               verify_fraction=0.01, failure_probability=1e-10, laser_power_dbm=10.0)
    warm = SessionSettings(**{**settings.__dict__, "images": 2, "batch_images": 2})
    start = time.perf_counter()
    run_session(config, warm, out_dir=work, store=store, progress=False)  # runs the calibrations once
    print(f"calibrations + warm-up session: {time.perf_counter() - start:.1f} s ({', '.join(KIND_NAMES)})")

    weights, _ = load_weights()
    x, labels = load_test_set(args.images)
    start = time.perf_counter()
    accuracy, _ = run_seed(SimulationSettings(mu=6.0, gain=1.3), weights, x, labels, seed=0)
    physics_s = time.perf_counter() - start

    start = time.perf_counter()
    result = run_session(config, settings, out_dir=work, store=store, progress=False)
    session_s = time.perf_counter() - start
    start = time.perf_counter()  # twice the images: the difference is the per-image cost without the set-up
    run_session(config, replace(settings, images=2 * args.images), out_dir=work, store=store, progress=False)
    marginal_s = (time.perf_counter() - start) - session_s
    x2, labels2 = load_test_set(2 * args.images)
    start = time.perf_counter()
    run_seed(SimulationSettings(mu=6.0, gain=1.3), weights, x2, labels2, seed=0)
    physics_marginal_s = (time.perf_counter() - start) - physics_s

    start = time.perf_counter()
    replayed = replay(result["file"])
    replay_s = time.perf_counter() - start

    n = args.images
    print(f"{n} test images, mu = 6, G = 1.3, 1 % of rows verified, {args.batch_images} images per acquisition; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"  direct physics  {physics_s:7.2f} s  {n / physics_s:9.1f} images/s  accuracy {100 * accuracy:.2f} %")
    print(f"  bench session   {session_s:7.2f} s  {n / session_s:9.1f} images/s  accuracy "
          f"{100 * result['accuracy']:.2f} %, verified {result['verified']}")
    print(f"  replay          {replay_s:7.2f} s  {n / replay_s:9.1f} images/s  "
          f"({'identical' if not replayed['changes'] else replayed['changes']})")
    print(f"  per additional image (set-up excluded): session {1e3 * marginal_s / n:.2f} ms, physics "
          f"{1e3 * physics_marginal_s / n:.3f} ms")
    ratio = session_s / physics_s
    marginal = marginal_s / max(physics_marginal_s, 1e-9)
    print(f"  ratio session/physics: {ratio:.1f} whole run, {marginal:.1f} per additional image "
          f"(goal <= 3) -> {'PASS' if ratio <= 3 else 'FAIL'}")


if __name__ == "__main__":
    main()
