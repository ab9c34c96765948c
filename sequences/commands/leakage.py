"""Weight and data leakage of one operating point (paper Eq. 2 and Eq. 3, DECISIONS B-F).

Weight leakage is the Holevo bound chi(V = 2 mu + 1, T, eps) with eps the honest client's
average excess noise (2G - 2)/(G n) plus the technical noise. Data leakage: the upper bound on the
joint returned state (docs/PHYSICS.md 17.2; analysis/data_leakage_report.py) for the shipped
network's layers and the MNIST training images' second moments, from the gain, the amplifier's noise
figure (--noise-figure; default quantum limited) and the processor's loss per pass (--loss-per-pass;
default 0 dB, the conservative end), per query, per complex data symbol and over --queries queries of
the same data, capped by log2 --candidates when a finite candidate set is declared; alongside, the
paper's estimates, not bounds: the arXiv Cramer-Rao form (Eq. 3; x = 1/sqrt(n), n_m = n) and the PRX
form (M rows), per data symbol per query and cumulated over rows x queries.

The Eq. 2 figure here is not a verified bound: it assumes the honest client's average excess noise and
the T and xi given (T = 1, xi = 0 by default: the paper's assumptions). What a session reports, at the
verification's finite-size limits and each layer's worst mode, is planned by `qslab operating-point` and
explained by `qslab security-budget` (docs/PHYSICS.md 13).

With --from-calibration [ID|latest] the inputs come from the calibration records actually measured
(calibration/records.py), at their conservative confidence limits, all at one failure probability
(--failure-probability, split by a union bound over the limits used, DECISIONS J): the upper limit
of mu from the photons record (ID, or the latest valid one), the lower limit of T and the upper
limit of the technical noise from a channel record when one exists (else --transmittance and
--technical-noise), G's and the noise figure's upper limits from the amplifier record, the
processor loss's lower limit from the processor record (for the data-leakage bound), and the client's
efficiency and electronic noise from the homodyne record for the honest client's SNR. A missing or expired record
stops with its name and the refresh command.
"""

from __future__ import annotations

from qslab.analysis.leakage_report import OperatingPoint, leakage_summary

HELP = "weight and data leakage bounds of one operating point"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number
    from qslab.sequences.config import FAILURE_PROBABILITY

    parser.add_argument("--mu", default=None, type=number("mu", 0.0, unit="mean photons per complex mode at the server's output"),
                        help="mean photons per complex mode at the server's output (photons, >= 0; required without --from-calibration)")
    parser.add_argument("--gain", type=number("gain", 1.0, unit="the client's amplifier power gain"),
                        help="the client's phase-insensitive amplifier power gain G (linear, >= 1); required unless "
                             "--from-calibration finds an amplifier record, whose upper limit is then used")
    parser.add_argument("--modes", type=number("modes", 1, integer=True, unit="complex modes per row"), default=392,
                        help="complex modes per row n (two real weights per mode; default 392 for 784 inputs)")
    parser.add_argument("--rows", type=number("rows", 1, integer=True, unit="rows reusing the data per query"), default=794,
                        help="rows M that reuse one data vector per query (default 794 = 784 + 10)")
    parser.add_argument("--transmittance", type=number("transmittance", 0.0, 1.0, min_open=True, unit="round-trip power transmittance"), default=1.0,
                        help="round-trip power transmittance T from the server's output back to its verification input, in (0, 1] (default 1)")
    parser.add_argument("--technical-noise", type=number("technical-noise", 0.0, unit="SNU"), default=0.0,
                        help="untrusted technical excess noise xi added to eps, in shot-noise units (SNU, >= 0; default 0)")
    parser.add_argument("--queries", type=number("queries", 1, integer=True, unit="queries"), default=1,
                        help="queries Q that reuse the same data, for the cumulative figures (default 1)")
    parser.add_argument("--noise-figure", type=number("noise-figure", unit="dB"), default=None,
                        help="the client amplifier's noise figure in dB for the data-leakage bound (default: quantum "
                             "limited, n_sp = 1; with --from-calibration: the amplifier record's upper limit)")
    parser.add_argument("--loss-per-pass", type=number("loss-per-pass", 0.0, unit="dB"), default=None,
                        help="the client processor's loss per pass in dB for the data-leakage bound (>= 0; default 0, "
                             "the conservative end; with --from-calibration: the processor record's lower limit)")
    parser.add_argument("--candidates", type=number("candidates", 2, integer=True, unit="candidate inputs"),
                        default=None, help="size L of a declared finite candidate set (uniform prior): the data-leakage "
                                           "bound is capped at log2 L bits (default: no cap)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")
    parser.add_argument("--from-calibration", nargs="?", const="latest", metavar="ID|latest", default=None,
                        help="take mu (upper limit), T (lower limit), xi (upper limit) and the client's efficiency and "
                             "electronic noise from the calibration records: a photons record ID, or the latest valid")
    parser.add_argument("--failure-probability", type=number("failure-probability", FAILURE_PROBABILITY.minimum, 0.5,
                                                             max_open=True, unit="probability"), default=1e-10,
                        help="with --from-calibration: the failure probability of all the limits together (default "
                             "1e-10, split by a union bound)")
    parser.add_argument("--calibration-dir", metavar="DIR", default=None,
                        help="record directory (default: $QSLAB_CALIBRATION_DIR or qslab-output/calibration)")
    parser.add_argument("--map", metavar="FILE.png", help="write the Fig. 5-style figures and the 512 x 512 (mu, G - 1) leakage maps to this PNG")


