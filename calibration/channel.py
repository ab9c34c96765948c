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

import numpy as np

from qslab.analysis import verification
from qslab.analysis.estimate import Estimate
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
    right.hist(residual, bins=200, density=True, alpha=0.7, label="residuals")
    grid = np.linspace(residual.min(), residual.max(), 400)
    variance = residual.var()
    right.plot(grid, np.exp(-grid**2 / (2 * variance)) / np.sqrt(2 * np.pi * variance), "r-", lw=1,
               label=f"Gaussian of the same variance ({variance:.4f} SNU)")
    right.legend(fontsize=8)
    right.set_xlabel("residual (SNU)")
    right.set_title(f"eps = {eps_hat:.2e} SNU (referred)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
