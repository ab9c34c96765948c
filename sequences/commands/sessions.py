"""List the sessions of an output directory: run id, start, images, accuracy, verification, leakage, status, file.

Read from the session files themselves (qslab.analysis.recording.index): complete, aborted, running (read
while written) and unreadable files all appear. With --json the last stdout line holds
{"directory", "sessions": [{file, run_id, started_utc, status, images, images_planned, accuracy, verified,
weight_leakage_bits_per_mode, data_leakage_bits_per_bin, detail}]}.
"""

from __future__ import annotations

HELP = "list the sessions of an output directory (id, time, images, accuracy, verified, leakage, status, file)"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import add_config_option

    parser.add_argument("directory", metavar="DIR", nargs="?", default=None,
                        help="output directory (default: the config's [session] output_dir)")
    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")


def output_directory(args, option: str | None):
    """``option`` if given, else the config's [session] output_dir (the config as the session command finds it)."""
    from pathlib import Path

    from qslab.sequences.commands.cli_io import UsageError
    from qslab.sequences.config import ConfigError
    from qslab.sequences.starter_config import load_station_config

    if option is not None:
        return Path(option)
    try:
        config, _ = load_station_config(args.config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    return Path(config.session.output_dir)


def run(args) -> int:
    from qslab.analysis.recording.index import session_index
    from qslab.sequences.commands.cli_io import UsageError, print_json_last

    directory = output_directory(args, args.directory)
    if args.directory is not None and not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    rows = session_index(directory)
    print(format_sessions(rows) if rows else f"no session files (session-*.h5) in {directory}")
    if args.json:
        print_json_last({"directory": str(directory), "sessions": [row.as_dict() for row in rows]})
    return 0


def format_sessions(rows) -> str:
    def percent(value):
        return "-" if value is None else f"{100 * value:.2f} %"

    table = [("run id", "started (UTC)", "images", "accuracy", "verified", "leakage bit/mode", "status", "file")]
    for row in rows:
        images = "-" if row.images is None else f"{row.images}/{row.images_planned}"
        verified = {True: "yes", False: "NO", None: "-"}[row.verified]
        leakage = "-" if row.weight_leakage_bits_per_mode is None else f"{row.weight_leakage_bits_per_mode:.4g}"
        started = (row.started_utc or "-")[:19].replace("T", " ")
        table.append((row.run_id or "-", started, images, percent(row.accuracy), verified, leakage, row.status,
                      row.file))
    widths = [max(len(line[k]) for line in table) for k in range(len(table[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1]
                     for line in table)
