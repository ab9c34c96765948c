"""Accuracy-vs-photons curves and the accuracy map over (weight leakage, data leakage), on Dask.

Each (mu, G) point classifies test images through the physics model at common noise seeds; points
run as Dask tasks on a local cluster, or on an existing cluster given by --scheduler (one line when it does
not answer within 5 s). The cluster's Dask dashboard (task stream, progress, workers' memory and CPU) serves
on --dashboard (default 127.0.0.1:8787, loopback: it has no credentials; a port in use: Dask takes a free
one) while the sweep runs; its address is printed first ("Dask dashboard: URL"). Writes sweep.png and sweep.json to --out: {"schema": "qslab.sweep", "settings",
"weights": {path, shipped, sha256}, "provenance", "points": [{mu, gain, accuracy, leakage figures}]}, what
a rerun needs to reproduce it.
"""

from __future__ import annotations

DASHBOARD = "127.0.0.1:8787"  # the local cluster's Dask dashboard (Bokeh); loopback: it has no credentials
HELP = "accuracy vs photons and the (weight, data) leakage accuracy map, distributed on Dask"


def dashboard_address(text: str) -> str | None:
    """--dashboard: 'off', or HOST:PORT with a port 0..65535 (argparse type; its error names the option)."""
    import argparse

    if text.strip().lower() == "off":
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT (port 0..65535, 0: a free one) or 'off'")
    return text


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number
    from qslab.sequences.commands.simulate import add_evaluation_options

    parser.add_argument("--mu-min", type=number("mu-min", 0.0, min_open=True, unit="photons per mode"), default=0.05,
                        help="smallest mu, photons per complex mode at the server's output (default 0.05)")
    parser.add_argument("--mu-max", type=number("mu-max", 0.0, min_open=True, unit="photons per mode"), default=50.0,
                        help="largest mu, photons per complex mode (default 50)")
    parser.add_argument("--mu-points", type=number("mu-points", 2, integer=True, unit="points"), default=12,
                        help="log-spaced mu values per gain (default 12)")
    parser.add_argument("--gains", type=number("gains", 1.0, min_open=True, unit="linear power gain"), nargs="+",
                        default=[1.05, 1.1, 1.2, 1.3, 1.5, 2.0], help="amplifier gains G to sweep (linear, > 1)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="address of an existing Dask scheduler (default: a local cluster)")
    parser.add_argument("--dashboard", metavar="HOST:PORT", type=dashboard_address, default=DASHBOARD,
                        help=f"where the local cluster's Dask dashboard serves while the sweep runs (default "
                             f"{DASHBOARD}; port 0: a free one; 'off': none). With --scheduler, the "
                             "scheduler's own dashboard is printed")
    parser.add_argument("--workers", type=number("workers", 1, integer=True, unit="processes"), default=2,
                        help="worker processes of the local cluster (default 2)")
    parser.add_argument("--out", default="qslab-output/sweep", metavar="DIR", help="directory for sweep.png and sweep.json")
    add_evaluation_options(parser, images=2000, seeds=1)


def run(args) -> int:
    import json
    from pathlib import Path

    from qslab.analysis.network import load_weights
    from qslab.sequences import sweeps
    from qslab.sequences.commands.cli_io import UsageError, print_json_last

    if args.mu_min >= args.mu_max:
        raise UsageError(f"--mu-min ({args.mu_min:g}) must be below --mu-max ({args.mu_max:g})")
    try:
        load_weights(args.weights)  # before a cluster starts: a bad file is one line, not a worker's traceback
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    points = sweeps.grid(args.mu_min, args.mu_max, args.mu_points, args.gains)
    seeds = tuple(range(args.seeds))
    try:
        client = sweeps.open_client(args.scheduler, args.workers, dashboard_address=args.dashboard)
    except sweeps.SchedulerUnreachable as error:
        raise UsageError(str(error)) from None
    except OSError as error:  # the dashboard's address cannot be bound (an unknown host, a port not ours)
        raise UsageError(f"--dashboard {args.dashboard}: cannot serve there ({error.strerror or error})") from None
    link = sweeps.dashboard_link(client)
    print(f"Dask dashboard: {link}" if link else "Dask dashboard: none (--dashboard off, or the scheduler serves none)",
          flush=True)
    try:
        results = sweeps.run_points(points, client, args.images, seeds, args.weights, progress=not args.json)
    finally:
        client.close()
        if not args.scheduler and client.cluster is not None:
            client.cluster.close()
    sweeps.plot_sweep(results, out / "sweep.png")
    settings = {"mu_min": args.mu_min, "mu_max": args.mu_max, "mu_points": args.mu_points, "gains": list(args.gains),
                "images": args.images, "seeds": list(seeds), "modes": 392,
                "scheduler": args.scheduler or f"local cluster, {args.workers} workers"}
    (out / "sweep.json").write_text(json.dumps(sweeps.sweep_record(results, settings, args.weights), indent=1))
    print(f"{len(results)} points; figure {out / 'sweep.png'}; data {out / 'sweep.json'}")
    if args.json:
        print_json_last({"points": results, "figure": str(out / "sweep.png"), "data": str(out / "sweep.json")})
    return 0
