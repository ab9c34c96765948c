"""Serve the virtual bench: every emulated instrument of the station on its own 127.0.0.1 port.

`qslab bench serve` starts the emulators (SCPI instruments as raw sockets, the MBX bias
controllers as serial-over-TCP for pyserial's socket:// URLs), prints on its first stdout line
one JSON object {"instruments": {NAME: {"address": ..., "driver": ...}}}, and serves until
interrupted (Ctrl-C or SIGTERM), then closes every port. The bench's true hardware parameters
come from the [bench] table of --config (lab_config.toml or any TOML file), or from the packaged
instruments/sim/bench_defaults.toml. The bench clock runs at --time-scale (default 1: the instruments take
real time, as hardware does), whatever the config's time_scale (that one is for the embedded bench).
"""

from __future__ import annotations

import signal
import sys
import time

HELP = "serve the virtual bench's emulated instruments on 127.0.0.1 until interrupted"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number

    parser.add_argument("action", choices=["serve"], help="serve: start every emulator and wait for Ctrl-C, SIGTERM or SIGHUP")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML file with a [bench] table (default: instruments/sim/bench_defaults.toml)")
    parser.add_argument("--seed", type=number("seed", 0, integer=True, unit="random seed"),
                        help="override [bench] seed (an integer >= 0)")
    parser.add_argument("--allow-non-loopback", action="store_true",
                        help="serve on a [bench] host other machines can reach (the emulators, like real "
                             "instruments, accept SCPI from anyone who connects; default: loopback only)")
    parser.add_argument("--time-scale", type=number("time scale", 0.0, unit="real s per instrument s", min_open=True),
                        default=1.0, metavar="S",
                        help="real seconds per instrument second of the bench clock (default 1: real time, what a "
                             "rehearsal for hardware needs; the config's [bench] time_scale is for the embedded bench)")
    parser.add_argument("--json", action="store_true",
                        help="print only the JSON line (otherwise a table of the instruments follows it)")


def run(args) -> int:
    from qslab.instruments.sim.bench_parameters import defaults_table, load_bench_table
    from qslab.instruments.sim.server import Bench
    from qslab.sequences.commands.cli_io import UsageError, print_json_last
    from qslab.sequences.interrupts import HANDLED

    try:
        table = defaults_table() if args.config is None else load_bench_table(args.config)
        if args.seed is not None:
            table = {**table, "seed": args.seed}
        table = {**table, "time_scale": args.time_scale}
        bench = Bench.from_table(table, allow_non_loopback=args.allow_non_loopback)
        bench.start()
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None

    # SIGINT, SIGTERM, SIGHUP: the handler only notes the signal. It runs in the main thread between two bytecodes of
    # whatever that thread does, so it must not take a lock: an Event's set() waits for ever if it lands where the
    # interrupted Event.wait() holds the Event's lock (a narrow window; `qslab bench serve` hung on a SIGTERM under
    # load once in CI, with no line after it).
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: received.append(signum)) for sig in HANDLED}
    try:
        description = bench.describe()
        print_json_last(description)  # one JSON object: here it is the first line
        if not args.json:
            print(format_table(description, bench.params.seed, bench.host))
        sys.stdout.flush()
        while not received:
            time.sleep(0.5)  # (a signal runs its handler at once; the loop sees it within 0.5 s)
    finally:
        bench.stop()  # still under our handlers: a second Ctrl-C cannot interrupt the shutdown
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("qslab bench: stopped", file=sys.stderr)
    return 0


def format_table(description: dict, seed: int, host: str = "127.0.0.1") -> str:
    rows = [(name, entry["address"], entry["driver"]) for name, entry in description["instruments"].items()]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{name:<{width[0]}}  {address:<{width[1]}}  {driver}" for name, address, driver in rows]
    return "\n".join(lines + [f"virtual bench (seed {seed}) serving on {host}; Ctrl-C to stop"])
