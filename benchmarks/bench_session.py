"""Lab-session throughput on the embedded bench vs the direct physics simulation, and replay throughput.

In one process: (1) the direct simulation of the secure-inference issue (qslab.sequences.simulation.run_seed,
physics mode, 1 % of rows verified) on the same images; (2) a full `qslab session` on the virtual
bench (calibration records prepared beforehand and reused, so only the session itself is timed:
pre-flight, uploads, every acquisition through pyvisa-py and the emulators, the DSP, the verification
after every batch, the HDF5 recording), then again with LONGER times the images, so that the per-image cost
without the fixed set-up (pilots, leakage nulling, uploads) is the difference (RUN_REPEATS rounds of both
sizes, each round with its own floor: below); (3) `qslab replay` of that file. Prints images/s of each, the
instrument messages per batch (each a round trip on a LAN: a figure the machine's speed does not move) and the CPU
per batch by thread (whether a batch waits or computes, and where).

The goal (issue 18): per additional image, the session within 3x its floor, what a bench session cannot
avoid, measured in the same run on the samples this very session digitized: the secure products (the
direct physics' per-additional-image cost), one float32 normal per digitized sample (the bench's own
Box-Muller sampler, one thread), those samples' int16 words moved once over a loopback TCP connection,
and the DSP's matched filter over them (float64 volts, as the receiver role hands them over). The per-image cost
is also taken inside the longer session, from its batches' commit times; the goal asks both within 3x.

Each round measures its own floor next to its sessions (probes before, between and after them), and the verdict
takes the median round. Why: this machine's speed changes by up to 2x within seconds, invisibly to it (the same
normals drawn 3.4-7.3 ns each in back-to-back 0.2 s runs, CPU time equal to wall time, no steal time counted). The
least of short floor runs catches its fastest moments; a session of seconds averages over them. A ratio of the
two least figures compared the machine at its best with the machine on average, and moved with the load of
whatever shares the host. The ratio against the fastest floor seen is printed as well.

With ``--batch-scan 50,100,200`` it also splits a batch's time into a part per batch and a part per image (a
diagnostic; the verdict is unchanged).

    python benchmarks/bench_session.py [--images 1000] [--batch-images 100] [--batch-scan SIZES]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import atexit  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
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
# the floor's parts work through their samples a piece at a time, each part at the faster of these piece sizes
# (a floor is the work done the fastest way; drawing the noise in pieces of 2^20 spilled the 2 MiB L2 cache and read
# up to 1.5x the time of pieces of 2^16 on this machine)
CHUNKS = (1 << 16, 1 << 20)
PROBE_SAMPLES = 1 << 24  # each floor probe times this many samples per part (about 0.1 s in all)
RUN_REPEATS = 5        # rounds, each: a floor probe, the direct physics at both sizes (PHYSICS_RUNS each), the session,
# a probe, the session at LONGER times the images, a probe; on a quiet machine single runs minutes apart read 0.70-1.18
# ms per image for the same code
# The longer session has LONGER times the images: the difference of the two sessions' walls carries both sessions'
# fixed parts (the set-up before the first batch, the tail after the last), which differ by +-0.1 s from run to run
# (up to 0.5 s); over 1000 additional images (LONGER = 2) that moved one round's ratio by +-0.8 (rounds of one run
# read 1.05-3.91), over 2000 by half as much
LONGER = 3
PHYSICS_RUNS = 3       # runs of the direct physics at each size per round (their median: physics_runs_s)


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


FLOOR_PARTS = {"noise": noise_s, "loopback": loopback_s,
               "filter": lambda samples, chunk: filter_s(samples, SPS, chunk)}


def fastest_chunks() -> dict[str, int]:
    """Each floor part's faster piece size of CHUNKS (the least of three probes at each)."""
    return {name: min(CHUNKS, key=lambda chunk: min(part(PROBE_SAMPLES, chunk) for _ in range(3)))
            for name, part in FLOOR_PARTS.items()}


def floor_probe(chunks: dict[str, int]) -> dict[str, float]:
    """Each floor part's seconds per sample at this moment."""
    return {name: part(PROBE_SAMPLES, chunks[name]) / PROBE_SAMPLES for name, part in FLOOR_PARTS.items()}


