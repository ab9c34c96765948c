"""Choose (mu, G): the least weight leakage for a target accuracy, or the best accuracy under caps.

In physics mode with fixed detector efficiency and electronic noise the client's estimate of each
product is its true value plus Gaussian noise whose size depends on (mu, G) only through the client
SNR F = client_snr(mu, G) (docs/PHYSICS.md 10.3). Accuracy is therefore a function of F alone: one
bisection in F, measured with the full physics model at common noise seeds, followed by a 1-D
optimisation over G of closed-form leakages, replaces a 2-D search. The chosen point is then
simulated in full (verification included) and reported with its measured accuracy.

What is minimised and capped is what a session reports (docs/PHYSICS.md 13.5): the verified bound at
stated conditions (T, verified samples, failure probability, the data's worst mode;
qslab.analysis.verified_planning.BoundConditions), not the nominal Eq. 2; the data-leakage cap applies
to the largest published form (the arXiv Cramer-Rao and the PRX form). The accuracy search runs on the
validation split of the training set (the network never trained on it), so the test set is only used
to report the chosen point, with other noise seeds.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq
from tqdm.auto import tqdm

from qslab.analysis import data_leakage
from qslab.analysis.client_measurement import client_snr
from qslab.analysis.network import photons_for_snr
from qslab.analysis.verified_planning import BoundConditions, expected_verified_bound_bits
from qslab.sequences.sweeps import physics_accuracy

N_MODES = 392
ROWS = 794  # rows reusing one data vector per query (784 + 10)
REFERENCE_GAIN = 1.3
GAIN_GRID = 1.0 + np.geomspace(1e-4, 1e2, 4000)
MU_RANGE = (1e-4, 1e5)


class Unreachable(ValueError):
    """No operating point satisfies the request."""


def snr_for_accuracy(target: float, images: int, seeds, weights_path=None, snr_range=(1e-2, 1e3), iterations: int = 14,
                     progress: bool = False) -> float:
    """Smallest client SNR F whose physics-mode accuracy reaches `target`, by bisection in log F.

    ``progress``: a bar over the 1 + ``iterations`` accuracy runs (each a physics pass over the validation images).
    """
    with tqdm(total=1 + iterations, desc="operating point: accuracy search", unit="run", disable=not progress) as bar:
        def acc(snr):
            mu = float(photons_for_snr(snr, REFERENCE_GAIN))
            accuracy = physics_accuracy(mu, REFERENCE_GAIN, images, tuple(seeds), weights_path, data="validation")
            bar.update(1)
            bar.set_postfix(snr=f"{snr:.3g}", accuracy=f"{accuracy:.4f}")
            return accuracy

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


def data_leakage_bits(gain) -> np.ndarray:
    """The largest published data-leakage form per data symbol (arXiv Cramer-Rao, PRX at ROWS reuses)."""
    return np.maximum(data_leakage.cramer_rao_arxiv_bits(gain, N_MODES), data_leakage.prx_bits(gain, N_MODES, ROWS))


def least_leakage_at_snr(snr: float, conditions: BoundConditions = BoundConditions()) -> tuple[float, float]:
    """(mu, G) with the least verified weight-leakage bound per mode among the points of client SNR `snr`."""
    mu = photons_for_snr(snr, GAIN_GRID)
    with np.errstate(all="ignore"):
        bits = expected_verified_bound_bits(mu, GAIN_GRID, conditions)
    best = int(np.nanargmin(bits))
    return float(mu[best]), float(GAIN_GRID[best])


def best_snr_under_caps(max_weight_bits: float, max_data_bits: float,
                        conditions: BoundConditions = BoundConditions(), progress: bool = False) -> tuple[float, float]:
    """(mu, G) with the highest client SNR whose verified weight-leakage bound (at `conditions`) and largest
    data-leakage form stay under the caps; ``progress``: a bar over the gains tried."""
    allowed = GAIN_GRID[data_leakage_bits(GAIN_GRID) <= max_data_bits]
    if allowed.size == 0:
        raise Unreachable(f"no gain keeps the data leakage under {max_data_bits:g} bit")
    best = (-np.inf, None, None)
    for gain in tqdm(allowed[::4], desc="operating point: gains under the caps", unit="gain", disable=not progress):
        mu = _largest_mu_under(max_weight_bits, gain, conditions)
        if mu is None:
            continue
        snr = float(client_snr(mu, gain))
        if snr > best[0]:
            best = (snr, mu, float(gain))
    if best[1] is None:
        raise Unreachable(f"no (mu, G) keeps the verified weight-leakage bound under {max_weight_bits:g} bit per mode "
                          f"at {conditions.describe()}")
    return best[1], best[2]


def _largest_mu_under(max_bits: float, gain: float, conditions: BoundConditions):
    def excess(log_mu):
        with np.errstate(all="ignore"):
            return float(expected_verified_bound_bits(np.exp(log_mu), gain, conditions)) - max_bits

    lo, hi = np.log(MU_RANGE[0]), np.log(MU_RANGE[1])
    if excess(lo) > 0:
        return None
    if excess(hi) <= 0:
        return MU_RANGE[1]
    return float(np.exp(brentq(excess, lo, hi, xtol=1e-12)))
