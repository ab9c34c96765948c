"""Secure inference of the full 10k MNIST test set through the CLI: `qslab simulate` physics vs paper mode.

Goal (issue 18): physics mode (the optical model, 1 % of rows verified, the server's verification and
the verified leakage bound included: everything the command computes) within 1.5x the paper's abstract
model, whatever OpenBLAS's thread settings. Each setting of OPENBLAS_NUM_THREADS and OMP_NUM_THREADS
(1, 2, and both unset, with OPENBLAS_THREAD_TIMEOUT unset too) runs both modes as separate `qslab
simulate` processes, interleaved, best of the repeats; the ratio (the figure) is physics over paper (the
baseline) within each setting, measured minutes apart on the same machine. The program sets what it needs
itself (qslab.analysis.blas_threads); this script sets nothing.

Also printed, for a loaded machine: each process's CPU time (user + sys, all its threads) and the CPU
ratio, the load average before and after each setting, the physics time against the fastest paper run of
any setting (so that a setting where paper mode happens to be slow cannot flatter the ratio), and the
largest peak resident memory of the children (goal < 4 GB). `--compare PYTHON` runs the same commands
with another interpreter too (e.g. one whose qslab is an earlier checkout), interleaved, for a
before/after measured in the same run.

    python benchmarks/bench_secure_inference.py [--images 10000] [--seeds 3] [--repeats 3] [--compare PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SETTINGS = {"1": "1", "2": "2", "unset": None}
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
MODES = ("paper", "physics")
GOAL = 1.5
MEMORY_GOAL_GB = 4.0


def run_cli(python: str, mode: str, threads: str | None, images: int, seeds: int) -> tuple[float, float, float, dict]:
    """Wall time, CPU time (user + sys, all threads) and peak resident memory (GB) of one `qslab simulate` process,
    and its --json result."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES + ("OPENBLAS_THREAD_TIMEOUT",)}
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, threads))
    command = [python, "-m", "qslab", "simulate", "--mu", "6", "--gain", "1.3", "--mode", mode,
               "--images", str(images), "--seeds", str(seeds), "--json"]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        # a neutral directory: `-m qslab` finds no checkout there, only the interpreter's installed qslab
        child = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode:
            raise SystemExit(f"{' '.join(command)} failed ({child.returncode}): {err.read().strip()[-500:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024**2, result  # ru_maxrss in KiB on Linux


def verdict(ratio: float) -> str:
    return "PASS" if ratio <= GOAL else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="test images (default 10000)")
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds per run, as the CLI's default (default 3)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats per setting, best taken (default 3, as bench_session.py: one run of "
                             "~2 s moves by +-20 %% with what else the 2 cores run)")
    parser.add_argument("--compare", metavar="PYTHON", help="also run the commands with this interpreter (before/after)")
    args = parser.parse_args()
    pythons = {"this": sys.executable} | ({"compare": args.compare} if args.compare else {})
    print(f"qslab simulate --mu 6 --gain 1.3 --images {args.images} --seeds {args.seeds}, both modes per thread "
          f"setting, best of {args.repeats}; {os.cpu_count()} CPUs; interpreters: "
          + ", ".join(f"{name} = {path}" for name, path in pythons.items()))
    best: dict[tuple[str, str, str], tuple[float, float]] = {}  # (python, setting, mode) -> (wall s, cpu s)
    results, peak_gb = {}, dict.fromkeys(pythons, 0.0)
    passed = True
    for name, threads in SETTINGS.items():
        load = os.getloadavg()[0]
        for _ in range(args.repeats):
            for label, python in pythons.items():
                for mode in MODES:
                    wall, cpu, memory_gb, results[label, mode] = run_cli(python, mode, threads, args.images, args.seeds)
                    previous = best.get((label, name, mode), (float("inf"), float("inf")))
                    best[label, name, mode] = (min(previous[0], wall), min(previous[1], cpu))
                    peak_gb[label] = max(peak_gb[label], memory_gb)
        for label in pythons:
            paper, physics = best[label, name, "paper"], best[label, name, "physics"]
            ratio = physics[0] / paper[0]
            if label == "this":
                passed &= ratio <= GOAL
            print(f"  [{label}] OPENBLAS/OMP_NUM_THREADS {name:5s}: physics {physics[0]:6.2f} s (accuracy "
                  f"{100 * results[label, 'physics']['accuracy']:.2f} %, verified {results[label, 'physics']['verified']}), "
                  f"baseline paper {paper[0]:6.2f} s (accuracy {100 * results[label, 'paper']['accuracy']:.2f} %); "
                  f"ratio {ratio:.2f} (goal <= {GOAL}) -> {verdict(ratio)}; CPU {physics[1]:.2f} s / {paper[1]:.2f} s "
                  f"= {physics[1] / paper[1]:.2f}; load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    for label in pythons:
        fastest_paper = min(best[label, name, "paper"][0] for name in SETTINGS)
        slowest_physics = max(best[label, name, "physics"][0] for name in SETTINGS)
        print(f"  [{label}] for reference: the slowest physics run {slowest_physics:.2f} s against the fastest paper run "
              f"of any setting {fastest_paper:.2f} s, ratio {slowest_physics / fastest_paper:.2f}; largest peak resident "
              f"memory {peak_gb[label]:.2f} GB (goal < {MEMORY_GOAL_GB:g} GB) -> "
              f"{'PASS' if peak_gb[label] < MEMORY_GOAL_GB else 'FAIL'}")
    print(f"  every setting within {GOAL}x: {'PASS' if passed else 'FAIL'}; load average now {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
