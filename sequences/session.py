"""A whole lab session: pre-flight, calibrations, secure inference of N images through the instruments, recording.

    pre-flight   config valid, every instrument identified (LabStation), the whole sequence checked
                 against the declared limits before anything is sent (SecureLink.check_limits), the
                 calibration records valid (missing or stale ones are run, and the session says so);
    inference    per batch of images: layer 1 through the station, the client's ReLU, layer 2; the
                 server verifies its gated rows on everything received so far and aborts the session
                 when the test fails;
    recording    one HDF5 file (analysis/recording/, docs/RECORDING.md), flushed per batch;
    results      qslab.analysis.session_results on exactly what was recorded (what `qslab replay` runs).

Faults (sequences/session_guard.py): a batch is recorded only after the station read back healthy
after it (no instrument reset, the monitor tap and the receivers' vacuum as at set-up); a fault is
retried by the drivers, or cured (a re-lock, the laser set back, the set-up applied again) and the
batch taken again, or it stops the session with one message (SessionStopped). `faults` injects bench
faults after set-up; the results and the JSON report what fired and what the stack did.

Any exception closes the station (lasers off, drives at zero, read back) and marks the file aborted
with every completed batch in it; `resume` continues such a file. SIGINT, SIGTERM and SIGHUP alike
only set a flag (sequences/interrupts.py) that the session checks between calibrations and between
batches: it stops there the same way (SessionInterrupted), and nothing interrupts closing the station. Every random draw of
a batch comes from SeedSequence([seed, batch]) and the bench's noise from the state it is given, so
a resumed session ends exactly where a clean one does.
"""

from __future__ import annotations

import gc
import json
import logging
import platform
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from qslab.analysis import mnist, recording
from qslab.analysis.blas_threads import one_blas_thread
from qslab.analysis.estimate import Estimate
from qslab.analysis.measured_values import MeasuredValues
from qslab.analysis.network import load_weights
from qslab.analysis.encoding import weight_symbols
from qslab.analysis.replay import Recorded, projected_weight_leakage, results_from_recorded
from qslab.analysis.running_samples import RunningSamples
from qslab.analysis.session_figures import MAX_POINTS, plot_session
from qslab.analysis.session_results import hidden_vectors, predictions, verify_layers
from qslab.calibration import figures
from qslab.calibration.records import CodeVersion, RecordStore
from qslab.sequences import calibrations, resume_check
from qslab.sequences.channel_reuse import ChannelChoice
from qslab.sequences.interrupts import Interrupts
from qslab.sequences.light_counts import LightCounts
from qslab.sequences.monitor.status import StatusPublisher
from qslab.sequences.protocol import SecureLink
from qslab.sequences.protocol.errors import ProtocolError
from qslab.sequences.session_guard import BatchGuard, FaultReport, RetryWatch, parse_faults
from qslab.sequences.station_calibration import load_station_calibration

# the kinds whose records a session needs: a channel calibration's prerequisites (the session measures the
# channel itself, on its own pilots, and records it)
CALIBRATIONS = calibrations.kind("channel").requires
FALSE_ALARM = 1e-3
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionSettings:
    """One session; photons per complex mode at the server's output, G linear."""

    images: int
    mu: float
    gain: float
    seed: int
    batch_images: int
    verify_fraction: float
    failure_probability: float
    laser_power_dbm: float
    weights: str | None = None
    false_alarm: float = FALSE_ALARM
    exact_leakage_images: int = 200
    max_weight_leakage_bits_per_mode: float = 0.0  # cap on the session's cumulative weight leakage; 0: none
    candidate_set: int = 0          # L: a declared finite candidate set (the first L test images); 0: none
    curious_server: dict | None = None  # bench only: a photon-counting server (analysis/data_leakage_curious.CuriousSpec)


class SessionAborted(RuntimeError):
    """The server's verification failed: the session stopped (the file holds what was done)."""


