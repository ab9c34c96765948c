"""This checkout against an earlier revision, whole bench sessions alternating: did a change make sessions faster?
With ``--embedded`` instead: this checkout's bench embedded in the session's process against the bench forked for it.

Each session runs in a process of its own on the virtual bench (forked for it, as `qslab session` does), the two
trees taking turns (A B, B A, A B, ...), and reports its median interval between committed batches from batch 10 on,
per image (ms). Printed: every pair, both medians, the median of the pairs' differences and how many pairs went each
way (with the two-sided sign test's p).

Why whole sessions, and why this benchmark: the 2-core machine's speed moves by 20-30 % between sessions minutes
apart, and alternating a change batch by batch inside one session measured gains that whole sessions did not show
(session 27: one mode's batches hand work, such as the file's appends, to the other's). A change worth 5 % needs
~10 pairs to show. ``--time-scale 1`` runs the bench's instruments in real time (a VOA move, a meter's averaging take
their real seconds), which is where overlapping instrument steps shows.

``--embedded`` compares where the bench runs, not two trees: "base" is the bench embedded in the session's process
(``run_session(embedded_bench=True)``: its emulators and renders on threads of the session's process), "this" the
bench ``qslab session`` serves, forked for the session (``bench_process.ForkedBench``); both read the same bits. The
difference is what sharing one interpreter lock with the bench's threads costs a session's batches.

``--phases`` also times the steps of every batch in each session (PHASES: the captures, whole layers, the
server's set-up, the check after a batch) and compares their medians pair by pair: a change that moves time from one
step to another shows there long before whole sessions resolve it (session 32: drawing the noise ahead shortened the
layer-1 capture by 5-8 ms and lengthened the server's set-up by 4-5 ms, which whole sessions could not tell apart
from no change). The wrapped calls add a few microseconds each, to both trees alike.

    python benchmarks/bench_session_ab.py (--base REV | --embedded) [--pairs 8] [--images 6000] [--batch-images 100]
                                          [--time-scale S] [--phases] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("analysis", "calibration", "instruments", "sequences")  # installed as qslab.<room> (pyproject's package-dir)

CHILD = r"""
import importlib, json, sys, time
from dataclasses import replace
from pathlib import Path
import h5py
import numpy as np
from qslab.calibration.records import RecordStore
from qslab.sequences.config import load_config
from qslab.sequences.session import SessionSettings, run_session
config_path, store_dir, out_dir, images, batch_images, embedded, phases = sys.argv[1:8]
settings = SessionSettings(images=int(images), mu=6.0, gain=1.3, seed=0, batch_images=int(batch_images),
                           verify_fraction=0.01, failure_probability=1e-10, laser_power_dbm=10.0)
config, store = load_config(Path(config_path)), RecordStore(Path(store_dir))
run_session(config, replace(settings, images=2, batch_images=2), out_dir=Path(out_dir), store=store, progress=False)
durations = {}
LAYER_OF = {"segment": lambda args: args[1], "plan": lambda args: args[1].index + 1, "": None}
for label, module, owner, method, layer in json.loads(phases):
    owner = getattr(importlib.import_module(module), owner, None)
    if owner is None or not hasattr(owner, method):
        continue  # (an older tree without this step)
    def timed(*args, _step=getattr(owner, method), _label=label, _layer_of=LAYER_OF[layer], **kwargs):
        start = time.perf_counter()
        try:
            return _step(*args, **kwargs)
        finally:
            name = _label if _layer_of is None else _label.format(_layer_of(args))
            durations.setdefault(name, []).append(time.perf_counter() - start)
    setattr(owner, method, timed)
result = run_session(config, settings, out_dir=Path(out_dir), store=store, progress=False,
                     **({"embedded_bench": True} if embedded == "embedded" else {}))  # (an older tree has no such word)
with h5py.File(result["file"], "r") as recorded:
    times = np.asarray(recorded["batches"]["time_unix_s"], dtype=float)
