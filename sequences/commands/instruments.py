"""List the station's instruments: connect each (starting the embedded bench if the config asks for it),
identify it with *IDN?, print its roles, driver, address and identity, then leave everything safe and close.

The config is validated first: a bad key gets one line naming its path. An instrument that does not
answer, answers nonsense, or is another model than its driver expects gets one line naming it and its
address (exit status 1). With --json, one JSON object on the last stdout line:
{"config": ..., "station": ..., "instruments": [{"name", "roles", "driver", "configured_address",
"address", "identity": {"vendor", "model", "serial", "firmware"}}], "safe_state": {"safe", "instruments", "errors"}}.
"""

from __future__ import annotations

import sys

HELP = "connect, identify and list the station's instruments (roles, driver, address, *IDN?)"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import add_config_option

    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")


def run(args) -> int:
    from qslab.sequences.commands.cli_io import print_json_last, station_config
    from qslab.sequences.station import LabStation, StationError

    config = station_config(args, "instruments")
    station = LabStation(config)
    try:
        with station:
            listing = station.describe()
    except StationError as error:
        print(f"qslab instruments: error: {error}", file=sys.stderr)
        return 1
    safe = station.safe_state.as_dict()
    print(format_table(listing, config.station.name, safe))
    if args.json:
        print_json_last({"config": config.source, "station": config.station.name, "instruments": listing,
                         "safe_state": safe})
    return 0 if safe["safe"] else 1


def format_table(listing: list[dict], station: str, safe: dict) -> str:
    rows = [(i["name"], ", ".join(i["roles"]) or "-", i["driver"],
             i["address"] if i["address"] == i["configured_address"] else f"{i['address']} ({i['configured_address']})",
             ",".join(i["identity"].values())) for i in listing]
    header = ("instrument", "roles", "driver", "address", "identity (*IDN?)")
    width = [max(len(row[k]) for row in [header, *rows]) for k in range(4)]
    lines = ["  ".join(f"{cell:<{width[k]}}" if k < 4 else cell for k, cell in enumerate(row)) for row in [header, *rows]]
    state = "safe" if safe["safe"] else f"NOT SAFE: {safe['errors'] or safe['instruments']}"
    return "\n".join(lines + [f"{station}: {len(rows)} instruments identified; closed {state}"])