class LeakageCapReached(Exception):
    """The next light would take the cumulative weight leakage above the cap: the session ends cleanly before it."""

    def __init__(self, stop: dict, message: str):
        super().__init__(message)
        self.stop, self.message = stop, message


def leakage_cap_allows(recorded: Recorded, settings: dict, measured: MeasuredValues, shapes, images_after: int,
                       running=None, images_sent_after: tuple[int, ...] | None = None) -> tuple[bool, float]:
    """(whether the next batch keeps the cumulative weight leakage within the cap, the projected total).

    The projection is the cumulative bound at images_after queries, each layer's weights sent to images_sent_after
    images (None: the queries only), on what was verified so far (DECISIONS O, AI). Before any batch every pass counts
    at g(mu) at mu's upper limit, the bound without verification. ``running``: the verified samples' running sums
    (analysis/running_samples.RunningSamples, O(batch) per batch); None: read back from the file."""
    cap = settings.get("max_weight_leakage_bits_per_mode") or 0.0
    if cap <= 0.0:
        return True, float("nan")
    if recorded.labels:
        projected = projected_weight_leakage(recorded, settings, measured, shapes, images_after, samples=running,
                                             images_sent=images_sent_after).cumulative_bits_per_mode
    else:
        from qslab.analysis.failure_budget import report_budget
        from qslab.analysis.weight_leakage import unverified_bound_bits

        budget = report_budget(settings["failure_probability"], measured, [])
        per_pass = float(unverified_bound_bits(measured.mu_photons.upper(budget.sigmas("mu_photons"))))
        projected = max(images_sent_after or (images_after,)) * per_pass
    return projected <= cap, projected


def say(message: str) -> None:
    print(f"qslab session: {message}", flush=True)
    log.info(message)


# --- calibrations ------------------------------------------------------------------------------------

def ensure_calibrations(station, store: RecordStore, figure_dir: Path, before=None, progress: bool = False) -> list[str]:
    """Run every calibration whose record is missing or stale (saying so); returns the ids written.
    ``before(kind)`` runs before each calibration (the session's interrupt check)."""
    options = calibrations.CalibrationOptions.from_config(station.config)
    written = calibrations.ensure(station, store, options, figure_dir, CALIBRATIONS,
                                  report=lambda error: say(f"{error} -> running it now"), before=before,
                                  progress=progress)
    return [record.id for record in written]


def record_channel(link, store: RecordStore, station, figure_dir: Path) -> ChannelChoice:
    """The pilots' T and eps (the honest round trip the acceptance test expects): the channel record the session uses.

    A valid channel record of the same station that today's pilots agree with is reused, else they are written as a
    new record, and the log says why in one line (sequences/channel_reuse.py, docs/DECISIONS.md Z). After a write,
    older channel records that no session file beside this one references are pruned
    (calibrations.prune_channel_records)."""
    from qslab.calibration.channel import channel_result
    from qslab.sequences import channel_reuse

    pilot = link.pilot
    identity = channel_reuse.station_identity(station, link)
    result = channel_result(pilot.sent_snu, pilot.returned_snu, link.calibration.server_detector,
                            conditions={"gain": link.gain, "mu_photons": link.layers[0].mu_photons.value,
                                        "pilot_rows": pilot.rows, "client_lo_phase_rad": pilot.client_phase_rad,
                                        "server_lo_phase_rad": pilot.server_phase_rad,
                                        "client_gain_snu": pilot.client_gain_snu,
                                        "records": sorted(link.calibration.records),  # its parents (housekeeping)
                                        channel_reuse.IDENTITY_KEY: identity},
                            figure_path=str(figure_dir / "channel-link.png"), iq_skew_s=link.iq_skew_s())
    fresh = channel_reuse.fresh_summary(result)
    enabled, off_by = channel_reuse.reuse_enabled(station.config)
    agreement = None
    if enabled:
        reused, agreement, why_not = channel_reuse.reusable(store, result, identity)
        if reused is not None:
            say(f"channel: reusing {reused.id} (valid until {reused.expires.isoformat(timespec='seconds')}; today's "
                f"pilots agree: {agreement.describe()})")
            return ChannelChoice(reused.id, True, "reused: today's pilots agree", fresh, agreement.as_json())
    else:
        why_not = f"reuse is off ({off_by})"
    identities = {name: ",".join(c.identity.as_dict().values()) for name, c in station.connections.items()}
    record_id = store.write(result, instruments=identities).id
    say(f"channel: wrote {record_id}: {why_not}")
    pruned = calibrations.prune_channel_records(store, figure_dir.parent)  # superseded, referenced by no session
    if pruned:
        log.info("removed %d superseded channel record(s) no session in %s references: %s", len(pruned),
                 figure_dir.parent, ", ".join(pruned))
    return ChannelChoice(record_id, False, why_not, fresh, None if agreement is None else agreement.as_json())


