"""The loss and noise budget of the verified weight-leakage bound, from the calibration records, in plain words.

Which loss (fibre, processor passes, the rest) and which noise (the amplifier's noise figure, the
measured excess noise, the finite-size width) dominate the bound; the T and the eps a target leakage
needs at the current mu; the largest mu that meets it at the measured T, and the accuracy it buys
(on the training set's validation images). Each layer is taken at its data's worst mode (DECISIONS F,
P) with the finite-size limits of --verified-samples at the config's failure probability
(docs/PHYSICS.md 13.6). The records: the latest valid photons, amplifier, channel, processor and
server homodyne records in the calibration directory.
"""

from __future__ import annotations

HELP = "loss and noise budget of the verified weight-leakage bound, and what a target leakage needs"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import add_config_option, number

    add_config_option(parser)
    parser.add_argument("--calibration-dir", metavar="DIR", default=None,
                        help="calibration records (default: $QSLAB_CALIBRATION_DIR or [calibration] directory)")
    parser.add_argument("--target", type=number("target", 0.0, min_open=True, unit="bit per complex mode"), default=0.1,
                        help="target verified weight leakage per query, bit per complex mode (default 0.1)")
    parser.add_argument("--verified-samples", type=number("verified-samples", 2, integer=True, unit="samples"),
                        default=842_800, help="verified samples per layer (default 842800: layer 1 of a default "
                                              "session)")
    parser.add_argument("--images", type=number("images", 1, 10_000, integer=True, unit="validation images"),
                        default=1000, help="validation images for the data's worst mode and the accuracy (default 1000)")
    parser.add_argument("--figure", metavar="FILE.png", default=None,
                        help="write the verified frontier: accuracy vs the verified bound at the measured T, next to "
                             "the paper's Eq. 2 at T = 1 (accuracy on the validation images, 12 photon numbers)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")


