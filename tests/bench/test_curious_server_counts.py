"""The curious server's bench rendering (instruments/sim/faults_attacks/curious_server.py) against the analysis
room's attack model by independent routes, and the server's attack on bench counts beating chance on MNIST.

Independent routes: the rendering draws one kick per row and sums intensities in closed form; here the same
light is built row by row (a coherent amplitude per row and output, a Poisson draw per row and output, then
summed), and the mean counts are checked against N R |V x_hat|^2 + |delta|^2 T sum_r |(V alpha_r)_j|^2. The
attacks train on MNIST training images only; accuracies are over three bench seeds, with a tolerance of three
times their spread.
"""

import math

import numpy as np
import pytest

from qslab.analysis import data_leakage_attacks as att
from qslab.analysis.data_leakage_bound import pack_unit_vectors
from qslab.analysis.data_leakage_curious import CuriousSpec, attack_outcome, server_basis
from qslab.analysis.encoding import weight_symbols
from qslab.analysis.mnist import load_mnist, preprocess
from qslab.analysis.network import load_weights
from qslab.instruments.sim.faults_attacks.curious_server import CuriousServer, render_counts
from qslab.instruments.sim.link.model import LinkParameters

LINK = LinkParameters(mu_photons=6.0, gain=1.3, processor_loss_per_pass_db=0.2, return_transmittance=0.9)
SEEDS = (0, 1, 2)
CHANCE = 0.1


def _row_by_row(x_hat, symbols, basis, photons, transmittance, delta, rng):
    """The same counts drawn the slow way: each row's coherent amplitude per output, a Poisson draw each."""
    out = np.zeros((x_hat.shape[0], basis.shape[0]), dtype=np.int64)
    for b, x in enumerate(x_hat):
        for alpha in symbols:
            xi = math.sqrt(photons / 2.0) * complex(rng.standard_normal(), rng.standard_normal())
            field = basis @ (xi * x - delta * math.sqrt(transmittance) * alpha)
            out[b] += rng.poisson(np.abs(field) ** 2)
    return out


