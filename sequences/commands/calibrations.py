"""List the calibration records of a store: kind, instrument, age, valid until, superseded; prune the superseded.

A record is superseded when a newer one of the same kind and instrument holds all its parameters and
stays valid at least as long (the store never returns it again). --prune deletes superseded records,
but never one that a session file under --sessions references, nor one that a kept record was derived
from; it refuses to run when a session file there cannot be read. With --json the last stdout line
holds {"directory", "records": [{id, file, readable, kind, instrument, created_utc, age_s,
valid_until_utc, valid, superseded_by, parameters}], "deleted": [ids]}.
"""

from __future__ import annotations

import datetime as dt

HELP = "list calibration records (kind, instrument, age, valid until, superseded); --prune the superseded"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import add_config_option

    parser.add_argument("directory", metavar="DIR", nargs="?", default=None,
                        help="record directory (default: $QSLAB_CALIBRATION_DIR, else the config's [calibration] "
                             "directory)")
    add_config_option(parser)
    parser.add_argument("--prune", action="store_true",
                        help="delete superseded records that no session references (nor any kept record used)")
    parser.add_argument("--sessions", metavar="DIR", action="append", default=None,
                        help="session directory whose files' records --prune keeps (repeatable; default: the "
                             "config's [session] output_dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")


def run(args) -> int:
    import os
    from pathlib import Path

    from qslab.analysis.recording import RecordingError
    from qslab.analysis.recording.index import referenced_records
    from qslab.calibration.housekeeping import list_records, prune
    from qslab.calibration.records import DIRECTORY_ENV, RecordStore
    from qslab.sequences.commands.cli_io import UsageError, print_json_last
    from qslab.sequences.commands.sessions import output_directory

    if args.directory is not None:
        directory = Path(args.directory)
        if not directory.is_dir():
            raise UsageError(f"{directory} is not a directory")
    elif os.environ.get(DIRECTORY_ENV):
        directory = Path(os.environ[DIRECTORY_ENV])
    else:
        from qslab.sequences.commands.cli_io import station_config

        directory = Path(station_config(args, "calibrations").calibration.directory)
    deleted = []
    if args.prune:
        session_dirs = [Path(d) for d in args.sessions] if args.sessions else [output_directory(args, None)]
        try:
            used = referenced_records(session_dirs)
        except RecordingError as error:
            raise UsageError(f"nothing pruned: {error} (what it references is unknown; move it away first)") from None
        deleted = prune(RecordStore(directory), set(used))
    now = dt.datetime.now(dt.timezone.utc)
    rows = list_records(directory)
    if deleted:
        print(f"deleted {len(deleted)} superseded record(s) no session under "
              f"{', '.join(map(str, session_dirs))} references")
    elif args.prune:
        print("nothing to prune")
    print(format_records(rows, now) if rows else f"no calibration records in {directory}")
    if args.json:
        print_json_last({"directory": str(directory), "records": [row.as_dict(now) for row in rows],
                         "deleted": [row.record.id for row in deleted]})
    return 0


def format_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def format_records(rows, now: dt.datetime) -> str:
    table = [("kind", "instrument", "age", "valid until (UTC)", "superseded", "id")]
    for row in rows:
        r = row.record
        if r is None:
            table.append(("?", "?", "-", "-", "unreadable", f"{row.path.name}: {row.detail}"))
            continue
        until = r.expires.strftime("%Y-%m-%d %H:%M:%S") + ("" if r.is_valid(now) else " (expired)")
        table.append((r.kind, r.instrument, format_age((now - r.created).total_seconds()), until,
                      "by " + row.superseded_by if row.superseded_by else "-", r.id))
    widths = [max(len(line[k]) for line in table) for k in range(len(table[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1]
                     for line in table)
