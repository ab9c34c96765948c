"""Secure inference of the full 10k MNIST test set: physics mode (1 % of rows verified) vs paper mode.

Both modes run the shipped network on the official test set in the same process, interleaved, and
the best (and median) of the repeats is reported with images/s and the physics/paper ratio (goal
<= 2), then the process's peak resident memory (goal < 4 GB).

    python benchmarks/bench_secure_inference.py [--images 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from analysis.network import load_weights
from sequences.simulation import SimulationSettings, load_test_set, run_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="test images (default 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    args = parser.parse_args()

    weights, _ = load_weights()
    x, labels = load_test_set(args.images)
    modes = {
        "paper": SimulationSettings(mu=6.0, gain=1.3, mode="paper"),
        "physics": SimulationSettings(mu=6.0, gain=1.3, mode="physics", verify_fraction=0.01),
    }
    times = {mode: [] for mode in modes}
    accuracy = {}
    for repeat in range(args.repeats):
        for mode, settings in modes.items():
            start = time.perf_counter()
            accuracy[mode], _ = run_seed(settings, weights, x, labels, seed=repeat)
            times[mode].append(time.perf_counter() - start)
    best = {mode: min(t) for mode, t in times.items()}
    print(f"{len(x)} test images, 784-784-10, mu = 6, G = 1.3; best (median) of {args.repeats} interleaved runs")
    for mode in modes:
        print(f"  {mode:8s} {best[mode]:6.2f} s ({np.median(times[mode]):6.2f} s)  {len(x) / best[mode]:8.0f} images/s  "
              f"accuracy {100 * accuracy[mode]:.2f} %")
    ratio = best["physics"] / best["paper"]
    print(f"  ratio physics/paper: {ratio:.2f} (goal <= 2) -> {'PASS' if ratio <= 2 else 'FAIL'}")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux
    print(f"  peak resident memory: {peak_gb:.2f} GB (goal < 4 GB) -> {'PASS' if peak_gb < 4 else 'FAIL'}")


if __name__ == "__main__":
    main()