@dataclass(frozen=True)
class Round:
    """One round's wall seconds, its per-image cost inside the longer session, and its floor probes."""

    physics_s: float
    physics_longer_s: float
    session_s: float
    longer_s: float
    inside_s: float                 # per image, inside the longer session
    probes: list[dict[str, float]]  # seconds per sample of each floor part, before, between and after the sessions

    @property
    def marginal_s(self) -> float:
        return self.longer_s - self.session_s

    @property
    def physics_marginal_s(self) -> float:
        return self.physics_longer_s - self.physics_s

    @property
    def measured(self) -> bool:
        """More images took longer, for the session and for the physics: else the load changed between them."""
        return self.marginal_s > 0 and self.physics_marginal_s > 0

    def rates_s_per_sample(self) -> dict[str, float]:
        return {name: float(np.mean([probe[name] for probe in self.probes])) for name in self.probes[0]}

    def floor_s(self, more_samples: int) -> float:
        return self.physics_marginal_s + sum(rate * more_samples for rate in self.rates_s_per_sample().values())

    def ratio(self, more_samples: int) -> float:
        return self.marginal_s / self.floor_s(more_samples)

    def inside_ratio(self, more_samples: int, images: int) -> float:
        return self.inside_s * images / self.floor_s(more_samples)


def physics_runs_s(weights, *image_sets) -> list[tuple[float, float]]:
    """(wall seconds, accuracy) of the direct physics on each of ``image_sets`` ((x, labels), ...): the median of
    PHYSICS_RUNS runs each, the sizes interleaved. Why not one run each: the floor's physics part is the difference of
    two runs of a few hundredths of a second, and single runs read 0.035-0.119 ms per additional image across the
    rounds of one benchmark (a 3x spread, mostly upwards, that let rounds with a slow run pass on a floor too high)."""
    times = [[] for _ in image_sets]
    accuracies = [0.0 for _ in image_sets]
    for _ in range(PHYSICS_RUNS):
        for k, (x, labels) in enumerate(image_sets):
            start = time.perf_counter()
            accuracies[k], _ = run_seed(SimulationSettings(mu=6.0, gain=1.3), weights, x, labels, seed=0)
            times[k].append(time.perf_counter() - start)
    return [(float(np.median(t)), accuracy) for t, accuracy in zip(times, accuracies)]


def steady_s_per_image(path) -> float:
    """Seconds per image over the second half of a session's batches, from the commit times its /batches rows hold:
    the per-image cost inside one session, steadier than the difference of two sessions' walls (each carries its
    own noise). The second half: after the set-up's background work (the figure worker draws while the first
    batches run)."""
    with h5py.File(path, "r") as file:
        batches = file["batches"][:]
    middle = len(batches) // 2
    images = int(batches["image_count"][middle + 1:].sum())
    return float(batches["time_unix_s"][-1] - batches["time_unix_s"][middle]) / images


