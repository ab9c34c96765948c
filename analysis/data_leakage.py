"""The paper's data-leakage estimates and the per-bin photon-counting figure (docs/PHYSICS.md 12). None is a bound.

The data enter the returned light only as excess noise: returned mode i has variance 1 + k|x_i|^2
(SNU) with k = 2 - 2/G, and the same x is reused by every row of a layer and by every query
(DECISIONS E). Here: the two published Cramer-Rao forms (the paper's Eq. 3 and its PRX form), which are
estimates, not bounds (a Cramer-Rao variance limit is not an information bound, and both treat the bins
as independent), and the information of per-bin photon counting, an achievable value for that one
measurement: it keeps each bin's marginal and drops the relative phases in which the data are written.
The upper bound on the joint returned state is analysis/data_leakage_bound.py (docs/PHYSICS.md 17).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, xlogy

LN2 = np.log(2.0)


def noise_coefficient(gain):
    """k = 2 - 2/G: excess noise per unit |x_i|^2 that an honest client adds to returned mode i."""
    return 2.0 - 2.0 / np.asarray(gain, dtype=float)


def cramer_rao_arxiv_bits(gain, n_modes=392, samples=None, data_magnitude=None):
    """The arXiv-era bound (Eq. 3, `CCRB1.m`), exactly as coded: bits per data symbol.

    Fisher information per sample I = 2 k^2 x^2 / (1 + k x^2)^4 (the code's fourth power of the
    variance), n_m samples, CRB variance 1/(n_m I), leakage 1/2 log2(1 + 2 x^2 / var). The paper
    takes x = 1/sqrt(n) and n_m = n; pass samples = rows * queries for the cumulative count.
    """
    k = noise_coefficient(gain)
    n = np.asarray(n_modes, dtype=float)
    x = 1.0 / np.sqrt(n) if data_magnitude is None else np.asarray(data_magnitude, dtype=float)
    n_m = n if samples is None else np.asarray(samples, dtype=float)
    fisher = 2.0 * k**2 * x**2 / (1.0 + k * x**2) ** 4
    return 0.5 * np.log2(1.0 + 2.0 * x**2 * n_m * fisher)


def prx_bits(gain, n_modes=392, rows=794):
    """The PRX-era form: 1/2 log2(1 + 4 (M/n)(G - 1)^2 / (G (3G - 2))), M rows reusing the data."""
    gain = np.asarray(gain, dtype=float)
    ratio = np.asarray(rows, dtype=float) / np.asarray(n_modes, dtype=float)
    return 0.5 * np.log2(1.0 + 4.0 * ratio * (gain - 1.0) ** 2 / (gain * (3.0 * gain - 2.0)))


def thermal_photons(gain, data, inversion_factor=1.0):
    """Mean thermal photons N_i = n_sp k |x_i|^2 / 2 the server sees in returned mode i (data normalised).

    n_sp = 1 is the quantum-limited amplifier of the paper; a real one (noise figure above the limit)
    returns n_sp times the noise, which tells the server more about |x_i| (loss on the way back, which
    would reduce it, is left out: an upper bound).
    """
    x = np.asarray(data)
    mag2 = np.abs(x) ** 2
    norm2 = np.sum(mag2, axis=-1, keepdims=True)
    return 0.5 * inversion_factor * noise_coefficient(gain) * mag2 / np.where(norm2 > 0, norm2, 1.0)


def exact_mutual_information_bits(gain, data, reuses, inversion_factor=1.0):
    """I(x_i; K): per-bin photon counting's information per data symbol (an achievable value for that measurement).

    Modelling each bin as an independent thermal state of N_i photons, per-bin photon counting gives,
    over M reuses, a negative-binomial count K ~ NB(M, 1/(1+N_i)). The true returned state is thermal in the
    single mode x_hat, with coherences between bins that this model drops, so a server measuring across bins
    learns more: this is not a bound (docs/PHYSICS.md 17.1, 17.6).
    The prior on x_i is the empirical distribution over the modes of this data vector (uniform over
    modes). Exact zeros (ReLU outputs) leak far more than Cramer-Rao forms suggest (docs/PHYSICS.md 12).
    """
    photons = np.ravel(thermal_photons(gain, data, inversion_factor))
    return mutual_information_counts_bits(photons, reuses)


def mutual_information_counts_bits(photons, reuses, probabilities=None):
    """I(N; K) for K ~ NegBin(M, 1/(1 + N)) and a discrete prior over the thermal photon numbers N."""
    photons = np.asarray(photons, dtype=float).ravel()
    if np.any(photons < 0) or not np.all(np.isfinite(photons)):
        raise ValueError("thermal photon numbers must be finite and non-negative")
    probs = np.full(photons.size, 1.0 / photons.size) if probabilities is None else np.asarray(probabilities, dtype=float)
    values, inverse = np.unique(np.round(photons, 15), return_inverse=True)
    weights = np.bincount(inverse, weights=probs, minlength=values.size)
    m = float(reuses)
    if m <= 0:
        raise ValueError(f"reuses must be a positive count, got {reuses}")
    counts = _count_support(values, m)
    log_pmf = _negbin_log_pmf(counts, m, values)
    pmf = np.exp(log_pmf)
    conditional = -np.sum(xlogy(pmf, pmf), axis=1) / LN2
    mixture = weights @ pmf
    marginal_entropy = -np.sum(xlogy(mixture, mixture)) / LN2
    return float(max(marginal_entropy - weights @ conditional, 0.0))


def _count_support(photons, reuses):
    mean = reuses * photons.max()
    sd = np.sqrt(reuses * photons.max() * (1.0 + photons.max()))
    return np.arange(int(np.ceil(mean + 40.0 * sd + 60.0)))


def _negbin_log_pmf(counts, reuses, photons):
    """log P(K = k) for K ~ NB(M, p = 1/(1 + N)); a point mass at 0 when N = 0."""
    n = photons[:, None]
    k = counts[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = (gammaln(k + reuses) - gammaln(reuses) - gammaln(k + 1.0)
                 + k * np.log(n) - (k + reuses) * np.log1p(n))
    vacuum = np.where(k == 0, 0.0, -np.inf)
    return np.where(n > 0, log_p, vacuum)


def per_symbol_and_cumulative(gain, n_modes=392, rows=794, queries=1):
    """Both published forms per data symbol per query and cumulated over rows x queries (DECISIONS E)."""
    return {
        "cramer_rao": float(cramer_rao_arxiv_bits(gain, n_modes)),
        "cramer_rao_cumulative": float(cramer_rao_arxiv_bits(gain, n_modes, samples=rows * queries)),
        "prx": float(prx_bits(gain, n_modes, rows)),
        "prx_cumulative": float(prx_bits(gain, n_modes, rows * queries)),
    }
