"""The client's options against a curious server, with their price (docs/PHYSICS.md 17.8).

Three knobs, each on MNIST layer 1 (M = 784 rows, n = 392 modes, C of the 60,000 training images):

* the gain G: the returned photons N = n_sp (1 - 1/G) t T_r fall with G, and so does the data bound; the
  client keeps the same SNR per product, F = 2 mu g(G) with g(G) = G(G - 1)/(2G^2 - 3G + 2), only if the
  server sends mu_same = mu_ref g(G_ref)/g(G) photons per mode, and a larger mu makes the weight-leakage
  bound (Eq. 2) hypersensitive to any loss attributed to the client;
* isotropic thermal noise N_add the client adds to every returned mode: the bound falls (it becomes
  sum_k g(N lambda_k + N_add) - g(N + N_add) - (n - 1) g(N_add) per row) and the attacks weaken, but the
  server cannot tell that noise from an attack, so its verification must accept eps = 2N/n + 2 N_add per
  mode, and Eq. 2 grows with it;
* the queries Q of one image: the bound adds, Q M b, up to H(X) of a declared candidate set, and the
  attacks see Q M copies.

Attacks are those of analysis/data_leakage_attacks.py (classifiers trained on training images only). With
added noise only the unitary measurements (per-bin counting, the mode sorter) are simulated: an isotropic
thermal state stays independent across the outputs of a unitary, so the counts are exactly
Poisson(Lambda |V x_hat|^2 + Gamma(M Q, N_add)) per output; the delay line is an isometry onto 2(n + 1)
outputs whose noise would be correlated, and is left out there. The client's accuracy at a given F is not
computed here (analysis stays pure): the command adds it from the link simulation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from qslab.analysis import data_leakage_attacks as att
from qslab.analysis.data_leakage_bound import gaussian_bound_per_row_bits, pack_unit_vectors
from qslab.analysis.weight_leakage import holevo_verified_bits, modulation_variance_snu, weight_leakage_bits_per_mode

ROWS, MODES = 784, 392
PAPER_DATA_BITS_PER_SYMBOL = 0.01      # the paper's abstract: "< 0.01 bit per data symbol"
PAPER_WEIGHT_BITS_PER_MODE = 0.1       # the paper's "< 0.1 bit per weight" (Eq. 2 at T = 1)
LOSSES = (1.0, 0.99, 0.95)             # round-trip transmittances attributed to the client (weight bound)


def client_gain_factor(gain):
    """g(G) = G(G - 1)/(2G^2 - 3G + 2): the client's homodyne gain factor; F = 2 mu g(G)."""
    g = np.asarray(gain, dtype=float)
    return g * (g - 1.0) / (2.0 * g * g - 3.0 * g + 2.0)


def returned_photons_ideal(gain) -> float:
    """N = 1 - 1/G: a quantum-limited amplifier, lossless processor and return (the bound's best case for the client)."""
    return 1.0 - 1.0 / float(gain)


@dataclass(frozen=True)
class StudySettings:
    gains: tuple = (1.04, 1.1, 1.3, 2.0)
    added_photons: tuple = (0.0, 1e-3, 1e-2, 1e-1)
    queries: tuple = (1, 10)
    mu_ref: float = 6.0
    gain_ref: float = 1.3
    candidates: int = 0                 # L: cap by log2 L (0: no finite candidate set declared)
    train_images: int = 500
    test_images: int = 200
    seed: int = 0
    attacks: bool = True
    measurements: tuple = att.MEASUREMENTS

    def key(self) -> dict:
        return asdict(self)


