"""Channel records written by N sessions in one directory, with reuse (the default) and without (--fresh-channel).

Each run starts from an empty calibration directory (the first session calibrates), then runs N `qslab session`
commands (`--images 1`: a record's size does not depend on the images) into one output directory, one calibration
directory. Prints the channel records left and their size in MB for both, the CPU time of the sessions, the load
average, and PASS when reuse leaves one record (every later session's pilots agreed with it, docs/DECISIONS.md Z)
while --fresh-channel leaves N (as before reuse: superseded records are pruned only after an hour).

    python benchmarks/bench_channel_reuse.py [--sessions 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def run(sessions: int, fresh: bool) -> tuple[int, float, float, list[bool]]:
    """(channel records left, their MB, CPU s of the sessions, per session whether it reused a record)."""
    directory = Path(tempfile.mkdtemp(prefix="qslab_bench_channel_reuse_"))
    qslab = shutil.which("qslab", path=str(Path(sys.executable).parent)) or "qslab"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    reused = []
    try:
        for _ in range(sessions):
            done = subprocess.run([qslab, "session", "--images", "1", "--batch-images", "1", "--json",
                                   "--out", str(directory / "sessions"), "--calibration-dir", str(directory / "cal"),
                                   *(["--fresh-channel"] if fresh else [])], cwd=directory, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise SystemExit(f"qslab session failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
            reused.append(_channel_choice(json.loads(done.stdout.strip().splitlines()[-1])["file"])["reused"])
        records = sorted((directory / "cal").glob("channel-*.h5"))
        size_mb = sum(path.stat().st_size for path in records) / 1e6
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return len(records), size_mb, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), reused


def _channel_choice(path: str) -> dict:
    from qslab.analysis.recording import SessionFile

    with SessionFile.open(path) as session:
        return session.calibrations["channel"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5, help="sessions per run (default 5)")
    args = parser.parse_args(argv)
    figures = {}
    for fresh in (True, False):
        load = os.getloadavg()[0]
        count, size_mb, cpu, reused = run(args.sessions, fresh)
        name = "--fresh-channel" if fresh else "reuse (default)"
        figures[fresh] = count
        print(f"{name:16s}: {count} channel record(s), {size_mb:.2f} MB after {args.sessions} sessions; sessions that "
              f"reused a record: {sum(reused)}; {cpu:.1f} s CPU; load average {load:.2f} -> {os.getloadavg()[0]:.2f} "
              f"on {os.cpu_count()} CPUs")
    passed = figures[False] == 1 and figures[True] == args.sessions
    print(f"channel records after {args.sessions} sessions: {figures[False]} with reuse, {figures[True]} without "
          f"(expected 1 and {args.sessions}) -> {'PASS' if passed else 'FAIL'}")


if __name__ == "__main__":
    main()
