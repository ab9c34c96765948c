"""A lab session's results from what it recorded: the live session and `qslab replay` both call `session_results`.

Inputs are exactly what the session file holds (analysis/recording/): the client's quadratures
per layer, the server's verification samples, the images, and the calibrated values the session
used (qslab.analysis.measured_values.MeasuredValues: mu, G, the server detector and the honest link,
each with its one-sigma uncertainty). So a replay of an unchanged file
gives the live numbers bit for bit, and a replay with another calibration changes only what
depends on it.

Conservative choices (docs/PHYSICS.md 13, DECISIONS J): one failure probability for the whole report
(qslab.analysis.failure_budget: the session's `failure_probability` split by a union bound over every
estimated quantity, each limit at its share). The weight-leakage bound is evaluated at mu's upper limit
and at the verification's finite-size limits (T_min, eps_max), with the server detector's efficiency,
electronic noise and shot-noise unit at their limits; the nominal Eq. 2 figure at (mu, G) upper limits. The
data-leakage upper bound (analysis/data_leakage_report.py, docs/PHYSICS.md 17) at G's and the noise figure's
upper limits, the processor loss's lower limit and C's upper limit; the paper's Eq. 3 and PRX estimates and
the per-bin photon-counting figure (not bounds, labelled so) at whichever end of G's interval leaks more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qslab.analysis import data_leakage, verification
from qslab.analysis.data_leakage_report import DataLeakage, data_leakage_report, declared_moments, paper_figures
from qslab.analysis.binomial import clopper_pearson
from qslab.analysis.client_measurement import inversion_factor_from_noise_figure
from qslab.analysis.failure_budget import FailureBudget, report_budget, verification_probability
from qslab.analysis.security_report import (LayerBound, ReferenceFigure, SecurityReport, WeightLeakage,
                                            has_enough_verification, largest_mode_share, layer_bound_from_estimate)
from qslab.analysis.running_samples import RunningSamples
from qslab.analysis.verified_samples import PooledSamples, StreamedSamples
from qslab.analysis.client_measurement import returned_excess_noise_total_snu
from qslab.analysis.leakage_report import OperatingPoint, leakage_summary
from qslab.analysis.measured_values import MeasuredValues

# coverage factor of what the accept/abort test assumes about the honest link (it sets the false-alarm
# probability, not the security claim: the bound's limits come from the FailureBudget)
CONFIDENCE_SIGMAS = 3.0
POOLED = "verification"  # the budget's name for the verified rows of every layer pooled


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


def honest_hypothesis(measured: MeasuredValues, modes: int, detector: verification.ServerDetector, k: float):
    """What an honest client returns, and the detector the accept/abort test assumes; k: the coverage factor.

    With the pilots' amplitude sqrt(eta_s T) (channel record, measured on this very detector) the test
    compares detector-scale amplitudes, so the detector's calibration uncertainty must not widen it a
    second time: the tester has none, and T_honest = (a - k sigma)^2 / eta_s. Without it (older
    files), T at its lower k-sigma limit and the detector with its uncertainties.
    """
    if measured.amplitude_transmittance is not None:
        tester = verification.ServerDetector(detector.efficiency, detector.electronic_noise_snu, detector.trusted)
        eta = detector.efficiency if detector.trusted else 1.0
        transmittance = max(measured.amplitude_transmittance.lower(k), 0.0) ** 2 / eta
    else:
        tester, transmittance = detector, measured.transmittance.lower(k)
    honest = verification.ChannelHypothesis.honest(measured.gain.value, modes, transmittance)
    if measured.excess_noise_snu is not None:  # the honest link's technical noise, measured on the pilots
        honest = verification.ChannelHypothesis(honest.transmittance, max(measured.excess_noise_snu.upper(k),
                                                                          honest.excess_noise_snu),
                                                honest.excess_noise_spread_snu2)
    return honest, tester


def verify_layers(samples, measured: MeasuredValues, modes: int, *, failure_probability: float, false_alarm: float,
                  trusted: bool = True, budget: FailureBudget | None = None) -> dict | None:
    """The server's decision and bound on all verified samples pooled (None when fewer than two were verified).

    samples: per layer (sent, returned) arrays, or their estimates (analysis/verified_samples.py);
    failure_probability: the whole report's; its split is `budget` (default: report_budget over `measured`
    and the pooled verification)."""
    samples = _as_samples(samples)
    if sum(samples.sizes) < 2:
        return None
    budget = budget or report_budget(failure_probability, measured, [POOLED])
    detector = measured.server_detector(budget, trusted)
    honest, tester = honest_hypothesis(measured, modes, measured.server_detector(CONFIDENCE_SIGMAS, trusted),
                                       CONFIDENCE_SIGMAS)
    result = verification.verify_estimate(samples.pooled_estimate(detector), measured.mu_photons.value, honest,
                                          detector, failure_probability=verification_probability(budget, POOLED),
                                          false_alarm=false_alarm,
                                          mu_upper_photons=measured.mu_photons.upper(budget.sigmas("mu_photons")),
                                          test_detector=tester)
    return result.to_dict()


def _as_samples(samples) -> PooledSamples | StreamedSamples | RunningSamples:
    summed = (PooledSamples, StreamedSamples, RunningSamples)
    return samples if isinstance(samples, summed) else PooledSamples(list(samples or []))


@dataclass
class ImageTotals:
    """What the results need of the images and the client's outcomes, gathered batch by batch (`add`): the labels
    and predictions (three bytes an image), the unusable hidden vectors, each layer's largest mode share
    (security_report.largest_mode_share) and the first `keep` inputs of each layer (per-bin photon counting).
    Memory: O(keep) plus three bytes an image, whatever the session's length."""

    keep: int
    labels: list = field(default_factory=list)
    predictions: list = field(default_factory=list)
    unusable: int = 0
    mode_shares: list = field(default_factory=lambda: [0.0, 0.0])
    first_inputs: list = field(default_factory=lambda: [[], []])

    @property
    def count(self) -> int:
        return sum(len(labels) for labels in self.labels)

    def add(self, labels, layer1_quadratures_snu, last_quadratures_snu, layer1_inputs) -> None:
        """One batch (or any run of images, in order)."""
        hidden, unusable = hidden_vectors(layer1_quadratures_snu)
        self.labels.append(np.asarray(labels))
        self.predictions.append(predictions(last_quadratures_snu, unusable))
        self.unusable += int(unusable.sum())
        for index, data in enumerate((np.asarray(layer1_inputs), hidden)):
            self.mode_shares[index] = max(self.mode_shares[index], largest_mode_share(data))
            room = self.keep - sum(len(kept) for kept in self.first_inputs[index])
            if room > 0:
                self.first_inputs[index].append(np.array(data[:room]))

    @classmethod
    def from_arrays(cls, labels, layer1_quadratures_snu, last_quadratures_snu, layer1_inputs, keep: int) -> ImageTotals:
        totals = cls(int(keep))
        totals.add(labels, layer1_quadratures_snu, last_quadratures_snu, layer1_inputs)
        return totals

    def all_labels(self) -> np.ndarray:
        return np.concatenate(self.labels) if self.labels else np.empty(0, dtype=np.uint8)

    def all_predictions(self) -> np.ndarray:
        return np.concatenate(self.predictions) if self.predictions else np.empty(0, dtype=np.int16)

    def kept_inputs(self) -> list[np.ndarray]:
        """Per layer, its first `keep` inputs (the layer-1 data, the hidden vectors)."""
        return [np.concatenate(kept) if kept else np.empty((0, 0)) for kept in self.first_inputs]