class ThreadCpu:
    """CPU seconds of this process's threads by name over a ``with`` block, from /proc/self/task (Linux; none
    elsewhere), sampled every SAMPLE_S so that a thread ending inside the block still counts (up to one sample of
    it is lost). Why: on 2 cores a batch's wall time is either its CPU or its waits; this says which, and whose."""

    SAMPLE_S = 0.25
    TASKS = Path("/proc/self/task")

    def __init__(self):
        self._last: dict[tuple[int, str], tuple[str, float]] = {}  # (tid, start time) -> (thread name, CPU s)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_until_stopped, name="bench-session-cpu", daemon=True)
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01

    def __enter__(self) -> ThreadCpu:
        self._sample()
        self._first = dict(self._last)
        if self.TASKS.is_dir():
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._sampler.is_alive():
            self._sampler.join()
        self._sample()

    def by_name(self) -> dict[str, float]:
        """CPU seconds spent in the block per thread name (an executor's threads under one name)."""
        spent: dict[str, float] = {}
        for key, (name, cpu_s) in self._last.items():
            if name != self._sampler.name:
                spent[name] = spent.get(name, 0.0) + cpu_s - self._first.get(key, (name, 0.0))[1]
        return spent

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            self._sample()

    def _sample(self) -> None:
        names = {thread.native_id: thread.name for thread in threading.enumerate()}
        try:
            tasks = os.listdir(self.TASKS)
        except OSError:
            return
        for task in tasks:
            try:
                fields = (self.TASKS / task / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the thread ended meanwhile: its last sample stands
            name = names.get(int(task), "other")
            name = "session" if name == "MainThread" else name.rstrip("0123456789").removesuffix("_")
            self._last[(int(task), fields[19])] = (name, (int(fields[11]) + int(fields[12])) * self._tick_s)


def timed_session(config, settings, work: Path, store: RecordStore) -> tuple[dict, float, float, dict[str, int],
                                                                               dict[str, float]]:
    """(results, wall seconds, instrument seconds the session's bench charged: BenchClock.charged_s, the messages
    each instrument received, CPU seconds per thread: ThreadCpu). The instrument time is what the emulators' own
    clocks spent (the monitor meter's averaging, settling): a station waits for it as for real instruments unless it
    does other work meanwhile."""
    benches = []
    with observing_arms(lambda station, batch: benches.extend(station.benches)), ThreadCpu() as cpu:
        start = time.perf_counter()
        result = run_session(config, settings, out_dir=work, store=store, progress=False)
        wall_s = time.perf_counter() - start
    messages: dict[str, int] = {}
    for bench in benches:
        for name, count in bench.message_counts().items():
            messages[name] = messages.get(name, 0) + count
    by_name = cpu.by_name()
    for bench in benches:  # a bench served by a process of its own (qslab session's) reports its threads' CPU itself
        if hasattr(bench, "pid"):
            by_name.update({f"bench process: {name}": s for name, s in bench.cpu_by_thread_s().items()})
    return result, wall_s, sum(bench.charged_s() for bench in benches), messages, by_name


def per_additional_batch(once: dict[str, float], longer: dict[str, float], batches: int) -> dict[str, float]:
    """Per name, what the longer session added per additional batch, the largest first."""
    added = {name: (value - once.get(name, 0)) / batches for name, value in longer.items()}
    return dict(sorted(added.items(), key=lambda item: -item[1]))


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
    atexit.register(shutil.rmtree, work, True)  # its sessions' files: hundreds of MB a run
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
    x_longer, labels_longer = load_test_set(LONGER * args.images)
    chunks = fastest_chunks()
    rounds: list[Round] = []
    for _ in range(RUN_REPEATS):
        probes = [floor_probe(chunks)]
        (physics_s, accuracy), (physics_longer_s, _) = physics_runs_s(weights, (x, labels),
                                                                       (x_longer, labels_longer))
        result, once_s, instrument_s, messages, cpu_s = timed_session(config, settings, work, store)
        probes.append(floor_probe(chunks))
        # more images: the difference is the per-image cost without the set-up
        longer, longer_s, longer_instrument_s, longer_messages, longer_cpu_s = timed_session(
            config, replace(settings, images=LONGER * args.images), work, store)
        probes.append(floor_probe(chunks))
        rounds.append(Round(physics_s, physics_longer_s, once_s, longer_s, steady_s_per_image(longer["file"]), probes))

    samples = digitized_samples(result["file"], SPS)
    more = digitized_samples(longer["file"], SPS) - samples
    start = time.perf_counter()
    replayed = replay(result["file"])
    replay_s = time.perf_counter() - start

    n = args.images
    session_s, physics_s = min(r.session_s for r in rounds), min(r.physics_s for r in rounds)
    print(f"{n} test images, mu = 6, G = 1.3, 1 % of rows verified, {args.batch_images} images per acquisition; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"  direct physics  {physics_s:7.2f} s  {n / physics_s:9.1f} images/s  accuracy {100 * accuracy:.2f} % "
          f"(the least of the {RUN_REPEATS} rounds' medians of {PHYSICS_RUNS} runs, as below)")
    print(f"  bench session   {session_s:7.2f} s  {n / session_s:9.1f} images/s  accuracy "
          f"{100 * result['accuracy']:.2f} %, verified {result['verified']}")
    print(f"  replay          {replay_s:7.2f} s  {n / replay_s:9.1f} images/s  "
          f"({'identical' if not replayed['changes'] else replayed['changes']})")
    added = (LONGER - 1) * n  # the longer session's additional images
    instrument_ms = 1e3 * (longer_instrument_s - instrument_s) / added
    time_scale = float((config.bench_table or {}).get("time_scale", 1.0))
    print(f"  instrument time per additional image: {instrument_ms:.3f} ms on the bench clock = "
          f"{instrument_ms * time_scale:.4f} ms real at time_scale {time_scale:g} (not in the floor: the emulated "
          f"instruments' own time, e.g. the health check's meter averaging and the VOA's moves)")
    more_batches = -(-LONGER * n // args.batch_images) - -(-n // args.batch_images)
    per_batch = per_additional_batch(messages, longer_messages, more_batches)
    print(f"  instrument messages per additional batch: {sum(per_batch.values()):.1f} ("
          + ", ".join(f"{name} {count:g}" for name, count in per_batch.items() if count)
          + "; on a LAN each is a round trip)")
    cpu_ms = {name: 1e3 * s for name, s in per_additional_batch(cpu_s, longer_cpu_s, more_batches).items()}
    if cpu_ms:
        wall_ms = 1e3 * (longer_s - once_s) / more_batches
        print(f"  CPU per additional batch: {sum(cpu_ms.values()):.0f} ms in {wall_ms:.0f} ms of wall "
              f"({sum(cpu_ms.values()) / wall_ms:.2f} of {os.cpu_count()} cores busy; the last round): "
              + ", ".join(f"{name} {ms:.0f}" for name, ms in cpu_ms.items() if ms >= 1))
    print(f"  each round, per additional image ({added} of them in the session of {LONGER * n}; {more / added:.0f} "
          f"digitized samples per image; the floor from the round's three probes):")
    for k, r in enumerate(rounds, 1):
        rates = r.rates_s_per_sample()
        print(f"    round {k}: floor {1e3 * r.floor_s(more) / added:.3f} ms = physics "
              f"{1e3 * r.physics_marginal_s / added:.3f}"
              + "".join(f" + {name} {1e3 * rate * more / added:.3f}" for name, rate in rates.items())
              + f" (noise {1e9 * rates['noise']:.2f} ns per sample, probes "
              + "/".join(f"{1e9 * probe['noise']:.2f}" for probe in r.probes)
              + f"); session {1e3 * r.marginal_s / added:.3f} ms = {r.ratio(more):.2f}, inside one session "
              f"{1e3 * r.inside_s:.3f} ms = {r.inside_ratio(more, added):.2f}"
              + ("" if r.measured else " (not measured: the longer run was not slower)"))
    measured = [r for r in rounds if r.measured]
    fastest = {name: min(probe[name] for r in rounds for probe in r.probes) for name in FLOOR_PARTS}
    fastest_floor_s = (max(min(r.physics_marginal_s for r in rounds), 0.0)
                       + sum(rate * more for rate in fastest.values()))
    if measured:
        print(f"  against the fastest floor seen ({1e3 * fastest_floor_s / added:.3f} ms: every part's least over all "
              f"probes and rounds, the machine at its best): session "
              f"{min(r.marginal_s for r in measured) / fastest_floor_s:.2f}, inside one session "
              f"{min(r.inside_s for r in measured) * added / fastest_floor_s:.2f} (the least of the measured rounds; "
              f"not the verdict)")
    if len(measured) < (RUN_REPEATS + 1) // 2:
        print(f"  per additional image: not measured (in {RUN_REPEATS - len(measured)} of {RUN_REPEATS} rounds the "
              f"longer run was not slower: the machine's load changed) -> FAIL")
        return
    ratio = float(np.median([r.ratio(more) for r in measured]))
    inside_ratio = float(np.median([r.inside_ratio(more, added) for r in measured]))
    floor_s_per_image = float(np.median([r.floor_s(more) for r in measured])) / added
    # both estimates within the goal: on a quiet machine the difference of two sessions alone was seen to swing
    # 0.70-1.18 ms for the same code
    passed = ratio <= 3 and inside_ratio <= 3
    print(f"  per additional image, the median of {len(measured)} rounds: session / floor = {ratio:.2f}; inside one "
          f"session {inside_ratio:.2f} (goal <= 3 both) -> {'PASS' if passed else 'FAIL'}")
    if args.batch_scan:
        batch_scan(config, replace(settings, images=LONGER * n), work, store, args.batch_scan, floor_s_per_image)


if __name__ == "__main__":
    main()
