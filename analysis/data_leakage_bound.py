"""What a curious server can learn about the client's data, bounded on the joint returned state (docs/PHYSICS.md 17).

Once the server removes the displacement it sent, each returned row is thermal with N photons in the
single temporal mode x_hat (the client's normalised data) and vacuum in every orthogonal mode; the M
rows of a layer and every repeated query give further copies. Here:

* `returned_photons` / `returned_states`: N (and a conservative upper N) from the station's calibrated
  amplifier gain, noise figure and processor loss, per layer (docs/PHYSICS.md 17.1);
* `gaussian_bound`: the Gaussian-extremality upper bound M [sum_k g(N lambda_k) - g(N)] per query,
  per row, per data symbol and cumulated over Q queries, capped by H(X) where a finite candidate set
  is declared (17.2);
* `second_moments`, `data_second_moments`, `mnist_second_moments`: the lambda_k of the uncentred
  second-moment matrix C = E[x_hat x_hat^H] of a declared data distribution, per layer, with a
  grouped-jackknife uncertainty (17.3);
* `finite_set_holevo_bits`: the exact Holevo information for a finite candidate set, a
  negative-binomial sum of K-copy pure-state entropies computed from Gram matrices (17.4).

Pure computation: no instruments, no files but the shipped MNIST and weights when asked for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import entr

from qslab.analysis.gaussian import entropy_photons_bits
from qslab.analysis.givens import complex_unit_vector
from qslab.analysis.mnist import load_mnist, preprocess
from qslab.analysis.network import load_weights, relu

LN2 = math.log(2.0)
LN10_OVER_10 = math.log(10.0) / 10.0
DEFAULT_COVERAGE = 3.0
DEFAULT_GROUPS = 20
TRACE_TOLERANCE = 1e-6


# --- calibrated values with or without an uncertainty ------------------------------------------------

def _value_sigma(quantity) -> tuple[float, float]:
    """(value, one-sigma) of a float or of anything with `.value` and `.uncertainty` (an Estimate)."""
    if hasattr(quantity, "value"):
        value, sigma = float(quantity.value), float(getattr(quantity, "uncertainty", 0.0))
    else:
        value, sigma = float(quantity), 0.0
    if not (math.isfinite(value) and math.isfinite(sigma) and sigma >= 0.0):
        raise ValueError(f"calibrated value {value!r} +- {sigma!r}: expected finite numbers and uncertainty >= 0")
    return value, sigma


# --- the returned state -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ReturnedPhotons:
    """Thermal photons N per returned row in mode x_hat, from calibrated values.

    `upper` is what the bounds use: value + coverage x one-sigma (first-order propagation of independent
    inputs), never below `value`. More returned noise tells the server more, so the upper limit is the
    conservative side.
    """

    value: float
    uncertainty: float
    upper: float
    coverage: float
    inversion_factor: float          # n_sp at the central values (>= 1)
    transmittance_per_pass: float    # t, the client's processor
    return_transmittance: float      # T_r as credited (1 unless the caller overrides it)


def returned_photons(gain, noise_figure_db=None, loss_per_pass_db=0.0, return_transmittance=1.0,
                     server_detector_efficiency=1.0, coverage: float = DEFAULT_COVERAGE) -> ReturnedPhotons:
    """N = n_sp (1 - 1/G) t T_r eta_s = (NF - 1/G)/2 t T_r eta_s photons (docs/PHYSICS.md 17.1).

    gain: the amplifier's true linear G; noise_figure_db: its noise figure (None: quantum limited,
    n_sp = 1); loss_per_pass_db: the client processor's loss per pass, t = 10^(-loss/10). Each may be a
    float or carry `.value`/`.uncertainty`. n_sp = (G NF - 1)/(2(G - 1)) is floored at the physical 1.
    T_r and the server's detector efficiency default to 1 on purpose: the client cannot check where
    returned light is lost, and the server chooses its own detector, so neither may be credited to the
    client; only the client's own processor loss t is trusted.
    """
    g, g_u = _value_sigma(gain)
    if g < 1.0:
        raise ValueError(f"amplifier gain {g!r}: expected G >= 1 (linear)")
    loss, loss_u = _value_sigma(loss_per_pass_db)
    t_r, t_r_u = _value_sigma(return_transmittance)
    eta, eta_u = _value_sigma(server_detector_efficiency)
    for name, v in (("return_transmittance", t_r), ("server_detector_efficiency", eta)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} {v!r}: expected a transmittance in [0, 1]")
    t = 10.0 ** (-loss / 10.0)
    quantum_limit = noise_figure_db is None
    if not quantum_limit:
        nf_db, nf_db_u = _value_sigma(noise_figure_db)
        nf = 10.0 ** (nf_db / 10.0)
        quantum_limit = g == 1.0 or nf <= 2.0 - 1.0 / g   # n_sp would fall below 1: floor it
    scale = t * t_r * eta
    if quantum_limit:
        n_sp = 1.0
        per_scale = 1.0 - 1.0 / g                  # n_sp (1 - 1/G) at n_sp = 1
        d_gain = 1.0 / g**2
        d_nf_db = 0.0
    else:
        n_sp = (g * nf - 1.0) / (2.0 * (g - 1.0))
        per_scale = 0.5 * (nf - 1.0 / g)
        d_gain = 0.5 / g**2
        d_nf_db = 0.5 * nf * LN10_OVER_10
    photons = per_scale * scale
    terms = [d_gain * scale * g_u, per_scale * scale * LN10_OVER_10 * loss_u,
             per_scale * t * eta * t_r_u, per_scale * t * t_r * eta_u]
    if d_nf_db:
        terms.append(d_nf_db * scale * nf_db_u)
    sigma = math.sqrt(sum(x * x for x in terms))
    coverage = float(coverage)
    if coverage < 0.0:
        raise ValueError(f"coverage factor {coverage!r}: expected >= 0")
    return ReturnedPhotons(photons, sigma, photons + coverage * sigma, coverage, n_sp, t, t_r)


@dataclass(frozen=True)
class LayerReturn:
    """One layer's returned light given its input x_hat: `rows` copies per query of a thermal state with
    `photons` in mode x_hat over `modes` complex modes, vacuum elsewhere."""

    layer: int
    rows: int
    modes: int
    photons: ReturnedPhotons


def modes_for_inputs(n_inputs: int) -> int:
    """Complex modes per row: two real inputs per mode, an odd count zero-padded (analysis/givens.py)."""
    return (int(n_inputs) + 1) // 2


def returned_states(layer_shapes: Sequence[tuple[int, int]], gain, noise_figure_db=None, loss_per_pass_db=0.0,
                    return_transmittance=1.0, server_detector_efficiency=1.0,
                    coverage: float = DEFAULT_COVERAGE) -> list[LayerReturn]:
    """Per layer (weight shapes [out, in]): M = out rows reuse the layer's input over ceil(in/2) modes.

    N is the same for every layer (one amplifier, one processor); M and n are not. The layer-2 input
    depends on the client's layer-1 outcomes, which are correlated with the layer-1 returned noise: each
    layer's bound is a bound on that layer's own input (docs/PHYSICS.md 17.1).
    """
    photons = returned_photons(gain, noise_figure_db, loss_per_pass_db, return_transmittance,
                               server_detector_efficiency, coverage)
    return [LayerReturn(index, int(shape[0]), modes_for_inputs(shape[1]), photons)
            for index, shape in enumerate(layer_shapes)]


# --- the Gaussian upper bound -----------------------------------------------------------------------

def _checked_eigenvalues(eigenvalues) -> np.ndarray:
    lam = np.clip(np.asarray(eigenvalues, dtype=float).ravel(), 0.0, None)
    if lam.size == 0 or abs(lam.sum() - 1.0) > TRACE_TOLERANCE:
        raise ValueError(f"eigenvalues of C sum to {lam.sum():.8g}; expected 1 (C = E[x_hat x_hat^H] of unit vectors)")
    return lam


def gaussian_bound_per_row_bits(photons, eigenvalues, added_photons=0.0) -> float:
    """b(N, lambda) = sum_k g(N lambda_k + N_add) - g(N + N_add) - (n - 1) g(N_add), n = len(lambda).

    The Holevo information of one returned row about x_hat is at most b (Gaussian extremality). N_add
    is isotropic thermal noise the client adds to every returned mode (0 for an honest client); then
    `eigenvalues` must list all n of them, zeros included.
    """
    lam = _checked_eigenvalues(eigenvalues)
    n_photons = float(photons)
    n_add = float(added_photons)
    if n_photons < 0.0 or n_add < 0.0:
        raise ValueError(f"photons {n_photons!r}, added photons {n_add!r}: expected >= 0")
    average = float(np.sum(entropy_photons_bits(n_photons * lam + n_add)))
    conditional = entropy_photons_bits(n_photons + n_add) + (lam.size - 1) * entropy_photons_bits(n_add)
    return max(average - conditional, 0.0)


@dataclass(frozen=True)
class DataLeakageBound:
    """Upper bounds (bits) on the server's Holevo information about one layer's input.

    per_query = min(M b, H(X)); per_symbol = per_query / n (per complex data symbol);
    cumulative = min(Q M b, H(X)) over Q queries of the same input. `per_row_uncertainty_bits` is the
    sampling uncertainty of b from the estimate of C (0 when C is exact), one sigma.
    """

    photons: float
    rows: int
    modes: int
    queries: int
    per_row_bits: float
    per_row_uncertainty_bits: float
    per_query_bits: float
    per_symbol_bits: float
    cumulative_bits: float
    candidate_entropy_bits: float | None
    capped: bool                      # the cumulative figure is H(X), not Q M b


def gaussian_bound(photons, eigenvalues, rows: int, queries: int = 1, candidate_entropy_bits=None,
                   added_photons=0.0, modes: int | None = None, per_row_uncertainty_bits: float = 0.0) -> DataLeakageBound:
    """The data-leakage upper bound per row, query, symbol and session (docs/PHYSICS.md 17.2).

    Assumes an honest client (passive processor, same loss every pass), a server that sends coherent
    states, and fresh amplifier noise per row and per query, so that given x_hat the copies are
    independent and their cross-copy second moments vanish: the copies' bounds add. The candidate
    entropy H(X) (e.g. log2 L for a uniform prior on L images) caps the per-query and cumulative figures.
    """
    rows, queries = int(rows), int(queries)
    if rows < 1 or queries < 1:
        raise ValueError(f"rows {rows}, queries {queries}: expected positive counts")
    lam = _checked_eigenvalues(eigenvalues)
    modes = lam.size if modes is None else int(modes)
    per_row = gaussian_bound_per_row_bits(photons, lam, added_photons)
    cap = math.inf if candidate_entropy_bits is None else float(candidate_entropy_bits)
    per_query = min(rows * per_row, cap)
    cumulative = min(queries * rows * per_row, cap)
    return DataLeakageBound(float(photons), rows, modes, queries, per_row, float(per_row_uncertainty_bits),
                            per_query, per_query / modes, cumulative,
                            None if candidate_entropy_bits is None else cap, queries * rows * per_row >= cap)


def layer_bounds(states: Sequence[LayerReturn], moments: Sequence["SecondMoments"], queries: int = 1,
                 candidate_entropy_bits=None) -> list[DataLeakageBound]:
    """Each layer's bound at its conservative N (photons.upper), with C's sampling uncertainty."""
    if len(states) != len(moments):
        raise ValueError(f"{len(states)} layers but {len(moments)} second-moment estimates")
    out = []
    for state, mom in zip(states, moments):
        if mom.eigenvalues.size != state.modes:
            raise ValueError(f"layer {state.layer}: C over {mom.eigenvalues.size} modes, the layer has {state.modes}")
        n_up = state.photons.upper
        out.append(gaussian_bound(n_up, mom.eigenvalues, state.rows, queries, candidate_entropy_bits,
                                  modes=state.modes, per_row_uncertainty_bits=mom.per_row_bound_uncertainty_bits(n_up)))
    return out


# --- C from a declared data distribution ------------------------------------------------------------

def spectrum_entropy_bits(eigenvalues) -> float:
    """-sum lambda log2 lambda over the non-negative part of a spectrum."""
    lam = np.clip(np.real(np.asarray(eigenvalues)), 0.0, None)
    return float(np.sum(entr(lam)) / LN2)


@dataclass(frozen=True)
class SecondMoments:
    """C = E[x_hat x_hat^H] of a data distribution, its eigenvalues (descending) and their
    delete-one-group jackknife replicates [groups, n], from which any function of the spectrum gets
    a standard error."""

    matrix: np.ndarray
    eigenvalues: np.ndarray
    samples: int
    replicate_eigenvalues: np.ndarray

    def eigenvalue_entropy_bits(self) -> float:
        """H(lambda): b = N H(lambda) + O(N^2)."""
        return spectrum_entropy_bits(self.eigenvalues)

    def jackknife_sigma(self, statistic) -> float:
        """One-sigma grouped-jackknife error of statistic(eigenvalues); 0 without replicates."""
        reps = self.replicate_eigenvalues
        if reps.shape[0] < 2:
            return 0.0
        values = np.array([statistic(r) for r in reps])
        k = values.size
        return float(np.sqrt((k - 1) / k * np.sum((values - values.mean()) ** 2)))

    def per_row_bound_uncertainty_bits(self, photons, added_photons=0.0) -> float:
        return self.jackknife_sigma(lambda lam: gaussian_bound_per_row_bits(photons, lam / lam.sum(), added_photons))


def _hermitian_eigenvalues(matrix) -> np.ndarray:
    return np.sort(np.linalg.eigvalsh(0.5 * (matrix + matrix.conj().T)))[::-1]


def _moments_from_group_sums(sums: list[np.ndarray], masses: list[float], samples: int) -> SecondMoments:
    """C = sum of the groups' prior-weighted sums; replicate g leaves group g out and renormalises."""
    total = np.sum(sums, axis=0)
    replicates = (np.array([_hermitian_eigenvalues((total - s) / (1.0 - m)) for s, m in zip(sums, masses)])
                  if len(sums) >= 2 else np.zeros((0, total.shape[0])))
    return SecondMoments(total, _hermitian_eigenvalues(total), samples, replicates)