def per_bin_data_leakage(gain_limits: tuple[float, float], layer_inputs: list[np.ndarray], reuses: list[int],
                       images: int, noise_figure_db: float | None = None) -> dict:
    """Per-bin photon counting's information per data symbol (an achievable value for that measurement, not a
    bound: it keeps each bin's marginal and drops the relative phases, docs/PHYSICS.md 17.1) for the vectors the
    client actually sent, at the leakier G limit and with the amplifier's measured noise figure (None: quantum
    limited, the paper's assumption)."""
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
                    verification_samples: list[tuple[np.ndarray, np.ndarray]], measured: MeasuredValues,
                    modes: int, rows: list[int], failure_probability: float, false_alarm: float,
                    exact_leakage_images: int, trusted: bool = True, verified_rows: list[int] | None = None,
                    weights_path: str | None = None, candidate_entropy_bits: float | None = None,
                    weight_images_sent: tuple[int, ...] | None = None,
                    data_images_sent: tuple[int, ...] | None = None) -> dict:
    """Accuracy, verification and every leakage figure of one session from its arrays (see the module docstring):
    results_from_totals on the arrays, the reference a streamed session and replay are checked against.

    verification_samples: per layer, (sent, returned) of its verified rows; verified_rows: per layer, how many
    rows were verified (None: from the sample count, for callers that only have samples); weights_path: the
    session's weights (None: the shipped ones), whose hidden layer sets layer 2's declared second moments;
    candidate_entropy_bits: H(X) of a declared finite candidate set, which caps the data-leakage bound;
    weight_images_sent, data_images_sent: per layer, every image its weights were sent to and every image whose data it
    carried (results_from_totals)."""
    images = ImageTotals.from_arrays(labels, layer1_quadratures_snu, last_quadratures_snu, layer1_inputs,
                                     exact_leakage_images)
    return results_from_totals(images, PooledSamples(verification_samples), measured=measured, modes=modes, rows=rows,
                               failure_probability=failure_probability, false_alarm=false_alarm,
                               exact_leakage_images=exact_leakage_images, trusted=trusted, verified_rows=verified_rows,
                               weights_path=weights_path, candidate_entropy_bits=candidate_entropy_bits,
                               weight_images_sent=weight_images_sent, data_images_sent=data_images_sent)


