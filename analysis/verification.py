"""Server-side verification of the client's round trip (docs/PHYSICS.md 10.1, DECISIONS G and J).

Why this module exists: the weight-leakage bound chi_E(V, T, eps) is only as good as the (T, eps)
put into it. The server therefore (1) estimates T and eps from the modes it homodynes on its secret
random rows and quadratures, (2) certifies a lower limit T_min and an upper limit eps_max at failure
probability eps_PE, (3) evaluates the bound at those limits, and (4) decides accept/abort with a
hypothesis test whose false-alarm probability and power are computed, not guessed.

Measurement model (homodyne, SNU, docs/PHYSICS.md 0)
----------------------------------------------------
Row r is verified in quadrature X or P (secret). Mode i carried alpha_i, so the sent quadrature is
q = 2 Re alpha (X) or q = 2 Im alpha (P); with a symmetric Gaussian modulation of mu photons per
complex mode Var(q) = V_A = 2 mu. The returned mode has mean sqrt(T) alpha and variance 1 + eps_i
(eps output-referred, b = T(V - 1) + 1 + eps). The server's detector (efficiency eta_s, electronic
noise v_el, both in SNU after its own shot-noise calibration) records

    y = sqrt(eta_s T) q + N(0, 1 + v_el + eta_s eps_i).

Homodyne, not heterodyne: no 1/sqrt(2) on the signal and shot noise 1, not 2 (QOSST's estimator
carries both; docs/PHYSICS.md 13). Estimators, pooled over all verified rows and modes (m samples):

    t_hat   = sum(q y) / sum(q^2)                        (estimates sqrt(eta_s T))
    s^2     = sum((y - t_hat q)^2) / (m - 1)             (estimates 1 + v_el + eta_s <eps>)
    T_hat   = t_hat^2 / eta_s
    eps_hat = (s^2 - 1 - v_el) / eta_s

s^2 divides by m - 1 because one parameter (t_hat) was fitted: E[s^2] = 1 + v_el + eta_s <eps>
exactly, also when eps_i differs between samples. T_hat = t_hat^2 has an O(1/m) bias
+s^2/(eta_s sum q^2), a factor ~1/(2 sqrt(m V_A)) of its own standard deviation (negligible).

Trusted vs untrusted detector (docs/PHYSICS.md 13): `ServerDetector.trusted=True` (default) refers
the estimates back through eta_s and v_el from calibration. `trusted=False` charges the detector to
the client: T is then eta_s T and eps is eta_s eps + v_el (the same formulas with eta_s = 1, v_el = 0).

Finite-size limits (DECISIONS J)
--------------------------------
Convention (docs/PHYSICS.md 13): the total failure probability eps_PE (default 1e-10) is split by a union
bound into eps_PE/2 for T_min and eps_PE/2 for eps_max, so the normal-approximation factor is
z = Phi^-1(1 - eps_PE/2) = sqrt(2) erfinv(1 - eps_PE) (the homCVQKD convention; 6.466951 at 1e-10).
The default method "exact" replaces z by the exact sampling distributions, valid at any m >= 2:

    t_min   = t_hat - t_{nu}(1 - eps_PE/2) * s / sqrt(sum q^2)     (Student t)
    var_max = nu s^2 / chi2_{nu}(eps_PE/2)                         (chi-square lower quantile)

Given q, the regression t_hat ~ N(t, sigma^2 / sum q^2) and (m - 1) s^2 / sigma^2 ~ chi2_{m-1} are
exact and independent for homogeneous Gaussian noise. Conditioning on the actual sum q^2 (known to
the server) makes Leverrier's Delta t = z sqrt(sigma^2/(m V_A)) exact; Ruppert's extra 2 t^2/m term belongs
to the estimator normalised by the nominal V_A instead (Var(sum q y/(m V_A)) = 2 t^2/m + sigma^2/(m V_A)
for Gaussian q), which we do not use. Both
literature forms ("leverrier", "ruppert": Delta var = z s^2 sqrt(2/m)) are available for
comparison. At m = 10 the z s^2 sqrt(2/m) form misses eps 14 % of the time at nominal 2.5 %, and
normal z for t misses 3.4 %; "ruppert" never missed T (its 2 t^2/m term dwarfs sigma^2/sum q^2 when
V_A = 12), i.e. it is valid but needlessly loose for this estimator.

Heterogeneous noise. The honest per-mode excess noise is (2 - 2/G)|x_i|^2 (secret x), and a cheater
may add noise to a few modes only. Pooled, s^2 is still unbiased for the mean, but sum n_i^2 is a
weighted chi-square with variance 2 sum sigma_i^4 = 2 m <sigma^2>^2 (1 + kappa), where kappa is the
squared coefficient of variation of the per-sample noise variance. Equal-weight chi-square quantiles
are then anti-conservative. Both quantiles use Satterthwaite's effective degrees of freedom
nu = (m - 1)/(1 + kappa), with kappa from the residual kurtosis of a Gaussian scale mixture,
kappa = <r^4>/(3 <r^2>^2) - 1 (clipped at 0). The point estimate is not enough: when the few heavy
samples come out small, s^2 and kappa_hat drop together. The default (`dispersion="upper"`) raises
<r^4> by z standard errors at the same tail. Misses of eps_max at nominal 2.5 % (2000 runs, 5 rows x
392 modes, extra noise on a fraction of the modes):

    extra noise on modes     kappa = 0 (plain chi2)   kappa point   kappa upper (default)
    none (m = 2000)          3.1 %                    2.9 %         2.2 %
    5 % of modes, +2 SNU     2.8 %                    2.5 %         1.7 %
    2 % of modes, +10 SNU    6.6 %                    3.6 %         2.1 %
    1 % of modes, +20 SNU    9.1 %                    4.9 %         2.4 %

The cost at eps_PE = 1e-10 for homogeneous noise: eps_max - eps_hat is ~10 % wider at m = 1e4 and
~1 % at m = 1e6. A known bound (a number, e.g. 0 for homogeneous noise: exact chi-square) can be
passed instead. No data-driven interval survives noise concentrated in a handful of samples (e.g.
+40 SNU on 5 samples still misses ~4.7 %). That limitation is stated, not solved: such a client is
far from honest (honest kappa <= 5e-4) and a dispersion test could flag it (not implemented).

Calibration uncertainties feed the limits worst-case (docs/PHYSICS.md 13): eta_s +/- d_eta,
v_el +/- d_v, and a relative shot-noise (SNU) error d_sn (y_true = y / sqrt(1 + d), |d| <= d_sn).
Their own failure probabilities add to eps_PE.

Bound: chi_E(V = 2 mu + 1, min(T_min, 1), max(eps_max, 0)) per complex mode and half per real weight
(DECISIONS D), with mu the upper confidence limit of the photon number if given. chi_E is decreasing
in T on the physical region T <= 1 + eps/2, increasing in eps and in V (checked in the tests), so
the clipping only raises the bound.

Accept/abort: a hypothesis test, not a tolerance
------------------------------------------------
Null H0 (honest client): T >= T0, mean eps <= eps0 = (2G - 2)/(G n), per-mode eps_i <= 2 - 2/G (so the
spread of eps_i over samples is at most eps0 (2 - 2/G) - eps0^2). Accept iff

    t_hat >= t_crit   and   s^2 <= var_crit,

with t_crit and var_crit the alpha_T and alpha_var quantiles of the honest sampling distributions,
alpha_T = alpha_var = 1 - sqrt(1 - alpha). t_hat and s^2 are independent, so the false-alarm
probability is exactly alpha at the least favourable honest point (calibration errors at their
worst, Satterthwaite dof at the honest spread bound) and smaller for every other honest client.
The test uses the point estimates, not the 1e-10 limits: testing "eps_max <= eps0 + tol" would need
a tolerance ~ z sqrt(2/m) just to let honest clients through, and would hide the power. Security does
not rest on the test: the bound at (T_min, eps_max) is reported for every run, accepted or not.
`rejection_probability` gives the power against any alternative, e.g. a 5 % tap
(`ChannelHypothesis.tap`) or intercept-resend on a fraction f of the modes (+2 SNU on those modes,
`ChannelHypothesis.intercept_resend`).

Sample sizes (`samples_for_power`; honest G = 1.3, n = 392 modes per row, mu = 6, T0 = 1,
false alarm 1e-3, power 0.99; m = verified rows x modes):

    alternative                      ideal detector: m (rows)    eta_s = 0.7, v_el = 0.01: m (rows)
    5 % tap (T = 0.95)               4.1e3 (11)                  5.9e3 (16)
    intercept-resend f = 5 %         7.4e3 (19)                  1.5e4 (37)
    eps + 1e-2 SNU                   6.4e5 (1.6e3)               1.3e6 (3.4e3)
    eps + 1e-3 SNU (= I-R f = 5e-4)  6.3e7 (1.6e5)               1.3e8 (3.4e5)
    eps + 1e-4 SNU                   6.3e9 (1.6e7)               1.3e10 (3.4e7)

Loss is cheap to detect (the signal V_A = 12 beats the noise); noise is not: m ~ 2 (z_{a'} + z_b)^2 /
(eta_s d_eps)^2 with a' = 1 - sqrt(1 - a). Certifying eps_max - eps_hat <= d at eps_PE = 1e-10 needs
8.5e5 / 8.3e7 / 7.9e9 samples for d = 1e-2 / 1e-3 / 1e-4 SNU (`samples_for_excess_noise_precision`);
the honest eps ~ 1.2e-3 is therefore only resolved with ~1e8 verified samples, and the SNU must be
calibrated to ~1e-4 relative or d_sn dominates eps_max (docs/PHYSICS.md 13).

Assumptions: collective Gaussian attacks (noise Gaussian and independent between samples, possibly
heterogeneous); phase-insensitive returned noise (the quadrature choice is secret, so one pooled
estimate serves X and P); the server's q are its own exactly known symbols.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from qslab.analysis.distribution_tails import chi2_cdf, chi2_isf, chi2_ppf, normal_isf, normal_sf, student_t_isf
from qslab.analysis.weight_leakage import holevo_verified_bits, honest_excess_noise_snu, modulation_variance_snu

DEFAULT_FAILURE_PROBABILITY = 1e-10
DEFAULT_FALSE_ALARM = 1e-3
INTERCEPT_RESEND_NOISE_SNU = 2.0  # heterodyne-and-resend adds two vacuum units to the measured mode
METHODS = ("exact", "leverrier", "ruppert")


# --- validation (used by the dataclasses below) ---------------------------------------------------

def _require(condition, name, message):
    if not condition:
        raise ValueError(f"{name} {message}")


def _check_probability(p, name):
    _require(np.ndim(p) == 0 and 0.0 < float(p) < 1.0, name, f"must be a probability in (0, 1), got {p!r}")


# --- inputs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerDetector:
    """The server's verification homodyne, from its own calibration (SNU).

    The uncertainties are half-widths at the confidence used for the limits; they enter worst-case.
    """

    efficiency: float = 1.0
    electronic_noise_snu: float = 0.0
    trusted: bool = True
    efficiency_uncertainty: float = 0.0
    electronic_noise_uncertainty_snu: float = 0.0
    shot_noise_rel_uncertainty: float = 0.0

    def __post_init__(self):
        _require(0.0 < self.efficiency <= 1.0, "efficiency", "must lie in (0, 1]")
        _require(self.electronic_noise_snu >= 0.0, "electronic_noise_snu", "is a variance, must be >= 0")
        _require(0.0 <= self.efficiency_uncertainty < self.efficiency, "efficiency_uncertainty",
                 "must lie in [0, efficiency)")
        _require(self.electronic_noise_uncertainty_snu >= 0.0, "electronic_noise_uncertainty_snu", "must be >= 0")
        _require(0.0 <= self.shot_noise_rel_uncertainty < 1.0, "shot_noise_rel_uncertainty", "must lie in [0, 1)")

    @property
    def efficiency_bounds(self) -> tuple[float, float]:
        """Physical (eta_lo, eta_hi), capped at 1."""
        return (self.efficiency - self.efficiency_uncertainty,
                min(self.efficiency + self.efficiency_uncertainty, 1.0))

    @property
    def electronic_noise_bounds_snu(self) -> tuple[float, float]:
        """Physical (v_el_lo, v_el_hi), floored at 0."""
        return (max(self.electronic_noise_snu - self.electronic_noise_uncertainty_snu, 0.0),
                self.electronic_noise_snu + self.electronic_noise_uncertainty_snu)


@dataclass(frozen=True)
class ChannelHypothesis:
    """A round trip: T, mean output-referred eps, and the spread Var_i(eps_i) over samples (SNU^2)."""

    transmittance: float
    excess_noise_snu: float
    excess_noise_spread_snu2: float = 0.0

    def __post_init__(self):
        _require(self.transmittance >= 0.0, "transmittance", "must be >= 0")
        _require(self.excess_noise_spread_snu2 >= 0.0, "excess_noise_spread_snu2", "is a variance, must be >= 0")

    @classmethod
    def honest(cls, gain, n_modes, transmittance=1.0) -> "ChannelHypothesis":
        """Honest client: eps = (2G - 2)/(G n); per-mode eps_i in [0, 2 - 2/G] bounds the spread.

        Loss placed after the client's amplifier would lower eps; using the unscaled value keeps the
        false-alarm probability an upper bound.
        """
        _require(gain >= 1.0, "gain", "must be >= 1")
        _require(n_modes >= 1, "n_modes", "must be >= 1")
        eps = float(honest_excess_noise_snu(gain, n_modes))
        spread = max(eps * (2.0 - 2.0 / gain) - eps * eps, 0.0)
        return cls(float(transmittance), eps, spread)

    def tap(self, fraction) -> "ChannelHypothesis":
        """The client keeps `fraction` of the returned light (a pure loss, before its noise)."""
        _require(0.0 <= fraction <= 1.0, "fraction", "must lie in [0, 1]")
        return ChannelHypothesis(self.transmittance * (1.0 - fraction), self.excess_noise_snu,
                                 self.excess_noise_spread_snu2)

    def intercept_resend(self, fraction, added_noise_snu=INTERCEPT_RESEND_NOISE_SNU) -> "ChannelHypothesis":
        """The client measures a fraction f of the modes and resends: +added noise on those modes."""
        _require(0.0 <= fraction <= 1.0, "fraction", "must lie in [0, 1]")
        return ChannelHypothesis(self.transmittance, self.excess_noise_snu + fraction * added_noise_snu,
                                 self.excess_noise_spread_snu2 + fraction * (1.0 - fraction) * added_noise_snu**2)

    def with_extra_noise(self, extra_snu) -> "ChannelHypothesis":
        """Extra homogeneous excess noise on every mode."""
        return ChannelHypothesis(self.transmittance, self.excess_noise_snu + extra_snu, self.excess_noise_spread_snu2)


def sent_quadratures_snu(alpha, measure_p):
    """q = 2 Re alpha (X rows) or 2 Im alpha (P rows); alpha (..., rows, modes), measure_p (..., rows)."""
    alpha = np.asarray(alpha)
    measure_p = np.asarray(measure_p, dtype=bool)
    _require(alpha.ndim >= 2, "alpha", f"must be (rows, modes), got shape {alpha.shape}")
    _require(measure_p.shape == alpha.shape[:-1], "measure_p",
             f"shape {measure_p.shape} must equal alpha's row shape {alpha.shape[:-1]}")
    return np.where(measure_p[..., None], 2.0 * alpha.imag, 2.0 * alpha.real)


# --- point estimates ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ChannelEstimate:
    """Sufficient statistics and point estimates; array fields carry any batch shape."""

    amplitude_transmittance: np.ndarray  # t_hat, detector scale: sqrt(eta_s T)
    residual_variance_snu: np.ndarray    # s^2 with m - 1 degrees of freedom
    sum_sq_sent_snu2: np.ndarray         # sum q^2
    n_samples: int
    mean_sq_residual_snu2: np.ndarray    # <r^2>
    mean_fourth_residual_snu4: np.ndarray  # <r^4>
    se_fourth_residual_snu4: np.ndarray  # standard error of <r^4>
    transmittance: np.ndarray            # T_hat (referred)
    excess_noise_snu: np.ndarray         # eps_hat (referred)


def amplitude_transmittance(sent_snu, returned_snu, axis=-1):
    """t_hat = sum(q y)/sum(q^2): least squares through the origin, since the mean of y is t q."""
    sent_snu = np.asarray(sent_snu, dtype=np.float64)
    return np.sum(sent_snu * returned_snu, axis=axis) / np.sum(sent_snu**2, axis=axis)


def residuals_snu(sent_snu, returned_snu, t_hat, axis=-1):
    """r = y - t_hat q, with t_hat broadcast back over the pooled axes."""
    return returned_snu - np.expand_dims(t_hat, _normalised_axes(axis, np.ndim(sent_snu))) * sent_snu


def residual_variance_snu(residuals, axis=-1):
    """s^2 = sum r^2/(m - 1): unbiased for the mean noise variance after fitting t_hat."""
    return np.sum(residuals**2, axis=axis) / (_count(residuals, axis) - 1)


def noise_dispersion(estimate: "ChannelEstimate", z=0.0):
    """kappa = max(0, <r^4>/(3 <r^2>^2) - 1), the spread of a Gaussian scale mixture (0 if homogeneous).

    z > 0 raises <r^4> by z standard errors: an upper confidence limit, needed because a few
    heavy-noise samples that happen to come out small lower s^2 and kappa_hat together.
    """
    fourth = estimate.mean_fourth_residual_snu4 + z * estimate.se_fourth_residual_snu4
    return np.clip(fourth / (3.0 * estimate.mean_sq_residual_snu2**2) - 1.0, 0.0, None)


def referred_transmittance(amplitude, detector: ServerDetector, efficiency=None):
    """T = t^2 / eta_s (trusted) or t^2 (untrusted: the detector's loss is charged to the client)."""
    eta = (detector.efficiency if efficiency is None else efficiency) if detector.trusted else 1.0
    return np.asarray(amplitude) ** 2 / eta


def referred_excess_noise_snu(variance_snu, detector: ServerDetector, efficiency=None, electronic_noise_snu=None):
    """eps = (var - 1 - v_el)/eta_s (trusted) or var - 1 (untrusted: v_el counts as excess noise)."""
    if not detector.trusted:
        return np.asarray(variance_snu) - 1.0
    eta = detector.efficiency if efficiency is None else efficiency
    v_el = detector.electronic_noise_snu if electronic_noise_snu is None else electronic_noise_snu
    return (np.asarray(variance_snu) - 1.0 - v_el) / eta


def remove_previous_symbol(sent_snu, returned_snu) -> tuple[np.ndarray, float]:
    """y - b q_prev on samples in capture order: the receiver chain's memory of the previous symbol.

    The detector and digitizer bandwidth leave a fraction b of each symbol in the next one's matched
    filter output; the server knows every symbol it sent, so it fits b jointly with t (least squares)
    and removes it, instead of charging it to the client as excess noise. A client cannot hide behind
    it: b only takes out what the server's own previous symbol explains.
    """
    q = np.asarray(sent_snu, dtype=np.float64).ravel()
    y = np.asarray(returned_snu, dtype=np.float64).ravel()
    if q.size < 3:
        return y, 0.0
    previous = np.concatenate([[0.0], q[:-1]])
    # pairwise sums (np.sum), not BLAS dots, whose error grows with the ~1e7 samples of a long session
    qp = np.sum(q * previous)
    gram = np.array([[np.sum(q * q), qp], [qp, np.sum(previous * previous)]])
    _, b = np.linalg.solve(gram, np.array([np.sum(q * y), np.sum(previous * y)]))
    return y - b * previous, float(b)


def estimate_channel(sent_quadratures_snu, returned_quadratures_snu, detector: ServerDetector = ServerDetector(),
                     axis=-1) -> ChannelEstimate:
    """Pool the verified samples over `axis` (int or tuple; other axes are a batch) and estimate T, eps."""
    q, y = _validated_pair(sent_quadratures_snu, returned_quadratures_snu, axis)
    t_hat = amplitude_transmittance(q, y, axis)
    res = residuals_snu(q, y, t_hat, axis)
    s2 = residual_variance_snu(res, axis)
    r2 = res**2
    r4 = r2 * r2
    return ChannelEstimate(
        amplitude_transmittance=t_hat,
        residual_variance_snu=s2,
        sum_sq_sent_snu2=np.sum(q**2, axis=axis),
        n_samples=_count(q, axis),
        mean_sq_residual_snu2=np.mean(r2, axis=axis),
        mean_fourth_residual_snu4=np.mean(r4, axis=axis),
        se_fourth_residual_snu4=np.std(r4, axis=axis, ddof=1) / np.sqrt(_count(q, axis)),
        transmittance=referred_transmittance(t_hat, detector),
        excess_noise_snu=referred_excess_noise_snu(s2, detector),
    )


# --- finite-size limits -------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfidenceLimits:
    """One-sided limits, each failing with probability failure_probability/2 (union bound)."""

    transmittance_min: np.ndarray
    excess_noise_max_snu: np.ndarray
    amplitude_min: np.ndarray       # detector scale, before calibration worst case
    variance_max_snu: np.ndarray    # detector scale, before calibration worst case
    effective_dof: np.ndarray
    z: float
    failure_probability: float
    method: str


def z_from_failure(failure_probability=DEFAULT_FAILURE_PROBABILITY):
    """z = Phi^-1(1 - eps_PE/2) = sqrt(2) erfinv(1 - eps_PE): each one-sided limit fails w.p. eps_PE/2."""
    _check_probability(failure_probability, "failure_probability")
    return float(normal_isf(0.5 * failure_probability))


def effective_dof(n_samples, dispersion):
    """Satterthwaite: nu = (m - 1)/(1 + kappa) matches the variance of a weighted chi-square."""
    return (n_samples - 1.0) / (1.0 + np.asarray(dispersion, dtype=float))


def amplitude_lower_limit(estimate: ChannelEstimate, tail, dof, method="exact"):
    """t_min on the detector scale; `tail` is the one-sided failure probability."""
    s = np.sqrt(estimate.residual_variance_snu)
    sd_t = s / np.sqrt(estimate.sum_sq_sent_snu2)
    if method == "exact":
        return estimate.amplitude_transmittance - student_t_isf(tail, dof) * sd_t
    z = normal_isf(tail)
    if method == "leverrier":
        return estimate.amplitude_transmittance - z * sd_t
    extra = 2.0 * estimate.amplitude_transmittance**2 / estimate.n_samples
    return estimate.amplitude_transmittance - z * np.sqrt(sd_t**2 + extra)


def variance_upper_limit_snu(estimate: ChannelEstimate, tail, dof, method="exact"):
    """var_max on the detector scale: exact scaled chi-square, or s^2 (1 + z sqrt(2/m)) asymptotically."""
    s2 = estimate.residual_variance_snu
    if method == "exact":
        return dof * s2 / chi2_ppf(tail, dof)
    return s2 * (1.0 + normal_isf(tail) * np.sqrt(2.0 / estimate.n_samples))


def confidence_limits(estimate: ChannelEstimate, detector: ServerDetector = ServerDetector(),
                      failure_probability=DEFAULT_FAILURE_PROBABILITY, method="exact",
                      dispersion="upper") -> ConfidenceLimits:
    """T_min and eps_max, with the calibration uncertainties of `detector` applied worst-case.

    dispersion: "upper" (default) uses the upper confidence limit of kappa at the same tail,
    "point" the point estimate, a number >= 0 a known bound (0: homogeneous noise, exact chi-square).
    """
    z = z_from_failure(failure_probability)
    _require(method in METHODS, "method", f"must be one of {METHODS}, got {method!r}")
    tail = 0.5 * failure_probability
    dof = effective_dof(estimate.n_samples, _dispersion_for_limits(estimate, dispersion, tail))
    t_min = amplitude_lower_limit(estimate, tail, dof, method)
    var_max = variance_upper_limit_snu(estimate, tail, dof, method)
    return ConfidenceLimits(
        transmittance_min=_worst_transmittance(t_min, detector),
        excess_noise_max_snu=_worst_excess_noise_snu(var_max, detector),
        amplitude_min=t_min,
        variance_max_snu=var_max,
        effective_dof=dof,
        z=z,
        failure_probability=float(failure_probability),
        method=method,
    )


def _dispersion_for_limits(estimate: ChannelEstimate, dispersion, tail):
    if isinstance(dispersion, str):
        _require(dispersion in ("upper", "point"), "dispersion", f"must be 'upper', 'point' or a number, got {dispersion!r}")
        return noise_dispersion(estimate, normal_isf(tail) if dispersion == "upper" else 0.0)
    _require(np.all(np.asarray(dispersion) >= 0.0), "dispersion", "is a squared coefficient of variation, must be >= 0")
    return np.asarray(dispersion, dtype=float)


def _worst_transmittance(amplitude_min, detector: ServerDetector):
    """Smallest T consistent with t_min: SNU set too small inflates t, a larger eta_s shrinks T."""
    t_true = np.clip(amplitude_min, 0.0, None) / np.sqrt(1.0 + detector.shot_noise_rel_uncertainty)
    return referred_transmittance(t_true, detector, efficiency=detector.efficiency_bounds[1])


def _worst_excess_noise_snu(variance_max_snu, detector: ServerDetector):
    """Largest eps consistent with var_max: smallest SNU, smallest v_el, and eta_s on the worse side."""
    var_true = variance_max_snu / (1.0 - detector.shot_noise_rel_uncertainty)
    eta_lo, eta_hi = detector.efficiency_bounds
    v_lo = detector.electronic_noise_bounds_snu[0]
    numerator = var_true - 1.0 - v_lo
    eta = np.where(numerator >= 0.0, eta_lo, eta_hi)
    return referred_excess_noise_snu(var_true, detector, efficiency=eta, electronic_noise_snu=v_lo)


# --- the bound ----------------------------------------------------------------------------------

def leakage_bound_bits(mu_photons, transmittance_min, excess_noise_max_snu):
    """(bits per complex mode, bits per real weight) of chi_E at the certified limits.

    T is clipped to <= 1 and eps to >= 0; chi_E decreases in T and increases in eps on the
    physical region, so both clips can only raise the bound.
    """
    mu = np.asarray(mu_photons, dtype=float)
    _require(np.all(mu >= 0.0), "mu_photons", "must be >= 0")
    t = np.clip(transmittance_min, 0.0, 1.0)
    eps = np.clip(excess_noise_max_snu, 0.0, None)
    per_mode = holevo_verified_bits(modulation_variance_snu(mu), t, eps)
    return per_mode, 0.5 * per_mode


# --- accept / abort -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AcceptanceTest:
    """Accept iff t_hat >= amplitude_threshold and s^2 <= variance_threshold_snu (detector scale)."""

    amplitude_threshold: float
    variance_threshold_snu: float
    false_alarm: float
    n_samples: int
    sum_sq_sent_snu2: float
    dispersion: float  # kappa assumed for the honest null (its upper bound)


def _measured_moments(hypothesis: ChannelHypothesis, detector: ServerDetector, worst_for_honest=False):
    """(mean of t_hat, noise variance, kappa) on the detector scale under `hypothesis`.

    The physics does not depend on `trusted`. worst_for_honest puts every calibration error where it
    makes an honest client look worst (lower t, more noise), which bounds the false-alarm probability.
    """
    if worst_for_honest:
        eta_t = detector.efficiency_bounds[0] * (1.0 - detector.shot_noise_rel_uncertainty)
        var = (1.0 + detector.electronic_noise_bounds_snu[1]
               + detector.efficiency_bounds[1] * hypothesis.excess_noise_snu) * (1.0 + detector.shot_noise_rel_uncertainty)
        eta_spread, floor = detector.efficiency_bounds[1], 1.0
    else:
        eta_t = detector.efficiency
        var = 1.0 + detector.electronic_noise_snu + detector.efficiency * hypothesis.excess_noise_snu
        eta_spread, floor = detector.efficiency, var
    kappa = eta_spread**2 * hypothesis.excess_noise_spread_snu2 / floor**2
    return np.sqrt(eta_t * hypothesis.transmittance), var, kappa


def acceptance_test(honest: ChannelHypothesis, n_samples, sum_sq_sent_snu2, detector: ServerDetector = ServerDetector(),
                    false_alarm=DEFAULT_FALSE_ALARM) -> AcceptanceTest:
    """Thresholds at which the least favourable honest client is rejected with probability false_alarm."""
    _check_probability(false_alarm, "false_alarm")
    _require(n_samples >= 2, "n_samples", "must be >= 2")
    _require(sum_sq_sent_snu2 > 0.0, "sum_sq_sent_snu2", "must be > 0 (no modulation, nothing to verify)")
    alpha_each = -np.expm1(0.5 * np.log1p(-false_alarm))  # 1 - sqrt(1 - alpha), without cancellation
    t0, var0, kappa0 = _measured_moments(honest, detector, worst_for_honest=True)
    dof0 = effective_dof(n_samples, kappa0)
    return AcceptanceTest(
        amplitude_threshold=float(t0 - normal_isf(alpha_each) * np.sqrt(var0 / sum_sq_sent_snu2)),
        variance_threshold_snu=float(var0 * chi2_isf(alpha_each, dof0) / dof0),
        false_alarm=float(false_alarm),
        n_samples=int(n_samples),
        sum_sq_sent_snu2=float(sum_sq_sent_snu2),
        dispersion=float(kappa0),
    )


def is_accepted(estimate: ChannelEstimate, test: AcceptanceTest):
    """The decision on the point estimates (vectorised over a batch)."""
    return ((estimate.amplitude_transmittance >= test.amplitude_threshold)
            & (estimate.residual_variance_snu <= test.variance_threshold_snu))


def rejection_probability(test: AcceptanceTest, hypothesis: ChannelHypothesis, detector: ServerDetector = ServerDetector(),
                          worst_for_honest=False):
    """P(abort) under `hypothesis`: power for a cheater, false-alarm probability for an honest client.

    Exact for homogeneous Gaussian noise (t_hat normal, s^2 scaled chi-square, independent);
    Satterthwaite for heterogeneous noise.
    """
    t1, var1, kappa1 = _measured_moments(hypothesis, detector, worst_for_honest)
    dof1 = effective_dof(test.n_samples, kappa1)
    pass_t = normal_sf((test.amplitude_threshold - t1) / np.sqrt(var1 / test.sum_sq_sent_snu2))
    pass_var = chi2_cdf(dof1 * test.variance_threshold_snu / var1, dof1)
    return float(1.0 - pass_t * pass_var)


def samples_for_power(honest: ChannelHypothesis, alternative: ChannelHypothesis, mu_photons,
                      detector: ServerDetector = ServerDetector(), false_alarm=DEFAULT_FALSE_ALARM, power=0.99,
                      max_samples=1e14):
    """Smallest m (verified rows x modes) at which the test detects `alternative` with `power`.

    Planning uses the expected sum q^2 = m V_A = 2 mu m.
    """
    _check_probability(power, "power")
    _require(mu_photons > 0.0, "mu_photons", "must be > 0 for verification to see anything")

    def power_at(m):
        test = acceptance_test(honest, m, 2.0 * mu_photons * m, detector, false_alarm)
        return rejection_probability(test, alternative, detector)

    lo, hi = 2.0, 4.0
    while power_at(hi) < power:
        lo, hi = hi, hi * 4.0
        _require(hi <= max_samples, "alternative", f"is not detectable with power {power} below {max_samples:g} samples")
    while hi - lo > max(1.0, 1e-3 * lo):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if power_at(mid) < power else (lo, mid)
    return int(np.ceil(hi))


def samples_for_excess_noise_precision(delta_snu, failure_probability=DEFAULT_FAILURE_PROBABILITY,
                                       variance_snu=1.0, efficiency=1.0):
    """Smallest m for which eps_max - eps_hat <= delta (exact chi-square limit, homogeneous noise)."""
    _require(delta_snu > 0.0, "delta_snu", "must be > 0")
    tail = 0.5 * failure_probability
    z_from_failure(failure_probability)

    def width(m):
        dof = m - 1.0
        return variance_snu * (dof / chi2_ppf(tail, dof) - 1.0) / efficiency

    lo, hi = 2.0, 4.0
    while width(hi) > delta_snu:
        lo, hi = hi, hi * 4.0
    while hi - lo > max(1.0, 1e-3 * lo):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if width(mid) > delta_snu else (lo, mid)
    return int(np.ceil(hi))


# --- one call -----------------------------------------------------------------------------------

@dataclass
class VerificationResult:
    """Everything the session record needs; array fields when a batch was verified."""

    transmittance_hat: object
    transmittance_min: object
    excess_noise_hat_snu: object
    excess_noise_max_snu: object
    amplitude_transmittance_hat: object
    residual_variance_snu: object
    n_samples: int
    effective_dof: object
    z: float
    failure_probability: float
    method: str
    trusted_detector: bool
    mu_photons: float
    chi_bits_per_mode: object
    chi_bits_per_weight: object
    accepted: object
    false_alarm_probability: float
    amplitude_threshold: float
    variance_threshold_snu: float
    detection_power: float | None = None
    alternative: dict | None = field(default=None)

    def to_dict(self) -> dict:
        """JSON-ready: numpy scalars and arrays become floats, bools and lists."""
        return {key: _jsonable(value) for key, value in asdict(self).items()}


def verify(sent_quadratures_snu, returned_quadratures_snu, mu_photons, honest: ChannelHypothesis,
           detector: ServerDetector = ServerDetector(), failure_probability=DEFAULT_FAILURE_PROBABILITY,
           false_alarm=DEFAULT_FALSE_ALARM, alternative: ChannelHypothesis | None = None,
           mu_upper_photons=None, method="exact", dispersion="upper", axis=-1,
           test_detector: ServerDetector | None = None) -> VerificationResult:
    """Estimate, certify, bound and decide for the verified samples pooled over `axis`.

    The test thresholds use the actual sum q^2 (batch elements must share it when batched: they do
    in a Monte-Carlo over noise with fixed symbols; otherwise call per element). test_detector: the
    detector the accept/abort test assumes (default `detector`); a session whose honest hypothesis was
    measured on the same detector (pilots) passes one without calibration uncertainty, since the test
    compares detector-scale amplitudes, while the limits keep the uncertainties (worst case).
    """
    _require(np.all(np.asarray(mu_photons) >= 0.0), "mu_photons", "must be >= 0")
    _require(mu_upper_photons is None or mu_upper_photons >= mu_photons, "mu_upper_photons", "must be >= mu_photons")
    estimate = estimate_channel(sent_quadratures_snu, returned_quadratures_snu, detector, axis)
    return verify_estimate(estimate, mu_photons, honest, detector, failure_probability, false_alarm, alternative,
                           mu_upper_photons, method, dispersion, test_detector)


def verify_estimate(estimate: ChannelEstimate, mu_photons, honest: ChannelHypothesis,
                    detector: ServerDetector = ServerDetector(), failure_probability=DEFAULT_FAILURE_PROBABILITY,
                    false_alarm=DEFAULT_FALSE_ALARM, alternative: ChannelHypothesis | None = None,
                    mu_upper_photons=None, method="exact", dispersion="upper",
                    test_detector: ServerDetector | None = None) -> VerificationResult:
    """verify() from the estimate alone: what a caller that sums the samples in chunks (analysis/verified_samples.py)
    passes instead of the samples; `estimate` must have been referred with `detector`."""
    mu = mu_photons if mu_upper_photons is None else mu_upper_photons
    _require(np.all(np.asarray(mu_photons) >= 0.0), "mu_photons", "must be >= 0")
    _require(mu_upper_photons is None or mu_upper_photons >= mu_photons, "mu_upper_photons", "must be >= mu_photons")
    limits = confidence_limits(estimate, detector, failure_probability, method, dispersion)
    per_mode, per_weight = leakage_bound_bits(mu, limits.transmittance_min, limits.excess_noise_max_snu)
    tester = detector if test_detector is None else test_detector
    test = acceptance_test(honest, estimate.n_samples, float(np.mean(estimate.sum_sq_sent_snu2)), tester, false_alarm)
    power = None if alternative is None else rejection_probability(test, alternative, tester)
    return VerificationResult(
        transmittance_hat=estimate.transmittance,
        transmittance_min=limits.transmittance_min,
        excess_noise_hat_snu=estimate.excess_noise_snu,
        excess_noise_max_snu=limits.excess_noise_max_snu,
        amplitude_transmittance_hat=estimate.amplitude_transmittance,
        residual_variance_snu=estimate.residual_variance_snu,
        n_samples=estimate.n_samples,
        effective_dof=limits.effective_dof,
        z=limits.z,
        failure_probability=limits.failure_probability,
        method=method,
        trusted_detector=detector.trusted,
        mu_photons=float(mu),
        chi_bits_per_mode=per_mode,
        chi_bits_per_weight=per_weight,
        accepted=is_accepted(estimate, test),
        false_alarm_probability=rejection_probability(test, honest, tester, worst_for_honest=True),
        amplitude_threshold=test.amplitude_threshold,
        variance_threshold_snu=test.variance_threshold_snu,
        detection_power=power,
        alternative=None if alternative is None else asdict(alternative),
    )


# --- helpers ------------------------------------------------------------------------------------

def _normalised_axes(axis, ndim):
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    return tuple(a % ndim for a in axes)


def _count(arr, axis):
    return int(np.prod([np.shape(arr)[a] for a in _normalised_axes(axis, np.ndim(arr))]))


def _validated_array(values, name):
    arr = np.asarray(values)
    _require(not np.iscomplexobj(arr), name, "must be real quadratures (SNU), not complex amplitudes")
    arr = np.asarray(arr, dtype=float)  # no copy of float64 input: the samples are only read
    _require(arr.ndim >= 1, name, "must be an array of samples")
    _require(arr.size > 0, name, "is empty")
    _require(bool(np.all(np.isfinite(arr))), name, "contains NaN or inf")
    return arr


def _validated_pair(sent, returned, axis):
    q = _validated_array(sent, "sent_quadratures_snu")
    y = _validated_array(returned, "returned_quadratures_snu")
    _require(q.shape == y.shape, "returned_quadratures_snu", f"shape {y.shape} must equal sent_quadratures_snu shape {q.shape}")
    try:
        m = _count(q, axis)
    except (IndexError, TypeError, ZeroDivisionError) as err:
        raise ValueError(f"axis {axis!r} is invalid for shape {q.shape}") from err
    _require(m >= 2, "sent_quadratures_snu", f"needs at least 2 samples along axis {axis!r}, got {m}")
    _require(bool(np.all(np.sum(q**2, axis=axis) > 0.0)), "sent_quadratures_snu", "carries no modulation (sum q^2 = 0)")
    return q, y


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value
