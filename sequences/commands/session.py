"""A lab session: secure inference of MNIST test images through the station's instruments, recorded to HDF5.

Pre-flight first: the config validates, every instrument answers and identifies, the whole sequence
(weight drives, processor drives, laser power, gain, attenuation for mu) is checked against the
declared limits before anything is sent, and the calibration records are valid (missing or stale
ones are run, and the session says so). Then per batch of images: layer 1 through the instruments,
the client's ReLU, layer 2; the server verifies a random fraction of rows on everything received so
far and aborts when the test fails. The file (docs/RECORDING.md) is flushed per batch and readable
while the session runs; an error leaves lasers off, drives at zero and the file marked aborted with
every completed batch: `--resume FILE` continues it (or a file whose session crashed) to the result a
clean run gives. SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the session at the next safe point (between
calibrations or batches) the same way, with one stderr line naming the signal and the safe state read
back, and exit status 128 + the signal's number.
With --json the last stdout line holds file, accuracy, weight_leakage_bits_per_mode, the data-leakage upper bound
(data_leakage_bound_bits_per_query, _per_symbol, _cumulative; security_report.data_leakage has every layer), the
paper's estimates data_leakage_bits_cramer_rao and data_leakage_bits_prx, per-bin photon counting's
data_leakage_bits_per_bin (formerly data_leakage_bits_exact), verified, images, safe_state and faults;
when the session stops, it holds error, file, images_written, resume, safe_state and faults.

A curious server (virtual bench only): --curious-server per-bin|delay|mode-sorter has the bench count the photons
of the light returned on layer 1's unverified rows through that measurement, the server's displacement removed
(off by --curious-residual-amplitude and --curious-residual-phase); the server trains a softmax classifier on
MNIST training images only and reports digit accuracy, I(label; guess) and identification among its candidate
set next to the upper bound (JSON: curious_server; recorded under /curious_server, recomputed by replay).
--candidate-set L declares a finite candidate set, the first L test images: the bound is capped at log2 L and
the exact finite-set Holevo information is reported.

Channel record: the session measures its pilots every time; a valid channel record of the same station that they
agree with is referenced instead of writing a new one (one line says which; --fresh-channel or [session]
reuse_channel_record = false always writes one; docs/DECISIONS.md Z).

Faults (virtual bench only): --inject-fault KIND[@INSTRUMENT][:OPTION,...] (repeatable) arms a fault
of instruments/sim/faults_attacks/faults.py after set-up, before the second batch: timeout, disconnect, garbled,
scpi-error, reset, overrange, power-drop, bias-drift; options after=N, count=N, persistent, db=,
rad=, v=, gain=, ch=, code=. The session detects each, retries or cures what it can (a re-lock,
the laser set back, the set-up applied again) and takes the batch again, or stops with one message.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from qslab.sequences.commands.session_log import COMMAND_LOGGER

log = logging.getLogger(COMMAND_LOGGER)
HELP = "run a lab session: secure inference through the instruments, recorded to HDF5"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import add_config_option, number
    from qslab.sequences.commands.session_log import LEVELS

    add_config_option(parser)
    parser.add_argument("--images", type=number("images", 1, 10_000, integer=True, unit="test images"), default=None,
                        help="MNIST test images to classify, the first N of the official test set (1..10000; "
                             "default [session] images, 200)")
    parser.add_argument("--mu", type=number("mu", 0.0, min_open=True, unit="photons per complex mode"), default=None,
                        help="mean photons per complex mode at the server's output (photons, > 0; default "
                             "[protocol] mu_photons)")
    parser.add_argument("--gain", type=number("gain", 1.0, min_open=True, unit="linear power gain"), default=None,
                        help="the client's amplifier power gain G (linear, > 1; default [protocol] gain)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="directory for the session file and figures (default [session] output_dir)")
    parser.add_argument("--seed", type=number("seed", 0, integer=True, unit="seed"), default=None,
                        help="seed of the server's row and quadrature choices (default [session] seed)")
    parser.add_argument("--batch-images", type=number("batch-images", 1, 1000, integer=True, unit="images"),
                        default=None, help="images per acquisition (default [session] batch_images, 50)")
    parser.add_argument("--calibration-dir", metavar="DIR", default=None,
                        help="calibration records (default: $QSLAB_CALIBRATION_DIR or [calibration] directory)")
    parser.add_argument("--resume", metavar="FILE", default=None,
                        help="continue an interrupted or crashed session file (its settings are used; a live "
                             "writer is refused; the config and the instruments must be the recorded ones)")
    parser.add_argument("--allow-different-station", action="store_true",
                        help="with --resume: continue even though the config or an instrument's identity differs "
                             "from the recorded one (the resume records what differed)")
    parser.add_argument("--fresh-channel", action="store_true",
                        help="write today's pilots as a new channel record (about 1.5 MB) even when a valid record "
                             "of this station agrees with them (default [session] reuse_channel_record: reuse it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")
    parser.add_argument("--log-level", choices=LEVELS, default="INFO", type=str.upper,
                        help="what the session's log file (session-<run id>.log beside the session file) keeps: "
                             "DEBUG adds every instrument command (default INFO)")
    parser.add_argument("--attack", metavar="KIND=SIZE", default=None,
                        help="virtual bench only: a cheating client, armed after the channel calibration: tap=F "
                             "(keeps a fraction F of the returned light), measure=F (measures a fraction F of the "
                             "returned modes and resends them), gain=G (amplifier at linear gain G instead of the "
                             "declared one), intercept (intercept-resend of every returned mode)")
    parser.add_argument("--curious-server", metavar="KIND", choices=("per-bin", "delay", "mode-sorter"), default=None,
                        help="virtual bench only: a server that counts photons of the light returned on layer 1's "
                             "unverified rows: per-bin (each time bin), delay (one-bin delay interferometer, both "
                             "ports), mode-sorter (DFT over the 64 leading principal modes of MNIST training images); "
                             "it reports digit accuracy, I(label; guess) in bits and identification among the "
                             "candidate set next to the data-leakage upper bound")
    parser.add_argument("--curious-residual-amplitude", type=number("curious-residual-amplitude", -1.0, min_open=True,
                                                                    unit="relative amplitude"), default=0.0,
                        help="the curious server's displacement removal takes off (1 + a) x the returned mean: "
                             "a, relative (dimensionless, > -1; default 0, a perfect removal)")
    parser.add_argument("--curious-residual-phase", type=number("curious-residual-phase", -3.15, 3.15, unit="rad"),
                        default=0.0, help="phase error of the curious server's displacement removal (rad; default 0)")
    parser.add_argument("--curious-train-images", type=number("curious-train-images", 10, 60_000, integer=True,
                                                              unit="MNIST training images"), default=None,
                        help="MNIST training images the curious server simulates and trains its classifier on "
                             "(10..60000; default 2000)")
    parser.add_argument("--candidate-set", type=number("candidate-set", 1, 10_000, integer=True, unit="test images"),
                        default=None, help="declare a finite candidate set: the first L MNIST test images, uniform "
                                           "(L >= --images, <= 10000); the data-leakage bound is capped at log2 L "
                                           "bits and the exact finite-set Holevo information is reported (L <= 2000)")
    parser.add_argument("--inject-fault", metavar="KIND[@INSTRUMENT][:OPTIONS]", action="append", default=[],
                        help="virtual bench only, repeatable: inject a fault after set-up (timeout, disconnect, "
                             "garbled, scpi-error, reset, overrange, power-drop, bias-drift; options after=N, "
                             "count=N, persistent, db=, rad=, v=, gain=, ch=, code=)")


def settings_from(args, config):
    from qslab.sequences.session import SessionSettings

    s, p = config.session, config.protocol
    return SessionSettings(
        images=args.images if args.images is not None else s.images,
        mu=args.mu if args.mu is not None else p.mu_photons,
        gain=args.gain if args.gain is not None else p.gain,
        seed=args.seed if args.seed is not None else s.seed,
        batch_images=args.batch_images if args.batch_images is not None else s.batch_images,
        verify_fraction=p.verify_fraction, failure_probability=p.failure_probability,
        laser_power_dbm=s.laser_power_dbm, max_weight_leakage_bits_per_mode=s.max_weight_leakage_bits_per_mode,
        **data_leakage_settings(args, config, args.images if args.images is not None else s.images,
                                args.seed if args.seed is not None else s.seed))


def data_leakage_settings(args, config, images: int, seed: int) -> dict:
    """--candidate-set and --curious-server as settings: candidate_set (L or 0) and curious_server (a CuriousSpec's
    JSON or None); a usage error names the option."""
    from qslab.sequences.commands.cli_io import UsageError

    candidates = getattr(args, "candidate_set", None) or 0
    if candidates and candidates < images:
        raise UsageError(f"--candidate-set {candidates}: the candidate set (the first L test images) must hold the "
                         f"session's {images} images; expected L >= {images}")
    kind = getattr(args, "curious_server", None)
    if kind is None:
        for option in ("curious_residual_amplitude", "curious_residual_phase", "curious_train_images"):
            if getattr(args, option, None):
                raise UsageError(f"--{option.replace('_', '-')} needs --curious-server KIND")
        return {"candidate_set": candidates, "curious_server": None}
    if not config.uses_bench or any(i.address not in ("bench", "bench-uncabled") for i in config.instruments.values()):
        raise UsageError(f"--curious-server {kind}: the curious server's counts are rendered by the virtual bench; "
                         f"{config.source} has instruments on real addresses")
    from qslab.analysis.data_leakage_curious import DEFAULT_TRAIN_IMAGES, KIND_NAMES, CuriousSpec

    spec = CuriousSpec(KIND_NAMES[kind], seed=seed, train_images=args.curious_train_images or DEFAULT_TRAIN_IMAGES,
                       residual_amplitude=args.curious_residual_amplitude, residual_phase_rad=args.curious_residual_phase,
                       candidates=candidates)
    return {"candidate_set": candidates, "curious_server": spec.to_json()}


def calibration_store(args, config):
    import os

    from qslab.calibration.records import DIRECTORY_ENV, RecordStore

    return RecordStore(args.calibration_dir or os.environ.get(DIRECTORY_ENV) or config.calibration.directory)


def calibration_dir_option(args) -> str:
    """Which setting chose the calibration directory (named when it is refused)."""
    import os

    from qslab.calibration.records import DIRECTORY_ENV

    return ("--calibration-dir" if args.calibration_dir else f"${DIRECTORY_ENV}" if os.environ.get(DIRECTORY_ENV)
            else "[calibration] directory")


def run(args) -> int:

    from dataclasses import asdict

    from qslab.analysis.recording import RecordingError, SessionFile, new_run_id
    from qslab.sequences.commands.cli_io import (UsageError, existing_file, shown_path, station_config,
                                                     writable_directory)
    from qslab.sequences.commands.session_log import SessionLog
    from qslab.sequences.resume_check import resumable_settings
    from qslab.sequences.session_guard import parse_faults

    config = station_config(args, "session")
    settings = settings_from(args, config)
    if args.resume is not None:
        existing_file(args.resume, "--resume")
        try:
            with SessionFile.open(args.resume) as previous:
                settings = resumable_settings(args.resume, previous.settings)
        except RecordingError as error:
            raise UsageError(str(error)) from None
    else:
        writable_directory(args.out or config.session.output_dir, "--out" if args.out else "[session] output_dir")
    writable_directory(calibration_store(args, config).directory, calibration_dir_option(args))
    try:
        faults = parse_faults(config, args.inject_fault)
        attack = parse_attack_option(config, args.attack)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out_dir = Path(args.out or config.session.output_dir)
    run_id = None if args.resume else new_run_id()
    log_path = Path(args.resume).with_suffix(".log") if args.resume else out_dir / f"session-{run_id}.log"
    try:
        session_log = SessionLog(log_path, args.log_level)
    except OSError as error:  # before anything was switched on
        raise UsageError(f"cannot write the session log {shown_path(log_path)} ({error.strerror or error})") from None
    with session_log:
        log.info("qslab session %s %s: config %s, settings %s, calibration records in %s", run_id or "",
                 f"resuming {args.resume}" if args.resume else "starting", config.source, asdict(settings),
                 calibration_store(args, config).directory)
        return _run_logged(args, config, settings, out_dir, run_id, faults, attack)


def _run_logged(args, config, settings, out_dir: Path, run_id: str | None, faults, attack) -> int:
    """The session itself, under its log: the results, or the stop with the safe state read back."""
    from qslab.analysis.recording import RecordingError
    from qslab.calibration.records import RecordError
    from qslab.calibration.result import CalibrationError
    from qslab.instruments.optical.faults import InstrumentError, InstrumentFault
    from qslab.instruments.optical import LimitError
    from qslab.sequences.commands.cli_io import print_json_last
    from qslab.sequences.protocol import ProtocolError
    from qslab.sequences.interrupts import SessionInterrupted
    from qslab.sequences.resume_check import StationDiffers
    from qslab.sequences.session import SessionAborted, run_session
    from qslab.sequences.session_guard import SessionStopped
    from qslab.sequences.station import StationError

    try:
        result = run_session(config, settings, out_dir=out_dir, store=calibration_store(args, config),
                             resume=args.resume, progress=not args.json, faults=faults, attack=attack, run_id=run_id,
                             allow_different_station=args.allow_different_station, fresh_channel=args.fresh_channel)
    except (StationDiffers, StationError, CalibrationError, RecordError, ProtocolError, LimitError, SessionAborted, SessionStopped,
            RecordingError, InstrumentError, InstrumentFault) as error:
        report = getattr(error, "session_report", None) or {"error": str(error), "error_type": type(error).__name__}
        log.error("stopped: %s", json.dumps(report, default=str))
        print(f"qslab session: error: {error}", file=sys.stderr)
        for note in [describe_safe_state(report.get("safe_state")), *getattr(error, "__notes__", [])]:
            print(f"qslab session: {note}", file=sys.stderr)
        if args.json:
            print_json_last(report)
        return 1
    except SessionInterrupted as stop:  # SIGINT, SIGTERM or SIGHUP: one line, the JSON, exit 128 + signal
        return report_interrupted(stop, args.json)
    except KeyboardInterrupt as interrupt:  # the CLI says "interrupted"; the safe state and the file are said here
        report = getattr(interrupt, "session_report", None) or {}
        log.error("interrupted (Ctrl-C): %s", json.dumps(report, default=str))
        for note in [describe_safe_state(report.get("safe_state")), *getattr(interrupt, "__notes__", [])]:
            print(f"qslab session: {note}", file=sys.stderr)
        if args.json and report:
            print_json_last({**report, "error": "interrupted (Ctrl-C)"})
        raise
    log.info("complete: %s", json.dumps(result, default=str))
    print(format_result(result))
    if not result["safe_state"].get("safe"):
        print(f"qslab session: {describe_safe_state(result['safe_state'])}", file=sys.stderr)
    if args.json:
        print_json_last(result)
    return 0 if result["verified"] is not False and result["safe_state"].get("safe") else 1


def report_interrupted(stop, as_json: bool) -> int:
    """A session a signal stopped: one stderr line naming the signal, the safe state read back and the file kept;
    with --json the stopped report (``signal`` added) on the last stdout line. Returns 128 + the signal number."""
    from qslab.sequences.commands.cli_io import print_json_last
    from qslab.sequences.interrupts import signal_name

    report = getattr(stop, "session_report", None) or {}
    kept = (f"; {report['file']} keeps {report['images_written']} images, marked aborted: resume with "
            f"`{report['resume']}`" if report.get("file") else "")
    print(f"qslab session: {stop}: {describe_safe_state(report.get('safe_state'))}{kept}", file=sys.stderr, flush=True)
    if as_json:
        print_json_last({**report, "error": str(stop), "signal": signal_name(stop.signum)})
    return 128 + stop.signum


def parse_attack_option(config, spec: str | None):
    """--attack KIND=SIZE as an qslab.instruments.sim.faults_attacks.attacks.Attack; refused on a station not on the bench."""
    if spec is None:
        return None
    if not config.uses_bench or any(i.address not in ("bench", "bench-uncabled") for i in config.instruments.values()):
        raise ValueError(f"--attack {spec}: attacks are simulated by the virtual bench; {config.source} has "
                         "instruments on real addresses")
    from qslab.instruments.sim.faults_attacks.attacks import parse_attack

    return parse_attack(spec)


def describe_safe_state(safe: dict | None) -> str:
    """The safe state as read back when the station closed: said plainly, never assumed."""
    if not safe:
        return "the station was not connected: nothing was switched on"
    if safe.get("safe"):
        return "the station was closed: lasers off, drives at zero, shutters closed (read back)"
    readback = safe.get("instruments") or {}
    problems = [f"{name}: {what}; " + (f"its outputs read back {_states(readback[name])}" if readback.get(name)
                                       else "its outputs could not be read back")
                for name, what in (safe.get("errors") or {}).items()]
    still_on = [f"{name}.{key}" for name, values in (safe.get("instruments") or {}).items()
                for key, value in values.items() if value is not False]
    if still_on:
        problems.append(f"still on: {', '.join(still_on)}")
    return f"NOT SAFE after closing the station ({'; '.join(problems)}): make these safe at the instruments"


def _states(values: dict) -> str:
    return ", ".join(f"{key} {'on' if value else 'off'}" if isinstance(value, bool) else f"{key} {value!r}"
                     for key, value in values.items())


def format_faults(faults: dict | None) -> str:
    """One line: what was injected, what fired, what the stack did."""
    if not faults or not (faults.get("injected") or faults.get("actions")):
        return "-"
    done: dict[str, int] = {}
    for action in faults.get("actions", []):
        done[action["action"]] = done.get(action["action"], 0) + 1
    return (f"injected {', '.join(faults.get('injected')) or 'none'}; fired {len(faults.get('fired', []))}; "
            + (", ".join(f"{name} x{count}" for name, count in done.items()) or "nothing to do"))


def format_result(result: dict) -> str:
    verified = {True: "accepted", False: "ABORTED (verification failed)", None: "no row verified"}[result["verified"]]
    safe = result.get("safe_state") or {}
    report = result.get("security_report") or {}
    budget = report.get("failure_budget") or {"terms": []}
    k = {term["name"]: term["sigmas"] for term in budget["terms"]}
    rows = [
        ("run id", result.get("run_id") or "-"),
        ("session file", result["file"]),
        ("figures", result.get("figures") or "- (not drawn)"),
        ("test accuracy", f"{100 * result['accuracy']:.1f} % of {result['images']} images ({result['correct']} correct"
                          + (f"; 95 % CI {100 * result['accuracy_ci95'][0]:.1f}-{100 * result['accuracy_ci95'][1]:.1f} %)"
                             if result.get("accuracy_ci95") else ")")),
        (f"mu (measured, +{k.get('mu_photons', 0.0):.2f} sigma)",
         f"{result['mu_photons']:.4g} ({result['mu_photons_upper']:.4g}) photons/mode"),
        (f"G (calibrated, +{k.get('gain', 0.0):.2f} sigma)", f"{result['gain']:.4g} ({result['gain_upper']:.4g})"),
        ("verification", verified),
        *weight_leakage_rows(result),
        *data_leakage_rows(result),
        *curious_server_rows(result),
        ("failure probability", format_budget(report.get("failure_budget"))),
        *([("stopped at leakage cap", cap_stop_text(result["stopped_at_leakage_cap"]))]
          if result.get("stopped_at_leakage_cap") else []),
        ("safe state", "lasers off, drives at zero (read back)" if safe.get("safe") else f"NOT SAFE: {safe or 'unknown'}"),
        ("faults", format_faults(result.get("faults"))),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def data_leakage_rows(result: dict) -> list[tuple[str, str]]:
    """The data-leakage upper bound and the labelled figures that are not bounds (older results: their estimates)."""
    from qslab.analysis.data_leakage_report import report_rows

    data = (result.get("security_report") or {}).get("data_leakage")
    if data:
        return report_rows(data)
    return [("data leakage, not bounds", f"the paper's Eq. 3 (Cramer-Rao) {result['data_leakage_bits_cramer_rao']:.3g} "
                                         "bit/symbol (no upper bound recorded)")]


def curious_server_rows(result: dict) -> list[tuple[str, str]]:
    """A curious server's outcome next to the upper bound, when one ran."""
    if not result.get("curious_server"):
        return []
    from qslab.analysis.data_leakage_curious import report_rows

    return report_rows(result["curious_server"], result.get("data_leakage_bound_bits_per_query"))


