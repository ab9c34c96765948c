"""The verified weight-leakage bound a run can expect, before it runs (docs/PHYSICS.md 13.5).

The session reports chi_E at its verification's finite-size limits and at its worst mode (DECISIONS F,
J, P); an operating point chosen on the nominal Eq. 2 (T = 1, no finite size, average mode) promises a
number the session can never report. `BoundConditions` states what the planned figure assumes: the
round-trip T, the verified samples per layer, the failure probability, the data's largest per-mode share
and the amplifier's inversion factor; `expected_verified_bound_bits` is the bound at the limits an honest
client's statistics give at their expected values (the same exact Student-t and chi-square quantiles as
analysis/verification.py), capped by g(mu).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from qslab.analysis.distribution_tails import chi2_ppf, student_t_isf
from qslab.analysis.weight_leakage import holevo_verified_bits, modulation_variance_snu, unverified_bound_bits

DEFAULT_SAMPLES = 842_800  # layer 1's verified samples in a default 200-image session (1 % of 784 rows)


@dataclass(frozen=True)
class BoundConditions:
    """What a planned verified bound assumes (all stated in the report)."""

    transmittance: float = 1.0           # round-trip T, server output to server detector
    samples: int = DEFAULT_SAMPLES       # verified samples of the layer
    failure_probability: float = 1e-10   # the whole report's
    limits: int = 4                      # limits sharing it (T and eps of two layers)
    mode_share: float = 1.0 / 392        # max_i |x_i|^2/|x|^2 of the data (1/n: a flat vector, the average mode)
    modes: int = 392
    inversion_factor: float = 1.0        # the amplifier's n_sp (1: quantum limited)

    def describe(self) -> str:
        return (f"T = {self.transmittance:g}, {self.samples:g} verified samples, failure probability "
                f"{self.failure_probability:g}, largest data share per mode {self.mode_share:.3g}, n_sp "
                f"{self.inversion_factor:.3g}")

    def to_json(self) -> dict:
        return asdict(self)


def expected_limits(mu_photons, gain, conditions: BoundConditions):
    """(T_min, eps_max) at the expected statistics of an honest client (ideal detector), each limit at its share."""
    mu = np.asarray(mu_photons, dtype=float)
    gain = np.asarray(gain, dtype=float)
    tail = conditions.failure_probability / conditions.limits
    dof = conditions.samples - 1.0
    eps = 2.0 * conditions.inversion_factor * (1.0 - 1.0 / gain) / conditions.modes
    variance = 1.0 + eps
    amplitude = np.sqrt(conditions.transmittance) - student_t_isf(tail, dof) * np.sqrt(
        variance / (conditions.samples * 2.0 * mu))
    t_min = np.clip(amplitude, 0.0, None) ** 2
    eps_max = dof * variance / chi2_ppf(tail, dof) - 1.0
    return t_min, eps_max


def expected_verified_bound_bits(mu_photons, gain, conditions: BoundConditions):
    """chi_E per complex mode at the expected limits and the worst mode, capped by g(mu)."""
    t_min, eps_max = expected_limits(mu_photons, gain, conditions)
    gain = np.asarray(gain, dtype=float)
    worst = eps_max + 2.0 * conditions.inversion_factor * (1.0 - 1.0 / gain) * max(
        conditions.mode_share - 1.0 / conditions.modes, 0.0)
    bound = holevo_verified_bits(modulation_variance_snu(mu_photons), np.minimum(t_min, 1.0), worst)
    return np.minimum(bound, unverified_bound_bits(mu_photons))