def _group_bounds(n_samples: int, groups: int) -> np.ndarray:
    groups = max(1, min(int(groups), n_samples))
    return np.linspace(0, n_samples, groups + 1).round().astype(int)


def second_moments(x_hat, probabilities=None, groups: int = DEFAULT_GROUPS) -> SecondMoments:
    """C = sum_j p_j x_j x_j^H of complex unit vectors x_hat [S, n] (uniform p by default).

    The jackknife groups are contiguous blocks of samples; pass groups=1 for an exact candidate set.
    """
    x = np.asarray(x_hat, dtype=complex)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x_hat must be [samples, modes], got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-9):
        raise ValueError("x_hat rows must be unit vectors (the client's normalised data)")
    p = np.full(x.shape[0], 1.0 / x.shape[0]) if probabilities is None else np.asarray(probabilities, dtype=float)
    if p.shape != (x.shape[0],) or np.any(p < 0) or not math.isclose(p.sum(), 1.0, abs_tol=1e-10):
        raise ValueError(f"probabilities must be {x.shape[0]} non-negative numbers summing to 1")
    edges = _group_bounds(x.shape[0], groups)
    sums = [(x[lo:hi].T * p[lo:hi]) @ x[lo:hi].conj() for lo, hi in zip(edges[:-1], edges[1:])]
    masses = [float(p[lo:hi].sum()) for lo, hi in zip(edges[:-1], edges[1:])]
    return _moments_from_group_sums(sums, masses, x.shape[0])