def cap_stop_text(stop: dict) -> str:
    """Where the leakage cap ended the session, and why."""
    batch = "taking the next batch again" if stop.get("taken_again") else "the next batch"
    return (f"after {stop['images']} images: {batch} would take the total to {stop['projected_bits_per_mode']:.4g} "
            f"bit/mode, above the cap of {stop['cap_bits_per_mode']:g}")


def weight_leakage_rows(result: dict) -> list[tuple[str, str]]:
    """The weight-leakage lines: the bound per query (worst layer) and cumulative over every pass of the weights, each
    layer with its passes, the labelled reference figures."""
    weight = (result.get("security_report") or {}).get("weight_leakage")
    if not weight:
        return [("weight leakage", f"{result['weight_leakage_bits_per_mode']:.4g} bit/mode")]
    sent = weight.get("images_sent_per_layer")
    over = ("over every image the weights were sent to" if sent is not None else
            f"over the session's {weight['queries']} queries (passes beyond them not counted: the file does not hold "
            "them)")
    rows = [("weight leakage", f"{weight['per_query_bits_per_mode']:.4g} bit/mode per query (worst layer, worst mode); "
                               f"{weight['cumulative_bits_per_mode']:.4g} bit/mode {over} "
                               f"({weight['cumulative_bits_per_weight']:.4g} bit per real weight; "
                               f"{weight['per_client_bits']:.4g} bit about all weights for this client)")]
    cumulative = weight.get("cumulative_bits_per_mode_per_layer") or [None] * len(weight["layers"])
    for index, layer in enumerate(weight["layers"]):
        if layer["verified"]:
            text = (f"{layer['bits_per_mode']:.4g} bit/mode, {layer['method']} (T_min {layer['transmittance_min']:.3f}, "
                    f"eps_max {layer['excess_noise_max_snu']:.3g} SNU, worst mode {layer['excess_noise_worst_mode_snu']:.3g}"
                    f" SNU; average mode {layer['average_mode_bits_per_mode']:.4g}); {layer['verified_rows']} rows, "
                    f"{layer['samples']} samples verified")
        else:
            text = (f"{layer['bits_per_mode']:.4g} bit/mode, {layer['method']}: {layer['verified_rows']} rows, "
                    f"{layer['samples']} samples verified (too few for finite-size limits)")
        if sent is not None:
            extra = sent[index] - weight["queries"]
            text += (f"; sent to {sent[index]} images: {weight['queries']} queries and {extra} more (the set-up's "
                     f"leakage nulling, batches taken again) at g(mu) {layer['unverified_bits_per_mode']:.4g}, "
                     f"{cumulative[index]:.4g} bit/mode in all")
        rows.append((f"  {layer['layer']}", text))
    for figure in weight["references"]:
        rows.append(("  not a bound", f"{figure['bits_per_mode']:.4g} bit/mode assuming {figure['assumes']}"))
    return rows


def format_budget(budget: dict | None) -> str:
    """The whole report's failure probability and how it is split (union bound over the estimated quantities)."""
    if not budget:
        return "not recorded"
    terms = budget["terms"]
    share = ", ".join(sorted({f"{t['probability']:.2g}" for t in terms}))
    return (f"{budget['combined']:.3g} for the whole report (union bound over {len(terms)} estimated quantities, "
            f"{share} each: {', '.join(t['name'] for t in terms)})")
