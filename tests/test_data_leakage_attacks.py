"""Simulated curious servers on MNIST (docs/PHYSICS.md 17.6): the count model against its closed forms,
and each measurement beating chance where the upper bound says the leak is large.

Training uses training images only; accuracies are over fixed seeds, with a tolerance of three times
the spread across seeds. Few images keep it fast, so the accuracies sit below the 30k-image figures.
"""

import math

import numpy as np
import pytest

from qslab.analysis import data_leakage_attacks as att
from qslab.analysis.data_leakage_bound import finite_set_holevo_bits, pack_unit_vectors
from qslab.analysis.mnist import load_mnist, preprocess

N13 = 3.0 / 13.0
LAYER1_ROWS = 784
SEEDS = (0, 1, 2)
CHANCE = 0.1


@pytest.fixture(scope="module")
def mnist():
    train_images, train_labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    x_train = preprocess(train_images[:2000])
    return (x_train, train_labels[:2000].astype(int), preprocess(test_images[:400]), test_labels[:400].astype(int),
            att.mode_sorter_basis(pack_unit_vectors(x_train)))


def test_every_measurement_is_a_passive_interferometer(mnist):
    x_train, _, x_test, _, basis = mnist
    assert np.allclose(basis @ basis.conj().T, np.eye(basis.shape[0]), atol=1e-12)
    x_hat = pack_unit_vectors(x_test[:50])
    for kind in att.MEASUREMENTS:
        assert np.allclose(att.output_probabilities(x_hat, kind, basis).sum(axis=1), 1.0, atol=1e-12)
    # the delay line against its explicit two-beam-splitter matrix over n + 1 slots
    n = x_hat.shape[1]
    shift = np.eye(n + 1, n, k=-1)
    stay = np.eye(n + 1, n)
    explicit = np.vstack([(stay + shift) / 2.0, (stay - shift) / 2.0])
    assert np.allclose(att.output_probabilities(x_hat, "delay"), np.abs(x_hat @ explicit.T) ** 2, atol=1e-15)


def test_orthogonal_pair_per_bin_identical_interferometers_tell_apart():
    pair = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0]]) / 2.0
    per_bin = att.output_probabilities(pair, "per_bin")
    delay = att.output_probabilities(pair, "delay")
    assert np.array_equal(per_bin[0], per_bin[1])
    assert not np.allclose(delay[0], delay[1])
    # sorting onto the pair's own modes gives disjoint supports: one photon identifies, so the
    # success rate is 1 - P(K = 0) = 1 - (1 + N)^-M, the exact chi of the pair
    sorter = np.linalg.qr(np.column_stack([pair.T, np.eye(4)[:, :2]]))[0].conj().T
    sorted_probs = att.output_probabilities(pair, "mode_sorter", sorter)
    assert np.allclose(sorted_probs[:, :2], np.eye(2), atol=1e-12)
    rng = np.random.default_rng(0)
    rows = 3
    counts = att.simulate_counts(np.repeat(sorted_probs, 20_000, axis=0), N13, rows, rng)
    truth = np.repeat([0, 1], 20_000)
    seen = counts.sum(axis=1) > 0
    assert np.all(att.identify(counts[seen], sorted_probs) == truth[seen])
    assert seen.mean() == pytest.approx(finite_set_holevo_bits(pair, N13, rows), abs=0.01)


def test_counts_follow_the_negative_binomial_law():
    rng = np.random.default_rng(1)
    probs = np.tile([0.5, 0.3, 0.2], (200_000, 1))
    total = att.simulate_counts(probs, N13, 10, rng).sum(axis=1)
    assert total.mean() == pytest.approx(10 * N13, rel=0.01)
    assert total.var() == pytest.approx(10 * N13 * (1 + N13), rel=0.02)
    assert np.mean(total == 0) == pytest.approx((1 + N13) ** -10, rel=0.03)


def test_fano_bound_and_plug_in_information():
    assert att.fano_lower_bound_bits(1.0, 2000) == pytest.approx(math.log2(2000))
    assert att.fano_lower_bound_bits(1.0 / 2000, 2000) == pytest.approx(0.0, abs=1e-9)
    labels = np.repeat(np.arange(10), 50)
    assert att.plug_in_mutual_information_bits(labels, labels) == pytest.approx(math.log2(10))
    assert att.plug_in_mutual_information_bits(labels, np.zeros_like(labels)) == pytest.approx(0.0)


def _label_accuracies(mnist, kind, n_train):
    x_train, y_train, x_test, y_test, basis = mnist
    return np.array([att.label_attack(x_train[:n_train], y_train[:n_train], x_test, y_test, kind, N13, LAYER1_ROWS,
                                      np.random.default_rng(seed), basis)["accuracy"] for seed in SEEDS])


def test_per_bin_counting_beats_chance_on_digits(mnist):
    acc = _label_accuracies(mnist, "per_bin", 2000)
    assert acc.mean() - 3.0 * acc.std(ddof=1) > CHANCE


@pytest.mark.parametrize("kind", ["delay", "mode_sorter"])
def test_interferometers_read_the_digit_from_the_phases(mnist, kind):
    acc = _label_accuracies(mnist, kind, 600)
    per_bin = _label_accuracies(mnist, "per_bin", 600)
    assert acc.mean() - 3.0 * acc.std(ddof=1) > CHANCE
    spread = 3.0 * math.hypot(acc.std(ddof=1), per_bin.std(ddof=1))
    assert acc.mean() - per_bin.mean() > max(spread, 0.15)


@pytest.mark.parametrize("kind,least", [("per_bin", 0.1), ("delay", 0.9), ("mode_sorter", 0.9)])
def test_identification_among_test_images(mnist, kind, least):
    _, _, x_test, _, basis = mnist
    rates = np.array([att.identification_attack(x_test[:200], kind, N13, LAYER1_ROWS, np.random.default_rng(seed),
                                                basis)["identification_rate"] for seed in SEEDS])
    assert rates.mean() - 3.0 * rates.std(ddof=1) > max(least, 1.0 / 200)