def plot_frontier(path, gain: float, conditions, images: int) -> dict:
    """Accuracy vs weight leakage per query over mu: the verified bound at the measured T (worst layer's worst
    mode, finite size) and the paper's Eq. 2 at T = 1 (quantum-limited amplifier, average mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from qslab.analysis.verified_planning import expected_verified_bound_bits
    from qslab.analysis.weight_leakage import weight_leakage_bits_per_mode
    from qslab.sequences.sweeps import physics_accuracy

    mus = np.geomspace(1e-3, 20.0, 12)
    accuracy = [physics_accuracy(float(mu), gain, images, (0,), None, data="validation") for mu in mus]
    verified = [float(expected_verified_bound_bits(mu, gain, conditions)) for mu in mus]
    paper = [float(weight_leakage_bits_per_mode(mu, gain, conditions.modes)) for mu in mus]
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.semilogx(verified, 100 * np.array(accuracy), "o-", label=f"verified bound at T = {conditions.transmittance:.3g} "
                                                                "(worst mode, finite size)")
    ax.semilogx(paper, 100 * np.array(accuracy), "s--", label="paper's Eq. 2 at T = 1 (not a bound for this station)")
    ax.set(xlabel="weight leakage per query (bit per complex mode)", ylabel="accuracy (%, validation images)",
           title=f"Verified frontier, G = {gain:.3g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"mu": mus.tolist(), "accuracy": accuracy, "verified_bits_per_mode": verified, "paper_bits_per_mode": paper}


def run(args) -> int:
    import os
    from dataclasses import asdict


    from qslab.analysis.client_measurement import inversion_factor_from_noise_figure, returned_excess_noise_total_snu
    from qslab.analysis.failure_budget import FailureBudget
    from qslab.analysis.security_budget import layer_guidance, plain_words, transmittance_db
    from qslab.analysis.security_report import largest_mode_share
    from qslab.analysis.verified_planning import BoundConditions, expected_limits
    from qslab.calibration.records import DIRECTORY_ENV, RecordError, RecordStore
    from qslab.sequences.commands.cli_io import UsageError, print_json_last, station_config
    from qslab.sequences.simulation import layer_inputs
    from qslab.sequences.sweeps import _cached_inputs, physics_accuracy

    config = station_config(args, "security-budget")
    store = RecordStore(args.calibration_dir or os.environ.get(DIRECTORY_ENV) or config.calibration.directory)
    try:
        photons = store.require("photons").estimate("server.photons_per_symbol")
        amplifier = store.require("amplifier")
        channel = store.require("channel")
    except RecordError as error:
        raise UsageError(str(error)) from None
    processor = store.latest_valid("processor")
    server = store.latest_valid("homodyne", "server_receiver")
    gain_e, nf = amplifier.estimate("client_amplifier.gain"), amplifier.estimate("client_amplifier.noise_figure_db")
    t_e = channel.estimate("channel.transmittance")
    eps_e = channel.estimate("channel.excess_noise_snu")
    total = config.protocol.failure_probability
    weights, x, _ = _cached_inputs(None, args.images, "validation")
    # the report's split: mu, G, the noise figure, and T, eps of each layer (calibrations as in a session)
    budget = FailureBudget.split(total, [("mu_photons", 1, ""), ("gain", 2, ""), ("amplifier_noise_figure_db", 1, ""),
                                         ("server_efficiency", 2, "")]
                                 + [(f"layer{i + 1}.{q}", 1, "") for i in range(len(weights))
                                    for q in ("transmittance", "excess_noise")])
    mu = photons.upper(budget.sigmas("mu_photons"))
    gain = max(gain_e.upper(budget.sigmas("gain")), 1.0 + 1e-9)
    n_sp = max(float(inversion_factor_from_noise_figure(gain, nf.upper(budget.sigmas("amplifier_noise_figure_db")))), 1.0)
    # as the session takes it: the pilots' amplitude sqrt(eta_s T) through the efficiency's upper limit (the finite
    # size of the verification is in `conditions`)
    amplitude = channel.estimate("channel.amplitude_transmittance").value
    eta = server.estimate("server_receiver.efficiency") if server else None
    eta_upper = 1.0 if eta is None else min(eta.upper(budget.sigmas("server_efficiency")), 1.0)
    t_lower = max(amplitude**2 / eta_upper, 1e-6)
    modes = config.protocol.modes
    conditions = BoundConditions(transmittance=min(t_lower, 1.0), samples=args.verified_samples,
                                 failure_probability=total, limits=2 * len(weights), modes=modes, inversion_factor=n_sp)

    forward, back = config.calibration.forward_transmittance, config.calibration.return_transmittance
    per_pass = 10 ** (-processor.estimate("client_processor.loss_per_pass_db").value / 10) if processor else 1.0
    rest = t_e.value / (forward * per_pass**2 * back)
    loss = [("fibre to the client (declared)", forward), ("processor, 2 passes (processor record)", per_pass**2),
            ("fibre back (declared)", back), ("the rest: coupler, connectors (measured T over the parts)", rest)]
    eps_amp = float(returned_excess_noise_total_snu(gain, n_sp)) / modes
    _, eps_max = expected_limits(mu, gain, conditions)
    noise = [(f"amplifier, noise figure {nf.value:.3g} dB (n_sp {n_sp:.3g})", eps_amp),
             ("measured on the pilots (channel record)", eps_e.value),
             (f"finite-size width at {args.verified_samples:g} samples", float(eps_max) - eps_amp)]

    guidance, lines = [], []
    for index, inputs in enumerate(layer_inputs(weights, x)):
        g = layer_guidance(f"layer{index + 1}", mu, gain, args.target,
                           BoundConditions(**{**asdict(conditions), "mode_share": largest_mode_share(inputs)}))
        guidance.append(g)
    largest = min((g.largest_mu for g in guidance if g.largest_mu is not None), default=None)
    accuracy = None if largest is None else physics_accuracy(largest, gain_e.value, args.images, (0,), None,
                                                             data="validation")
    lines.append(f"measured round trip T = {t_e.value:.4g} +- {t_e.uncertainty:.2g} (at the detector efficiency's "
                 f"upper limit {t_lower:.4g}, {transmittance_db(t_lower):.3g} dB); mu = {photons.value:.4g} (upper limit {mu:.4g}); G = "
                 f"{gain_e.value:.4g}; failure probability {total:g} for the whole report")
    lines.append("loss budget: " + "; ".join(f"{name} {value:.4g} ({transmittance_db(value):.3g} dB)"
                                             for name, value in loss))
    lines.append("noise budget (SNU, output-referred): " + "; ".join(f"{name} {value:.3g}" for name, value in noise))
    for g in guidance:
        lines += plain_words(g, mu, args.target, conditions.transmittance,
                             accuracy if g.largest_mu == largest else None)
    if largest is not None:
        lines.append(f"all layers: the largest mu meeting {args.target:g} bit/mode at the measured T is {largest:.3g} "
                     f"photons/mode (about {100 * accuracy:.0f} % accuracy on {args.images} validation images).")
    frontier = None
    if args.figure:
        frontier = plot_frontier(args.figure, gain_e.value, replace_share(conditions, guidance), args.images)
        lines.append(f"figure: {args.figure}")
    print("\n".join(lines))
    if args.json:
        print_json_last({"target_bits_per_mode": args.target, "conditions": conditions.to_json(),
                         "loss_budget": dict(loss), "noise_budget_snu": dict(noise),
                         "layers": [{**asdict(g), "dominant": g.dominant} for g in guidance],
                         "largest_mu_photons": largest, "accuracy_at_largest_mu": accuracy,
                         "records": {"photons": store.require("photons").id, "amplifier": amplifier.id,
                                     "channel": channel.id, "processor": processor.id if processor else None},
                         "frontier": frontier, "summary": lines})
    return 0


def replace_share(conditions, guidance):
    """The conditions at the worst layer's data share (the frontier is the worst layer's)."""
    from dataclasses import replace

    return replace(conditions, mode_share=max(g.mode_share for g in guidance))
