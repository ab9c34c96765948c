"""Lab-session throughput on the embedded bench vs the direct physics simulation, and replay throughput.

In one process: (1) the direct simulation of the secure-inference issue (qslab.sequences.simulation.run_seed,
physics mode, 1 % of rows verified) on the same images; (2) a full `qslab session` on the virtual
bench (calibration records prepared beforehand and reused, so only the session itself is timed:
pre-flight, uploads, every acquisition through pyvisa-py and the emulators, the DSP, the verification
after every batch, the HDF5 recording), then again with twice the images, so that the per-image cost
without the fixed set-up (pilots, leakage nulling, uploads) is the difference (each size the least of three
runs, taken alternately); (3) `qslab replay` of
that file. Prints images/s of each and the ratios session/physics.

The goal (issue 18): per additional image, the session within 3x its floor, what a bench session cannot
avoid, measured in the same run on the samples this very session digitized: the secure products (the
direct physics' per-additional-image cost), one float32 normal per digitized sample (the bench's own
Box-Muller sampler, one thread), those samples' int16 words moved once over a loopback TCP connection,
and the DSP's matched filter over them (float64 volts, as the receiver role hands them over). The per-image cost
is also taken inside the longer session, from its batches' commit times (the least of the runs); the goal asks
both within 3x.

With ``--batch-scan 50,100,200`` it also splits a batch's time into a part per batch and a part per image (a
diagnostic; the verdict is unchanged).

    python benchmarks/bench_session.py [--images 1000] [--batch-images 100] [--batch-scan SIZES]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from qslab.analysis import dsp  # noqa: E402
from qslab.analysis.network import load_weights  # noqa: E402
from qslab.analysis.recording.reader import SessionFile  # noqa: E402
from qslab.analysis.replay import replay  # noqa: E402
from qslab.calibration.records import RecordStore  # noqa: E402
from qslab.instruments.sim.link import waveform  # noqa: E402
from qslab.sequences.calibrations import KIND_NAMES  # noqa: E402
from qslab.sequences.config import load_config  # noqa: E402
from qslab.sequences.protocol.acquisition import VACUUM_TAIL_SYMBOLS  # noqa: E402
from qslab.sequences.session import SessionSettings, run_session  # noqa: E402
from qslab.sequences.session_guard import observing_arms  # noqa: E402
from qslab.sequences.simulation import SimulationSettings, load_test_set, run_seed  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "lab_config.toml"


def digitized_samples(path, sps: int) -> int:
    """Samples the session's digitizer recorded (both receivers' channels, every batch and layer)."""
    total = 0
    with SessionFile.open(path) as recorded:
        for batch in range(recorded.batches_written):
            for layer in range(len(recorded.layers)):
                part = recorded.layer_batch(batch, layer)
                images, rows = part.client_quadratures_snu.shape
                n_server = images * part.verified_rows.size * recorded.layers[layer].modes
                total += 2 * (max(images * rows, n_server, 1) + 1 + VACUUM_TAIL_SYMBOLS) * sps
    return total


SPS = 8                # the digitizer samples per symbol of the default station (homodyne calibration)
# the floor's parts work through their samples a piece at a time: each part takes the least over these piece sizes
# (a floor is the work done the fastest way; drawing the noise in pieces of 2^20 spilled the 2 MiB L2 cache and read
# up to 1.5x the time of pieces of 2^16 on this machine)
CHUNKS = (1 << 16, 1 << 20)
FLOOR_REPEATS = 3      # the noise, loopback and filter floors: the least of this many runs each
RUN_REPEATS = 3        # the session and the direct physics at both sizes: the least of this many runs each, as the
# floor's parts: on a quiet machine single runs minutes apart read 0.70-1.18 ms per image for the same code


def noise_s(samples: int, chunk: int) -> float:
    """Drawing one float32 normal per sample (the bench's own fastest sampler, one thread)."""
    bits = np.random.SFC64(1)
    out = np.empty(chunk, dtype=np.float32)
    start = time.perf_counter()
    for first in range(0, samples, chunk):
        waveform.box_muller_f32(bits, out[:min(chunk, samples - first)])
    return time.perf_counter() - start


def loopback_s(samples: int, chunk: int) -> float:
    """Moving the int16 words once over a loopback TCP connection into a buffer the reader owns."""
    payload = np.zeros(chunk, dtype=np.int16).tobytes()
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    total = 2 * samples

    def send():
        left = total
        while left:
            piece = memoryview(payload)[:min(len(payload), left)]
            sender.sendall(piece)
            left -= len(piece)

    buffer = bytearray(2 * chunk)
    view = memoryview(buffer)
    start = time.perf_counter()
    thread = threading.Thread(target=send)
    thread.start()
    received = 0
    while received < total:
        received += receiver.recv_into(view[:min(len(buffer), total - received)])
    thread.join()
    elapsed = time.perf_counter() - start
    for s in (sender, receiver, server):
        s.close()
    return elapsed


def filter_s(samples: int, sps: int, chunk: int) -> float:
    """The DSP's matched filter over every sample (float64 volts, as the receiver role hands them over)."""
    volts = np.random.default_rng(2).standard_normal(chunk)
    template = np.ones(sps)
    start = time.perf_counter()
    for first in range(0, samples, chunk):
        dsp.matched_filter(volts[:min(chunk, samples - first)], template, sps)
    return time.perf_counter() - start


def steady_s_per_image(path) -> float:
    """Seconds per image over the second half of a session's batches, from the commit times its /batches rows hold:
    the per-image cost inside one session, steadier than the difference of two sessions' walls (each carries its
    own noise). The second half: after the set-up's background work (the figure worker draws while the first
    batches run); at the default sizes (20 batches) it holds the checkpoint after batch 16, whose reads per image
    equal the session's average."""
    with h5py.File(path, "r") as file:
        batches = file["batches"][:]
    middle = len(batches) // 2
    images = int(batches["image_count"][middle + 1:].sum())
    return float(batches["time_unix_s"][-1] - batches["time_unix_s"][middle]) / images


def timed_session(config, settings, work: Path, store: RecordStore) -> tuple[dict, float, float]:
    """(results, wall seconds, instrument seconds the session's bench charged: BenchClock.charged_s). The
    instrument time is what the emulators' own clocks spent (the monitor meter's averaging, settling): a station
    waits for it as for real instruments unless it does other work meanwhile."""
    benches = []
    with observing_arms(lambda station, batch: benches.extend(station.benches)):
        start = time.perf_counter()
        result = run_session(config, settings, out_dir=work, store=store, progress=False)
        wall_s = time.perf_counter() - start
    return result, wall_s, sum(bench.state.clock.charged_s() for bench in benches)


def image_counts(text: str) -> list[int]:
    """``--batch-scan``'s sizes (ascending, once each): comma-separated whole numbers of images per acquisition >= 1."""
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected images per acquisition as whole numbers >= 1 separated by commas "
                                         f"(e.g. 50,100,200), got {text!r}")
    return sorted(set(sizes))


