"""A lab session's results from what it recorded: the live session and `qslab replay` both call `session_results`.

Inputs are exactly what the session file holds (analysis/recording/): the client's quadratures
per layer, the server's verification samples, the images, and the calibrated values the session
used (mu, G and the server detector, each with its uncertainty). So a replay of an unchanged file
gives the live numbers bit for bit, and a replay with another calibration changes only what
depends on it.

Conservative choices (leakage_math.md 5, DECISIONS J): the weight-leakage bound is evaluated at
mu + 3 sigma and at the verification's finite-size limits (T_min, eps_max); the nominal Eq. 2
figure at (mu + 3 sigma, G + 3 sigma); data leakage at whichever end of G's 3-sigma interval leaks
more.
"""

from __future__ import annotations

import numpy as np

from qslab.analysis import data_leakage, verification
from qslab.analysis.client_measurement import inversion_factor_from_noise_figure
from qslab.analysis.leakage_report import OperatingPoint, leakage_summary

CONFIDENCE_SIGMAS = 3.0


def hidden_vectors(layer1_quadratures_snu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The client's next-layer input, ReLU of its layer-1 outcomes (their positive scale does not matter:
    the client normalises every layer input); and which images have an all-zero vector (not normalisable)."""
    hidden = np.maximum(np.asarray(layer1_quadratures_snu, dtype=np.float64), 0.0)
    return hidden, ~np.any(hidden > 0.0, axis=1)


def predictions(last_layer_quadratures_snu: np.ndarray, unusable: np.ndarray) -> np.ndarray:
    """argmax of the client's last-layer outcomes; -1 where the hidden vector could not be normalised."""
    guess = np.argmax(np.asarray(last_layer_quadratures_snu), axis=1).astype(np.int16)
    guess[np.asarray(unusable, dtype=bool)] = -1
    return guess


def _estimate(calibration: dict, key: str) -> tuple[float, float]:
    entry = calibration[key]
    return float(entry["value"]), float(entry.get("uncertainty", 0.0))


def server_detector(calibration: dict, trusted: bool = True) -> verification.ServerDetector:
    eta, eta_u = _estimate(calibration, "server_efficiency")
    v_el, v_el_u = _estimate(calibration, "server_electronic_noise_snu")
    return verification.ServerDetector(efficiency=eta, electronic_noise_snu=v_el, trusted=trusted,
                                       efficiency_uncertainty=min(CONFIDENCE_SIGMAS * eta_u, 0.99 * eta),
                                       electronic_noise_uncertainty_snu=CONFIDENCE_SIGMAS * v_el_u)


def honest_hypothesis(calibration: dict, gain: float, modes: int, detector: verification.ServerDetector):
    """What an honest client returns, and the detector the accept/abort test assumes.

    With the pilots' amplitude sqrt(eta_s T) (channel record, measured on this very detector) the test
    compares detector-scale amplitudes, so the detector's calibration uncertainty must not widen it a
    second time: the tester has none, and T_honest = (a - 3 sigma)^2 / eta_s. Without it (older
    files), T at its lower 3-sigma limit and the detector with its uncertainties.
    """
    if "amplitude_transmittance" in calibration:
        amplitude, amplitude_u = _estimate(calibration, "amplitude_transmittance")
        tester = verification.ServerDetector(detector.efficiency, detector.electronic_noise_snu, detector.trusted)
        eta = detector.efficiency if detector.trusted else 1.0
        transmittance = max(amplitude - CONFIDENCE_SIGMAS * amplitude_u, 0.0) ** 2 / eta
    else:
        value, uncertainty = _estimate(calibration, "transmittance")
        tester, transmittance = detector, value - CONFIDENCE_SIGMAS * uncertainty
    honest = verification.ChannelHypothesis.honest(gain, modes, transmittance)
    if "excess_noise_snu" in calibration:  # the honest link's technical noise, measured on the pilots
        eps, eps_u = _estimate(calibration, "excess_noise_snu")
        honest = verification.ChannelHypothesis(honest.transmittance, max(eps + CONFIDENCE_SIGMAS * eps_u,
                                                                          honest.excess_noise_snu),
                                                honest.excess_noise_spread_snu2)
    return honest, tester


def verify_layers(samples: list[tuple[np.ndarray, np.ndarray]], calibration: dict, modes: int, *,
                  failure_probability: float, false_alarm: float, trusted: bool = True) -> dict | None:
    """The server's decision and bound on all verified samples pooled (None when no row was verified)."""
    sent = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s, _ in samples]) if samples else np.empty(0)
    returned = (np.concatenate([verification.remove_previous_symbol(s, r)[0] for s, r in samples])
                if samples else np.empty(0))
    if sent.size < 2:
        return None
    mu, mu_u = _estimate(calibration, "mu_photons")
    gain, _ = _estimate(calibration, "gain")
    detector = server_detector(calibration, trusted)
    honest, tester = honest_hypothesis(calibration, gain, modes, detector)
    result = verification.verify(sent, returned, mu, honest, detector, failure_probability=failure_probability,
                                 false_alarm=false_alarm, mu_upper_photons=mu + CONFIDENCE_SIGMAS * mu_u,
                                 test_detector=tester)
    return result.to_dict()


