"""Time the 512 x 512 (mu, G - 1) leakage map against a baseline measured in the same run.

Baseline: the same number of evaluations of a single elementwise log2 (the cheapest possible
vectorised pass over the grid). Goal: the map in under 1 s on 2 cores.
"""

from __future__ import annotations

import time

import numpy as np

from qslab.analysis.leakage_maps import leakage_grid
from qslab.analysis.leakage_report import OperatingPoint


def best_of(fn, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    point = OperatingPoint(mu=6.0, gain=1.3)
    grid = np.random.default_rng(0).uniform(1.0, 2.0, (512, 512))
    baseline_s = best_of(lambda: np.log2(grid))
    map_s = best_of(lambda: leakage_grid(point, 512))
    print(f"512 x 512 leakage map: {map_s * 1e3:.1f} ms (goal < 1000 ms) -> {'PASS' if map_s < 1.0 else 'FAIL'}")
    print(f"baseline one log2 pass over the grid: {baseline_s * 1e3:.2f} ms; ratio map/baseline = {map_s / baseline_s:.1f}")
    print(f"points per second: {512 * 512 / map_s:.3g}")


if __name__ == "__main__":
    main()
