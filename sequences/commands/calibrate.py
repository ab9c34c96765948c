"""Run calibrations on the station of a config (the virtual bench by default), write records and figures.

    qslab calibrate {homodyne,photons,amplifier,modulators,processor,channel,all} [--config FILE] [--json]

The procedures are qslab.sequences.calibrations (this command parses, calls them and prints). Each
measures through the roles, fits, and returns estimates with uncertainties; each result becomes one
immutable record in the calibration directory (--calibration-dir, else $QSLAB_CALIBRATION_DIR, else
qslab-output/calibration) with its PNG beside it under figures/. A failed calibration, or one whose
prerequisite records are missing, prints one line naming it and why (exit 1) and writes no record;
`all` runs every kind in order and stops at the first failure; the station always closes with lasers
off, shutters closed, amplifier off, read back. SIGINT, SIGTERM and SIGHUP stop it before the next kind
the same way (the records already written are kept; exit status 128 + the signal's number). With --json the last stdout line is
{"parameters": {KEY: {"value", "uncertainty", "record"}}, "derived": {...same...}, "records": [ids]}
where KEY is the dotted path of the same quantity under the config's [bench] table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from qslab.sequences.calibrations import HOMODYNE_POINTS, KIND_NAMES, KINDS

HELP = f"calibrate the station ({', '.join(KIND_NAMES)}, all): records + figures"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import add_config_option, number

    parser.add_argument("-h", "--help", action=KindHelp,
                        help="show this help; after a kind (`calibrate photons --help`), that kind's help")
    parser.add_argument("kind", choices=KIND_NAMES + ("all",),
                        help="which calibration to run: " + "; ".join(f"{k.name}: {k.measures}" for k in KINDS)
                             + "; all: every kind in this order")
    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")
    parser.add_argument("--calibration-dir", metavar="DIR", default=None,
                        help="record directory (default: $QSLAB_CALIBRATION_DIR, else the config's "
                             "[calibration] directory, qslab-output/calibration)")
    parser.add_argument("--fixed-attenuation-db", type=number("fixed-attenuation-db", 0.0, unit="dB"), default=None,
                        help="declared fixed attenuation between the VOA-output meter and the server output, dB "
                             "(characterised separately; default [calibration] fixed_attenuation_db)")
    parser.add_argument("--fixed-attenuation-uncertainty-db", type=number("fixed-attenuation-uncertainty-db", 0.0,
                                                                          unit="dB"), default=None,
                        help="its one-sigma uncertainty, dB (default [calibration] fixed_attenuation_uncertainty_db)")
    parser.add_argument("--output-meter-channel", type=number("output-meter-channel", 1, 4, integer=True),
                        default=None, help="channel of the monitor power meter that reads the VOA output "
                                           "(default [calibration] output_meter_channel)")
    parser.add_argument("--points", type=number("points", 1024, 50_000_000, integer=True), default=HOMODYNE_POINTS,
                        help=f"digitizer points per homodyne record (default {HOMODYNE_POINTS})")


def run(args) -> int:
    from qslab.calibration.records import RecordStore
    from qslab.calibration.result import CalibrationError
    from qslab.sequences.calibrations import CalibrationRefused, kinds_progress, record_kind
    from qslab.sequences.commands.cli_io import print_json_last, station_config
    from qslab.sequences.interrupts import Interrupts, SessionInterrupted, signal_name
    from qslab.sequences.station import LabStation, StationError

    kinds = list(KIND_NAMES) if args.kind == "all" else [args.kind]
    config = station_config(args, "calibrate")
    store, options = RecordStore(_directory(args, config)), options_from_args(args, config)
    figure_dir = store.directory / "figures" / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    figure_dir.mkdir(parents=True, exist_ok=True)
    records, failure, stopped = [], None, None
    station = LabStation(config)
    with Interrupts() as interrupts:  # SIGINT, SIGTERM, SIGHUP: a flag, checked before each kind
        try:
            station.connect()
            for kind in kinds_progress(kinds, progress=len(kinds) > 1 and not args.json):  # `all`: a bar per kind
                interrupts.check(f"before the {kind} calibration")
                try:
                    records += record_kind(kind, station, store, options, figure_dir)
                except (CalibrationError, CalibrationRefused) as error:
                    failure = str(error)
                    break
        except StationError as error:
            print(f"qslab calibrate: error: {error}", file=sys.stderr)
            return 1
        except SessionInterrupted as interrupted:
            stopped = interrupted
        finally:
            with interrupts.protected():
                station.close()
            if not any(figure_dir.iterdir()):  # nothing was drawn (the station failed): no empty directory left
                figure_dir.rmdir()
    safe = station.safe_state.as_dict() if station.safe_state else {"safe": False}
    if stopped is not None:
        print(format_table(records))
        print(f"qslab calibrate: {stopped}; the records already written are kept; station "
              f"{'read back safe' if safe['safe'] else f'NOT read back safe: {safe}'}", file=sys.stderr)
        if args.json:
            print_json_last({**json_payload(records), "signal": signal_name(stopped.signum), "safe_state": safe})
        return 128 + stopped.signum
    print(format_table(records))
    if failure:
        print(f"qslab calibrate: error: {failure} (no record written for it)", file=sys.stderr)
    if not safe["safe"]:
        print(f"qslab calibrate: error: the station did not read back safe: {safe}", file=sys.stderr)
    if args.json:
        print_json_last(json_payload(records))
    return 1 if failure or not safe["safe"] else 0


class KindHelp(argparse.Action):
    """--help that describes the kind given before it (what it measures, needs and writes), else the command."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        name = getattr(namespace, "kind", None)
        if name is None:
            parser.print_help()
        else:
            options = parser.format_help().partition("\noptions:\n")[2]
            print(f"usage: {parser.prog} {name} [options]\n\n{kind_help(name)}\n\noptions:\n{options}", end="")
        parser.exit()


