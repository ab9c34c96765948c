"""Weight and data leakage of one operating point (paper Eq. 2 and Eq. 3, DECISIONS B-F).

Weight leakage is the Holevo bound chi(V = 2 mu + 1, T, eps) with eps the honest client's
average excess noise (2G - 2)/(G n) plus the technical noise; data leakage is given in the
arXiv Cramer-Rao form (x = 1/sqrt(n), n_m = n) and the PRX form (M rows), per data symbol per
query and cumulated over rows x queries.

With --from-calibration [ID|latest] the inputs come from the calibration records actually measured
(calibration/records.py), at their conservative confidence limits: the upper limit (value + 3 sigma)
of mu from the photons record (ID, or the latest valid one), the lower limit of T and the upper
limit of the technical noise from a channel record when one exists (else --transmittance and
--technical-noise), and the client's efficiency and electronic noise from the homodyne record for
the honest client's SNR. A missing or expired record stops with its name and the refresh command.
"""

from __future__ import annotations

from qslab.analysis.leakage_report import OperatingPoint, leakage_summary

HELP = "weight and data leakage bounds of one operating point"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number

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
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")
    parser.add_argument("--from-calibration", nargs="?", const="latest", metavar="ID|latest", default=None,
                        help="take mu (upper limit), T (lower limit), xi (upper limit) and the client's efficiency and "
                             "electronic noise from the calibration records: a photons record ID, or the latest valid")
    parser.add_argument("--calibration-dir", metavar="DIR", default=None,
                        help="record directory (default: $QSLAB_CALIBRATION_DIR or qslab-output/calibration)")
    parser.add_argument("--map", metavar="FILE.png", help="write the Fig. 5-style figures and the 512 x 512 (mu, G - 1) leakage maps to this PNG")


CONFIDENCE_K = 3.0  # conservative limits: value +- 3 sigma


def run(args) -> int:
    import numpy as np

    from qslab.sequences.commands.cli_io import UsageError, print_json_last, require_finite

    mu, transmittance, technical_noise, calibration = args.mu, args.transmittance, args.technical_noise, None
    if args.from_calibration is not None:
        if args.mu is not None:
            raise UsageError("give --mu or --from-calibration, not both")
        calibration = inputs_from_records(args.from_calibration, args.calibration_dir)
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


def format_table(summary: dict) -> str:
    p = summary["inputs"]
    rows = [
        ("operating point", f"mu = {p['mu']:g} photons/mode, G = {p['gain']:g}, n = {p['modes']} modes, M = {p['rows']} rows, "
                            f"T = {p['transmittance']:g}, xi = {p['technical_noise']:g} SNU, Q = {p['queries']}"),
        ("excess noise eps", f"{summary['excess_noise_snu']:.4e} SNU"),
        ("client SNR per product", f"{summary['client_snr']:.4g}"),
        ("weight leakage (Eq. 2)", f"{summary['weight_leakage_bits_per_mode']:.4g} bit/mode, "
                                   f"{summary['weight_leakage_bits_per_real_weight']:.4g} bit/real weight"),
        ("  without verification g(mu)", f"{summary['weight_leakage_bits_unverified']:.4g} bit/mode"),
        ("data leakage, arXiv Cramer-Rao", f"{summary['data_leakage_bits_cramer_rao']:.4g} bit/symbol/query, "
                                           f"{summary['data_leakage_bits_cramer_rao_cumulative']:.4g} cumulative"),
        ("data leakage, PRX form", f"{summary['data_leakage_bits_prx']:.4g} bit/symbol/query, "
                                   f"{summary['data_leakage_bits_prx_cumulative']:.4g} cumulative"),
    ]
    if "map" in summary:
        rows.append(("figure", summary["map"]))
    if "calibration" in summary:
        c = summary["calibration"]
        rows.append(("from calibration", f"mu = {c['mu']:.5g} +- {c['mu_uncertainty']:.2g} (upper limit {c['mu_upper']:.5g} "
                                         f"used), records {', '.join(c['records'].values())}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def inputs_from_records(which: str, directory: str | None) -> dict:
    """The leakage inputs at their conservative limits, and the ids of the records they come from."""
    from qslab.calibration.records import RecordError, RecordStore
    from qslab.sequences.commands.cli_io import UsageError

    store = RecordStore(directory)
    try:
        photons = store.require("photons") if which == "latest" else store.get(which)
        if photons.kind != "photons":
            raise UsageError(f"record {which} is a {photons.kind!r} record: --from-calibration takes a photons record id")
        if not photons.is_valid():
            raise RecordError(f"photons record {photons.id} expired at {photons.expires.isoformat()}: refresh it with "
                              "`qslab calibrate photons`")
        mu = photons.estimate("server.photons_per_symbol")
        inputs = {"mu": mu.value, "mu_uncertainty": mu.uncertainty, "mu_upper": mu.upper(CONFIDENCE_K),
                  "confidence_k": CONFIDENCE_K, "records": {"photons": photons.id}}
        channel = store.latest_valid("channel")
        if channel is not None:
            if "channel.transmittance" in channel.parameters:
                t = channel.estimate("channel.transmittance")
                inputs["transmittance_lower"] = min(max(t.lower(CONFIDENCE_K), 1e-12), 1.0)
            if "channel.technical_noise_snu" in channel.parameters:
                inputs["technical_noise_upper"] = max(channel.estimate("channel.technical_noise_snu").upper(CONFIDENCE_K), 0.0)
            inputs["records"]["channel"] = channel.id
        amplifier = store.latest_valid("amplifier")
        if amplifier is not None and "client_amplifier.gain" in amplifier.parameters:
            # More gain means more excess noise on the returned light: the upper limit is conservative.
            inputs["gain_upper"] = max(amplifier.estimate("client_amplifier.gain").upper(CONFIDENCE_K), 1.0)
            inputs["records"]["amplifier"] = amplifier.id
        homodyne = store.latest_valid("homodyne", "client_receiver")
        if homodyne is not None:
            inputs["client_efficiency"] = homodyne.estimate("client_receiver.efficiency").value
            inputs["client_electronic_noise_snu"] = homodyne.estimate(
                "client_receiver.electronic_noise_snu_at_operating_lo").value
            inputs["records"]["homodyne"] = homodyne.id
    except RecordError as error:
        raise UsageError(str(error)) from None
    return inputs
