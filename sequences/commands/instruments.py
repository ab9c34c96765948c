"""List the station's instruments: ask each for *IDN? (and nothing else) and print one row per instrument, its
identity or why it has none: no VISA library or GPIB/USB backend, no answer, a model its driver does not speak.

Read-only: no driver is connected, nothing is set, no light is switched on, so it is the first thing to run on
a new bench. A station without [roles] (the instruments on the table so far) is enough; the embedded bench is
served when instruments say "bench". Exit status 0 when every instrument identified, 1 otherwise (the table is
printed either way, and one stderr line names each problem); a bad config is one line (exit 2). With --json,
one JSON object on the last stdout line: {"config", "station", "partial", "instruments": [{"name", "roles",
"driver", "configured_address", "address", "reached" (for a card that is no message port: a PCIe card through its
vendor's library, in process on the bench; else null), "reachable", "identity": {"vendor", "model", "serial",
"firmware"} or null, "problem": text or null}], "identified", "total"}. A card is identified through its vendor
library's board queries, not *IDN?.
"""

from __future__ import annotations

import sys

HELP = "identify every instrument of the station (*IDN? only): a table of each, reachable or not and why"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import add_config_option

    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")


def run(args) -> int:
    from qslab.sequences.commands.cli_io import UsageError, print_json_last
    from qslab.sequences.config import ConfigError
    from qslab.sequences.instrument_probe import from_config, load_station, probe_station

    try:
        if args.config is None:
            from qslab.sequences.commands.cli_io import station_config

            station = from_config(station_config(args, "instruments"))
        else:
            station = load_station(args.config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    rows = probe_station(station)
    print(format_table(rows, station.settings.name, station.partial))
    for row in rows:
        if row.problem is not None:
            print(f"qslab instruments: {row.name} at {row.address}: {row.problem}", file=sys.stderr)
    identified = sum(row.identity is not None for row in rows)
    if args.json:
        print_json_last({"config": station.source, "station": station.settings.name, "partial": station.partial,
                         "instruments": [row.as_dict() for row in rows], "identified": identified,
                         "total": len(rows)})
    return 0 if identified == len(rows) else 1


def format_table(rows: list, station: str, partial: bool) -> str:
    header = ("instrument", "roles", "driver", "address", "identity (*IDN?) or why not")
    cells = [(row.name, ", ".join(row.roles) or "-", row.driver,
              (row.address if row.address == row.configured_address else f"{row.address} ({row.configured_address})")
              + (f" [{row.reached}]" if row.reached else ""),
              ",".join(row.identity.values()) if row.identity is not None else f"NOT REACHED: {row.problem}")
             for row in rows]
    width = [max(len(line[k]) for line in [header, *cells]) for k in range(4)]
    lines = ["  ".join(f"{cell:<{width[k]}}" if k < 4 else cell for k, cell in enumerate(line))
             for line in [header, *cells]]
    identified = sum(row.identity is not None for row in rows)
    kind = " (partial station: no [roles], identification only)" if partial else ""
    return "\n".join(lines + [f"{station}: {identified} of {len(rows)} instruments identified{kind}; nothing else sent"])
