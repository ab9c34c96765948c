"""Watch a running session and its station in a browser: progress, accuracy, verification, leakage, instruments.

Serves one page (a Bokeh server) at http://127.0.0.1:5006/ by default. TARGET is a session file, or a directory
whose newest session-*.h5 is shown (and the next one as soon as it starts); default: the config's [session]
output_dir. The page shows the run id, batches done and to go, the accuracy so far with its 95 % interval,
the verification's T and eps estimates with their finite-size limits, the weight leakage spent so far
against [session] max_weight_leakage_bits_per_mode, the instruments' key readings (laser power, VOA, meter,
bias loops, digitizer ranges) as the session last set or read them, the calibration records in use with
their expiry, faults and cures as they happen, and the final report once complete (docs/MONITOR.md).

It never slows or endangers the session: it reads the session file without a lock (opened, read, closed
on each look) and the status stream the session appends beside it, writes nothing, sends nothing to an
instrument, and runs at a lower CPU priority (nice +10). --once prints one look and exits (--json: as JSON
on the last stdout line).

Security: the page and the instruments' SCPI ports carry no credentials. The page listens on loopback;
--host opens it to a network (anyone who reaches HOST:PORT sees the session): use it on a closed lab
network only, or reach a loopback page through an SSH tunnel.
"""

from __future__ import annotations

import os
import sys

HELP = "watch a running session and its station live in a browser (Bokeh server, loopback by default)"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import add_config_option, number
    from qslab.sequences.monitor.server import DEFAULT_PORT, LOOPBACK

    parser.add_argument("target", metavar="TARGET", nargs="?", default=None,
                        help="a session file, or a directory whose newest session is followed (default: the "
                             "config's [session] output_dir)")
    add_config_option(parser)
    parser.add_argument("--host", default=LOOPBACK,
                        help=f"interface to serve the page on (default {LOOPBACK}, loopback only; another opens "
                             "it to that network, without credentials)")
    parser.add_argument("--port", type=number("port", 0, 65535, integer=True, unit="TCP port"), default=DEFAULT_PORT,
                        metavar="PORT",
                        help=f"TCP port of the page (default {DEFAULT_PORT}; 0: a free one, printed)")
    parser.add_argument("--refresh", type=number("refresh", 0.05, 60.0, unit="s"), default=1.0, metavar="SECONDS",
                        help="seconds between looks at the session file and stream (0.05..60, default 1)")
    parser.add_argument("--analysis-interval", type=number("analysis-interval", 0.0, 3600.0, unit="s"), default=2.0,
                        metavar="SECONDS",
                        help="least seconds between two recomputations of accuracy, T, eps and leakage while the "
                             "session runs (each is O(images so far); default 2; always once at the end)")
    parser.add_argument("--once", action="store_true", help="look once, print what the page would show, and exit")
    parser.add_argument("--json", action="store_true", help="with --once: one JSON object on the last stdout line")


def run(args) -> int:
    from pathlib import Path

    from qslab.sequences.commands.cli_io import UsageError, print_json_last
    from qslab.sequences.commands.sessions import output_directory
    from qslab.sequences.monitor.follower import SessionFollower

    target = output_directory(args, args.target)
    if args.target is not None and not Path(target).exists():
        raise UsageError(f"{target}: no such session file or directory (expected a session-*.h5 or a directory "
                         "of them)")
    if args.json and not args.once:
        raise UsageError("--json needs --once (the served page is the live output)")
    _lower_priority()
    follower = SessionFollower(target, analysis_interval_s=args.analysis_interval)
    if args.once:
        view = follower.refresh()
        if args.json:
            print_json_last(view)
        else:
            print(describe(view))
        return 0
    return serve(follower, args)


def serve(follower, args) -> int:
    from qslab.sequences.commands.cli_io import UsageError
    from qslab.sequences.monitor.server import Poller, is_loopback, make_server

    if not is_loopback(args.host):
        print(f"qslab monitor: warning: serving on {args.host}, not loopback: the page carries no credentials "
              f"(anyone who reaches {args.host}:{args.port} sees the session), and neither do the instruments' SCPI "
              "ports; use a closed lab network, or an SSH tunnel to a loopback page", file=sys.stderr, flush=True)
    poller = Poller(follower, args.refresh).start()
    try:
        server = make_server(poller, args.host, args.port, refresh_ms=int(1000 * args.refresh))
    except OSError as error:
        poller.stop()
        raise UsageError(f"cannot serve on {args.host}:{args.port} ({error.strerror or error})") from None
    server.start()
    print(f"qslab monitor: watching {follower.target} at http://{args.host}:{server.port}/ (Ctrl-C stops)", flush=True)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        poller.stop()
        server.stop()
    return 0


def describe(view: dict) -> str:
    """One look as text (for --once)."""
    if "waiting" in view:
        return f"qslab monitor: {view['waiting']}"
    p, a, v = view["progress"], view.get("accuracy") or {}, view.get("verification") or {}
    leak = view.get("leakage") or {}
    lines = [f"run {view.get('run_id')} ({view.get('status')}): {view.get('file')}",
             f"batches {p['batches_done']} of {p['batches_total']}, images {p['images_done']} of {p['images_total']}"]
    if a:
        lines.append(f"accuracy {a['accuracy']:.2%} ({a['correct']} of {a['images']}; 95 % interval "
                     f"{a['ci95'][0]:.2%}-{a['ci95'][1]:.2%})")
    if v:
        lines.append(f"T {v['transmittance_hat']:.4g} (lower limit {v['transmittance_min']:.4g}), eps "
                     f"{v['excess_noise_hat_snu']:.4g} SNU (upper limit {v['excess_noise_max_snu']:.4g}), "
                     f"{'accepted' if v['accepted'] else 'REJECTED'}")
    if leak.get("spent_bits_per_mode") is not None:
        cap = leak.get("cap_bits_per_mode")
        lines.append(f"weight leakage spent {leak['spent_bits_per_mode']:.4g} bit/mode"
                     + (f" of a {cap:g} cap" if cap else " (no cap)"))
    if view.get("error"):
        lines.append(f"last look: {view['error']}")
    return "\n".join(lines)


def _lower_priority() -> None:
    """The session gets the CPU first (a 2-core lab PC runs both)."""
    try:
        os.nice(10)
    except OSError:
        pass
