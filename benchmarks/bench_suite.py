"""The test suite's wall time against issue 18's goal: the README's test command in <= 5 min on 2 cores.

Runs the README's command (its Quick start's `pytest -n N`, N read from the README) from the repository root (with
--durations=0, so that every test's setup, call and teardown time is printed; -p no:cacheprovider, so that the run
leaves nothing behind) and prints

- the wall time against the 300 s goal, PASS/FAIL, and whether the suite passed;
- its floors, measured in the same run: the CPU floor (the CPU time the suite's processes used / the machine's
  cores), the busy-time floor (the sum of all durations / the N workers) and the longest single item (no
  distribution of the tests can beat it). More workers than cores pay when the tests wait (instrument time,
  timeouts, child processes): the CPU floor is then well below the busy-time floor;
- the load average before and after (others on the machine slow the run; the floors say by how much);
- the slowest items.

``--busy N`` starts N busy-looping processes for the run (issue 18: with two, the suite must pass as a clean
run does; its time is then reported, not judged) and stops them after.

Bytecode: the run gets Python's default, modules compiled once and the bytecode written beside the sources for every
later interpreter (a user's `pytest`), even where the environment sets PYTHONDONTWRITEBYTECODE (this machine's
does): otherwise each of the two workers, and each of the suite's ~100 child interpreters (sessions, benches, figure
workers), compiles qslab and rewrites the test modules again (about 6 s of CPU per worker's collection, 0.2 s per
child). ``--as-environment`` keeps the environment's setting; the line ``bytecode:`` says which ran.

``--save-costs FILE`` writes each test's seconds (setup + call + teardown, tests of 1 s or more) for tests/conftest.py,
which starts the longest work first (tests/item_costs.txt); the order of the work depends on it, no outcome does.

    python benchmarks/bench_suite.py [--busy 2] [--top 20] [--log FILE] [--save-costs FILE] [--as-environment]
                                     [pytest arguments...]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 300.0
README = ROOT / "README.md"
DURATION = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S+)", re.M)
SUMMARY = re.compile(r"^=* ?(\d+ (?:passed|failed|errors?)\b.*?) in [0-9.]+s", re.M)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def without_group(nodeid: str) -> str:
    """The test id without xdist's ``@group`` suffix (an '@' inside a parameter id, before its ']', stays)."""
    return nodeid[:nodeid.rfind("@")] if nodeid.rfind("@") > nodeid.rfind("]") else nodeid


def save_costs(path: Path, per_test: dict[str, float]) -> None:
    """Seconds per test id (without the @group suffix of --dist loadgroup), 1 s or more, longest first."""
    lines = [f"{seconds:.1f} {without_group(node)}" for node, seconds in
             sorted(per_test.items(), key=lambda item: -item[1]) if seconds >= 1.0]
    path.write_text("# seconds per test, from benchmarks/bench_suite.py --save-costs (the order of the work only)\n"
                    + "\n".join(lines) + "\n")