def results_from_totals(images: ImageTotals, samples: PooledSamples | StreamedSamples, *, measured: MeasuredValues,
                        modes: int, rows: list[int], failure_probability: float, false_alarm: float,
                        exact_leakage_images: int, trusted: bool = True, verified_rows: list[int] | None = None,
                        weights_path: str | None = None, candidate_entropy_bits: float | None = None,
                        weight_images_sent: tuple[int, ...] | None = None,
                        data_images_sent: tuple[int, ...] | None = None) -> dict:
    """session_results from what a session gathers batch by batch (ImageTotals) and its verified samples' estimates;
    weight_images_sent: per layer, every image its weights were sent to (WeightLeakage.images_sent); data_images_sent:
    per layer, every image whose data its light carried (DataLeakage.takes: layer 1's)."""
    labels, guess = images.all_labels(), images.all_predictions()
    layer_data = images.kept_inputs()
    verified_rows, names, budget = _layers_and_budget(samples, verified_rows, measured, modes, labels.size,
                                                      failure_probability)
    mu, gain = measured.mu_photons.value, measured.gain.value
    k_gain = budget.sigmas("gain")
    mu_upper, gain_upper = measured.mu_photons.upper(budget.sigmas("mu_photons")), measured.gain.upper(k_gain)
    gain_limits = (max(measured.gain.lower(k_gain), 1.0), gain_upper)
    nominal = leakage_summary(OperatingPoint(mu=mu_upper, gain=gain_upper, modes=modes, rows=sum(rows)))
    cramer_rao = max(leakage_summary(OperatingPoint(mu=mu_upper, gain=g, modes=modes, rows=sum(rows)))
                     ["data_leakage_bits_cramer_rao"] for g in gain_limits)
    checked = verify_layers(samples, measured, modes, failure_probability=failure_probability,
                            false_alarm=false_alarm, trusted=trusted, budget=budget)
    noise_figure_db = None  # its upper limit: more returned noise tells the server more
    if measured.amplifier_noise_figure_db is not None:
        noise_figure_db = measured.amplifier_noise_figure_db.upper(budget.sigmas("amplifier_noise_figure_db"))
    per_bin = per_bin_data_leakage(gain_limits, layer_data, rows, exact_leakage_images, noise_figure_db)
    weight = weight_leakage_report(samples, verified_rows, names, measured, modes, rows, images.mode_shares,
                                   budget=budget, queries=int(labels.size), false_alarm=false_alarm, trusted=trusted,
                                   noise_figure_db=noise_figure_db, images_sent=weight_images_sent)
    data = session_data_leakage(measured, budget, rows, int(labels.size), weights_path, candidate_entropy_bits,
                                paper_figures(cramer_rao, nominal["data_leakage_bits_prx"], per_bin["bits"]),
                                takes=None if data_images_sent is None else data_images_sent[0])
    report = SecurityReport(budget, weight, data)
    correct = int(np.sum(guess == labels))
    return {
        "images": int(labels.size),
        "accuracy": correct / labels.size if labels.size else 0.0,
        "correct": correct,
        "accuracy_ci95": list(clopper_pearson(correct, labels.size)) if labels.size else None,
        "unnormalisable_hidden_vectors": int(images.unusable),
        "mu_photons": mu, "mu_photons_upper": mu_upper, "gain": gain, "gain_upper": gain_upper,
        "verified": None if checked is None else bool(checked["accepted"]),
        "weight_leakage_bits_per_mode": weight.per_query_bits_per_mode,
        "weight_leakage_bits_per_mode_cumulative": weight.cumulative_bits_per_mode,
        "weight_leakage_bits_per_client": weight.per_client_bits,
        "weight_images_per_layer": None if weight.images_sent is None else list(weight.images_sent),
        "data_images_per_layer": None if data_images_sent is None else list(data_images_sent),
        "weight_leakage_bits_per_mode_nominal": nominal["weight_leakage_bits_per_mode"],
        "data_leakage_bits_cramer_rao": cramer_rao,
        "data_leakage_bits_prx": nominal["data_leakage_bits_prx"],
        "data_leakage_bound_bits_per_query": data.per_query_bits,
        "data_leakage_bound_bits_per_symbol": data.per_symbol_bits,
        "data_leakage_bound_bits_cumulative": data.cumulative_bits,
        "data_leakage_bits_per_bin": per_bin["bits"],
        "data_leakage_per_bin": per_bin,
        "verification": checked,
        "failure_probability": budget.combined,
        "security_report": report.to_json(),
    }