def batch_scan(config, settings, work: Path, store: RecordStore, sizes: list[int], floor_s_per_image: float) -> None:
    """Per image inside the session at each of ``sizes`` images per acquisition (the least of RUN_REPEATS), and the
    straight line through a batch's time against its images: its intercept is what a batch costs whatever its
    images (the layers' set-ups, layer 2, the health check, the steps between batches), its slope what each image
    adds. Why: the floor is per image only, so the intercept over the images of a batch is a share the goal leaves
    no room for."""
    inside = {size: min(steady_s_per_image(timed_session(config, replace(settings, batch_images=size), work,
                                                         store)[0]["file"]) for _ in range(RUN_REPEATS))
              for size in sizes}
    print(f"  batch scan ({settings.images} images; per image inside the session, least of {RUN_REPEATS}): "
          + ", ".join(f"{size} per batch {1e3 * s:.3f} ms" for size, s in inside.items()))
    if len(sizes) < 2:
        return
    slope_s, intercept_s = np.polyfit(sizes, [size * s for size, s in inside.items()], 1)
    print(f"  a batch = {1e3 * intercept_s:.1f} ms + {1e3 * slope_s:.3f} ms per image "
          f"({slope_s / floor_s_per_image:.2f}x the floor per image); at {sizes[0]}-{sizes[-1]} images a batch the "
          f"first part is {1e3 * intercept_s / sizes[-1]:.3f}-{1e3 * intercept_s / sizes[0]:.3f} ms per image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--batch-images", type=int, default=100, help="images per acquisition (default 100)")
    parser.add_argument("--batch-scan", type=image_counts, default=None,
                        metavar="SIZES", help="also time the longer session at these images per acquisition (e.g. "
                        "50,100,200) and split a batch's time into a part per batch and a part per image, against "
                        "the floor (a diagnostic: the verdict is unchanged)")
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
    # warm-up, not timed: the first call's set-up cost exceeded 1000 images' and made the physics floor negative
    run_seed(SimulationSettings(mu=6.0, gain=1.3), weights, x[:20], labels[:20], seed=0)
    x2, labels2 = load_test_set(2 * args.images)
    physics_s = physics_twice_s = float("inf")
    runs: list[tuple[float, float, float]] = []  # each round's (session s, twice the images s, inside s per image)
    # each run the least of RUN_REPEATS, alternating the two sizes: one run on a shared machine moved the
    # per-image difference by 30 % between two quiet runs minutes apart
    for _ in range(RUN_REPEATS):
        start = time.perf_counter()
        accuracy, _ = run_seed(SimulationSettings(mu=6.0, gain=1.3), weights, x, labels, seed=0)
        physics_s = min(physics_s, time.perf_counter() - start)
        start = time.perf_counter()
        run_seed(SimulationSettings(mu=6.0, gain=1.3), weights, x2, labels2, seed=0)
        physics_twice_s = min(physics_twice_s, time.perf_counter() - start)

        result, once_s, instrument_s = timed_session(config, settings, work, store)
        # twice the images: the difference is the per-image cost without the set-up
        twice, wall_s, twice_instrument_s = timed_session(config, replace(settings, images=2 * args.images), work,
                                                          store)
        runs.append((once_s, wall_s, steady_s_per_image(twice["file"])))
    session_s, twice_s, steady_s = (min(column) for column in zip(*runs))
    marginal_s = twice_s - session_s
    physics_marginal_s = physics_twice_s - physics_s

    samples = digitized_samples(result["file"], SPS)
    more = digitized_samples(twice["file"], SPS) - samples
    # each floor part the least of FLOOR_REPEATS runs at each piece size: a floor is what the work takes when nothing
    # else runs (one run of a few ms on a shared machine was seen 25x its quiet figure, and made the ratio PASS)
    floor = {"noise": min(noise_s(more, chunk) for chunk in CHUNKS for _ in range(FLOOR_REPEATS)),
             "loopback": min(loopback_s(more, chunk) for chunk in CHUNKS for _ in range(FLOOR_REPEATS)),
             "filter": min(filter_s(more, SPS, chunk) for chunk in CHUNKS for _ in range(FLOOR_REPEATS))}

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
    print(f"  ratio session/physics: {session_s / physics_s:.1f} whole run, "
          f"{marginal_s / max(physics_marginal_s, 1e-9):.1f} per additional image")
    floor_s = physics_marginal_s + sum(floor.values())
    print(f"  floor per additional image: {1e3 * floor_s / n:.3f} ms = physics {1e3 * physics_marginal_s / n:.3f} + "
          + " + ".join(f"{name} {1e3 * t / n:.3f}" for name, t in floor.items())
          + f" ({more / n:.0f} digitized samples per image)")
    instrument_ms = 1e3 * (twice_instrument_s - instrument_s) / n
    time_scale = float((config.bench_table or {}).get("time_scale", 1.0))
    print(f"  instrument time per additional image: {instrument_ms:.3f} ms on the bench clock = "
          f"{instrument_ms * time_scale:.4f} ms real at time_scale {time_scale:g} (not in the floor: the emulated "
          f"instruments' own time, e.g. the health check's meter averaging and the VOA's moves)")
    ratio, steady_ratio = marginal_s / floor_s, steady_s * n / floor_s
    measured = marginal_s > 0 and physics_marginal_s > 0  # twice the images took longer: else the load changed
    print(f"  each round (the figures below take the least of each column): {n} images "
          + " / ".join(f"{once:.2f}" for once, _, _ in runs) + f" s, {2 * n} images "
          + " / ".join(f"{twice:.2f}" for _, twice, _ in runs) + " s, inside per image "
          + " / ".join(f"{1e3 * inside:.3f}" for _, _, inside in runs) + " ms")
    print(f"  per image inside the {2 * n}-image session (its second half's commit times, a checkpoint included): "
          f"{1e3 * steady_s:.3f} ms / floor {1e3 * floor_s / n:.3f} ms = {steady_ratio:.2f}")
    # both estimates within the goal: on a quiet machine the difference of two sessions alone was seen to swing
    # 0.70-1.18 ms for the same code, passing on a lucky pair of runs
    passed = measured and ratio <= 3 and steady_ratio <= 3
    print(f"  per additional image: session {1e3 * marginal_s / n:.3f} ms / floor {1e3 * floor_s / n:.3f} ms = "
          f"{ratio:.2f}; inside one session {steady_ratio:.2f} (goal <= 3 both) -> {'PASS' if passed else 'FAIL'}"
          + ("" if measured else " (not measured: the longer run was not slower, the machine's load changed)"))
    if args.batch_scan:
        batch_scan(config, replace(settings, images=2 * n), work, store, args.batch_scan, floor_s / n)


if __name__ == "__main__":
    main()