LIMITS = (("mu_photons", 1), ("transmittance", 1), ("technical_noise", 1), ("gain", 1),  # the limits it takes
          ("amplifier_noise_figure_db", 1), ("processor_loss_per_pass_db", 1), ("data_second_moments", 1))


def run(args) -> int:
    import numpy as np

    from qslab.sequences.commands.cli_io import UsageError, print_json_last, require_finite

    if args.map:
        check_figure_target(args.map)  # before the maps are computed and drawn (seconds), not after
    mu, transmittance, technical_noise, calibration = args.mu, args.transmittance, args.technical_noise, None
    if args.from_calibration is not None:
        if args.mu is not None:
            raise UsageError("give --mu or --from-calibration, not both")
        calibration = inputs_from_records(args.from_calibration, args.calibration_dir, args.failure_probability)
        mu = calibration["mu_upper"]
        transmittance = calibration.get("transmittance_lower", transmittance)
        technical_noise = calibration.get("technical_noise_upper", technical_noise)
    elif mu is None:
        raise UsageError("--mu is required (or --from-calibration [ID|latest])")
    gain = args.gain if args.gain is not None else (calibration or {}).get("gain_upper")
    if gain is None:
        raise UsageError("--gain is required (or --from-calibration with an amplifier record: `qslab calibrate amplifier`)")
    point = OperatingPoint(mu=mu, gain=gain, modes=args.modes, rows=args.rows,
                           transmittance=transmittance, technical_noise=technical_noise, queries=args.queries)
    with np.errstate(all="ignore"):  # absurd inputs overflow: reported once, below, not as numpy warnings
        summary = leakage_summary(point)
    require_finite(summary, f"mu = {mu:g}, G = {gain:g}, n = {args.modes}, M = {args.rows}, T = {transmittance:g}, "
                            f"xi = {technical_noise:g}")
    bound = data_leakage_bound(args, gain, calibration)
    summary.update({"data_leakage_bound_bits_per_query": bound.per_query_bits,
                    "data_leakage_bound_bits_per_symbol": bound.per_symbol_bits,
                    "data_leakage_bound_bits_cumulative": bound.cumulative_bits, "data_leakage_bound": bound.to_json()})
    if calibration is not None:
        if "client_efficiency" in calibration:
            from qslab.analysis.client_measurement import client_snr

            calibration["client_snr_measured_receiver"] = float(client_snr(
                calibration["mu"], gain, calibration["client_efficiency"], calibration["client_electronic_noise_snu"]))
        summary["calibration"] = calibration
    if args.map:
        from qslab.analysis.leakage_maps import plot_leakage_maps

        try:
            plot_leakage_maps(point, args.map)
        except (OSError, ValueError) as error:  # a directory that does not exist, a format matplotlib lacks
            raise UsageError(f"cannot write the figure {args.map} ({error})") from None
        summary["map"] = args.map
    print(format_table(summary))
    if args.json:
        print_json_last(summary)
    return 0