# --- the recording ----------------------------------------------------------------------------------

def _meta(config, station, settings: SessionSettings, calibration, measured: MeasuredValues,
          channel: ChannelChoice | None = None) -> dict:
    version = CodeVersion.current()
    import importlib.metadata as md

    packages = {}
    for name in ("qslab", "numpy", "scipy", "h5py", "qcodes", "qcodes_contrib_drivers", "pyvisa", "pyvisa-py",
                 "pyserial"):
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    return {
        "config_toml": config.text,
        "station_snapshot_json": json.dumps(station.qcodes.snapshot(update=False), default=str),
        "settings_json": json.dumps(asdict(settings)),
        "provenance_json": json.dumps({"packages": packages, "python": platform.python_version(),
                                       "host": platform.node(), "git_revision": version.git_revision}),
        "seeds_json": json.dumps({"session": settings.seed, "batches": "SeedSequence([session, batch])",
                                  "bench": (config.bench_table or {}).get("seed")}),
        "calibrations_json": json.dumps({"records": calibration.records, "measured": measured.to_json(),
                                         **({} if channel is None else {"channel": channel.as_json()})}),
    }


def measured_values(link) -> MeasuredValues:
    """The calibrated values the results use, each with its one-sigma uncertainty (recorded in the file once)."""
    calibration = link.calibration
    gain = calibration.gain
    return MeasuredValues(
        mu_photons=link.mu_photons(), mu_per_layer=tuple(layer.mu_photons for layer in link.layers),
        gain=Estimate(link.gain, gain.uncertainty * link.gain / gain.value),  # relative uncertainty at the set gain
        transmittance=calibration.transmittance, excess_noise_snu=calibration.excess_noise,
        amplitude_transmittance=calibration.amplitude_transmittance,
        amplifier_noise_figure_db=calibration.noise_figure_db, server_efficiency=calibration.server_efficiency,
        server_electronic_noise_snu=calibration.server_electronic_noise_snu,
        server_shot_noise_variance_v2=calibration.server_shot_noise_v2,
        processor_loss_per_pass_db=calibration.processor_loss_per_pass_db,
        attenuation_db_per_layer=tuple(layer.attenuation_db for layer in link.layers),
        pilot={"client_lo_phase_rad": link.pilot.client_phase_rad, "server_lo_phase_rad": link.pilot.server_phase_rad,
               "leakage_field": [link.leakage_field.real, link.leakage_field.imag]})


# --- the session ------------------------------------------------------------------------------------