def session_data_leakage(measured: MeasuredValues, budget: FailureBudget, rows: list[int], images: int,
                         weights_path: str | None, candidate_entropy_bits: float | None, figures=(),
                         takes: int | None = None) -> DataLeakage:
    """The data-leakage upper bound of the session (analysis/data_leakage_report.py): its `images` test images, and
    `takes` images sent in all (every take of a batch; None: not counted), every layer's M rows reusing its input
    (over as many complex modes as its C has)."""
    moments, distribution = declared_moments(weights_path)
    shapes = [(r, 2 * m.eigenvalues.size) for r, m in zip(rows, moments)]
    return data_leakage_report(measured, budget, shapes, moments[:len(shapes)], distribution=distribution,
                               inputs=images, repeats=1, candidate_entropy_bits=candidate_entropy_bits,
                               figures=figures, takes=takes)


def _layers_and_budget(samples: PooledSamples | StreamedSamples, verified_rows, measured: MeasuredValues, modes: int,
                       images: int, failure_probability: float):
    """Per-layer verified row counts, layer names and the report's failure budget (pooled test + each layer with
    enough verification)."""
    sizes = samples.sizes
    if verified_rows is None:
        verified_rows = [size // max(modes * images, 1) for size in sizes]
    names = [f"layer{i + 1}" for i in range(len(sizes))]
    enough = [has_enough_verification(r, n) for r, n in zip(verified_rows, sizes)]
    budget = report_budget(failure_probability, measured, ([POOLED] if sum(sizes) >= 2 else [])
                           + [name for name, ok in zip(names, enough) if ok])
    return verified_rows, names, budget


def session_weight_leakage(*, layer1_quadratures_snu, layer1_inputs, verification_samples, measured: MeasuredValues,
                           modes: int, rows: list[int], failure_probability: float, false_alarm: float, queries: int,
                           verified_rows: list[int] | None = None, trusted: bool = True) -> WeightLeakage:
    """The weight-leakage part of session_results alone, from arrays (weight_leakage_from_totals on them); queries:
    the number of queries to total over."""
    hidden, _ = hidden_vectors(layer1_quadratures_snu)
    shares = [largest_mode_share(np.asarray(layer1_inputs)), largest_mode_share(hidden)]
    return weight_leakage_from_totals(len(hidden), shares, _as_samples(verification_samples), measured=measured,
                                      modes=modes, rows=rows, failure_probability=failure_probability,
                                      false_alarm=false_alarm, queries=queries, verified_rows=verified_rows,
                                      trusted=trusted)


def weight_leakage_from_totals(images: int, mode_shares: list[float], samples: PooledSamples | StreamedSamples, *,
                               measured: MeasuredValues, modes: int, rows: list[int], failure_probability: float,
                               false_alarm: float, queries: int, verified_rows: list[int] | None = None,
                               trusted: bool = True, images_sent: tuple[int, ...] | None = None) -> WeightLeakage:
    """The weight-leakage part of results_from_totals alone (what the session checks against its cap before a
    batch): `images` recorded so far, each layer's largest mode share, the verified samples' estimates."""
    verified_rows, names, budget = _layers_and_budget(samples, verified_rows, measured, modes, images,
                                                      failure_probability)
    noise_figure_db = None
    if measured.amplifier_noise_figure_db is not None:
        noise_figure_db = measured.amplifier_noise_figure_db.upper(budget.sigmas("amplifier_noise_figure_db"))
    return weight_leakage_report(samples, verified_rows, names, measured, modes, rows, mode_shares, budget=budget,
                                 queries=queries, false_alarm=false_alarm, trusted=trusted,
                                 noise_figure_db=noise_figure_db, images_sent=images_sent)


def reference_figures(measured: MeasuredValues, mu_upper: float, gain_upper: float, modes: int) -> tuple:
    """The figures that are not this session's bound, each labelled with what it assumes (T = 1 in both)."""
    paper = verification.leakage_bound_bits(mu_upper, 1.0, (2.0 * gain_upper - 2.0) / (gain_upper * modes))[0]
    figures = [ReferenceFigure("paper_eq2", float(paper),
                               f"T = 1 (no loss) and a quantum-limited amplifier, eps = (2G - 2)/(G n), averaged over "
                               f"modes, at mu {mu_upper:.4g} and G {gain_upper:.4g} (the paper's assumptions, not "
                               "this station's)")]
    if measured.amplifier_noise_figure_db is not None:
        nf = measured.amplifier_noise_figure_db.value
        n_sp = max(float(inversion_factor_from_noise_figure(gain_upper, nf)), 1.0)
        eps = float(returned_excess_noise_total_snu(gain_upper, n_sp)) / modes
        figures.append(ReferenceFigure("lossless_measured_noise_figure", float(
            verification.leakage_bound_bits(mu_upper, 1.0, eps)[0]),
            f"T = 1 (no loss) with the amplifier's measured noise figure {nf:.3g} dB (eps = {eps:.3g} SNU), averaged "
            f"over modes, at mu {mu_upper:.4g} and G {gain_upper:.4g}: this station without its loss"))
    return tuple(figures)


def weight_leakage_report(samples: PooledSamples | StreamedSamples, verified_rows, names, measured: MeasuredValues,
                          modes: int, rows: list[int], mode_shares, *, budget: FailureBudget, queries: int,
                          false_alarm: float, trusted: bool, noise_figure_db: float | None,
                          images_sent: tuple[int, ...] | None = None) -> WeightLeakage:
    """Each layer's verified worst-mode bound (or g(mu)), per query and over every image its weights were sent to
    (images_sent; None: the queries only); mode_shares: per layer, the largest mode share of its inputs
    (security_report.largest_mode_share)."""
    mu_upper = measured.mu_photons.upper(budget.sigmas("mu_photons"))
    gain_upper = measured.gain.upper(budget.sigmas("gain"))
    n_sp = 1.0 if noise_figure_db is None else max(float(inversion_factor_from_noise_figure(gain_upper,
                                                                                         noise_figure_db)), 1.0)
    detector = measured.server_detector(budget, trusted)
    honest, tester = honest_hypothesis(measured, modes, measured.server_detector(CONFIDENCE_SIGMAS, trusted),
                                       CONFIDENCE_SIGMAS)
    layers: list[LayerBound] = []
    for index, name in enumerate(names):
        layers.append(layer_bound_from_estimate(
            name, samples.sizes[index], lambda index=index: samples.layer_estimate(index, detector),
            verified_rows[index], mu_upper_photons=mu_upper, mu_photons=measured.mu_photons.value, modes=modes,
            mode_share=float(mode_shares[index]) if index < len(mode_shares) else 0.0,
            honest_noise_per_share_snu=2.0 * n_sp * (1.0 - 1.0 / gain_upper), budget=budget, detector=detector,
            honest=honest, tester=tester, false_alarm=false_alarm / max(len(names), 1)))
    return WeightLeakage(tuple(layers), queries, tuple(2 * modes * r for r in rows[:len(layers)]),
                         reference_figures(measured, mu_upper, gain_upper, modes),
                         None if images_sent is None else tuple(images_sent)[:len(layers)])