def pack_unit_vectors(data) -> np.ndarray:
    """The client's x_hat for each real data vector [S, d] -> [S, ceil(d/2)] (analysis/givens.py packing).

    Bit for bit what complex_unit_vector gives row by row (each row's norm is taken the same way), with the division
    and packing done for all rows at once: row by row, the 60,000 MNIST training images took ~5 s of CPU."""
    data = np.asarray(data, dtype=np.float64)
    norms = np.array([np.linalg.norm(row) for row in data]) if data.ndim == 2 and data.size else None
    if norms is None or not np.all(np.isfinite(data)) or not np.all(norms > 0.0):
        return np.stack([complex_unit_vector(row) for row in data])  # what it refuses, it refuses as givens does
    padded = np.concatenate([data, np.zeros((data.shape[0], data.shape[1] % 2))], axis=1) / norms[:, None]
    return padded[:, 0::2] + 1j * padded[:, 1::2]


def data_second_moments(data, groups: int = DEFAULT_GROUPS) -> SecondMoments:
    """C of real data vectors [S, d] as the client sends them: packed two per complex mode, unit norm.

    Accumulated group by group, so the full MNIST training set never sits in memory as complex vectors.
    """
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"data must be [samples, values], got shape {data.shape}")
    n_samples = data.shape[0]
    edges = _group_bounds(n_samples, groups)
    sums, masses = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sums.append(_packed_outer_sum(data[lo:hi]) / n_samples)
        masses.append((hi - lo) / n_samples)
    return _moments_from_group_sums(sums, masses, n_samples)


