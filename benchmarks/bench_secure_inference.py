"""Secure inference of the full 10k MNIST test set through the CLI: `qslab simulate` physics vs paper mode.

Goal (issue 18): physics mode (the optical model, 1 % of rows verified, the server's verification and
the verified leakage bound included: everything the command computes) within 1.5x the paper's abstract
model, whatever OpenBLAS's thread settings. Each setting of OPENBLAS_NUM_THREADS and OMP_NUM_THREADS
(1, 2, and both unset, with OPENBLAS_THREAD_TIMEOUT unset too) runs both modes as separate `qslab
simulate` processes, interleaved, best of the repeats; the ratio is taken within each setting, on the
same machine minutes apart. The program sets what it needs itself (qslab.analysis.blas_threads); this
script sets nothing. Also printed: the largest peak resident memory of the children (goal < 4 GB).

    python benchmarks/bench_secure_inference.py [--images 10000] [--seeds 3] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SETTINGS = {"1": "1", "2": "2", "unset": None}
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
GOAL = 1.5


def run_cli(mode: str, threads: str | None, images: int, seeds: int) -> tuple[float, dict]:
    """Wall time of one `qslab simulate` process and its --json result."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES + ("OPENBLAS_THREAD_TIMEOUT",)}
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, threads))
    command = [sys.executable, "-m", "qslab", "simulate", "--mu", "6", "--gain", "1.3", "--mode", mode,
               "--images", str(images), "--seeds", str(seeds), "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    return elapsed, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="test images (default 10000)")
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds per run, as the CLI's default (default 3)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats per setting (default 1)")
    args = parser.parse_args()
    print(f"qslab simulate --mu 6 --gain 1.3 --images {args.images} --seeds {args.seeds}, both modes per thread "
          f"setting, best of {args.repeats}; {os.cpu_count()} CPUs")
    passed = True
    for name, threads in SETTINGS.items():
        times = {"paper": [], "physics": []}
        results = {}
        load = os.getloadavg()[0]
        for _ in range(args.repeats):
            for mode in times:
                elapsed, results[mode] = run_cli(mode, threads, args.images, args.seeds)
                times[mode].append(elapsed)
        best = {mode: min(t) for mode, t in times.items()}
        ratio = best["physics"] / best["paper"]
        passed &= ratio <= GOAL
        print(f"  OPENBLAS/OMP_NUM_THREADS {name:5s}: paper {best['paper']:6.2f} s (accuracy "
              f"{100 * results['paper']['accuracy']:.2f} %), physics {best['physics']:6.2f} s (accuracy "
              f"{100 * results['physics']['accuracy']:.2f} %, verified {results['physics']['verified']}); "
              f"ratio {ratio:.2f} (goal <= {GOAL}) -> {'PASS' if ratio <= GOAL else 'FAIL'}; load average "
              f"{load:.2f} -> {os.getloadavg()[0]:.2f}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB on Linux
    print(f"  every setting within {GOAL}x: {'PASS' if passed else 'FAIL'}; largest peak resident memory "
          f"{peak_gb:.2f} GB (goal < 4 GB) -> {'PASS' if peak_gb < 4 else 'FAIL'}")


if __name__ == "__main__":
    main()