def exact_data_leakage(gain_limits: tuple[float, float], layer_inputs: list[np.ndarray], reuses: list[int],
                       images: int, noise_figure_db: float | None = None) -> dict:
    """Exact information per data symbol for the vectors the client actually sent, at the leakier G limit and
    with the amplifier's measured noise figure (None: quantum limited, the paper's assumption)."""
    per_layer = {}
    for index, (inputs, rows) in enumerate(zip(layer_inputs, reuses)):
        vectors = np.asarray(inputs[:images], dtype=np.float64)
        packed = vectors[:, 0::2] + 1j * vectors[:, 1::2]
        worst = None
        for gain in gain_limits:
            n_sp = 1.0 if noise_figure_db is None or gain <= 1.0 else max(
                float(inversion_factor_from_noise_figure(gain, noise_figure_db)), 1.0)
            bits = np.array([data_leakage.exact_mutual_information_bits(gain, v / np.linalg.norm(v), rows, n_sp)
                             for v in packed if np.linalg.norm(v) > 0])
            if bits.size and (worst is None or bits.mean() > worst[1].mean()):
                worst = (gain, bits)
        if worst is not None:
            per_layer[f"layer{index + 1}"] = {"mean": float(worst[1].mean()), "max": float(worst[1].max()),
                                              "reuses": int(rows), "gain": float(worst[0])}
    bits = max((v["mean"] for v in per_layer.values()), default=0.0)
    return {"images": int(min(images, len(layer_inputs[0]))), "per_layer": per_layer, "bits": bits}


def session_results(*, labels, layer1_quadratures_snu, last_quadratures_snu, layer1_inputs,
                    verification_samples: list[tuple[np.ndarray, np.ndarray]], calibration: dict,
                    modes: int, rows: list[int], failure_probability: float, false_alarm: float,
                    exact_leakage_images: int, trusted: bool = True) -> dict:
    """Accuracy, verification and every leakage figure of one session (see the module docstring)."""
    labels = np.asarray(labels)
    hidden, unusable = hidden_vectors(layer1_quadratures_snu)
    guess = predictions(last_quadratures_snu, unusable)
    mu, mu_u = _estimate(calibration, "mu_photons")
    gain, gain_u = _estimate(calibration, "gain")
    mu_upper, gain_upper = mu + CONFIDENCE_SIGMAS * mu_u, gain + CONFIDENCE_SIGMAS * gain_u
    gain_limits = (max(gain - CONFIDENCE_SIGMAS * gain_u, 1.0), gain_upper)
    nominal = leakage_summary(OperatingPoint(mu=mu_upper, gain=gain_upper, modes=modes, rows=sum(rows)))
    cramer_rao = max(leakage_summary(OperatingPoint(mu=mu_upper, gain=g, modes=modes, rows=sum(rows)))
                     ["data_leakage_bits_cramer_rao"] for g in gain_limits)
    checked = verify_layers(verification_samples, calibration, modes, failure_probability=failure_probability,
                            false_alarm=false_alarm, trusted=trusted)
    noise_figure_db = None
    if "amplifier_noise_figure_db" in calibration:  # its upper limit: more returned noise tells the server more
        nf, nf_u = _estimate(calibration, "amplifier_noise_figure_db")
        noise_figure_db = nf + CONFIDENCE_SIGMAS * nf_u
    exact = exact_data_leakage(gain_limits, [np.asarray(layer1_inputs), hidden], rows, exact_leakage_images,
                               noise_figure_db)
    correct = int(np.sum(guess == labels))
    return {
        "images": int(labels.size),
        "accuracy": correct / labels.size if labels.size else 0.0,
        "correct": correct,
        "unnormalisable_hidden_vectors": int(unusable.sum()),
        "mu_photons": mu, "mu_photons_upper": mu_upper, "gain": gain, "gain_upper": gain_upper,
        "verified": None if checked is None else bool(checked["accepted"]),
        "weight_leakage_bits_per_mode": None if checked is None else checked["chi_bits_per_mode"],
        "weight_leakage_bits_per_mode_nominal": nominal["weight_leakage_bits_per_mode"],
        "data_leakage_bits_cramer_rao": cramer_rao,
        "data_leakage_bits_prx": nominal["data_leakage_bits_prx"],
        "data_leakage_bits_exact": exact["bits"],
        "data_leakage_exact": exact,
        "verification": checked,
    }
