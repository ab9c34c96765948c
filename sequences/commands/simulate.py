"""Secure inference of the official MNIST test set on the simulated optical link.

physics mode: every product goes through the optical model (server encoding, client unitary,
amplifier, coupler, homodyne, returned modes) and the server verifies a random fraction of rows.
paper mode: the authors' abstract model y = x_hat.(sW) + N(0, 1) at F = sqrt(mu g(G)), for
comparison with their figures only (DECISIONS A). Accuracy is the mean and standard deviation over
noise seeds (DECISIONS H).
"""

from __future__ import annotations

HELP = "accuracy and leakage of secure inference on the simulated link"


def add_point_options(parser, required: bool = True) -> None:
    from qslab.sequences.commands.cli_io import number

    parser.add_argument("--mu", required=required, type=number("mu", 0.0, min_open=True, unit="photons per complex mode"),
                        help="mean photons per complex mode at the server's output (photons, > 0)")
    parser.add_argument("--gain", required=required, type=number("gain", 1.0, min_open=True, unit="linear power gain"),
                        help="the client's amplifier power gain G (linear, > 1)")


def add_evaluation_options(parser, images: int = 10_000, seeds: int = 3) -> None:
    from qslab.sequences.commands.cli_io import number

    parser.add_argument("--images", type=number("images", 1, 10_000, integer=True, unit="test images"), default=images,
                        help=f"images of the official 10k MNIST test set to classify (1..10000; default {images})")
    parser.add_argument("--seeds", type=number("seeds", 1, integer=True, unit="noise seeds"), default=seeds,
                        help=f"noise seeds to average the accuracy over (default {seeds})")
    parser.add_argument("--weights", metavar="FILE.npz", help="network weights written by `qslab train` (default: the shipped ones)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number

    add_point_options(parser)
    add_evaluation_options(parser)
    parser.add_argument("--mode", choices=("physics", "paper"), default="physics",
                        help="physics: the optical model (default); paper: the authors' abstract noise model")
    parser.add_argument("--verify-fraction", type=number("verify-fraction", 0.0, 1.0, unit="fraction of rows"), default=0.01,
                        help="fraction of rows the server verifies, in [0, 1] (default 0.01)")
    parser.add_argument("--seed", type=number("seed", 0, integer=True, unit="first noise seed"), default=0,
                        help="first noise seed; seeds S, S+1, ... are used (default 0)")


def run(args) -> int:
    import numpy as np

    from qslab.analysis.heap import keep_freed_memory
    from qslab.sequences.commands.cli_io import UsageError, print_json_last, require_finite
    from qslab.sequences.simulation import SimulationSettings, simulate

    keep_freed_memory()  # each batch's arrays reuse the last one's pages instead of faulting in fresh ones
    settings = SimulationSettings(mu=args.mu, gain=args.gain, images=args.images, seeds=args.seeds, mode=args.mode,
                                  weights=args.weights, verify_fraction=args.verify_fraction, seed=args.seed)
    try:
        with np.errstate(all="ignore"):  # absurd inputs overflow: reported once, below, not as numpy warnings
            result = simulate(settings, progress=not args.json)
    except ValueError as error:  # a weights file that is not one, data the client cannot normalise
        raise UsageError(f"{error} (at mu = {args.mu:g}, G = {args.gain:g})") from None
    require_finite(result, f"mu = {args.mu:g}, G = {args.gain:g}")
    print(format_result(result))
    if args.json:
        print_json_last(result)
    return 0


def format_result(result: dict) -> str:
    verified = {True: "accepted", False: "ABORTED (verification failed)", None: "not applicable"}[result["verified"]]
    rows = [
        ("mode", f"{result['mode']}, mu = {result['mu']:g} photons/mode, G = {result['gain']:g}"),
        ("test accuracy", f"{100 * result['accuracy']:.2f} % +- {100 * result['accuracy_std']:.2f} % over seeds "
                          f"({result['images']} images, {len(result['seeds'])} seeds"
                          + (f"; 95 % CI over images {100 * result['accuracy_ci95'][0]:.1f}-"
                             f"{100 * result['accuracy_ci95'][1]:.1f} %)" if result.get("accuracy_ci95") else ")")),
        ("client SNR per product", f"{result['client_snr']:.4g}"),
        ("weight leakage (Eq. 2)", f"{result['weight_leakage_bits_per_mode']:.4g} bit/mode, "
                                   f"{result['weight_leakage_bits_per_real_weight']:.4g} bit/real weight, not a bound: "
                                   "assumes T = 1, a quantum-limited amplifier, the average mode"),
        ("  at the worst mode", f"{result['weight_leakage_bits_per_mode_worst_mode_lossless']:.4g} bit/mode, not a bound: "
                                "T = 1, the mode carrying the largest share of the data sent"),
        ("data leakage, not bounds", f"the paper's estimates: Eq. 3 (Cramer-Rao) {result['data_leakage_bits_cramer_rao']:.3g}, "
                                     f"PRX form {result['data_leakage_bits_prx']:.3g}; per-bin photon counting (an achievable "
                                     f"value for that measurement) {result['data_leakage_bits_per_bin']:.3g} bit/symbol "
                                     "(the upper bound: `qslab leakage`, a session's report)"),
        ("verification", verified),
    ]
    verified_bound = result.get("weight_leakage_verified")
    if verified_bound is not None:
        rows.append(("  verified bound", f"{verified_bound['per_query_bits_per_mode']:.4g} bit/mode per query (worst "
                                         f"layer, worst mode, worst seed; failure probability "
                                         f"{result['settings']['failure_probability']:.3g})"))
        for layer in verified_bound["layers"]:
            rows.append((f"    {layer['layer']}", f"{layer['bits_per_mode']:.4g} bit/mode, {layer['method']} "
                                                   f"({layer['verified_rows']} rows, {layer['samples']} samples)"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