def run_batch(link, layers: int, pixels: np.ndarray, seed: int, batch: int,
              next_pixels: np.ndarray | None = None) -> tuple[list, np.ndarray]:
    """Every layer of one batch through the station (LinkAcquisition.run_layers); the client's ReLU between layers.
    ``next_pixels``: the next batch's images, whose client codes for layer 1 are worked out while this batch is
    captured, and whose layer 1 both parties set up while it is checked (LinkAcquisition.run_layers' ``next_data``,
    ``next_plan``: drawn from the next batch's seed, as its own run draws it again)."""
    plans = batch_plans(link, layers, seed, batch)
    next_data = mnist.preprocess(next_pixels) if next_pixels is not None and len(next_pixels) else None
    next_plan = batch_plans(link, 1, seed, batch + 1)[0] if next_data is not None else None
    captures = link.run_layers(plans, mnist.preprocess(pixels), client_step, next_data, next_plan)
    for capture in captures:  # every layer's server record in quadratures before the batch counts as taken
        capture.returned_snu  # noqa: B018
    _, unusable = hidden_vectors(captures[0].client_quadratures_snu)
    return captures, predictions(captures[-1].client_quadratures_snu, unusable)


def batch_plans(link, layers: int, seed: int, batch: int) -> list:
    """The first ``layers`` layers' plans of ``batch`` (LinkAcquisition.plan_layer): drawn from SeedSequence([seed,
    batch]), one layer after the other, so the first layer's is the same whether one or all are drawn."""
    rng = np.random.default_rng([seed, batch])
    return [link.plan_layer(index, rng) for index in range(layers)]


def client_step(client_quadratures_snu: np.ndarray) -> np.ndarray:
    """The client's step between layers: the hidden vectors of a layer's quadratures [B, rows], its next input; a
    vector that cannot be normalised is sent flat (its prediction is void: -1)."""
    hidden, unusable = hidden_vectors(client_quadratures_snu)
    hidden[unusable] = 1.0
    return hidden


