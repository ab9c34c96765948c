"""Choose (mu, G): the least weight leakage for a target accuracy, or the best accuracy under caps.

In physics mode with fixed detector efficiency and electronic noise the client's estimate of each
product is its true value plus Gaussian noise whose size depends on (mu, G) only through the client
SNR F = client_snr(mu, G) (docs/PHYSICS.md 10.3). Accuracy is therefore a function of F alone: one
bisection in F, measured with the full physics model at common noise seeds, followed by a 1-D
optimisation over G of closed-form leakages, replaces a 2-D search. The chosen point is then
simulated in full (verification included) and reported with its measured accuracy.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from qslab.analysis import data_leakage, weight_leakage
from qslab.analysis.client_measurement import client_snr
from qslab.analysis.network import photons_for_snr
from qslab.sequences.sweeps import physics_accuracy

N_MODES = 392
REFERENCE_GAIN = 1.3
GAIN_GRID = 1.0 + np.geomspace(1e-4, 1e2, 4000)
MU_RANGE = (1e-4, 1e5)


class Unreachable(ValueError):
    """No operating point satisfies the request."""


def snr_for_accuracy(target: float, images: int, seeds, weights_path=None, snr_range=(1e-2, 1e3), iterations: int = 14) -> float:
    """Smallest client SNR F whose physics-mode accuracy reaches `target`, by bisection in log F."""
    def acc(snr):
        mu = float(photons_for_snr(snr, REFERENCE_GAIN))
        return physics_accuracy(mu, REFERENCE_GAIN, images, tuple(seeds), weights_path)

    lo, hi = np.log(snr_range[0]), np.log(snr_range[1])
    best = acc(np.exp(hi))
    if best < target:
        raise Unreachable(f"target accuracy {target:.4f} is not reached even at client SNR {snr_range[1]:g} "
                          f"(accuracy {best:.4f}); lower the target or retrain the network")
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if acc(np.exp(mid)) >= target:
            hi = mid
        else:
            lo = mid
    return float(np.exp(hi))


def least_leakage_at_snr(snr: float) -> tuple[float, float]:
    """(mu, G) with the least weight leakage per mode among the points of client SNR `snr`."""
    mu = photons_for_snr(snr, GAIN_GRID)
    bits = weight_leakage.weight_leakage_bits_per_mode(mu, GAIN_GRID, N_MODES)
    best = int(np.nanargmin(bits))
    return float(mu[best]), float(GAIN_GRID[best])


def best_snr_under_caps(max_weight_bits: float, max_data_bits: float) -> tuple[float, float]:
    """(mu, G) with the highest client SNR whose weight leakage and Cramer-Rao data leakage stay under the caps."""
    allowed = GAIN_GRID[data_leakage.cramer_rao_arxiv_bits(GAIN_GRID, N_MODES) <= max_data_bits]
    if allowed.size == 0:
        raise Unreachable(f"no gain keeps the data leakage under {max_data_bits:g} bit")
    best = (-np.inf, None, None)
    for gain in allowed[::4]:
        mu = _largest_mu_under(max_weight_bits, gain)
        if mu is None:
            continue
        snr = float(client_snr(mu, gain))
        if snr > best[0]:
            best = (snr, mu, float(gain))
    if best[1] is None:
        raise Unreachable(f"no (mu, G) keeps the weight leakage under {max_weight_bits:g} bit per mode")
    return best[1], best[2]


def _largest_mu_under(max_bits: float, gain: float):
    def excess(log_mu):
        return float(weight_leakage.weight_leakage_bits_per_mode(np.exp(log_mu), gain, N_MODES)) - max_bits

    lo, hi = np.log(MU_RANGE[0]), np.log(MU_RANGE[1])
    if excess(lo) > 0:
        return None
    if excess(hi) <= 0:
        return MU_RANGE[1]
    return float(np.exp(brentq(excess, lo, hi, xtol=1e-12)))
