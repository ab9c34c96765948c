"""What a lab must be told, in plain words: which loss and which noise dominate the verified weight-leakage bound,
the T and eps a target needs at the current mu, and the largest mu that meets it at the measured T
(docs/PHYSICS.md 13.6; `qslab security-budget`).

Every figure here is the planned verified bound of analysis/verified_planning.py (finite size, failure
probability, the data's worst mode per layer, g(mu) cap) at the station's calibrated values: T at its lower
limit from the channel record, the amplifier's noise figure, mu at its upper limit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import brentq

from qslab.analysis.verified_planning import BoundConditions, expected_limits, expected_verified_bound_bits
from qslab.analysis.weight_leakage import holevo_verified_bits, modulation_variance_snu


@dataclass(frozen=True)
class LayerGuidance:
    """For one layer (its data's worst mode): the bound now, what a target needs, and what limits it."""

    layer: str
    mode_share: float
    bound_bits_per_mode: float
    loss_only_bits_per_mode: float       # at T_min with no excess noise at all
    noise_only_bits_per_mode: float      # at T = 1 with the expected eps_max at the worst mode
    transmittance_needed: float | None   # at the current mu; None: not even at T = 1
    excess_noise_needed_snu: float | None  # at the measured T; None: loss alone exceeds the target
    largest_mu: float | None             # at the measured T; None: not even at mu -> 0 (never: g(mu) -> 0)

    @property
    def dominant(self) -> str:
        return "loss" if self.loss_only_bits_per_mode >= self.noise_only_bits_per_mode else "excess noise"


def layer_guidance(layer: str, mu_photons: float, gain: float, target_bits: float,
                   conditions: BoundConditions) -> LayerGuidance:
    """The guidance for one layer; conditions.transmittance is the measured T (lower limit)."""
    at = lambda **changes: replace(conditions, **changes)  # noqa: E731
    bound = float(expected_verified_bound_bits(mu_photons, gain, conditions))
    _, eps_max = expected_limits(mu_photons, gain, conditions)
    worst_extra = 2.0 * conditions.inversion_factor * (1.0 - 1.0 / gain) * max(
        conditions.mode_share - 1.0 / conditions.modes, 0.0)
    v = modulation_variance_snu(mu_photons)
    loss_only = float(holevo_verified_bits(v, conditions.transmittance, 0.0))
    noise_only = float(holevo_verified_bits(v, 1.0, float(eps_max) + worst_extra))

    def over(transmittance):
        return float(expected_verified_bound_bits(mu_photons, gain, at(transmittance=transmittance))) - target_bits

    needed_t = None
    if over(1.0) <= 0.0:
        needed_t = 0.0 if over(1e-9) <= 0.0 else float(brentq(over, 1e-9, 1.0, xtol=1e-13))
    def over_eps(eps):
        return float(holevo_verified_bits(v, conditions.transmittance, eps)) - target_bits

    needed_eps = None  # eps_max at the worst mode; inf: any (chi_E saturates below the target)
    if over_eps(0.0) <= 0.0:
        needed_eps = float("inf") if over_eps(1e3) <= 0.0 else float(brentq(over_eps, 0.0, 1e3))

    def over_mu(log_mu):
        return float(expected_verified_bound_bits(np.exp(log_mu), gain, conditions)) - target_bits

    largest_mu = None
    if over_mu(np.log(1e-8)) <= 0.0:
        largest_mu = 1e4 if over_mu(np.log(1e4)) <= 0.0 else float(np.exp(brentq(over_mu, np.log(1e-8), np.log(1e4),
                                                                                    xtol=1e-10)))
    return LayerGuidance(layer, conditions.mode_share, bound, loss_only, noise_only, needed_t, needed_eps, largest_mu)


def transmittance_db(transmittance: float) -> float:
    return float(-10.0 * np.log10(transmittance))


def plain_words(guidance: LayerGuidance, mu_photons: float, target_bits: float, transmittance: float,
                accuracy_at_largest_mu: float | None = None) -> list[str]:
    """The guidance for one layer as sentences a lab can act on."""
    g = guidance
    lines = [f"{g.layer} (its data put up to {100 * g.mode_share:.2g} % of |x|^2 on one mode): the verified bound at "
             f"mu = {mu_photons:.4g} and T = {transmittance:.4g} is {g.bound_bits_per_mode:.4g} bit/mode. "
             f"{g.dominant.capitalize()} dominates: loss alone gives {g.loss_only_bits_per_mode:.4g}, the excess noise "
             f"alone (amplifier and finite size, at T = 1) {g.noise_only_bits_per_mode:.4g} bit/mode."]
    if g.transmittance_needed is None:
        lines.append(f"  A verified {target_bits:g} bit/mode at mu = {mu_photons:.4g} is out of reach even at T = 1: the "
                     "excess noise at this layer's worst mode alone exceeds it; lower mu or G.")
    else:
        lines.append(f"  A verified {target_bits:g} bit/mode at mu = {mu_photons:.4g} needs T >= "
                     f"{g.transmittance_needed:.6g}, i.e. at most {transmittance_db(g.transmittance_needed):.3g} dB "
                     "round trip including both processor passes.")
    if g.excess_noise_needed_snu is None:
        lines.append(f"  At the measured T no excess noise is low enough: loss alone gives "
                     f"{g.loss_only_bits_per_mode:.4g} bit/mode.")
    else:
        lines.append(f"  At the measured T it needs eps_max <= {g.excess_noise_needed_snu:.3g} SNU (finite size "
                     "included).")
    if g.largest_mu is not None:
        buys = "" if accuracy_at_largest_mu is None else (
            f", where the network reaches about {100 * accuracy_at_largest_mu:.0f} % (validation images)")
        lines.append(f"  At the measured T the largest mu meeting {target_bits:g} bit/mode is {g.largest_mu:.3g}"
                     f" photons/mode{buys}.")
    return lines