@contextmanager
def _older_objects_frozen():
    """The objects alive before the batches (libraries, station, calibrations: ~130k) kept out of the collector's
    full passes while the batches run: one such pass took ~110 ms, a whole batch's time, at whatever batch it fell on.
    The batches' own garbage is collected as before; the frozen objects go back to the collector afterwards."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def is_checkpoint(batches_done: int) -> bool:
    """The server tests after batches 1, 2, 4, 8, ...: all data so far each time (from running sums: O(batch) work a
    batch, check_verification)."""
    return batches_done > 0 and batches_done & (batches_done - 1) == 0


def check_verification(running: RunningSamples, settings: dict, measured: MeasuredValues, modes: int,
                       images: int) -> None:
    """The server's test on everything verified so far (``running``: its sums, batch by batch); a failure aborts the
    session.

    Each checkpoint tests at false_alarm / checkpoints, so an honest client is stopped early with at most
    the stated false-alarm probability in all (union bound); the results' final test uses false_alarm, on the
    samples read back from the file. Why the running sums here: a checkpoint reading the file back read everything
    recorded so far, O(total) work on the batches' path (a tenth of a 2000-image session's per-image time).
    """
    batches = -(-settings["images"] // settings["batch_images"])
    checkpoints = int(np.log2(batches)) + 1
    checked = verify_layers(running, measured, modes, failure_probability=settings["failure_probability"],
                            false_alarm=settings["false_alarm"] / checkpoints)
    if checked is not None and not checked["accepted"]:
        raise SessionAborted(f"verification failed after {images} images: T_hat = {checked['transmittance_hat']:.4f}, "
                             f"eps_hat = {checked['excess_noise_hat_snu']:.3g} SNU (accepted only above amplitude "
                             f"{checked['amplitude_threshold']:.4f} and below residual variance "
                             f"{checked['variance_threshold_snu']:.4f} SNU)")


def run_session(config, settings: SessionSettings, *, out_dir: Path, store: RecordStore,
                resume: Path | None = None, progress: bool = True, faults=(), attack=None,
                run_id: str | None = None, allow_different_station: bool = False, fresh_channel: bool = False,
                embedded_bench: bool = False) -> dict:
    """The whole session (module docstring); returns the results with `file`, `safe_state` and `faults`.

    ``faults``: bench fault specs or Faults (instruments/sim/faults_attacks/faults.py), armed after set-up before the
    second batch this run takes (the first when it takes one). Faults are cured or stop the session
    (sequences/session_guard.py). An exception leaving here carries ``session_report``: the error, the
    file, the images it keeps, how to resume, the safe state read back and the faults. ``run_id`` names a
    new session (``session-<run_id>.h5``; a fresh one by default); a resumed one keeps its file's. SIGINT,
    SIGTERM and SIGHUP stop it at the next safe point with SessionInterrupted (a KeyboardInterrupt naming
    the signal), the station closed and read back and the file marked aborted.

    ``resume``: checked before anything is switched on: the file is resumable (not complete, no live writer:
    its writer lock is taken now), the config is the recorded one, and after connecting, the instruments'
    identities are the recorded ones (sequences/resume_check.py; ``allow_different_station`` lets a
    difference through, recorded). Each resume is recorded in the file (SessionFile.resumes).

    ``fresh_channel``: write the pilots as a new channel record even when a valid one of this station agrees with
    them (as ``[session] reuse_channel_record = false``; sequences/channel_reuse.py).

    The virtual bench is served by a process forked for the session (``LabStation(bench_process=True)``: its renders
    compute beside the session, not under its interpreter lock), unless the session reaches into the bench's state
    (faults, a cheating client, a curious server) or ``embedded_bench`` asks for it in this process (a caller reading
    ``station.bench``, e.g. through ``observing_arms``).
    """
    if fresh_channel:
        from dataclasses import replace

        config = replace(config, session=replace(config.session, reuse_channel_record=False))
    figure_dir = _FigureDirectory()  # the session's, once _run_session has named it
    try:
        # figures are drawn in a second process while the station measures (calibration/figures.py), all on disk on
        # leaving background()
        # SIGINT, SIGTERM, SIGHUP: a flag, checked at safe points. One BLAS thread throughout (blas_threads): the
        # session's products are small, and a second thread would spin against the bench and the session's workers
        with Interrupts() as interrupts, figures.background(), one_blas_thread():
            results = _run_session(config, settings, out_dir=out_dir, store=store, resume=resume, progress=progress,
                                   faults=faults, attack=attack, interrupts=interrupts, run_id=run_id,
                                   allow_different_station=allow_different_station, figure_directory=figure_dir,
                                   embedded_bench=embedded_bench)
    finally:
        figure_dir.remove_if_empty()
    return {**results, "figures": figure_dir.kept()}


@dataclass
class _FigureDirectory:
    """Where a session's figures go. One that this run made and that holds nothing once every figure is drawn is
    removed (figures off, or a session that stopped before drawing): checked only then, since the figure worker
    writes its files after the session has queued them, and a directory removed meanwhile fails them."""

    path: Path | None = None
    existed: bool = True

    def make(self, path: Path) -> Path:
        self.path, self.existed = path, path.is_dir()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_if_empty(self) -> None:
        if self.path is not None and not self.existed and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def kept(self) -> str | None:
        return str(self.path) if self.path is not None and self.path.is_dir() else None


def _run_session(config, settings: SessionSettings, *, out_dir: Path, store: RecordStore, resume: Path | None,
                 progress: bool, faults, attack, interrupts, run_id: str | None, allow_different_station: bool,
                 figure_directory: _FigureDirectory, embedded_bench: bool) -> dict:
    from qslab.sequences.station import LabStation

    faults = parse_faults(config, [str(fault) for fault in faults])

    weights, _ = load_weights(settings.weights)
    test_images, test_labels = mnist.load_mnist("test")
    if not 1 <= settings.images <= len(test_images):
        raise ValueError(f"images={settings.images}; expected 1..{len(test_images)}")
    lock, differences = None, []
    if resume:
        path = Path(resume)
        with recording.SessionFile.open(path) as previous:
            recorded, measured = Recorded.from_file(previous), MeasuredValues.from_json(previous.calibrations["measured"])
            run_id = previous.run_id
            if previous.status == recording.COMPLETE:
                raise recording.RecordingError(f"{path} is a complete session: a finished recording is never "
                                               f"appended to; record the rest in a new session file")
            recorded_config, recorded_station = previous.config_toml, previous.station_snapshot
            images_before = previous.images_written
            running = RunningSamples.from_session(previous, background=True)  # the checkpoints' and the cap's sums
        differences = resume_check.config_differences(recorded_config, config.text)
        resume_check.refuse_unless_allowed(path, differences, allow_different_station, "config")
        lock = recording.WriterLock.acquire(path)  # a live writer is refused here, before anything is connected
    else:
        run_id = run_id or recording.new_run_id()
        path, measured = Path(out_dir) / f"session-{run_id}.h5", None
        recorded = Recorded.empty(len(weights), settings.exact_leakage_images, path, background=True)
        running = RunningSamples(len(weights), background=True)
    figure_dir = figure_directory.make(path.with_suffix(""))
    settings_dict = asdict(settings)
    apart = not (embedded_bench or faults or attack is not None or settings.curious_server is not None)
    writer, appends, station, cap_stop, link = None, None, LabStation(config, bench_process=apart), None, None
    counts: LightCounts | None = None  # what the light carried in this file, once the writer is open
    status = None  # the status stream for `qslab monitor` (sequences/monitor/status.py)
    report = FaultReport([str(fault) for fault in faults])
    watch = RetryWatch(report).install()
    try:
        try:
            station.connect()
            interrupts.check("while connecting the station")
            if resume:  # identified, nothing switched on yet
                identities = {name: c.identity.as_dict() for name, c in station.connections.items()}
                found = resume_check.identity_differences(recorded_station, identities)
                resume_check.refuse_unless_allowed(path, found, allow_different_station, "instruments")
                differences += found
            if not resume:
                written = ensure_calibrations(station, store, figure_dir, progress=progress,
                                              before=lambda kind: interrupts.check(f"before the {kind} calibration"))
                if written:
                    say(f"wrote {len(written)} calibration record(s) to {store.directory}")
            calibration = load_station_calibration(store, _iq_driver_gain(), channel=False)
            link = SecureLink(station, calibration, gain=settings.gain, laser_power_dbm=settings.laser_power_dbm,
                              verify_fraction=settings.verify_fraction)
            interrupts.check("after the calibrations")
            link.prepare([weight_symbols(w, settings.mu) for w in weights], settings.mu)
            channel = record_channel(link, store, station, figure_dir)  # reused while valid and agreeing (DECISIONS Z)
            link.calibration = calibration.with_channel(store.get(channel.record_id))
            if attack is not None:  # a cheating client (bench only), after it behaved during the channel record
                station.bench.state.set_attack(attack)
            curious = arm_curious_server(station, settings, link)
            interrupts.check("after setting up the link")
            if resume:
                writer = recording.SessionWriter.resume(path, lock=lock, record=resume_check.resume_record(
                    config, identities, link.calibration.records, images_before, differences, lock.crashed,
                    measured_values(link).to_json()))
                say(f"resuming {path} after {writer.images_written} images"
                    + (f" (its writer, pid {lock.crashed.pid}, had crashed)" if lock.crashed else ""))
            else:
                measured = measured_values(link)
                shapes = [recording.LayerShape(layer.rows, layer.modes) for layer in link.layers]
                version = CodeVersion.current()
                writer = recording.SessionWriter.create(
                    path, shapes, _meta(config, station, settings, link.calibration, measured, channel),
                    qslab_version=version.qslab_version, git_revision=version.git_revision, run_id=run_id,
                    curious_server=None if curious is None else (curious.basis.shape[0], settings.curious_server))
            shapes = [recording.LayerShape(layer.rows, layer.modes) for layer in link.layers]
            status = StatusPublisher.beside(path, station, link, report, store.directory)
            # batches written on a second thread while the next is taken; committed exactly as in line (kill-9 rule)
            appends = recording.BackgroundAppends(writer, committed=status.batch)
            recorded.committed = appends.wait  # a read-back of the file (the results) waits first
            done = writer.images_written
            counts = LightCounts.resuming(link, writer)  # earlier processes' light, a killed one's as its lock noted
            link.before_light = lambda: counts.note_in(writer.lock)
            cap_stop = None

            def refuse_over_cap(index: np.ndarray, again: bool) -> None:
                """LeakageCapReached when sending the batch's images once more would take the cumulative weight leakage
                above the cap (before the batch is taken, and before it is taken again)."""
                allowed, projected = leakage_cap_allows(recorded, settings_dict, measured, shapes, int(index[-1]) + 1,
                                                        running, counts.weights(len(index)))
                if not allowed:
                    cap = settings.max_weight_leakage_bits_per_mode
                    raise LeakageCapReached(
                        {"images": int(index[0]), "projected_bits_per_mode": projected, "cap_bits_per_mode": cap,
                         "taken_again": again},
                        f"stopping before images {index[0] + 1}-{index[-1] + 1}{' are taken again' if again else ''}: "
                        f"the cumulative weight leakage would reach "
                        f"{projected:.4g} bit/mode, above the cap of {cap:g} ([session] max_weight_leakage_bits_per_mode)")

            guard = BatchGuard(link, station, report, faults)
            guard.start()
            batches = range(done // settings.batch_images, -(-settings.images // settings.batch_images))
            arm_at = batches[min(1, len(batches) - 1)] if batches else None  # after one clean batch, when two
            with tqdm(total=settings.images, initial=done, desc="secure inference", unit="img",
                      disable=not progress) as bar, _older_objects_frozen():
                for batch in batches:
                    interrupts.check(f"before batch {batch + 1} ({writer.images_written} images recorded)")
                    if batch == arm_at:
                        guard.arm(batch)
                    first = batch * settings.batch_images
                    index = np.arange(first, min(first + settings.batch_images, settings.images))
                    pixels = test_images[index].reshape(len(index), -1)
                    following = np.arange(index[-1] + 1, min(index[-1] + 1 + settings.batch_images, settings.images))
                    next_pixels = test_images[following].reshape(len(following), *pixels.shape[1:])
                    try:
                        refuse_over_cap(index, again=False)
                        captures, guess = guard.take(batch, lambda: counts.take(
                                                         lambda: run_batch(link, len(weights), pixels, settings.seed,
                                                                           batch, next_pixels=next_pixels)),
                                                     before_again=lambda: refuse_over_cap(index, again=True))
                    except LeakageCapReached as reached:
                        cap_stop = reached.stop
                        say(reached.message)
                        if first == 0:
                            raise SessionAborted("the weight-leakage cap allows no batch: raise [session] "
                                                 "max_weight_leakage_bits_per_mode or lower mu") from None
                        break
                    counted, sent = curious_counts(curious, len(index)), (counts.weights(), counts.data())
                    appends.append_batch(index, test_labels[index], pixels, guess,
                                         [recording.LayerBatch(c.client_quadratures_snu, c.verified_rows, c.measure_p,
                                                               c.sent_snu, c.returned_snu) for c in captures],
                                         curious_counts=counted, weight_images_sent=sent[0], data_images_sent=sent[1])
                    # the cap's sums take the batch now: the next batch's light is checked against it, written or not
                    recorded.add(test_labels[index], pixels, captures, None if counted is None else (index, *counted),
                                 sent)
                    running.add_batch((c.sent_snu, c.returned_snu) for c in captures)
                    bar.update(len(index))
                    if is_checkpoint(batch + 1):
                        check_verification(running, settings_dict, measured, shapes[0].modes, int(index[-1]) + 1)
                appends.wait()
        finally:
            with interrupts.protected():
                if link is not None:
                    link.settle_ahead()  # the set-ups started ahead (the check's) end before the safe state
                station.close()
        interrupts.check("after the last batch, before the results were written")
    except BaseException as error:
        with interrupts.protected():
            watch.remove()
            if appends is not None:
                failed = appends.close()  # the batch in flight committed (or failed) before the file is marked
                if failed is not None and failed is not error:
                    error.add_note(f"writing the last batch also failed: {failed}")
            if status is not None:
                status.stopped(error)
            if writer is None and lock is not None:
                lock.release()
            if writer is not None:
                writer.abort(f"{type(error).__name__}: {error}".strip(),
                             weight_images_sent=None if counts is None else counts.weights(),
                             data_images_sent=None if counts is None else counts.data())
                writer.close()
                error.add_note(f"{path} keeps the {writer.images_written} images of every completed batch, marked "
                               f"aborted: continue it with `qslab session --resume {path}`")
            error.session_report = _stopped_report(error, path if writer is not None else None, writer, station,
                                                   report)
        raise
    watch.remove()
    appends.close()
    warnings = report.warnings()
    if warnings:
        say("warning: the session completed through faults (its results list every action under 'faults'):")
        for line in warnings:
            say(f"  {line}")
    # a take the cap stopped from being repeated sent its light too
    recorded.weight_images_sent, recorded.data_images_sent = counts.weights(), counts.data()
    results = {"file": str(path), "run_id": run_id, **results_from_recorded(recorded, settings_dict, measured, shapes),
               "safe_state": _safe_state(station) or {"safe": False}, "faults": report.as_dict("completed"),
               "attack": None if attack is None else attack.spec, "stopped_at_leakage_cap": cap_stop}
    with interrupts.protected():
        writer.finish(results, weight_images_sent=recorded.weight_images_sent,
                      data_images_sent=recorded.data_images_sent)
        writer.close()
    sent, returned = recorded.scatter(MAX_POINTS)  # the verified samples, read back in chunks (flat memory)
    figures.draw(plot_session, figure_dir / "session.png", sent_snu=sent, returned_snu=returned,
                 line=recorded.samples().figure_line(), samples=recorded.samples().sizes[0],
                 labels=recorded.images.all_labels(), predictions=recorded.images.all_predictions(), results=results)
    return results


def arm_curious_server(station, settings: SessionSettings, link):
    """Bench only: the curious server of `settings` armed on layer 1 (its measurement's V from public training
    images), or None. Armed after the channel record; it only counts light the server does not verify."""
    if not settings.curious_server:
        return None
    from qslab.analysis.data_leakage_curious import CuriousSpec, server_basis
    from qslab.instruments.sim.faults_attacks.curious_server import CuriousServer

    spec = CuriousSpec.from_json(settings.curious_server)
    layer = link.layers[0]
    server = CuriousServer(spec.kind, server_basis(spec, layer.modes), spec.residual_amplitude,
                           spec.residual_phase_rad, rows=layer.rows)
    station.bench.state.set_curious_server(server)
    return server


def curious_counts(curious, images: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The curious server's counts of the batch just taken (its last layer-1 acquisition: a retried batch's last)."""
    if curious is None:
        return None
    record = curious.take()
    if record is None or record.counts.shape[0] != images:
        raise ProtocolError(f"curious server: no layer-1 acquisition of these {images} images was counted")
    return record.counts, np.full(images, record.counted_rows)


def _safe_state(station) -> dict | None:
    """What the station read back when it closed; None when it never connected anything (nothing was switched on)."""
    return station.safe_state.as_dict() if station.safe_state is not None else None


def _stopped_report(error: BaseException, path: Path | None, writer, station, report: FaultReport) -> dict:
    """The JSON of a session that stopped: what happened, what is kept, how to resume, the safe state."""
    kept = writer.images_written if writer is not None else 0
    return {"error": str(error), "error_type": type(error).__name__, "file": str(path) if path else None,
            "images_written": kept, "resume": f"qslab session --resume {path}" if path else None,
            "safe_state": _safe_state(station), "faults": report.as_dict("stopped")}


def _iq_driver_gain() -> float:
    from qslab.calibration.modulators import DRIVER_GAINS

    return DRIVER_GAINS["server_iq"]