@dataclass
class StudyData:
    """What the attacks need, loaded once: training and test images, their x_hat, the mode sorter's V."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    basis: np.ndarray = field(repr=False)


def load_study_data(settings: StudySettings) -> StudyData:
    from qslab.analysis.mnist import load_mnist, preprocess

    train, y_train = load_mnist("train")
    test, y_test = load_mnist("test")
    k, t = settings.train_images, settings.test_images
    x_train = pack_unit_vectors(preprocess(train[:k].reshape(k, -1)))
    x_test = pack_unit_vectors(preprocess(test[:t].reshape(t, -1)))
    return StudyData(x_train, y_train[:k].astype(int), x_test, y_test[:t].astype(int), att.mode_sorter_basis(x_train))


def simulate_counts_with_noise(probabilities, photons, copies: int, added_photons: float, rng) -> np.ndarray:
    """Counts per output over `copies` rows: Poisson(Lambda p + B), Lambda ~ Gamma(copies, N), B ~ Gamma(copies, N_add)
    independently per output (exact for a unitary V)."""
    p = np.asarray(probabilities, dtype=float)
    intensity = rng.gamma(shape=int(copies), scale=float(photons), size=(p.shape[0], 1)) * p
    if added_photons > 0.0:
        intensity = intensity + rng.gamma(shape=int(copies), scale=float(added_photons), size=p.shape)
    return rng.poisson(intensity)


def attack_accuracy(data: StudyData, measurement: str, photons: float, copies: int, seed: int,
                    added_photons: float = 0.0) -> float:
    """Digit accuracy of the named measurement (classifier trained on simulated counts of training images)."""
    rng = np.random.default_rng(seed)
    probs_train = att.output_probabilities(data.x_train, measurement, data.basis)
    probs_test = att.output_probabilities(data.x_test, measurement, data.basis)
    train = simulate_counts_with_noise(probs_train, photons, copies, added_photons, rng)
    model = att.train_softmax(att.count_features(train), data.y_train)
    test = simulate_counts_with_noise(probs_test, photons, copies, added_photons, rng)
    return float(np.mean(att.predict_softmax(model, att.count_features(test)) == data.y_test))


def bound_per_query_bits(photons: float, eigenvalues, added_photons: float = 0.0, queries: int = 1,
                         candidates: int = 0) -> float:
    """min(Q M b, log2 L): the Gaussian upper bound over Q queries of one image (data_leakage_bound)."""
    per_row = gaussian_bound_per_row_bits(photons, eigenvalues, added_photons)
    total = queries * ROWS * per_row
    return min(total, math.log2(candidates)) if candidates > 1 else total


def gain_rows(settings: StudySettings, eigenvalues, data: StudyData | None) -> list[dict]:
    g_ref = float(client_gain_factor(settings.gain_ref))
    rows = []
    for gain in settings.gains:
        n = returned_photons_ideal(gain)
        g = float(client_gain_factor(gain))
        mu_same = settings.mu_ref * g_ref / g
        bound = bound_per_query_bits(n, eigenvalues, candidates=settings.candidates)
        row = {"gain": gain, "photons_per_row": n, "bound_bits_per_query": bound, "bound_bits_per_symbol": bound / MODES,
               "F_at_mu_ref": 2.0 * settings.mu_ref * g, "mu_same_F": mu_same,
               "weight_bits_per_mode_at_mu_same": {f"{t:g}": float(weight_leakage_bits_per_mode(mu_same, gain, MODES, t))
                                                   for t in LOSSES}}
        if data is not None:
            row["attack_accuracy"] = {m: attack_accuracy(data, m, n, ROWS, settings.seed) for m in settings.measurements}
        rows.append(row)
    return rows


def noise_rows(settings: StudySettings, eigenvalues, data: StudyData | None) -> list[dict]:
    gain, mu = settings.gain_ref, settings.mu_ref
    n = returned_photons_ideal(gain)
    rows = []
    for added in settings.added_photons:
        eps = 2.0 * n / MODES + 2.0 * added
        bound = bound_per_query_bits(n, eigenvalues, added, candidates=settings.candidates)
        row = {"added_photons": added, "bound_bits_per_query": bound, "bound_bits_per_symbol": bound / MODES,
               "excess_noise_accepted_snu": eps,
               "weight_bits_per_mode": float(holevo_verified_bits(modulation_variance_snu(mu), 1.0, eps))}
        if data is not None:
            row["attack_accuracy"] = {m: attack_accuracy(data, m, n, ROWS, settings.seed, added)
                                      for m in settings.measurements if m != "delay"}
        rows.append(row)
    return rows


def query_rows(settings: StudySettings, eigenvalues, data: StudyData | None) -> list[dict]:
    n = returned_photons_ideal(settings.gain_ref)
    rows = []
    for q in settings.queries:
        bound = bound_per_query_bits(n, eigenvalues, queries=int(q), candidates=settings.candidates)
        row = {"queries": int(q), "bound_bits_per_image": bound, "bound_bits_per_symbol": bound / MODES}
        if data is not None:
            row["attack_accuracy"] = {m: attack_accuracy(data, m, n, ROWS * int(q), settings.seed)
                                      for m in settings.measurements}
        rows.append(row)
    return rows


def conclusion(result: dict) -> str:
    """The honest summary first: is there a setting where both parties get the paper's headline?"""
    both = [r for r in result["gain"] if r["bound_bits_per_symbol"] <= PAPER_DATA_BITS_PER_SYMBOL
            and r["weight_bits_per_mode_at_mu_same"]["1"] <= PAPER_WEIGHT_BITS_PER_MODE]
    both += [r for r in result["noise"] if r["bound_bits_per_symbol"] <= PAPER_DATA_BITS_PER_SYMBOL
             and r["weight_bits_per_mode"] <= PAPER_WEIGHT_BITS_PER_MODE]
    lowest_gain = min(result["gain"], key=lambda r: r["bound_bits_per_symbol"])
    lowest_noise = min(result["noise"], key=lambda r: r["bound_bits_per_symbol"])
    if both:
        return (f"{len(both)} studied setting(s) keep both the data bound <= {PAPER_DATA_BITS_PER_SYMBOL} bit per "
                f"data symbol per query and Eq. 2 <= {PAPER_WEIGHT_BITS_PER_MODE} bit/mode at T = 1.")
    return (f"No studied setting gives both parties the paper's headline (data <= {PAPER_DATA_BITS_PER_SYMBOL} bit "
            f"per data symbol per query as an upper bound, weights <= {PAPER_WEIGHT_BITS_PER_MODE} bit/mode by Eq. 2 "
            f"at T = 1). Lowest data bound by gain: {lowest_gain['bound_bits_per_symbol']:.3g} bit/symbol at G = "
            f"{lowest_gain['gain']:g} (the same client SNR then needs mu = {lowest_gain['mu_same_F']:.3g}, and Eq. 2 "
            f"reaches {lowest_gain['weight_bits_per_mode_at_mu_same']['0.99']:.3g} bit/mode if 1 % of the light is "
            f"lost); by added noise: {lowest_noise['bound_bits_per_symbol']:.3g} bit/symbol at N_add = "
            f"{lowest_noise['added_photons']:g}, where the server must accept eps = "
            f"{lowest_noise['excess_noise_accepted_snu']:.3g} SNU and Eq. 2 gives "
            f"{lowest_noise['weight_bits_per_mode']:.3g} bit/mode. Repeated queries only add.")