def _packed_outer_sum(block) -> np.ndarray:
    """sum_j x_j x_j^H of the rows' packed unit vectors (pack_unit_vectors), in real arithmetic: with the unit rows
    P = [a_1 b_1 a_2 b_2 ...] (x = a + i b) and G = P^T P, the sum is G_aa + G_bb + i (G_ba - G_ab). One symmetric
    real product instead of a complex one, and no row-by-row norms: the MNIST training set's layer moments took
    ~3.3 s a layer that way, ~1.2 s this way (equal to 1e-15, tests/test_data_leakage_bound.py)."""
    real = np.asarray(block, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", real, real))
    if not (np.all(np.isfinite(real)) and np.all(norms > 0.0)):
        pack_unit_vectors(real)  # refuses as the client's normalisation does (givens.complex_unit_vector)
    rows = np.zeros((real.shape[0], real.shape[1] + real.shape[1] % 2))
    np.divide(real, norms[:, None], out=rows[:, :real.shape[1]])
    g = rows.T @ rows
    return (g[0::2, 0::2] + g[1::2, 1::2]) + 1j * (g[1::2, 0::2] - g[0::2, 1::2])


def layer_inputs(data, weights: Sequence[np.ndarray], layers: int | None = None) -> list[np.ndarray]:
    """Each layer's real input for data [S, 784]: the data, then ReLU(a W^T) as the noise-free network computes it.

    Bias-free ReLU layers are positively homogeneous, so the client's per-layer renormalisation does
    not change the direction x_hat; the noise-free activations stand in for the client's (docs/PHYSICS.md 17.3).
    `layers` keeps the first few (all by default).
    """
    count = len(weights) if layers is None else max(1, min(int(layers), len(weights)))
    inputs = [np.asarray(data)]
    for w in weights[:count - 1]:
        inputs.append(relu(inputs[-1] @ w.T))
    return inputs


def mnist_second_moments(split: str = "train", weights=None, groups: int = DEFAULT_GROUPS, data_dir=None,
                         limit: int | None = None, layers: int | None = None) -> list[SecondMoments]:
    """Per-layer C of MNIST (training images by default) under the network's normalisation, Normalize(0.5, 0.5).

    weights: the network's matrices (the shipped ones when None); `limit` keeps the first images only,
    `layers` the first layers only (the hidden layer costs a 60k x 784 x 784 product).
    Inputs that are exactly zero (a hidden layer with every unit off) cannot be normalised by the client
    and are left out.
    """
    images, _ = load_mnist(split, data_dir)
    if limit is not None:
        images = images[:int(limit)]
    if weights is None:
        weights, _ = load_weights()
    out = []
    for layer_data in layer_inputs(preprocess(images), weights, layers):
        nonzero = np.any(layer_data != 0.0, axis=1)
        out.append(data_second_moments(layer_data[nonzero], groups))
    return out


# --- the exact Holevo information of a finite candidate set -----------------------------------------

def k_copy_entropies_bits(x_hat, photon_numbers, probabilities=None) -> np.ndarray:
    """S_K = S(sum_j p_j (|x_j><x_j|)^(tensor K)) for each K, via the Gram matrix sqrt(p_i p_j) <x_i|x_j>^K."""
    x = np.asarray(x_hat, dtype=complex)
    p = _candidate_priors(probabilities, x.shape[0])
    overlaps, weights = _overlaps_and_weights(x, p)
    return np.array([_gram_entropy_bits(overlaps, weights, k) for k in np.asarray(photon_numbers, dtype=int).ravel()])


def _overlaps_and_weights(x, p):
    root = np.sqrt(p)
    return x.conj() @ x.T, root[:, None] * root[None, :]     # <x_i|x_j>, sqrt(p_i p_j)


def _gram_entropy_bits(overlaps, weights, k) -> float:
    gram = weights * overlaps ** int(k)
    return spectrum_entropy_bits(np.linalg.eigvalsh(0.5 * (gram + gram.conj().T)))


def _candidate_priors(probabilities, size) -> np.ndarray:
    if probabilities is None:
        return np.full(size, 1.0 / size)
    p = np.asarray(probabilities, dtype=float).ravel()
    if p.size != size or np.any(p < 0) or not math.isclose(p.sum(), 1.0, abs_tol=1e-10):
        raise ValueError(f"probabilities must be {size} non-negative numbers summing to 1")
    return p


def photon_number_pmf(photon_numbers, photons, rows: int) -> np.ndarray:
    """NB_M(K) = C(K + M - 1, K) N^K / (1 + N)^(K + M): total photons of M thermal copies of N each."""
    from scipy.stats import nbinom  # here, not at import: scipy.stats costs 0.6 s CPU to import (distribution_tails)

    return nbinom.pmf(np.asarray(photon_numbers), int(rows), 1.0 / (1.0 + float(photons)))


def finite_set_holevo_bits(x_hat, photons, rows: int, probabilities=None, tolerance: float = 1e-12) -> float:
    """chi(X; tau(x_hat)^(tensor M)) = sum_K NB_M(K) S_K for candidates x_hat [L, n] with priors p (docs/PHYSICS.md 17.4).

    Given each copy's photon number (independent of x) the state is pure, |x_hat>^(tensor K), so only
    overlaps enter. S_K never decreases with K and never exceeds H(p): once it is within `tolerance`
    of H(p) the remaining terms take H(p); photon numbers in either tail of total mass < tolerance are
    left out (error <= 2 tolerance H(p)).
    """
    x = np.asarray(x_hat, dtype=complex)
    if x.ndim != 2 or not np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-9):
        raise ValueError("x_hat must be [candidates, modes] unit vectors")
    p = _candidate_priors(probabilities, x.shape[0])
    rows = int(rows)
    n_photons = float(photons)
    if rows < 1 or n_photons < 0.0:
        raise ValueError(f"rows {rows}, photons {n_photons}: expected rows >= 1, photons >= 0")
    if n_photons == 0.0:
        return 0.0
    prior_entropy = spectrum_entropy_bits(p)
    from scipy.stats import nbinom  # see above

    dist = nbinom(rows, 1.0 / (1.0 + n_photons))
    k_lo = max(int(dist.ppf(tolerance)), 1)                 # S_0 = 0: the vacuum carries nothing
    k_hi = int(dist.isf(tolerance)) + 1
    total = 0.0
    overlaps, weights = _overlaps_and_weights(x, p)
    for k in range(k_lo, k_hi + 1):
        s_k = _gram_entropy_bits(overlaps, weights, k)
        if prior_entropy - s_k < tolerance:
            return float(total + dist.sf(k - 1) * prior_entropy)
        total += float(dist.pmf(k)) * s_k
    return float(total)
