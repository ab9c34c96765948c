"""The client's options against a curious server, with their price (analysis/data_privacy_study.py).

For MNIST layer 1 (784 rows over 392 complex modes, a quantum-limited amplifier, lossless processor and
return): the data-leakage upper bound per query and per data symbol, and the digit accuracy of simulated
curious servers (per-bin counting, a delay interferometer, a mode sorter; classifiers trained on training
images only), against three knobs: the gain G (and the photons per mode mu the client then needs for the
same SNR, F = 2 mu g(G), with Eq. 2's weight leakage at that mu under 0 %, 1 % and 5 % loss), isotropic
thermal noise added to every returned mode (and the excess noise the server's verification then has to
accept, with Eq. 2 at it), and the number of queries per image. The conclusion comes first.

Results are cached (keyed by every option) under $XDG_CACHE_HOME/qslab (or ~/.cache/qslab); --no-cache
recomputes. The defaults are small (500 training, 200 test images): --full uses 5000 and 1000.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

HELP = "the client's options against a curious server: data-leakage bound and attacks vs gain, added noise, queries"
CACHE_VERSION = 1


def _floats(name, low, high, unit):
    from qslab.sequences.commands.cli_io import number

    parse_one = number(name, low, high, unit=unit)

    def parse(text: str):
        import argparse

        values = tuple(parse_one(part) for part in text.split(",") if part.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {unit}, got {text!r}")
        return values

    parse.__name__ = name
    return parse


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number

    parser.add_argument("--gains", type=_floats("gains", 1.0, 100.0, "linear power gains G > 1"), default=None,
                        help="amplifier gains G to study (linear, comma-separated; default 1.04,1.1,1.3,2)")
    parser.add_argument("--added-photons", type=_floats("added-photons", 0.0, 10.0, "photons per returned mode"),
                        default=None, help="isotropic thermal noise the client adds to every returned mode (photons "
                                           "per mode, comma-separated; default 0,0.001,0.01,0.1)")
    parser.add_argument("--queries", type=_floats("queries", 1, 1e6, "queries per image"), default=None,
                        help="queries of the same image (comma-separated; default 1,10)")
    parser.add_argument("--mu", type=number("mu", 0.0, min_open=True, unit="photons per complex mode"), default=6.0,
                        help="reference photons per complex mode at the reference gain (default 6)")
    parser.add_argument("--gain-ref", type=number("gain-ref", 1.0, min_open=True, unit="linear power gain"), default=1.3,
                        help="reference gain: the noise and query tables use it, and the same client SNR as "
                             "(mu, gain-ref) sets mu at every other gain (default 1.3)")
    parser.add_argument("--candidate-set", type=number("candidate-set", 2, 10**9, integer=True, unit="images"),
                        default=0, help="cap the bound at log2 L of a finite candidate set of L images (default: none)")
    parser.add_argument("--train-images", type=number("train-images", 10, 60_000, integer=True, unit="images"),
                        default=None, help="MNIST training images the simulated servers train on (default 500)")
    parser.add_argument("--test-images", type=number("test-images", 10, 10_000, integer=True, unit="images"),
                        default=None, help="MNIST test images the servers are scored on (default 200)")
    parser.add_argument("--accuracy-images", type=number("accuracy-images", 0, 10_000, integer=True, unit="images"),
                        default=None, help="test images for the client's own accuracy at each gain (link simulation; "
                                           "0 skips it; default 200)")
    parser.add_argument("--seed", type=number("seed", 0, integer=True, unit="seed"), default=0,
                        help="seed of the simulated counts (default 0)")
    parser.add_argument("--no-attacks", action="store_true", help="bounds only (fast): no simulated servers")
    parser.add_argument("--full", action="store_true",
                        help="the full run: 5000 training, 1000 test and 1000 accuracy images, gains "
                             "1.01,1.04,1.1,1.2,1.3,2, added photons 0,1e-4,1e-3,1e-2,3e-2,1e-1, queries 1,2,5,10")
    parser.add_argument("--figure", metavar="FILE.png", default=None,
                        help="write the trade-off figure (bound and attack accuracy vs each knob)")
    parser.add_argument("--no-cache", action="store_true", help="recompute instead of reading the cache")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")


def settings_from(args):
    from qslab.analysis.data_privacy_study import StudySettings

    full = args.full
    pick = (lambda given, small, large: given if given is not None else (large if full else small))
    return StudySettings(
        gains=pick(args.gains, (1.04, 1.1, 1.3, 2.0), (1.01, 1.04, 1.1, 1.2, 1.3, 2.0)),
        added_photons=pick(args.added_photons, (0.0, 1e-3, 1e-2, 1e-1), (0.0, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1)),
        queries=tuple(int(q) for q in pick(args.queries, (1, 10), (1, 2, 5, 10))),
        mu_ref=args.mu, gain_ref=args.gain_ref, candidates=args.candidate_set,
        train_images=pick(args.train_images, 500, 5000), test_images=pick(args.test_images, 200, 1000),
        seed=args.seed, attacks=not args.no_attacks)


def cache_path(key: dict) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qslab"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return root / f"data-privacy-{digest}.json"


def compute(settings, accuracy_images: int) -> dict:
    from qslab.analysis.data_leakage_report import load_moments
    from qslab.analysis.data_privacy_study import run_study

    moments, _ = load_moments()
    result = run_study(settings, moments[0].eigenvalues)
    if accuracy_images:
        from qslab.sequences.sweeps import physics_accuracy

        for row in result["gain"]:
            row["client_accuracy_at_mu_ref"] = physics_accuracy(settings.mu_ref, row["gain"], accuracy_images)
            row["client_accuracy_at_mu_same"] = physics_accuracy(row["mu_same_F"], row["gain"], accuracy_images)
        result["client_accuracy_images"] = accuracy_images
    return result


def run(args) -> int:
    from qslab.sequences.commands.cli_io import print_json_last, require_finite

    settings = settings_from(args)
    if any(g <= 1.0 for g in settings.gains):
        from qslab.sequences.commands.cli_io import UsageError

        raise UsageError(f"--gains {','.join(map(str, settings.gains))}: expected every gain > 1 (linear)")
    accuracy_images = args.accuracy_images if args.accuracy_images is not None else (1000 if args.full else 200)
    key = {"version": CACHE_VERSION, "settings": settings.key(), "accuracy_images": accuracy_images}
    path = cache_path(key)
    result = None
    if not args.no_cache and path.is_file():
        try:
            cached = json.loads(path.read_text())
            result = cached["result"] if cached.get("key") == json.loads(json.dumps(key)) else None
        except (OSError, ValueError, KeyError):
            result = None
    if result is None:
        result = compute(settings, accuracy_images)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"key": key, "result": result}))
        except OSError:
            pass  # a cache that cannot be written only costs time
    require_finite({k: v for r in result["gain"] for k, v in r.items()}, "the requested gains")
    if args.figure:
        from qslab.analysis.data_privacy_study import plot_study

        result["figure"] = str(plot_study(args.figure, result))
    print(format_study(result))
    if args.json:
        print_json_last(result)
    return 0


def _accuracies(row: dict, measurements) -> str:
    acc = row.get("attack_accuracy")
    return "  ".join(f"{100 * acc[m]:5.1f} %" if m in acc else "     - " for m in measurements) if acc else "-"


def format_study(result: dict) -> str:
    s = result["settings"]
    ms = s["measurements"]
    names = {"per_bin": "per-bin", "delay": "delay", "mode_sorter": "sorter"}
    head = "  ".join(f"{names[m]:>7}" for m in ms)
    lines = [f"conclusion: {result['conclusion']}", "",
             f"assumes: {result['assumes']}; attacks: classifiers trained on {s['train_images']} training images, "
             f"scored on {s['test_images']} test images (chance 10 %)" if s["attacks"] else
             f"assumes: {result['assumes']}; no attacks simulated (--no-attacks)", "",
             f"1. gain G (same client SNR as mu = {s['mu_ref']:g} at G = {s['gain_ref']:g}: F = 2 mu g(G))",
             f"{'G':>6} {'N':>7} {'bound bit/query':>15} {'bit/symbol':>10} {'mu same F':>9} "
             f"{'Eq.2 T=1/0.99/0.95 bit/mode':>28}  {head}"
             + ("  client acc. mu_ref / mu_same" if "client_accuracy_images" in result else "")]
    for r in result["gain"]:
        w = r["weight_bits_per_mode_at_mu_same"]
        lines.append(f"{r['gain']:>6.3g} {r['photons_per_row']:>7.4f} {r['bound_bits_per_query']:>15.4g} "
                     f"{r['bound_bits_per_symbol']:>10.3g} {r['mu_same_F']:>9.3g} "
                     f"{w['1']:>9.3g} /{w['0.99']:>7.3g} /{w['0.95']:>7.3g}  {_accuracies(r, ms)}"
                     + (f"  {100 * r['client_accuracy_at_mu_ref']:.1f} % / {100 * r['client_accuracy_at_mu_same']:.1f} %"
                        if "client_accuracy_at_mu_ref" in r else ""))
    lines += ["", f"2. isotropic thermal noise N_add on every returned mode (G = {s['gain_ref']:g}, mu = {s['mu_ref']:g})",
              f"{'N_add':>8} {'bound bit/query':>15} {'bit/symbol':>10} {'eps accepted SNU':>16} {'Eq.2 bit/mode':>13}  {head}"]
    for r in result["noise"]:
        lines.append(f"{r['added_photons']:>8.3g} {r['bound_bits_per_query']:>15.4g} {r['bound_bits_per_symbol']:>10.3g} "
                     f"{r['excess_noise_accepted_snu']:>16.4g} {r['weight_bits_per_mode']:>13.4g}  {_accuracies(r, ms)}")
    lines += ["", f"3. queries Q of the same image (G = {s['gain_ref']:g})",
              f"{'Q':>8} {'bound bit/image':>15} {'bit/symbol':>10}  {head}"]
    for r in result["queries"]:
        lines.append(f"{r['queries']:>8d} {r['bound_bits_per_image']:>15.4g} {r['bound_bits_per_symbol']:>10.3g}  "
                     f"{_accuracies(r, ms)}")
    lines.append("(bounds are upper bounds on the server's Holevo information; attack accuracies are achievable values; "
                 "with added noise the delay line is not simulated: its outputs' noise is correlated)")
    return "\n".join(lines)
