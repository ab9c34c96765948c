"""Weight and data leakage of one operating point (paper Eq. 2 and Eq. 3, DECISIONS B-F).

Weight leakage is the Holevo bound chi(V = 2 mu + 1, T, eps) with eps the honest client's
average excess noise (2G - 2)/(G n) plus the technical noise; data leakage is given in the
arXiv Cramer-Rao form (x = 1/sqrt(n), n_m = n) and the PRX form (M rows), per data symbol per
query and cumulated over rows x queries.
"""

from __future__ import annotations

from analysis.leakage_report import OperatingPoint, leakage_summary

HELP = "weight and data leakage bounds of one operating point"


def register(parser) -> None:
    from sequences.cli import number

    parser.add_argument("--mu", required=True, type=number("mu", 0.0, unit="mean photons per complex mode at the server's output"),
                        help="mean photons per complex mode at the server's output (photons, >= 0)")
    parser.add_argument("--gain", required=True, type=number("gain", 1.0, unit="the client's amplifier power gain"),
                        help="the client's phase-insensitive amplifier power gain G (linear, >= 1)")
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
    parser.add_argument("--map", metavar="FILE.png", help="write the Fig. 5-style figures and the 512 x 512 (mu, G - 1) leakage maps to this PNG")


def run(args) -> int:
    from sequences.cli import print_json_last

    point = OperatingPoint(mu=args.mu, gain=args.gain, modes=args.modes, rows=args.rows,
                           transmittance=args.transmittance, technical_noise=args.technical_noise, queries=args.queries)
    summary = leakage_summary(point)
    if args.map:
        from analysis.leakage_maps import plot_leakage_maps

        plot_leakage_maps(point, args.map)
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
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