def run_study(settings: StudySettings, eigenvalues) -> dict:
    """Every table of the study (module docstring), and the conclusion."""
    data = load_study_data(settings) if settings.attacks else None
    result = {"settings": settings.key(), "rows": ROWS, "modes": MODES,
              "assumes": "quantum-limited amplifier, lossless processor and return (N = 1 - 1/G), MNIST layer 1; "
                         "bounds are upper bounds, attack accuracies achievable values (lower bounds)",
              "gain": gain_rows(settings, eigenvalues, data), "noise": noise_rows(settings, eigenvalues, data),
              "queries": query_rows(settings, eigenvalues, data)}
    result["conclusion"] = conclusion(result)
    return result


def plot_study(path, result: dict):
    """Three panels (gain, added noise, queries): the bound in bit per data symbol per query (left axis, log) and
    each attack's digit accuracy (right axis, %), with the paper's 0.01 bit/symbol headline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("gain", "gain", "amplifier gain G (linear)", "bound_bits_per_symbol"),
              ("noise", "added_photons", "added noise N_add (photons per returned mode)", "bound_bits_per_symbol"),
              ("queries", "queries", "queries Q of the same image", "bound_bits_per_symbol"))
    names = {"per_bin": "per-bin counting", "delay": "delay interferometer", "mode_sorter": "mode sorter"}
    colours = {"per_bin": "tab:blue", "delay": "tab:orange", "mode_sorter": "tab:green"}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5), constrained_layout=True)
    for ax, (table, knob, label, bound_key) in zip(axes, panels):
        rows = result[table]
        x = np.array([r[knob] for r in rows], dtype=float)
        ax.plot(x if table != "noise" else np.arange(len(x)), [r[bound_key] for r in rows], "ko-",
                label="upper bound (bit/symbol per query; per image for Q)")
        ax.axhline(PAPER_DATA_BITS_PER_SYMBOL, color="grey", ls=":", label="paper's headline, 0.01 bit/symbol")
        ax.set_yscale("log")
        ax.set_ylabel("data leakage bound (bit per complex data symbol)")
        if table == "noise":
            ax.set_xticks(np.arange(len(x)), [f"{v:g}" for v in x])
        elif table != "gain":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        if rows and "attack_accuracy" in rows[0]:
            right = ax.twinx()
            for m in rows[0]["attack_accuracy"]:
                right.plot(x if table != "noise" else np.arange(len(x)),
                           [100 * r["attack_accuracy"][m] for r in rows], "s--", color=colours[m],
                           label=f"{names[m]} (accuracy, %)")
            right.axhline(10.0, color="r", ls=":", lw=0.8, label="chance, 10 %")
            right.set_ylim(0, 100)
            right.set_ylabel("curious server's digit accuracy (%)")
            right.legend(loc="center right", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_title("lower gain")
    axes[1].set_title(f"added isotropic noise (G = {result['settings']['gain_ref']:g})")
    axes[2].set_title("repeated queries")
    fig.suptitle("The client's options against a curious server (MNIST layer 1, 784 rows x 392 modes)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