def suite_environment(as_environment: bool) -> tuple[dict[str, str], str]:
    """(the run's environment, the ``bytecode:`` line): Python's default bytecode caching unless ``as_environment``."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    cached = any((ROOT / room / "__pycache__").is_dir() for room in ("analysis", "calibration", "instruments",
                                                                     "sequences", "tests"))
    before = f"{'present' if cached else 'absent'} beside the sources before the run"
    if as_environment:
        setting = "set" if env.get("PYTHONDONTWRITEBYTECODE") else "unset"
        return env, f"bytecode: {before}; PYTHONDONTWRITEBYTECODE {setting} as in the environment (--as-environment)"
    removed = env.pop("PYTHONDONTWRITEBYTECODE", None) is not None
    return env, (f"bytecode: {before}; written and reused (Python's default"
                 + (", PYTHONDONTWRITEBYTECODE removed for the run; --as-environment keeps it)" if removed else ")"))


def readme_workers() -> int:
    """N of the README's Quick start test command `pytest -n N` (what .ci/run runs)."""
    quick_start = README.read_text().split("## Quick start", 1)[-1]
    found = re.search(r"^pip install -e '\.\[test\]' && pytest -n (\d+)$", quick_start, re.M)
    if found is None:
        sys.exit("bench_suite.py: README.md's Quick start has no `pip install -e '.[test]' && pytest -n N` line")
    return int(found.group(1))


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's waited-for children (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(workers: int, extra: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, pytest's exit code, its output) of the README's command."""
    command = [sys.executable, "-m", "pytest", "-n", str(workers), "-q", "-p", "no:cacheprovider",
               "--durations=0", *extra]
    cpu_before, started = children_cpu_s(), time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall_s, cpu_s = time.monotonic() - started, children_cpu_s() - cpu_before
    return wall_s, cpu_s, result.returncode, result.stdout + result.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="busy-looping background processes during the run (default 0)")
    parser.add_argument("--top", type=int, default=20, metavar="N", help="slowest items to list (default 20)")
    parser.add_argument("--log", type=Path, metavar="FILE", help="write pytest's whole output to FILE")
    parser.add_argument("--save-costs", type=Path, metavar="FILE",
                        help="write each test's seconds (>= 1 s), longest first, for tests/conftest.py's order")
    parser.add_argument("--as-environment", action="store_true",
                        help="keep the environment's PYTHONDONTWRITEBYTECODE (default: Python's bytecode caching)")
    args, extra = parser.parse_known_args(argv)
    if args.busy < 0 or args.top < 0:
        parser.error("--busy and --top: expected counts >= 0")

    env, bytecode = suite_environment(args.as_environment)
    workers = readme_workers()
    before = load_average()
    loops = busy_loops(args.busy)
    try:
        wall_s, cpu_s, code, output = run_suite(workers, extra, env)
    finally:
        for loop in loops:  # killed and reaped after the suite's CPU time was taken: not counted in it
            loop.kill()
            loop.wait()
    after = load_average()
    if args.log:
        args.log.write_text(output)

    durations = [(float(s), phase, node) for s, phase, node in DURATION.findall(output)]
    total_s = sum(s for s, _, _ in durations)
    per_test: dict[str, float] = {}
    for seconds, _, node in durations:
        per_test[node] = per_test.get(node, 0.0) + seconds
    if args.save_costs:
        save_costs(args.save_costs, per_test)
    longest_node, longest_s = max(per_test.items(), key=lambda item: item[1], default=("-", 0.0))
    summary = SUMMARY.findall(output)

    print(f"load average before: {before}   after: {after}   (1, 5, 15 min; {os.cpu_count()} CPUs)")
    print(bytecode)
    if args.busy:
        print(f"busy background processes during the run: {args.busy}")
    ended = f"pytest exit code {code}" if code >= 0 else f"pytest killed by signal {-code}: not a complete run"
    print(f"suite: {summary[-1] if summary else 'no summary line'} ({ended})")
    print(f"slowest {min(args.top, len(durations))} items:")
    for seconds, phase, node in sorted(durations, reverse=True)[:args.top]:
        print(f"  {seconds:8.2f} s  {phase:8s} {node}")
    print(f"sum of durations: {total_s:.1f} s over {len(per_test)} tests")
    cores = os.cpu_count() or 1
    print(f"floors: CPU {cpu_s:.0f} s / {cores} cores = {cpu_s / cores:.1f} s; busy time {total_s:.0f} s / "
          f"{workers} workers = {total_s / workers:.1f} s; longest test {longest_s:.1f} s ({longest_node})")
    print(f"wall time of `pytest -n {workers}`: {wall_s:.1f} s (goal <= {GOAL_S:.0f} s, floor "
          f"{max(cpu_s / cores, longest_s):.1f} s)")
    verdict = "PASS" if wall_s <= GOAL_S and code == 0 else "FAIL"
    if args.busy:
        print(f"{'PASS' if code == 0 else 'FAIL'}: the suite under {args.busy} busy processes "
              f"{'passes' if code == 0 else 'does not pass'} (its time is not judged)")
        return 0 if code == 0 else 1
    print(f"{verdict}: suite in {wall_s:.0f} s against the 5 min goal" + ("" if code == 0 else ", with failures"))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
