"""A curious server (docs/PHYSICS.md 10.1): what it learns about the client's data from the light it gets back.

An honest client's amplifier noise returns along its data vector: returned mode i carries excess
noise eps_i = t T_r k |x_i|^2 (k = 2 n_sp (1 - 1/G)), reused by all M rows of a layer. The server
here homodynes every returned row of layer 1 (M = 784; a curious server need not stop at the rows
it verifies) for MNIST images through the bench's link, and

* estimates |x_i|^2 per mode from its residual variance over the M rows (the maximum-likelihood
  estimator of a Gaussian variance), which the Cramer-Rao bound says it cannot beat: its error is
  checked against 2 sigma_i^4 / (M c^2), and the information it carries, 1/2 log2(1 + Var(x^2)/MSE)
  (the Gaussian-channel capacity at the estimator's SNR), against the session's reported figures
  (qslab.analysis.session_results: the Cramer-Rao form and the exact photon-counting mutual information);
* compares the optimal per-mode (photon-counting) server at the link's true returned noise with
  the reported exact figure, which assumes a quantum-limited amplifier (k = 2 - 2/G);
* looks at what the per-symbol model leaves out: the returned noise of one row is one complex number
  times x, so across rows it is correlated between modes and a principal-component analysis of the
  residuals finds span{Re x, Im x}, the data's direction.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg

from qslab.analysis import data_leakage, mnist, session_results
from qslab.analysis.encoding import unit_vectors
from qslab.analysis.leakage_report import OperatingPoint, leakage_summary
from qslab.analysis.network import load_weights
from qslab.instruments.sim.bench import BenchState
from qslab.instruments.sim.link.model import LinkParameters, SecureLayer

MU, GAIN, IMAGES, MODES = 6.0, 1.3, 8, 392


def bench_link(noise_figure: bool = True) -> LinkParameters:
    """The bench's link at G = 1.3 (4 dB noise figure), or the same link with a quantum-limited amplifier."""
    state = BenchState()
    state.amplifier.enabled = True
    link = replace(state.link_parameters(mu_photons=MU),
                   server_electronic_noise_snu=state.params.server_receiver.electronic_noise_snu)
    return link if noise_figure else replace(link, amplifier_noise_figure_db=None)


@pytest.fixture(scope="module")
def images():
    pixels, _ = mnist.load_mnist("test")
    return mnist.preprocess(pixels[:IMAGES].reshape(IMAGES, -1))


def server_view(link: LinkParameters, images, seed=7):
    """(x_hat [B, N], residuals y - sqrt(eta_s T) q [B, M, N]) with every row of layer 1 homodyned."""
    weights, _ = load_weights()
    x_hat = unit_vectors(images)
    _, record = SecureLayer(weights[0], link).products(x_hat, np.random.default_rng(seed), 1.0)
    amplitude = np.sqrt(link.server_efficiency * link.round_trip_transmittance)
    residuals = record.returned_quadratures_snu.astype(np.float64) - amplitude * record.sent_quadratures_snu
    return x_hat, residuals


def noise_per_unit_x2(link: LinkParameters) -> float:
    """c: residual variance per unit |x_i|^2 at the server's detector, eta_s t T_r k."""
    return link.server_efficiency * link.returned_excess_noise_total_snu


def curious_estimates(link: LinkParameters, residuals) -> np.ndarray:
    """|x_i|^2 from the residual variance over the rows: (s_i^2 - 1 - v_el)/c."""
    return (np.mean(residuals**2, axis=1) - 1.0 - link.server_electronic_noise_snu) / noise_per_unit_x2(link)


def reported_bits(images, noise_figure_db: float | None = None) -> dict:
    """The data-leakage figures a session reports for these images (session_results, G without uncertainty;
    the amplifier's noise figure as its record gives it, None for a quantum-limited one)."""
    summary = leakage_summary(OperatingPoint(mu=MU, gain=GAIN, modes=MODES, rows=784))
    exact = session_results.per_bin_data_leakage((GAIN, GAIN), [images], [784], len(images), noise_figure_db)
    return {"cramer_rao": summary["data_leakage_bits_cramer_rao"], "exact": exact["per_layer"]["layer1"]["mean"]}


@pytest.mark.parametrize("noise_figure", [True, False], ids=["4 dB amplifier", "quantum-limited"])
def test_the_servers_estimate_of_the_data_magnitudes_is_fisher_limited_and_below_the_reported_bounds(
        images, noise_figure):
    link = bench_link(noise_figure)
    x_hat, residuals = server_view(link, images)
    truth = np.abs(x_hat) ** 2
    error = curious_estimates(link, residuals) - truth
    rows, c = residuals.shape[1], noise_per_unit_x2(link)
    sigma2 = 1.0 + link.server_electronic_noise_snu + c * truth
    cramer_rao = np.mean(2.0 * sigma2**2 / (rows * c**2))
    mse = np.mean(error**2)
    assert abs(np.mean(error)) < 5 * np.sqrt(mse / error.size)  # unbiased
    assert 0.9 * cramer_rao < mse < 1.15 * cramer_rao          # efficient: Fisher-limited, and no better
    bits = 0.5 * np.log2(1.0 + np.var(truth) / mse)
    reported = reported_bits(images)
    assert bits < reported["cramer_rao"] < reported["exact"], (bits, reported)


def _optimal_per_mode_bits(link: LinkParameters, x_hat) -> float:
    """The photon-counting server at its input: thermal photons eps_i/2, eps_i = t T_r k |x_i|^2, M = 784 reuses."""
    total = link.returned_excess_noise_total_snu
    return float(np.mean([data_leakage.mutual_information_counts_bits(0.5 * total * np.abs(x) ** 2, 784)
                          for x in x_hat]))


def test_the_reported_exact_figure_covers_the_optimal_per_mode_server_with_a_quantum_limited_amplifier(images):
    assert _optimal_per_mode_bits(bench_link(False), unit_vectors(images)) <= reported_bits(images)["exact"]


def test_the_reported_exact_figure_covers_the_optimal_per_mode_server_with_the_benchs_amplifier(images):
    """The session reports the exact figure with the amplifier record's noise figure (n_sp > 1)."""
    link = bench_link(True)
    assert _optimal_per_mode_bits(link, unit_vectors(images)) <= reported_bits(
        images, link.amplifier_noise_figure_db)["exact"]
    assert _optimal_per_mode_bits(link, unit_vectors(images)) > reported_bits(images)["exact"]  # n_sp = 1 would not


def test_correlations_between_modes_reveal_the_datas_direction(images):
    """Not covered by the per-symbol bounds: the top two principal components of one image's residuals over
    its M rows lie far closer to span{Re x, Im x} than chance (2/N), signs of the data included
    (overlap 0.16-0.25 through the bench's 4 dB amplifier; near chance when quantum-limited at M = 784)."""
    link = bench_link(True)
    x_hat, residuals = server_view(link, images[:4])
    overlaps = []
    for x, r in zip(x_hat, residuals):
        _, vectors = scipy.linalg.eigh(r.T @ r / r.shape[0], subset_by_index=[MODES - 2, MODES - 1])
        span, _ = np.linalg.qr(np.stack([x.real, x.imag], axis=1))
        overlaps.append(np.sum((span.T @ vectors) ** 2) / 2.0)
    assert min(overlaps) > 20 * (2.0 / MODES), overlaps
