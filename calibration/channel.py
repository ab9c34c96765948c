"""Channel calibration (docs/PHYSICS.md 13): round-trip transmittance T and excess noise eps from known symbols.

The server sends symbols it knows, gates every row of one acquisition to its verification
receiver with a random X/P choice, and regresses what returns on what it sent, with the same
estimators as the verification (qslab.analysis.verification). The client behaves honestly (its amplifier
at the protocol's gain, its processor loaded with a unit vector), so the record is the honest
baseline the session's acceptance test compares with: T is what an honest round trip transmits.
The one-sigma uncertainties are the half-widths of the exact one-sided limits at 1 sigma. The same pilots
give the IQ skew (qslab.analysis.pilots.iq_skew), recorded here as server_iq.iq_skew_s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from qslab.analysis import verification
from qslab.analysis.estimate import Estimate
from qslab.analysis.figure_files import save_tight
from qslab.calibration.figures import draw
from qslab.calibration.result import CalibrationError, CalibrationResult

KIND = "channel"
INSTRUMENT = "link"
ONE_SIGMA_TWO_SIDED = 0.31731  # failure probability whose one-sided tails sit at 1 sigma each
MIN_SAMPLES = 1000


def channel_result(sent_snu, returned_snu, detector: verification.ServerDetector, *, conditions: dict,
                   figure_path: str | None = None, iq_skew_s: Estimate | None = None) -> CalibrationResult:
    """T and eps (referred through the server detector's calibration) with one-sigma uncertainties; with the
    IQ skew the same pilots measured (qslab.analysis.pilots.iq_skew) when given."""
    sent = np.asarray(sent_snu, dtype=np.float64).ravel()
    returned = np.asarray(returned_snu, dtype=np.float64).ravel()
    if sent.size < MIN_SAMPLES or sent.size != returned.size:
        raise CalibrationError(KIND, f"needs >= {MIN_SAMPLES} paired samples, got {sent.size} sent and "
                                     f"{returned.size} returned")
    if not np.all(np.isfinite(returned)):
        raise CalibrationError(KIND, "the returned quadratures contain non-finite values")
    returned, previous_symbol = verification.remove_previous_symbol(sent, returned)
    estimate = verification.estimate_channel(sent, returned, detector)
    if not estimate.amplitude_transmittance > 0.0:
        raise CalibrationError(KIND, f"no returned light correlates with the sent symbols (amplitude "
                                     f"{float(estimate.amplitude_transmittance):.3g}): is the client returning light?")
    limits = verification.confidence_limits(estimate, detector, ONE_SIGMA_TWO_SIDED)
    t_hat, eps_hat = float(estimate.transmittance), float(estimate.excess_noise_snu)
    parameters = {
        "channel.transmittance": Estimate(t_hat, max(t_hat - float(limits.transmittance_min), 0.0)),
        "channel.excess_noise_snu": Estimate(eps_hat, max(float(limits.excess_noise_max_snu) - eps_hat, 0.0), "SNU"),
        "channel.amplitude_transmittance": Estimate(float(estimate.amplitude_transmittance),
                                                    float(np.sqrt(estimate.residual_variance_snu
                                                                  / estimate.sum_sq_sent_snu2))),
    }
    if iq_skew_s is not None:
        parameters["server_iq.iq_skew_s"] = iq_skew_s
    raw = {"sent_snu": sent.astype(np.float32), "returned_snu": returned.astype(np.float32)}
    conditions = {**conditions, "samples": int(sent.size), "previous_symbol_fraction": previous_symbol, "residual_variance_snu": float(estimate.residual_variance_snu),
                  "server_efficiency": detector.efficiency, "server_electronic_noise_snu": detector.electronic_noise_snu}
    if figure_path:
        draw(_plot, figure_path, sent, returned, float(estimate.amplitude_transmittance), t_hat, eps_hat)
    return CalibrationResult(KIND, INSTRUMENT, parameters, raw, conditions, figure_path)


# The probability that the pilots of an unchanged station are called inconsistent with its own record: the cost of
# such a false alarm is one more record, so it is set small enough to be rare and large enough that a real change of
# the channel is not missed (docs/DECISIONS.md Z)
AGREEMENT_FALSE_ALARM = 1e-3
_COMPARED = ("amplitude", "residual variance")


@dataclass(frozen=True)
class PilotAgreement:
    """Whether two pilot measurements on the same server detector see the same channel: each of the amplitude
    transmittance and the residual variance differs by z_* of its statistical sigma, accepted up to z_limit."""

    z_amplitude: float
    z_residual_variance: float
    z_limit: float
    false_alarm: float

    @property
    def agrees(self) -> bool:
        return abs(self.z_amplitude) <= self.z_limit and abs(self.z_residual_variance) <= self.z_limit

    def describe(self) -> str:
        return (f"amplitude transmittance {self.z_amplitude:+.2f} sigma, residual variance "
                f"{self.z_residual_variance:+.2f} sigma (agreement up to {self.z_limit:.2f} sigma: an unchanged "
                f"channel is called changed with probability {self.false_alarm:g})")

    def as_json(self) -> dict:
        return {"z_amplitude": self.z_amplitude, "z_residual_variance": self.z_residual_variance,
                "z_limit": self.z_limit, "false_alarm": self.false_alarm, "agrees": self.agrees}


def pilot_statistics(parameters: dict, conditions: dict) -> tuple[Estimate, Estimate]:
    """(amplitude transmittance, residual variance in SNU) of a channel result or record, each with its purely
    statistical one-sigma uncertainty: sqrt(s^2 / sum q^2) for the slope, s^2 sqrt(2 / (n - 2)) for the variance of
    n Gaussian residuals after two fitted coefficients (slope and previous symbol). Both are on the server
    detector's own scale, so two measurements through the same detector calibration compare without its
    (shared) uncertainty, which dominates T's."""
    amplitude = parameters["channel.amplitude_transmittance"]
    samples = int(conditions["samples"])
    variance = float(conditions["residual_variance_snu"])
    return amplitude, Estimate(variance, variance * math.sqrt(2.0 / max(samples - 2, 1)), "SNU")


def pilots_agree(fresh: CalibrationResult, record, false_alarm: float = AGREEMENT_FALSE_ALARM) -> PilotAgreement:
    """The fresh pilots of a session against a channel record of the same station (docs/DECISIONS.md Z): a two-sided
    test on each of the two statistics of pilot_statistics, at false_alarm / 2 each (union bound), so an unchanged
    channel is refused with probability <= false_alarm."""
    z_limit = float(-ndtri(false_alarm / (2 * len(_COMPARED))))  # the normal's upper quantile
    scores = []
    for now, then in zip(pilot_statistics(fresh.parameters, fresh.conditions),
                         pilot_statistics(record.parameters, record.conditions)):
        sigma = math.hypot(now.uncertainty, then.uncertainty)
        scores.append((now.value - then.value) / sigma if sigma > 0 else (0.0 if now.value == then.value else math.inf))
    return PilotAgreement(scores[0], scores[1], z_limit, false_alarm)


def _plot(path, sent, returned, slope, t_hat, eps_hat) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pick = np.random.default_rng(0).choice(sent.size, size=min(sent.size, 20000), replace=False)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(sent[pick], returned[pick], ",", alpha=0.5, label=f"pilot samples ({pick.size} of {sent.size} shown)")
    line = np.array([sent.min(), sent.max()])
    left.plot(line, slope * line, "r-", lw=1, label=f"slope {slope:.4f} -> T = {t_hat:.4f}")
    left.set_xlabel("sent quadrature (SNU)")
    left.set_ylabel("returned quadrature (SNU)")
    left.legend(fontsize=8)
    residual = returned - slope * sent
    right.hist(residual, bins=200, density=True, alpha=0.7, histtype="stepfilled", label="residuals")  # one patch, not 200
    grid = np.linspace(residual.min(), residual.max(), 400)
    variance = residual.var()
    right.plot(grid, np.exp(-grid**2 / (2 * variance)) / np.sqrt(2 * np.pi * variance), "r-", lw=1,
               label=f"Gaussian of the same variance ({variance:.4f} SNU)")
    right.legend(fontsize=8)
    right.set_xlabel("residual (SNU)")
    right.set_title(f"eps = {eps_hat:.2e} SNU (referred)", fontsize=10)
    save_tight(figure, path)
    plt.close(figure)