@pytest.mark.parametrize("delta", [0.0, 0.05 + 0.03j])
def test_rendering_matches_the_row_by_row_light_and_the_closed_form_means(delta):
    rng = np.random.default_rng(7)
    n, rows, shots = 4, 3, 20_000
    x = np.array([[0.5, 0.5j, -0.5, 0.5]])
    symbols = 1.2 * (rng.standard_normal((rows, n)) + 1j * rng.standard_normal((rows, n)))
    basis = att.delay_line_basis(n)
    photons, transmittance = 0.4, 0.6
    fast = render_counts(np.repeat(x, shots, axis=0), symbols, basis, photons, transmittance, delta,
                         np.random.default_rng(1))
    slow = _row_by_row(np.repeat(x, shots // 4, axis=0), symbols, basis, photons, transmittance, delta,
                       np.random.default_rng(2))
    closed = (rows * photons * np.abs(basis @ x[0]) ** 2
              + abs(delta) ** 2 * transmittance * np.sum(np.abs(symbols @ basis.T) ** 2, axis=0))
    sigma = np.sqrt(fast.var(axis=0) / shots + slow.var(axis=0) / (shots // 4)) + 1e-12
    assert np.all(np.abs(fast.mean(axis=0) - slow.mean(axis=0)) < 5 * sigma)
    assert np.all(np.abs(fast.mean(axis=0) - closed) < 5 * np.sqrt(fast.var(axis=0) / shots) + 1e-9)
    # the second moments too: the kick is shared by the outputs of a row, so counts are positively correlated
    assert np.allclose(np.cov(fast.T), np.cov(slow.T), atol=6 * np.sqrt(np.cov(fast.T).max() ** 2 / (shots // 4)))


def test_perfect_removal_gives_the_gamma_poisson_law_of_the_analysis_room():
    """Total photons of R rows: negative binomial, mean R N and variance R N (1 + N) (data_leakage_attacks)."""
    images, _ = load_mnist("test")
    x = pack_unit_vectors(preprocess(images[:1].reshape(1, -1)))
    symbols = weight_symbols(load_weights()[0][0], 6.0)
    server = CuriousServer("per_bin", np.eye(x.shape[1]), rows=symbols.shape[0])
    record = server.observe(np.repeat(x, 4000, axis=0), symbols, np.arange(10), LINK, bench_seed=5)
    total = record.counts.sum(axis=1)
    n_true = LINK.inversion_factor * (1 - 1 / LINK.gain) * LINK.processor_transmittance_per_pass * LINK.return_transmittance
    assert record.photons == pytest.approx(n_true) and record.counted_rows == symbols.shape[0] - 10
    mean, var = record.counted_rows * n_true, record.counted_rows * n_true * (1 + n_true)
    assert total.mean() == pytest.approx(mean, abs=4 * math.sqrt(var / total.size))
    assert total.var() == pytest.approx(var, rel=0.1)
    # per output: the means N R |x_i|^2 the per-bin attack model uses
    expected = record.counted_rows * n_true * np.abs(x[0]) ** 2
    assert np.allclose(record.counts.mean(axis=0), expected, atol=5 * np.sqrt(expected.max() * 2 / 4000))


def test_the_same_state_counted_again_gets_fresh_counts_and_a_new_server_repeats_them():
    x = np.repeat(np.full((1, 4), 0.5, dtype=complex), 5, axis=0)
    symbols = np.ones((6, 4), dtype=complex)
    first, second = (CuriousServer("delay", att.delay_line_basis(4)) for _ in range(2))
    a = first.observe(x, symbols, [], LINK, 3).counts
    b = first.observe(x, symbols, [], LINK, 3).counts
    assert np.array_equal(a, second.observe(x, symbols, [], LINK, 3).counts)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("bad,message", [
    (dict(kind="homodyne"), "expected one of per_bin"),
    (dict(basis=np.ones((4, 4))), "V^H V = I"),
    (dict(residual_amplitude=-1.0), "expected > -1"),
])
def test_bad_servers_are_refused_with_one_line(bad, message):
    args = dict(kind="delay", basis=att.delay_line_basis(4)) | bad
    with pytest.raises(ValueError, match=message.replace("^", r"\^")):
        CuriousServer(**args)


@pytest.fixture(scope="module")
def layer1():
    images, labels = load_mnist("test")
    count = 300
    pixels = preprocess(images[:count].reshape(count, -1))
    return pack_unit_vectors(pixels), labels[:count].astype(int), weight_symbols(load_weights()[0][0], 6.0)


def _bench_outcomes(layer1, kind, train_images, residual=0.0):
    x, labels, symbols = layer1
    spec = CuriousSpec(kind, seed=11, train_images=train_images, residual_amplitude=residual)
    outcomes = []
    for seed in SEEDS:
        server = CuriousServer(kind, server_basis(spec, x.shape[1]), residual_amplitude=residual)
        verified = np.random.default_rng(seed).choice(symbols.shape[0], 8, replace=False)
        record = server.observe(x, symbols, verified, LinkParameters(mu_photons=6.0, gain=1.3), bench_seed=seed)
        outcomes.append(attack_outcome(spec, record.counts, np.full(len(x), record.counted_rows), labels,
                                       np.arange(len(x))))
    return outcomes


@pytest.mark.parametrize("kind,train_images,least_identified", [("per_bin", 2000, 0.05), ("delay", 600, 0.9),
                                                                ("mode_sorter", 600, 0.9)])
def test_the_server_beats_chance_on_bench_counts(layer1, kind, train_images, least_identified):
    outcomes = _bench_outcomes(layer1, kind, train_images)
    accuracy = np.array([o["accuracy"] for o in outcomes])
    identified = np.array([o["identification_rate"] for o in outcomes])
    assert accuracy.mean() - 3 * accuracy.std(ddof=1) > CHANCE
    assert identified.mean() - 3 * identified.std(ddof=1) > max(least_identified, 1 / 300)
    for outcome in outcomes:  # N from its own counts: the true N of a quantum-limited amplifier, lossless return
        assert outcome["photons_per_row_estimate"] == pytest.approx(1 - 1 / 1.3, rel=0.02)


def test_a_residual_of_the_displacement_removal_costs_the_server(layer1):
    clean = np.array([o["accuracy"] for o in _bench_outcomes(layer1, "delay", 600)])
    off = np.array([o["accuracy"] for o in _bench_outcomes(layer1, "delay", 600, residual=0.02)])
    assert off.mean() + 3 * math.hypot(off.std(ddof=1), clean.std(ddof=1)) < clean.mean()
