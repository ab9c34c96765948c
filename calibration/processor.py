"""The client's time-bin processor (DECISIONS M): its modulators' half-wave voltages, the beam splitter's
offset, its loss per pass, and the photon-number cross-check, from one acquisition of known symbols.

Why this way: the processor has no monitor of its own, but its product is what the client's homodyne
measures. The server plays public Gaussian test rows a_r (the pilots, mean |a|^2 = mu), the client
loads designed vectors and records the AWG volts u it actually played per bin; its outcome is

    y_br = 2 Re(A conj(x_b) . a_r + C sigma_b),  x_b = unit_vector_from_angles(theta, phi),
    theta = s_bs u_bs + theta_0,  phi = s_ph u_ph,  sigma_b = sum_k conj(x_bk)

(qslab.analysis.givens: the chain's projection; A = k e^{i phi_LO} the client's gain, C the carrier
leakage). A non-linear least-squares fit over every outcome gives the slopes s (rad per AWG volt:
V_pi at the AWG = pi/(2 s_bs) for the beam splitter, pi/s_ph for the phase modulator; with the
datasheet driver gains, V_pi at the modulators), theta_0, and |A| = sqrt(eta_c m_c (G - 1) T_f t) r,
where t is one pass through the processor, m_c the matched filter's temporal-mode efficiency
(qslab.analysis.dsp.temporal_mode_efficiency) and r^2 = mu_true / mu_record (the pilots are scaled with the
photons record's mu). The designed vectors use a few bins at random angles over the whole drive
range and leave the rest at 0 V: every trailing bin then keeps cos(theta_0) of the loop, which makes
theta_0 visible.

The server's pilot amplitude (channel record's estimator) is A_s = sqrt(eta_s m_s T_f t^2 T_r) r. The
ratio of the two removes r, the fibres' product and the mode efficiencies' common part:

    t = A_s^2 eta_c m_c (G - 1) / (|A|^2 eta_s m_s T_r)         (the loss per pass, given T_r)
    r^2 = |A|^4 eta_s m_s T_r / (A_s^2 eta_c^2 m_c^2 (G - 1)^2 T_f)  (the photon cross-check)

with eta and G from their records and the fibres' T_f, T_r declared (characterised separately, like the
fixed attenuation). The cross-check is the "Gaussian test modulation" check of docs/PHYSICS.md 16
in its regression form (the test symbols are known, so no noise floor is subtracted); it is as good
as eta_c T is known, about 7 % here, and a disagreement beyond 3 sigma fails the calibration: a
wrong declared attenuation would otherwise put more photons on the line than the bound assumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qslab.analysis.encoding import mean_power
from qslab.analysis.estimate import Estimate
from qslab.analysis.figure_files import save_tight
from qslab.analysis.givens import unit_vector_from_angles
from qslab.calibration.datasheet import through_driver_gain
from qslab.calibration.figures import draw
from qslab.calibration.result import CalibrationError, CalibrationResult

KIND = "processor"
INSTRUMENT = "client_processor"
ACTIVE_BINS = 6                # bins per designed vector at random angles; the rest stay at 0 V
EDGE_RAD = 0.08                # designed beam-splitter angles within [EDGE, pi/2 - EDGE]
CROSS_CHECK_SIGMAS = 3.0
MIN_OUTCOMES = 500
BANDWIDTH_TOLERANCE = 0.1      # declared relative uncertainty of the detectors' datasheet bandwidth


def design_vectors(images: int, modes: int, rng: np.random.Generator, active_bins: int = ACTIVE_BINS) -> np.ndarray:
    """Unit vectors [images, modes] whose first bins sweep the beam splitter over (0, pi/2) and the phase
    over a full turn; the remaining bins ask for theta = 0, phi = 0 (0 V on both modulators)."""
    if not 2 <= active_bins <= modes:
        raise ValueError(f"active_bins must be in [2, {modes}], got {active_bins}")
    theta = np.zeros((images, modes))
    phi = np.zeros((images, modes))
    theta[:, 0] = 0.5 * np.pi
    theta[:, 1:active_bins] = rng.uniform(EDGE_RAD, 0.5 * np.pi - EDGE_RAD, (images, active_bins - 1))
    phi[:, :active_bins] = rng.uniform(-np.pi, np.pi, (images, active_bins))
    return unit_vector_from_angles(theta, phi)


@dataclass(frozen=True)
class ProcessorFit:
    """Slopes in rad per AWG volt, theta_0 in rad, the client's complex gain A and leakage C, with covariance."""

    beam_splitter_rad_per_v: float
    theta_offset_rad: float
    phase_rad_per_v: float
    gain: complex
    leakage: complex
    memory: float                # share of the previous outcome in each (the detector's bandwidth)
    covariance: np.ndarray       # of (s_bs, theta_0, s_ph, Re A, Im A, Re C, Im C, memory)
    residual_rms_snu: float
    predicted_snu: np.ndarray

    @property
    def sigmas(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    @property
    def gain_abs(self) -> Estimate:
        """|A| with its uncertainty (gradient of hypot through the covariance)."""
        a = self.gain
        grad = np.array([a.real, a.imag]) / abs(a)
        return Estimate(abs(a), float(math.sqrt(grad @ self.covariance[3:5, 3:5] @ grad)))


def _projections(params, volts_bs, volts_ph, pilots) -> tuple[np.ndarray, np.ndarray]:
    """(beta [B, R], sigma [B, 1]): each designed vector against the pilots, and its sum of conjugates."""
    s_bs, theta_0, s_ph = params[:3]
    x_hat = unit_vector_from_angles(s_bs * volts_bs + theta_0, s_ph * volts_ph)
    return np.conj(x_hat) @ pilots.T, np.conj(x_hat).sum(axis=1, keepdims=True)


def _remembered(clean: np.ndarray, memory: float) -> np.ndarray:
    """The detector's memory of the previous outcome (back to back, image-major) added to each outcome."""
    out = clean.copy()
    out[1:] += memory * clean[:-1]
    return out


def _model(params, volts_bs, volts_ph, pilots) -> np.ndarray:
    a_re, a_im, c_re, c_im, memory = params[3:]
    beta, sigma = _projections(params, volts_bs, volts_ph, pilots)
    clean = 2.0 * ((a_re + 1j * a_im) * beta + (c_re + 1j * c_im) * sigma).real.ravel()
    return _remembered(clean, memory).reshape(beta.shape)


def _jacobian(params, volts_bs, volts_ph, pilots) -> np.ndarray:
    """d model / d params [B R, 8]: A, C and the memory enter linearly (their columns exact, from one projection);
    the slopes and theta_0 by forward differences with scipy's '2-point' step (three projections instead of the
    eight full models a numerical Jacobian takes: the fit's cost)."""
    params = np.asarray(params, dtype=float)
    a, c, memory = complex(params[3], params[4]), complex(params[5], params[6]), float(params[7])
    beta, sigma = _projections(params, volts_bs, volts_ph, pilots)
    sigma = np.broadcast_to(sigma, beta.shape)
    clean = 2.0 * (a * beta + c * sigma).real.ravel()
    model = _remembered(clean, memory)
    columns = np.empty((clean.size, params.size))
    for j in range(3):
        step = np.finfo(float).eps ** 0.5 * (1.0 if params[j] >= 0 else -1.0) * max(1.0, abs(params[j]))
        shifted = params.copy()
        shifted[j] += step
        columns[:, j] = (_model(shifted, volts_bs, volts_ph, pilots).ravel() - model) / (shifted[j] - params[j])
    for j, part in ((3, 2.0 * beta.real), (4, -2.0 * beta.imag), (5, 2.0 * sigma.real), (6, -2.0 * sigma.imag)):
        columns[:, j] = _remembered(part.ravel(), memory)
    columns[0, 7] = 0.0
    columns[1:, 7] = clean[:-1]
    return columns


def fit_processor(outcomes_snu, volts_bs, volts_ph, pilots, *, beam_splitter_rad_per_v: float,
                  phase_rad_per_v: float) -> ProcessorFit:
    """Least squares of the outcomes [B, R] on the played volts [B, N] and the pilot symbols [R, N].

    The start is the datasheet (slopes given); A starts from the linear fit at that start.
    """
    y = np.asarray(outcomes_snu, dtype=np.float64)
    volts_bs, volts_ph = np.asarray(volts_bs, float), np.asarray(volts_ph, float)
    pilots = np.asarray(pilots, dtype=np.complex128)
    if y.size < MIN_OUTCOMES:
        raise CalibrationError(KIND, f"needs >= {MIN_OUTCOMES} client outcomes, got {y.size}")
    if not np.all(np.isfinite(y)):
        raise CalibrationError(KIND, "the client's outcomes contain non-finite values")
    start = np.array([beam_splitter_rad_per_v, 0.0, phase_rad_per_v, 0.0, 0.0, 0.0, 0.0, 0.0])
    linear = np.stack([_model(np.r_[start[:3], e, 0.0], volts_bs, volts_ph, pilots).ravel() for e in np.eye(4)], axis=1)
    start[3:7], *_ = np.linalg.lstsq(linear, y.ravel(), rcond=None)
    if math.hypot(*start[3:5]) * math.sqrt(mean_power(pilots)) < 3.0 * np.std(y) / math.sqrt(y.size):
        raise CalibrationError(KIND, "the client's outcomes do not follow the test symbols (no signal): is the "
                                     "light reaching the client and its processor driven?")

    from scipy import optimize  # here, not at import: the figure worker loads this module for its _plot only

    def residuals(params):
        return _model(params, volts_bs, volts_ph, pilots).ravel() - y.ravel()

    solution = optimize.least_squares(residuals, start, jac=lambda params: _jacobian(params, volts_bs, volts_ph, pilots),
                                      x_scale="jac", method="lm")
    if not solution.success:
        raise CalibrationError(KIND, f"the processor fit did not converge ({solution.message})")
    dof = y.size - start.size
    residual_var = float(solution.fun @ solution.fun) / dof
    jacobian = solution.jac
    try:
        covariance = np.linalg.inv(jacobian.T @ jacobian) * residual_var
    except np.linalg.LinAlgError:
        raise CalibrationError(KIND, "the processor fit is degenerate (the designed drives do not constrain it)") from None
    p = solution.x
    if not (p[0] > 0 and p[2] > 0):
        raise CalibrationError(KIND, f"fitted slopes {p[0]:.3g} and {p[2]:.3g} rad/V are not positive: the "
                                     "modulators' response is not what the datasheet start describes")
    return ProcessorFit(float(p[0]), float(p[1]), float(p[2]), complex(p[3], p[4]), complex(p[5], p[6]), float(p[7]),
                        covariance, math.sqrt(residual_var), (solution.fun + y.ravel()).reshape(y.shape))


@dataclass(frozen=True)
class CrossCheckInputs:
    """What the loss per pass and the photon cross-check need besides the fit (one-sigma uncertainties)."""

    server_amplitude: Estimate            # A_s, the pilots' sqrt(eta_s m_s T) r (channel estimator)
    client_efficiency: Estimate           # eta_c (homodyne record)
    server_efficiency: Estimate           # eta_s (homodyne record)
    gain: Estimate                        # G (amplifier record)
    client_mode_efficiency: Estimate      # m_c (qslab.analysis.dsp.temporal_mode_efficiency)
    server_mode_efficiency: Estimate      # m_s
    forward_transmittance: Estimate       # T_f (declared)
    return_transmittance: Estimate        # T_r (declared)
    photons_per_symbol: Estimate          # mu of the photons record the pilots were scaled with


def _product(terms: dict[str, tuple[Estimate, float]]) -> tuple[float, dict[str, float]]:
    """prod value^power and each term's relative contribution |power| u/value (combined in quadrature)."""
    value, budget = 1.0, {}
    for name, (estimate, power) in terms.items():
        value *= estimate.value ** power
        budget[name] = abs(power) * estimate.uncertainty / estimate.value
    return value, budget


def loss_and_cross_check(client_gain: Estimate, c: CrossCheckInputs) -> tuple[Estimate, Estimate, dict]:
    """(loss per pass in dB, mu from the homodynes, budgets): the module docstring's two ratios."""
    g_minus_1 = Estimate(c.gain.value - 1.0, c.gain.uncertainty)
    if not g_minus_1.value > 0:
        raise CalibrationError(KIND, f"the amplifier gain {c.gain.value:.4g} must exceed 1: the client measures "
                                     "through (G - 1)")
    t_pass, t_budget = _product({
        "server_amplitude": (c.server_amplitude, 2), "client_gain": (client_gain, -2),
        "client_efficiency": (c.client_efficiency, 1), "server_efficiency": (c.server_efficiency, -1),
        "gain_minus_1": (g_minus_1, 1), "client_mode": (c.client_mode_efficiency, 1),
        "server_mode": (c.server_mode_efficiency, -1), "return_transmittance": (c.return_transmittance, -1)})
    r2, r_budget = _product({
        "client_gain": (client_gain, 4), "server_amplitude": (c.server_amplitude, -2),
        "server_efficiency": (c.server_efficiency, 1), "client_efficiency": (c.client_efficiency, -2),
        "gain_minus_1": (g_minus_1, -2), "server_mode": (c.server_mode_efficiency, 1),
        "client_mode": (c.client_mode_efficiency, -2), "return_transmittance": (c.return_transmittance, 1),
        "forward_transmittance": (c.forward_transmittance, -1)})
    if not 0.0 < t_pass:
        raise CalibrationError(KIND, f"a processor pass transmits {t_pass:.3g}: unphysical")
    t_rel = math.sqrt(sum(v**2 for v in t_budget.values()))
    loss = Estimate(-10.0 * math.log10(t_pass), 10.0 / math.log(10.0) * t_rel, "dB")
    mu_record = c.photons_per_symbol
    mu_homodyne = mu_record.value * r2
    r_rel = math.sqrt(sum(v**2 for v in r_budget.values()))
    mu = Estimate(mu_homodyne, mu_homodyne * r_rel, "photons")
    budgets = {"loss_per_pass_relative": t_budget, "photons_cross_check_relative": r_budget,
               "processor_transmittance_per_pass": t_pass}
    return loss, mu, budgets


def processor_result(fit: ProcessorFit, inputs: CrossCheckInputs, *, driver_gains: tuple[float, float],
                     raw: dict, conditions: dict, figure_path: str | None = None) -> CalibrationResult:
    """The record: V_pi (at the AWG and at the modulators), theta_0, the client's gain, loss per pass, and
    the photon cross-check (CalibrationError when the homodyne and the meters disagree beyond 3 sigma)."""
    s = fit.sigmas
    vpi_bs_awg = Estimate(0.5 * math.pi / fit.beam_splitter_rad_per_v,
                          0.5 * math.pi * s[0] / fit.beam_splitter_rad_per_v**2, "V")
    vpi_ph_awg = Estimate(math.pi / fit.phase_rad_per_v, math.pi * s[2] / fit.phase_rad_per_v**2, "V")
    gain_bs, gain_ph = driver_gains
    client_gain = fit.gain_abs
    loss, mu_homodyne, budgets = loss_and_cross_check(client_gain, inputs)
    mu_meter = inputs.photons_per_symbol
    z = (mu_homodyne.value - mu_meter.value) / math.hypot(mu_homodyne.uncertainty, mu_meter.uncertainty)
    parameters = {
        "client_processor.beam_splitter_vpi_v": through_driver_gain(vpi_bs_awg, gain_bs),  # datasheet gains, their
        "client_processor.phase_vpi_v": through_driver_gain(vpi_ph_awg, gain_ph),           # tolerance included
        "client_processor.beam_splitter_theta_offset_rad": Estimate(fit.theta_offset_rad, float(s[1]), "rad"),
        "client_processor.loss_per_pass_db": loss,
        "client_processor.beam_splitter_vpi_at_awg_v": vpi_bs_awg,
        "client_processor.phase_vpi_at_awg_v": vpi_ph_awg,
        "client_processor.client_gain_snu": client_gain,
        "server.photons_per_symbol_homodyne": mu_homodyne,
    }
    conditions = {**conditions, "beam_splitter_driver_gain": gain_bs, "phase_driver_gain": gain_ph,
                  "previous_outcome_share": fit.memory,
                  "residual_rms_snu": fit.residual_rms_snu, "client_lo_phase_rad": math.atan2(fit.gain.imag, fit.gain.real),
                  "photons_per_symbol_meter": mu_meter.value, "photons_cross_check_z": z,
                  "inputs": {k: [v.value, v.uncertainty] for k, v in vars(inputs).items()}, **budgets}
    if figure_path:
        draw(_plot, figure_path, raw, fit, vpi_bs_awg, vpi_ph_awg, conditions, mu_meter, mu_homodyne)
    if abs(z) > CROSS_CHECK_SIGMAS:
        raise CalibrationError(KIND, f"photon cross-check: the homodynes give {mu_homodyne.value:.3g} +- "
                                     f"{mu_homodyne.uncertainty:.2g} photons per symbol where the meters give "
                                     f"{mu_meter.value:.3g} +- {mu_meter.uncertainty:.2g} ({z:+.1f} sigma): check the "
                                     "declared fixed attenuation and fibre transmittances in [calibration]")
    return CalibrationResult(KIND, INSTRUMENT, parameters, raw, conditions, figure_path)


def _plot(path, raw, fit: ProcessorFit, vpi_bs: Estimate, vpi_ph: Estimate, conditions, mu_meter, mu_homodyne) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    measured = raw["outcomes_snu"].ravel()
    left.plot(fit.predicted_snu.ravel(), measured, ",", alpha=0.6, label="designed vectors' outcomes")
    line = np.array([measured.min(), measured.max()])
    left.plot(line, line, "r-", lw=1, label="outcome = model")
    left.legend(fontsize=8)
    left.set_xlabel("model (SNU)")
    left.set_ylabel("client outcome (SNU)")
    left.set_title(f"residual rms {fit.residual_rms_snu:.3f} SNU", fontsize=10)
    sigma = fit.sigmas
    datasheet_bs, datasheet_ph = conditions["datasheet_rad_per_v"]
    u_bs = np.linspace(0.0, float(np.max(raw["volts_beam_splitter"])), 50)
    band_bs = np.hypot(sigma[0] * u_bs, sigma[1])
    change_bs = (fit.beam_splitter_rad_per_v - datasheet_bs) * u_bs + fit.theta_offset_rad
    middle.fill_between(u_bs, change_bs - band_bs, change_bs + band_bs, color="r", alpha=0.2, label="1 sigma")
    middle.plot(u_bs, change_bs, "r-", label=f"fit: V_pi {vpi_bs.value:.4f} +- {vpi_bs.uncertainty:.1g} V at the AWG")
    middle.axhline(0.0, color="k", ls="--", lw=1, label="datasheet")
    middle.set_xlabel("beam-splitter drive at the AWG (V)")
    middle.set_ylabel("theta: fit minus datasheet (rad)")
    middle.legend(fontsize=8)
    u_ph = np.linspace(float(np.min(raw["volts_phase"])), float(np.max(raw["volts_phase"])), 50)
    change_ph = (fit.phase_rad_per_v - datasheet_ph) * u_ph
    band_ph = sigma[2] * np.abs(u_ph)
    right.fill_between(u_ph, change_ph - band_ph, change_ph + band_ph, color="r", alpha=0.2, label="1 sigma")
    right.plot(u_ph, change_ph, "r-", label=f"fit: V_pi {vpi_ph.value:.4f} +- {vpi_ph.uncertainty:.1g} V at the AWG")
    right.axhline(0.0, color="k", ls="--", lw=1, label="datasheet")
    right.set_xlabel("phase drive at the AWG (V)")
    right.set_ylabel("phi: fit minus datasheet (rad)")
    right.set_title(f"mu: meters {mu_meter.value:.3f}, homodynes {mu_homodyne.value:.3f} +- "
                    f"{mu_homodyne.uncertainty:.2f}", fontsize=10)
    right.legend(fontsize=8)
    save_tight(figure, path)
    plt.close(figure)