print(json.dumps({"ms_per_image": 1e3 * float(np.median(np.diff(times[10:]))) / int(batch_images),
                  "phases_ms": {name: 1e3 * float(np.median(d[len(d) // 2:])) for name, d in durations.items()}}))
"""
# What --phases times in each session: (label, module, class, method, what in the call's arguments names it: "segment"
# the AWG segment played (a layer's or the pilots'), "plan" the layer's LayerPlan, "" nothing). Each step's median over
# the second half of its calls shows where a change moves time, far more steadily than whole batches do (session 32).
PHASES = [
    ("capture of AWG segment {}", "qslab.sequences.protocol.acquisition", "LinkAcquisition", "_capture", "segment"),
    ("layer {} whole", "qslab.sequences.protocol.acquisition", "LinkAcquisition", "_run_plan", "plan"),
    ("server set-up, layer {}", "qslab.sequences.protocol.acquisition", "LinkAcquisition", "_set_up_server", "plan"),
    ("check after a batch", "qslab.sequences.session_guard", "BatchGuard", "_examine", ""),
]


def tree_of(revision: str, into: Path) -> Path:
    """``revision`` of this repository, unpacked into ``into`` (git archive)."""
    into.mkdir(parents=True)
    done = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_session_ab: --base {revision!r}: expected a revision of {ROOT} "
                         f"({done.stderr.decode(errors='replace').strip()})")
    archive = done.stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def importable(tree: Path, shim: Path) -> Path:
    """A directory that, first on PYTHONPATH, makes ``import qslab`` load ``tree`` (its rooms as qslab.<room>)."""
    package = shim / "qslab"
    package.mkdir(parents=True)
    for module in (tree / "qslab").glob("*.py"):
        shutil.copy(module, package / module.name)
    for room in ROOMS:
        (package / room).symlink_to(tree / room, target_is_directory=True)
    return shim


def config_at(tree: Path, time_scale: float | None, into: Path) -> Path:
    """``tree``'s lab_config.toml, at the bench time scale given (None: its own)."""
    text = (tree / "lab_config.toml").read_text()
    if time_scale is not None:
        lines = [f"time_scale = {time_scale!r}" if line.startswith("time_scale = ") else line
                 for line in text.splitlines()]
        text = "\n".join(lines) + "\n"
    path = into / "lab_config.toml"
    path.write_text(text)
    return path


def one_session(shim: Path, config: Path, work: Path, images: int, batch_images: int, embedded: bool = False,
                phases: bool = False) -> tuple[float, dict[str, float]]:
    """One session in its own process: its median batch interval from batch 10 on, ms per image, and with ``phases``
    the median ms of each step PHASES names. ``embedded``: its bench on threads of the session's process, not forked
    for it."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(config), str(work / "calibration"), str(work / "out"),
                           str(images), str(batch_images), "embedded" if embedded else "forked",
                           json.dumps(PHASES if phases else [])], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(shim), "OPENBLAS_THREAD_TIMEOUT": "4"})
    if done.returncode != 0:
        raise SystemExit(f"bench_session_ab: a session of {shim} failed: {done.stderr.strip().splitlines()[-1:]}")
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    return reply["ms_per_image"], reply["phases_ms"]


def phase_differences(base: list[dict[str, float]], this: list[dict[str, float]]) -> dict[str, tuple[float, int, int]]:
    """Per step timed in every session of both trees: (median of this - base over the pairs, ms; pairs in which this
    was faster; pairs)."""
    names = [name for name in this[0] if all(name in run for run in base + this)] if base and this else []
    differences = {name: np.array([t[name] - b[name] for b, t in zip(base, this)]) for name in names}
    return {name: (float(np.median(d)), int(np.sum(d < 0)), d.size) for name, d in differences.items()}


def sign_test_p(wins: int, pairs: int) -> float:
    """Two-sided sign test: the chance of a split at least this uneven when neither tree is faster."""
    low = min(wins, pairs - wins)
    return min(1.0, 2.0 * sum(math.comb(pairs, k) for k in range(low + 1)) / 2 ** pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    compared = parser.add_mutually_exclusive_group(required=True)
    compared.add_argument("--base", help="the revision compared with this checkout (git rev)")
    compared.add_argument("--embedded", action="store_true",
                          help="compare this checkout's bench embedded in the session's process (base) with the bench "
                               "forked for the session, as qslab session serves it (this)")
    parser.add_argument("--pairs", type=int, default=8, help="sessions per tree (default 8)")
    parser.add_argument("--images", type=int, default=6000, help="images per session (default 6000)")
    parser.add_argument("--batch-images", type=int, default=100, help="images per batch (default 100)")
    parser.add_argument("--time-scale", type=float, default=None,
                        help="real seconds per instrument second on the bench (default: lab_config.toml's; 1: real "
                             "time)")
    parser.add_argument("--phases", action="store_true",
                        help="also time the steps of every batch (captures, whole layers, the server's set-up, "
                             "the check after a batch: each session's medians, ms) and compare them pair by pair")
    parser.add_argument("--json", action="store_true", help="one JSON line at the end")
    args = parser.parse_args(argv)
    if args.images < 12 * args.batch_images or args.pairs < 1:
        parser.error("expected at least 12 batches a session (--images >= 12 x --batch-images) and --pairs >= 1")
    with tempfile.TemporaryDirectory(prefix="qslab_ab_") as temporary:
        work = Path(temporary)
        trees = {"base": ROOT if args.embedded else tree_of(args.base, work / "base" / "tree"), "this": ROOT}
        runs = {}
        for name, tree in trees.items():
            (work / name / "run").mkdir(parents=True)
            runs[name] = (importable(tree, work / name / "shim"), config_at(tree, args.time_scale, work / name),
                          work / name / "run")
        figures: dict[str, list[float]] = {"base": [], "this": []}
        steps: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
        for pair in range(args.pairs):
            for name in ("base", "this") if pair % 2 == 0 else ("this", "base"):
                ms_per_image, phases_ms = one_session(*runs[name], args.images, args.batch_images,
                                                      embedded=args.embedded and name == "base", phases=args.phases)
                figures[name].append(ms_per_image)
                steps[name].append(phases_ms)
            print(f"pair {pair + 1}: base {figures['base'][-1]:.3f}  this {figures['this'][-1]:.3f} ms an image"
                  + "".join(f"; {step} {steps['base'][-1].get(step, math.nan):.2f} / {ms:.2f} ms"
                            for step, ms in sorted(steps["this"][-1].items())), flush=True)
    base, this = np.array(figures["base"]), np.array(figures["this"])
    faster = int(np.sum(this < base))
    p = sign_test_p(faster, args.pairs)
    base_name = "the embedded bench" if args.embedded else args.base
    this_name = "forked bench" if args.embedded else "this checkout"
    print(f"{args.images}-image sessions, {args.batch_images} a batch, time scale "
          f"{'as configured' if args.time_scale is None else args.time_scale}: base ({base_name}) median "
          f"{np.median(base):.3f}, {this_name} {np.median(this):.3f} ms an image; this - base per pair, median "
          f"{np.median(this - base):+.3f} ms an image; this faster in {faster} of {args.pairs} pairs (sign test "
          f"p = {p:.2f}: {'a difference' if p < 0.05 else 'no difference shown'})")
    for step, (median_ms, faster_steps, pairs) in sorted(phase_differences(steps["base"], steps["this"]).items()):
        print(f"  {step}: this - base per pair, median {median_ms:+.2f} ms; this faster in {faster_steps} of {pairs} "
              f"pairs (sign test p = {sign_test_p(faster_steps, pairs):.2f})")
    if args.json:
        print(json.dumps({"base": base_name, "this": this_name, "base_ms_per_image": base.tolist(),
                          "this_ms_per_image": this.tolist(),
                          "median_difference_ms_per_image": float(np.median(this - base)), "this_faster_pairs": faster,
                          "sign_test_p": p, "base_phases_ms": steps["base"], "this_phases_ms": steps["this"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
