"""Choose the operating point (mu, G) in physics mode.

--target-accuracy A: the lowest verified weight-leakage bound per mode that reaches accuracy A.
--max-weight-leakage L --max-data-leakage D: the most accurate point whose verified weight-leakage bound
per mode and largest data-leakage form (arXiv Cramer-Rao, PRX) stay under the caps.
The bound is the one a session reports: at the finite-size limits of --verified-samples at
--failure-probability, a round trip --transmittance, and the worst mode of the data (docs/PHYSICS.md 13.5).
Accuracy is searched on the training set's held-out validation split; the chosen point is then simulated
in full on the test set with other noise seeds and reported with the same keys as `qslab simulate`,
its accuracy with a 95 % binomial interval.
"""

from __future__ import annotations

HELP = "search (mu, G) for a target accuracy or under leakage caps"
TARGET_STEP = 1.03  # client-SNR step when the full simulation misses the target
MAX_TARGET_STEPS = 20
REPORT_SEED = 1000  # first noise seed of the reported run: never one the search used


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number
    from qslab.sequences.config import FAILURE_PROBABILITY
    from qslab.sequences.commands.simulate import add_evaluation_options

    parser.add_argument("--target-accuracy", type=number("target-accuracy", 0.0, 1.0, min_open=True, unit="fraction"),
                        help="test accuracy to reach, as a fraction in (0, 1] (e.g. 0.96)")
    parser.add_argument("--max-weight-leakage", type=number("max-weight-leakage", 0.0, min_open=True, unit="bits per mode"),
                        help="cap on the weight leakage (bits per complex mode, > 0)")
    parser.add_argument("--max-data-leakage", type=number("max-data-leakage", 0.0, min_open=True, unit="bits per data symbol"),
                        help="cap on the data leakage, the largest of the arXiv Cramer-Rao and PRX forms (bits per data "
                             "symbol, > 0)")
    parser.add_argument("--transmittance", type=number("transmittance", 0.0, 1.0, min_open=True, unit="round-trip T"),
                        default=1.0, help="round-trip power transmittance the bound assumes, in (0, 1] (default 1: a "
                                          "lossless link; give the station's measured T)")
    parser.add_argument("--verified-samples", type=number("verified-samples", 2, integer=True, unit="samples"),
                        default=842_800, help="verified samples per layer the bound assumes (default 842800: layer 1 "
                                              "of a default 200-image session)")
    parser.add_argument("--failure-probability", type=number("failure-probability", FAILURE_PROBABILITY.minimum, 0.5,
                                                             max_open=True, unit="probability"),
                        default=1e-10, help="the report's failure probability (default 1e-10)")
    add_evaluation_options(parser, images=10_000, seeds=3)


def run(args) -> int:
    from qslab.analysis.network import load_weights
    from qslab.sequences import operating_point as op
    from qslab.sequences.commands.cli_io import UsageError, print_json_last
    from qslab.sequences.commands.simulate import format_result
    from qslab.sequences.simulation import SimulationSettings, simulate

    caps = (args.max_weight_leakage, args.max_data_leakage)
    if (args.target_accuracy is None) == (caps == (None, None)):
        raise UsageError("give either --target-accuracy, or both --max-weight-leakage and --max-data-leakage")
    if args.target_accuracy is None and None in caps:
        raise UsageError("--max-weight-leakage and --max-data-leakage go together")
    seeds = tuple(range(args.seeds))
    images = min(args.images, 10_000)
    try:
        load_weights(args.weights)  # a file that is not a weights archive: one line, before any search
    except ValueError as error:
        raise UsageError(str(error)) from None
    conditions = bound_conditions(args, images)
    try:
        if args.target_accuracy is not None:
            snr = op.snr_for_accuracy(args.target_accuracy, images, seeds, args.weights, progress=not args.json)
            mu, gain = op.least_leakage_at_snr(snr, conditions)
            search = {"goal": "target_accuracy", "target_accuracy": args.target_accuracy, "client_snr_needed": snr,
                      "accuracy_data": "validation split of the training set"}
        else:
            mu, gain = op.best_snr_under_caps(*caps, conditions, progress=not args.json)
            search = {"goal": "caps", "max_weight_leakage": caps[0], "max_data_leakage": caps[1]}
    except op.Unreachable as exc:
        raise UsageError(str(exc)) from None
    search["bound_conditions"] = conditions.to_json()

    def full(mu, gain):
        return simulate(SimulationSettings(mu=mu, gain=gain, images=args.images, seeds=args.seeds, weights=args.weights,
                                           seed=REPORT_SEED), progress=not args.json)

    result = full(mu, gain)
    if args.target_accuracy is not None:
        # The search ran without verification, on other noise draws: step the SNR up until the full
        # simulation itself reaches the target, so the reported point keeps its promise.
        snr = search["client_snr_needed"]
        for _ in range(MAX_TARGET_STEPS):
            if result["accuracy"] >= args.target_accuracy:
                break
            snr *= TARGET_STEP
            result = full(*op.least_leakage_at_snr(snr, conditions))  # the bound at the options' conditions
        else:
            raise UsageError(f"the full simulation stays below {args.target_accuracy} near client SNR {snr:.3g}")
        search["client_snr_used"] = snr
    from qslab.analysis.verified_planning import expected_verified_bound_bits

    search["planned_verified_bound_bits_per_mode"] = float(expected_verified_bound_bits(result["mu"], result["gain"],
                                                                                         conditions))
    search["data_leakage_bits_largest_form"] = float(op.data_leakage_bits(result["gain"]))
    result["search"] = search
    print(format_result(result))
    print(f"chosen for a verified bound of {search['planned_verified_bound_bits_per_mode']:.4g} bit/mode at "
          f"{conditions.describe()}; data leakage (largest form) {search['data_leakage_bits_largest_form']:.3g} bit/symbol")
    if args.json:
        print_json_last(result)
    return 0


def bound_conditions(args, images: int):
    """What the capped bound assumes: the options, and the largest per-mode share of the validation data over
    the network's layers (the worst mode, DECISIONS F)."""
    from qslab.analysis.security_report import largest_mode_share
    from qslab.analysis.verified_planning import BoundConditions
    from qslab.sequences.simulation import layer_inputs
    from qslab.sequences.sweeps import _cached_inputs

    weights, x, _ = _cached_inputs(args.weights, images, "validation")
    share = max(largest_mode_share(inputs) for inputs in layer_inputs(weights, x))
    return BoundConditions(transmittance=args.transmittance, samples=args.verified_samples,
                           failure_probability=args.failure_probability, limits=2 * len(weights), mode_share=share,
                           modes=(weights[0].shape[1] + 1) // 2)