def kind_help(name: str) -> str:
    """What `qslab calibrate NAME` does, from the KINDS table."""
    from qslab.calibration.records import DEFAULT_VALIDITY_S
    from qslab.sequences.calibrations import kind

    if name == "all":
        return ("Runs every kind in this order, stopping at the first failure:\n"
                + "\n".join(f"  {k.name:<11} {k.measures}" for k in KINDS))
    k = kind(name)
    validity = DEFAULT_VALIDITY_S.get(name)
    return "\n".join([
        f"Measures {k.measures}.",
        f"Needs valid records of: {', '.join(k.requires) or 'nothing (it runs first)'}.",
        "Writes records of: " + ", ".join(sorted({instrument for instrument, _ in k.records})) + ".",
        f"Reports (by their [bench] key): {', '.join(k.bench_keys)}.",
        *([f"Records stay valid {validity / 60:g} min; a session refreshes a stale one itself."] if validity else [])])


def _directory(args, config):
    """--calibration-dir, else $QSLAB_CALIBRATION_DIR, else the config's [calibration] directory."""
    import os

    from qslab.calibration.records import DIRECTORY_ENV

    return args.calibration_dir or os.environ.get(DIRECTORY_ENV) or config.calibration.directory


def options_from_args(args, config):
    """CalibrationOptions: the options given on the command line, the config's [calibration] values for the rest."""
    from qslab.sequences.calibrations import CalibrationOptions

    return CalibrationOptions.from_config(config, fixed_attenuation_db=args.fixed_attenuation_db,
                                          fixed_attenuation_uncertainty_db=args.fixed_attenuation_uncertainty_db,
                                          output_meter_channel=args.output_meter_channel,
                                          homodyne_points=args.points)


def json_payload(records) -> dict:
    from qslab.sequences.calibrations import kind

    primary, derived = {}, {}
    for record in records:
        bench_keys = kind(record.kind).bench_keys if record.kind in KIND_NAMES else ()
        for key, estimate in record.parameters.items():
            entry = {"value": estimate.value, "uncertainty": estimate.uncertainty, "unit": estimate.unit,
                     "record": record.id}
            (primary if key in bench_keys else derived)[key] = entry
    return {"parameters": primary, "derived": derived, "records": [r.id for r in records]}


def format_table(records) -> str:
    rows = [(r.id, key, f"{e.value:.6g} +- {e.uncertainty:.2g} {e.unit}".rstrip())
            for r in records for key, e in r.parameters.items()]
    if not rows:
        return "no calibration record written"
    header = ("record", "parameter", "value +- 1 sigma")
    width = [max(len(row[k]) for row in [header, *rows]) for k in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in [header, *rows]]
    directory = records[0].path.parent
    return "\n".join(lines + [f"{len(records)} record(s) written to {directory}"])