def check_figure_target(path: str) -> None:
    """UsageError unless matplotlib could write a figure at ``path``: its directory exists and its suffix (if any)
    names a format matplotlib writes. Whatever else goes wrong at writing is still reported when it happens."""
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    from qslab.sequences.commands.cli_io import UsageError

    target = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = target.suffix.removeprefix(".").lower()
    if suffix and suffix not in formats:
        raise UsageError(f"cannot write the figure {path} (format {suffix!r} is not one matplotlib writes: "
                         f"{', '.join(sorted(formats))})")
    if not target.parent.is_dir():
        raise UsageError(f"cannot write the figure {path} (no directory {target.parent})")


def format_table(summary: dict) -> str:
    from qslab.analysis.data_leakage_report import report_rows

    p = summary["inputs"]
    rows = [
        ("operating point", f"mu = {p['mu']:g} photons/mode, G = {p['gain']:g}, n = {p['modes']} modes, M = {p['rows']} rows, "
                            f"T = {p['transmittance']:g}, xi = {p['technical_noise']:g} SNU, Q = {p['queries']}"),
        ("excess noise eps", f"{summary['excess_noise_snu']:.4e} SNU"),
        ("client SNR per product", f"{summary['client_snr']:.4g}"),
        ("weight leakage (Eq. 2)", f"{summary['weight_leakage_bits_per_mode']:.4g} bit/mode, "
                                   f"{summary['weight_leakage_bits_per_real_weight']:.4g} bit/real weight; not a "
                                   f"verified bound: assumes T = {p['transmittance']:g}, the average mode, no finite size"),
        ("  without verification g(mu)", f"{summary['weight_leakage_bits_unverified']:.4g} bit/mode"),
    ]
    if "data_leakage_bound" in summary:
        rows += report_rows(summary["data_leakage_bound"])
    rows += [
        ("data leakage, paper's Eq. 3", f"{summary['data_leakage_bits_cramer_rao']:.4g} bit/symbol/query, "
                                        f"{summary['data_leakage_bits_cramer_rao_cumulative']:.4g} cumulative; "
                                        "the arXiv Cramer-Rao estimate, not a bound"),
        ("data leakage, paper's PRX form", f"{summary['data_leakage_bits_prx']:.4g} bit/symbol/query, "
                                           f"{summary['data_leakage_bits_prx_cumulative']:.4g} cumulative; an estimate, "
                                           "not a bound"),
        ("  why not bounds", "a Cramer-Rao variance limit is not an information bound, and both treat the returned "
                             "bins as independent while the data sit in the relative phases (docs/PHYSICS.md 17)"),
    ]
    if "map" in summary:
        rows.append(("figure", summary["map"]))
    if "calibration" in summary:
        c = summary["calibration"]
        rows.append(("from calibration", f"mu = {c['mu']:.5g} +- {c['mu_uncertainty']:.2g} (upper limit {c['mu_upper']:.5g} "
                                         f"used, {c['confidence_k']['mu_photons']:.2f} sigma), records "
                                         f"{', '.join(c['records'].values())}"))
        rows.append(("failure probability", f"{c['failure_budget']['combined']:.3g} for all the limits (union bound, "
                                            f"{len(c['failure_budget']['terms'])} limits)"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def data_leakage_bound(args, gain: float, calibration: dict | None):
    """The data-leakage upper bound of the shipped network at this point (analysis/data_leakage_report.py).

    From records: G, the noise figure and the processor loss as Estimates at the budget's shares (an explicit
    --gain, --noise-figure or --loss-per-pass replaces the record's value, without uncertainty)."""
    import math
    from types import SimpleNamespace

    from qslab.analysis.data_leakage_report import data_leakage_report, declared_moments
    from qslab.analysis.estimate import Estimate
    from qslab.analysis.failure_budget import DATA_MOMENTS, FailureBudget
    from qslab.analysis.network import load_weights

    c = calibration or {}

    def estimate(option, key):
        if option is not None:
            return Estimate(float(option), 0.0)
        return Estimate(c[key], c[f"{key}_uncertainty"]) if key in c else None

    measured = SimpleNamespace(gain=estimate(args.gain, "gain") or Estimate(gain, 0.0),
                               amplifier_noise_figure_db=estimate(args.noise_figure, "noise_figure_db"),
                               processor_loss_per_pass_db=estimate(args.loss_per_pass, "loss_per_pass_db"))
    budget = (FailureBudget.split(args.failure_probability, [(name, sides, "") for name, sides in LIMITS])
              if calibration is not None else FailureBudget.split(args.failure_probability, [DATA_MOMENTS]))
    moments, distribution = declared_moments()
    weights, _ = load_weights()
    return data_leakage_report(measured, budget, [w.shape for w in weights], moments, distribution=distribution,
                               repeats=args.queries,
                               candidate_entropy_bits=None if args.candidates is None else math.log2(args.candidates))


def inputs_from_records(which: str, directory: str | None, failure_probability: float = 1e-10) -> dict:
    """The leakage inputs at their conservative limits (one failure probability for all), and the records' ids."""
    from qslab.analysis.failure_budget import FailureBudget
    from qslab.calibration.records import RecordError, RecordStore
    from qslab.sequences.commands.cli_io import UsageError

    budget = FailureBudget.split(failure_probability, [(name, sides, "") for name, sides in LIMITS])
    k = {name: budget.sigmas(name) for name, _ in LIMITS}
    store = RecordStore(directory)
    try:
        photons = store.require("photons") if which == "latest" else store.get(which)
        if photons.kind != "photons":
            raise UsageError(f"record {which} is a {photons.kind!r} record: --from-calibration takes a photons record id")
        if not photons.is_valid():
            raise RecordError(f"photons record {photons.id} expired at {photons.expires.isoformat()}: refresh it with "
                              "`qslab calibrate photons`")
        mu = photons.estimate("server.photons_per_symbol")
        inputs = {"mu": mu.value, "mu_uncertainty": mu.uncertainty, "mu_upper": mu.upper(k["mu_photons"]),
                  "confidence_k": k, "failure_budget": budget.to_json(), "records": {"photons": photons.id}}
        channel = store.latest_valid("channel")
        if channel is not None:
            if "channel.transmittance" in channel.parameters:
                t = channel.estimate("channel.transmittance")
                inputs["transmittance_lower"] = min(max(t.lower(k["transmittance"]), 1e-12), 1.0)
            if "channel.technical_noise_snu" in channel.parameters:
                inputs["technical_noise_upper"] = max(channel.estimate("channel.technical_noise_snu").upper(
                    k["technical_noise"]), 0.0)
            inputs["records"]["channel"] = channel.id
        amplifier = store.latest_valid("amplifier")
        if amplifier is not None and "client_amplifier.gain" in amplifier.parameters:
            # More gain means more excess noise on the returned light: the upper limit is conservative.
            gain = amplifier.estimate("client_amplifier.gain")
            inputs["gain_upper"] = max(gain.upper(k["gain"]), 1.0)
            inputs["gain"], inputs["gain_uncertainty"] = gain.value, gain.uncertainty
            if "client_amplifier.noise_figure_db" in amplifier.parameters:
                nf = amplifier.estimate("client_amplifier.noise_figure_db")
                inputs["noise_figure_db"], inputs["noise_figure_db_uncertainty"] = nf.value, nf.uncertainty
            inputs["records"]["amplifier"] = amplifier.id
        processor = store.latest_valid("processor")
        if processor is not None and "client_processor.loss_per_pass_db" in processor.parameters:
            loss = processor.estimate("client_processor.loss_per_pass_db")
            inputs["loss_per_pass_db"], inputs["loss_per_pass_db_uncertainty"] = loss.value, loss.uncertainty
            inputs["records"]["processor"] = processor.id
        homodyne = store.latest_valid("homodyne", "client_receiver")
        if homodyne is not None:
            inputs["client_efficiency"] = homodyne.estimate("client_receiver.efficiency").value
            inputs["client_electronic_noise_snu"] = homodyne.estimate(
                "client_receiver.electronic_noise_snu_at_operating_lo").value
            inputs["records"]["homodyne"] = homodyne.id
    except RecordError as error:
        raise UsageError(str(error)) from None
    return inputs
