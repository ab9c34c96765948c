"""Simulated curious servers: what photon counting on the returned light tells about the client's data (docs/PHYSICS.md 17.6).

Achievable values (lower bounds on the leakage) next to the upper bound of `data_leakage_bound`.
The returned row, its displacement removed, is the mixture over zeta of coherent states zeta x_hat
(17.1). The server sends the n bins through a passive interferometer V and counts photons in every
output: over the M Q copies of one input the counts are exactly Poisson(Lambda |V x_hat|^2) with
Lambda ~ Gamma(M Q, N). Measurements:

* ``per_bin``: V = I, what the per-bin model of section 12 describes;
* ``delay``: a one-bin delay-line interferometer, both output ports, |x_j +- x_{j-1}|^2/4 over n + 1
  slots (zero-padded at the row's ends), self-referenced so it needs no phase lock;
* ``mode_sorter``: a DFT over the leading principal modes of C (from training images), identity on the
  rest; the dominant mode acts as a built-in local oscillator for the others.

The server uses only its own data: public training images to learn C and a classifier, and counts.
Every random draw comes from a caller's seeded numpy Generator.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from qslab.analysis.data_leakage_bound import pack_unit_vectors, second_moments
from qslab.analysis.gaussian import binary_entropy_bits

MEASUREMENTS = ("per_bin", "delay", "mode_sorter")
SORTED_MODES = 64
LN2 = math.log(2.0)


def mode_sorter_basis(training_x_hat, sorted_modes: int = SORTED_MODES) -> np.ndarray:
    """V [n, n] for the mode sorter: rows = DFT over the leading `sorted_modes` principal modes of C, then the rest."""
    moments = second_moments(training_x_hat, groups=1)
    values, vectors = np.linalg.eigh(0.5 * (moments.matrix + moments.matrix.conj().T))
    vectors = vectors[:, np.argsort(values)[::-1]]                   # principal modes, leading first
    k = min(int(sorted_modes), vectors.shape[1])
    analysis = vectors.conj().T                                      # coefficient j = <e_j|x>
    dft = np.fft.fft(np.eye(k), norm="ortho")
    return np.vstack([dft @ analysis[:k], analysis[k:]])


def delay_line_basis(modes: int) -> np.ndarray:
    """V [2(n + 1), n] of the one-bin delay interferometer: (x_j + x_{j-1})/2 then (x_j - x_{j-1})/2, zero-padded."""
    stay, shift = np.eye(modes + 1, modes), np.eye(modes + 1, modes, k=-1)
    return np.vstack([(stay + shift) / 2.0, (stay - shift) / 2.0]).astype(complex)


def measurement_basis(measurement: str, modes: int, training_x_hat=None, sorted_modes: int = SORTED_MODES) -> np.ndarray:
    """The explicit passive interferometer V [outputs, n] of a named measurement (V^H V = I): what a bench renders."""
    if measurement == "per_bin":
        return np.eye(int(modes), dtype=complex)
    if measurement == "delay":
        return delay_line_basis(int(modes))
    if measurement == "mode_sorter":
        if training_x_hat is None:
            raise ValueError("the mode sorter needs training images to find the principal modes")
        return mode_sorter_basis(training_x_hat, sorted_modes)
    raise ValueError(f"measurement {measurement!r}; expected one of {MEASUREMENTS}")


def output_probabilities(x_hat, measurement: str, basis=None) -> np.ndarray:
    """|V x_hat|^2 per output [B, outputs] for the named measurement (each row sums to 1)."""
    x = np.asarray(x_hat, dtype=complex)
    if measurement == "per_bin":
        return np.abs(x) ** 2
    if measurement == "delay":
        padded = np.pad(x, ((0, 0), (1, 1)))
        now, before = padded[:, 1:], padded[:, :-1]
        return np.concatenate([np.abs(now + before) ** 2, np.abs(now - before) ** 2], axis=1) / 4.0
    if measurement == "mode_sorter":
        if basis is None:
            raise ValueError("the mode sorter needs its basis (mode_sorter_basis of training images)")
        return np.abs(x @ np.asarray(basis).T) ** 2
    raise ValueError(f"measurement {measurement!r}; expected one of {MEASUREMENTS}")


def simulate_counts(probabilities, photons, copies: int, rng: np.random.Generator) -> np.ndarray:
    """Photon counts per output summed over `copies` = M Q returned rows: Poisson(Lambda p), Lambda ~ Gamma(copies, N)."""
    p = np.asarray(probabilities, dtype=float)
    intensity = rng.gamma(shape=int(copies), scale=float(photons), size=(p.shape[0], 1))
    return rng.poisson(intensity * p)


def count_features(counts) -> np.ndarray:
    """Anscombe transform sqrt(c + 3/8): Poisson counts with near-constant variance."""
    return np.sqrt(np.asarray(counts, dtype=float) + 0.375)


DEFAULT_L2 = 0.1   # per-bin counts over few training images overfit without it


def train_softmax(features, labels, n_classes: int = 10, l2: float = DEFAULT_L2, max_iter: int = 500):
    """Multinomial logistic regression by L-BFGS: (weights [d, classes], bias [classes], mean, scale)."""
    x = np.asarray(features, dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    y = np.eye(n_classes)[np.asarray(labels)]
    d = z.shape[1]

    def loss(theta):
        w, b = theta[:d * n_classes].reshape(d, n_classes), theta[d * n_classes:]
        logits = z @ w + b
        log_p = logits - logsumexp(logits, axis=1, keepdims=True)
        grad_logits = (np.exp(log_p) - y) / len(z)
        value = -np.sum(y * log_p) / len(z) + 0.5 * l2 * np.sum(w * w)
        return value, np.concatenate([(z.T @ grad_logits + l2 * w).ravel(), grad_logits.sum(axis=0)])

    theta = minimize(loss, np.zeros(d * n_classes + n_classes), jac=True, method="L-BFGS-B",
                     options={"maxiter": max_iter}).x
    return theta[:d * n_classes].reshape(d, n_classes), theta[d * n_classes:], mean, scale


def predict_softmax(model, features) -> np.ndarray:
    w, b, mean, scale = model
    return np.argmax(((np.asarray(features, dtype=float) - mean) / scale) @ w + b, axis=1)


def plug_in_mutual_information_bits(labels, guesses, n_classes: int = 10) -> float:
    """I(Y; Y_hat) of the empirical confusion matrix: a lower bound on I(X; outcome) (Y - X - outcome)."""
    joint = np.zeros((n_classes, n_classes))
    np.add.at(joint, (np.asarray(labels), np.asarray(guesses)), 1.0)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(np.where(joint > 0, joint * np.log2(joint / outer), 0.0)))


def identify(counts, candidate_probabilities, floor: float = 1e-12) -> np.ndarray:
    """Maximum-likelihood candidate index per count vector: given the total, the counts are multinomial."""
    log_p = np.log(np.clip(np.asarray(candidate_probabilities, dtype=float), floor, None))
    return np.argmax(np.asarray(counts, dtype=float) @ log_p.T, axis=1)


def fano_lower_bound_bits(success_rate, candidates: int) -> float:
    """I(X; guess) >= log2 L - h(P_e) - P_e log2(L - 1) for a uniform prior on L candidates."""
    p_e = 1.0 - float(success_rate)
    return max(math.log2(candidates) - binary_entropy_bits(p_e) - p_e * math.log2(max(candidates - 1, 1)), 0.0)


def label_attack(train_data, train_labels, test_data, test_labels, measurement: str, photons, copies: int,
                 rng: np.random.Generator, basis=None, l2: float = DEFAULT_L2) -> dict:
    """Train on simulated counts of training images, test on fresh counts of test images.

    Returns accuracy and the plug-in I(Y; Y_hat) in bits per query set of `copies` rows.
    """
    counts_train = simulate_counts(output_probabilities(pack_unit_vectors(train_data), measurement, basis),
                                   photons, copies, rng)
    model = train_softmax(count_features(counts_train), train_labels, l2=l2)
    counts_test = simulate_counts(output_probabilities(pack_unit_vectors(test_data), measurement, basis),
                                  photons, copies, rng)
    guesses = predict_softmax(model, count_features(counts_test))
    return {"accuracy": float(np.mean(guesses == np.asarray(test_labels))),
            "mutual_information_bits": plug_in_mutual_information_bits(test_labels, guesses)}


def identification_attack(candidate_data, measurement: str, photons, copies: int, rng: np.random.Generator,
                          basis=None) -> dict:
    """The server holds the exact candidate set (uniform prior): it identifies each candidate from fresh counts.

    Returns the identification rate and the Fano lower bound on the information it implies.
    """
    probs = output_probabilities(pack_unit_vectors(candidate_data), measurement, basis)
    guesses = identify(simulate_counts(probs, photons, copies, rng), probs)
    rate = float(np.mean(guesses == np.arange(len(probs))))
    return {"identification_rate": rate, "fano_bits": fano_lower_bound_bits(rate, len(probs))}
