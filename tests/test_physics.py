"""The virtual bench's optical model against the paper's closed forms (docs/PHYSICS.md 4).

Statistical tests use fixed seeds and tolerances of 5 standard errors; sample sizes are chosen so
that a factor-of-2 or sign error in any term is many tens of standard errors away.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from qslab.analysis import client_measurement as cm
from qslab.analysis import encoding
from qslab.analysis.network import DigitalEngine, secure_forward
from qslab.instruments.sim.link import model as ph
from qslab.instruments.sim.link import random_streams as streams

Z = 5.0  # tolerance in standard errors

IDEAL = ph.LinkParameters(mu_photons=4.0, gain=2.0)
REALISTIC = ph.LinkParameters(mu_photons=5.0, gain=1.3, amplifier_noise_figure_db=4.5, forward_transmittance=0.8,
                              return_transmittance=0.7, processor_loss_per_pass_db=0.3, client_efficiency=0.8,
                              client_electronic_noise_snu=0.02, server_efficiency=0.75,
                              server_electronic_noise_snu=0.03)


def _x_hat(n_modes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n_modes) + 1j * rng.standard_normal(n_modes)
    x *= np.linspace(0.2, 1.5, n_modes)  # unequal |x_i|: per-mode excess noise differs
    return x / np.linalg.norm(x)


def _symbols(n_rows, n_modes, seed=1):
    rng = np.random.default_rng(seed)
    return 1.3 * (rng.standard_normal((n_rows, n_modes)) + 1j * rng.standard_normal((n_rows, n_modes)))


def _close(measured, expected, standard_error, what):
    measured, expected, standard_error = map(np.asarray, (measured, expected, standard_error))
    assert np.all(np.abs(measured - expected) <= Z * standard_error), (
        f"{what}: measured {measured}, expected {expected}, |diff|/SE = {np.abs(measured - expected) / standard_error}")


# --- closed forms, written out independently of the code under test --------------------------------

def expected_moments(params, alpha, x, measure_p):
    """Mean and covariance of (X_client, y_1..y_N) for one row; the server reads X (measure_p False) or P."""
    g, n_sp = params.gain, params.inversion_factor
    t = params.processor_transmittance_per_pass
    eta, eta_s = params.client_efficiency, params.server_efficiency
    k = 2.0 * n_sp * (1.0 - 1.0 / g)  # excess the re-injected mode carries (2 - 2/G at the quantum limit)
    a2 = eta_s * params.return_transmittance * t
    beta = np.vdot(x, alpha)
    sent_quadrature = 2.0 * (alpha.imag if measure_p else alpha.real)
    mean = np.concatenate([[2.0 * np.sqrt(eta * (g - 1.0) * params.forward_transmittance * t) * beta.real],
                           np.sqrt(eta_s * params.round_trip_transmittance) * sent_quadrature])
    v_amp = g + (g - 1.0) * (2.0 * n_sp - 1.0)
    var_client = eta * ((1.0 - 1.0 / g) * v_amp + 1.0 / g) + 1.0 - eta + params.client_electronic_noise_snu
    n = len(x)
    cov = np.empty((n + 1, n + 1))
    cov[0, 0] = var_client
    cross = np.sqrt(eta * a2 * (g - 1.0)) * k * (x.imag if measure_p else x.real)
    cov[0, 1:] = cov[1:, 0] = cross
    cov[1:, 1:] = (1.0 + params.server_electronic_noise_snu) * np.eye(n) + a2 * k * np.real(np.outer(x, x.conj()))
    return mean, cov


def check_joint_moments(params, alpha, x, x_meas, returned, measure_p, what):
    """x_meas [shots], returned [shots, N] for one row; compare per quadrature group with the closed forms."""
    for p in (False, True):
        sel = measure_p == p
        samples = np.column_stack([x_meas[sel], returned[sel]])
        n = samples.shape[0]
        mean, cov = expected_moments(params, alpha, x, p)
        _close(samples.mean(0), mean, np.sqrt(np.diag(cov) / n), f"{what} means ({'P' if p else 'X'})")
        se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
        _close(np.cov(samples.T), cov, se, f"{what} covariance ({'P' if p else 'X'})")


# --- packing ---------------------------------------------------------------------------------------

def test_pack_weights_sets_mu_and_packs_two_reals_per_mode():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 9))  # odd length: zero padded to 10 reals = 5 modes
    symbols, scale = encoding.pack_weights(w, 3.7)
    assert symbols.shape == (5, 5)
    assert np.mean(np.abs(symbols) ** 2) == pytest.approx(3.7, rel=1e-12)
    np.testing.assert_allclose(symbols[:, :4], scale * (w[:, 0:8:2] + 1j * w[:, 1:8:2]), rtol=1e-13)
    np.testing.assert_allclose(symbols[:, 4], scale * w[:, 8], rtol=1e-13)
    x = rng.standard_normal((4, 9))
    x_hat = encoding.unit_vectors(x)
    np.testing.assert_allclose(np.linalg.norm(x_hat, axis=1), 1.0, rtol=1e-13)
    re_beta = np.real(x_hat.conj() @ symbols.T)
    np.testing.assert_allclose(re_beta, scale * (x @ w.T) / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(encoding.unit_vectors(x[0]), x_hat[0], rtol=1e-15)


# --- the client's processor ------------------------------------------------------------------------

GIVENS_CASES = {
    "random complex": _x_hat(7),
    "zeros leading, inside, trailing": np.array([0, 0, 1.0, 0, 2j, -0.5, 0, 0]) / np.sqrt(5.25),
    "one mode": np.array([1j]),
    "MNIST-like": encoding.unit_vectors(np.where(np.random.default_rng(3).random(784) < 0.8, 0.0,
                                        np.random.default_rng(4).random(784))),
}


@pytest.mark.parametrize("name", sorted(GIVENS_CASES))
def test_givens_chain_first_row_is_conj_data_and_unitary(name):
    x = GIVENS_CASES[name]
    theta, phi = ph.givens_angles(x)
    u = ph.givens_matrix(theta, phi)
    np.testing.assert_allclose(u[0], x.conj(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(u @ u.conj().T, np.eye(len(x)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ph.inverse_givens_matrix(theta, phi) @ u, np.eye(len(x)), rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0, -2.5, 1e-3]), st.sampled_from([0.0, 1.0, 0.3, -1e-3])),
                min_size=1, max_size=12).filter(lambda v: any(a or b for a, b in v)))
def test_givens_chain_property(entries):
    """Any data vector, including zeros anywhere and tiny entries: first row conj(x_hat), unitary."""
    x = np.array([complex(a, b) for a, b in entries])
    x /= np.linalg.norm(x)
    u = ph.givens_matrix(*ph.givens_angles(x))
    np.testing.assert_allclose(u[0], x.conj(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(u @ u.conj().T, np.eye(len(x)), rtol=0, atol=1e-12)


def test_givens_chain_is_vectorised_over_images():
    xs = np.stack([_x_hat(6, seed) for seed in range(3)])
    u = ph.givens_matrix(*ph.givens_angles(xs))
    for i, x in enumerate(xs):
        np.testing.assert_allclose(u[i], ph.givens_matrix(*ph.givens_angles(x)), atol=1e-15)


def test_lossy_chain_is_passive_with_vacuum_deficit():
    x = _x_hat(5)
    theta, phi = ph.givens_angles(x)
    t = 10 ** (-0.7 / 10)
    a = ph.givens_matrix(theta, phi, loss_per_pass_db=0.7)
    np.testing.assert_allclose(a @ a.conj().T, t * np.eye(5), atol=1e-12)
    factor = ph.passive_noise_factor(a)
    np.testing.assert_allclose(factor @ factor.conj().T, (1 - t) * np.eye(5), atol=1e-12)
    with pytest.raises(ValueError, match="not passive"):
        ph.passive_noise_factor(1.1 * np.eye(3))
    # a coherent input leaves as a coherent state: mean A alpha, every quadrature at vacuum variance
    rng = np.random.default_rng(5)
    alpha = _symbols(1, 5)[0]
    n = 200_000
    out = ph.apply_passive_map(a, ph.coherent_state(np.broadcast_to(alpha, (n, 5)), rng), rng)
    _close(out.mean(0), a @ alpha, np.sqrt(0.5 / n), "processor output mean")
    var = np.concatenate([np.var(2 * out.real, 0), np.var(2 * out.imag, 0)])
    _close(var, 1.0, np.sqrt(2.0 / n), "processor output variance")


def test_loss_scales_means_by_sqrt_t_and_keeps_vacuum():
    rng = np.random.default_rng(6)
    n, t, alpha = 400_000, 0.37, 1.2 - 0.7j
    out = ph.attenuate(ph.coherent_state(np.full(n, alpha), rng), t, rng)
    _close([np.mean(2 * out.real), np.mean(2 * out.imag)], [2 * np.sqrt(t) * alpha.real, 2 * np.sqrt(t) * alpha.imag],
           np.sqrt(1 / n), "attenuated mean")
    _close([np.var(2 * out.real), np.var(2 * out.imag)], 1.0, np.sqrt(2 / n), "attenuated variance")


# --- the client's measurement ------------------------------------------------------------------------

@pytest.mark.parametrize("gain", [1.3, 2.0, 5.0])
def test_client_outcome_matches_paper_closed_form(gain):
    params = ph.LinkParameters(mu_photons=4.0, gain=gain)
    x, symbols = _x_hat(4), _symbols(3, 4)
    n = 200_000
    x_meas, _ = ph.secure_products(symbols, np.broadcast_to(x, (n, 4)), params, np.random.default_rng(7), 0.0)
    re_beta = np.real(x.conj() @ symbols.T)
    variance = (2 * gain**2 - 3 * gain + 2) / gain
    _close(x_meas.mean(0), 2 * np.sqrt(gain - 1) * re_beta, np.sqrt(variance / n), "client mean")
    _close(x_meas.var(0), variance, variance * np.sqrt(2 / n), "client variance")


def test_client_outcome_with_efficiency_noise_figure_and_losses():
    x, symbols = _x_hat(4), _symbols(3, 4)
    n = 200_000
    x_meas, _ = ph.secure_products(symbols, np.broadcast_to(x, (n, 4)), REALISTIC, np.random.default_rng(8), 0.0)
    p = REALISTIC
    variance = cm.measured_variance_snu(p.gain, p.client_efficiency, p.client_electronic_noise_snu, p.inversion_factor)
    mean = cm.measured_mean_per_re_beta(p.gain, p.client_efficiency) * np.sqrt(
        p.forward_transmittance * p.processor_transmittance_per_pass) * np.real(x.conj() @ symbols.T)
    _close(x_meas.mean(0), mean, np.sqrt(variance / n), "client mean")
    _close(x_meas.var(0), variance, variance * np.sqrt(2 / n), "client variance")
    assert p.inversion_factor == pytest.approx(cm.inversion_factor_from_noise_figure(1.3, 4.5))


def test_quantum_limited_noise_figure_equals_default():
    g = 1.7
    limit_db = 10 * np.log10((2 * g - 1) / g)
    assert ph.LinkParameters(1.0, g, amplifier_noise_figure_db=limit_db).inversion_factor == pytest.approx(1.0)
    with pytest.raises(ValueError, match="amplifier_noise_figure_db"):
        ph.LinkParameters(1.0, g, amplifier_noise_figure_db=limit_db - 0.1)


def test_gain_one_gives_vacuum_and_no_estimate():
    params = ph.LinkParameters(mu_photons=4.0, gain=1.0)
    n = 100_000
    x_meas, _ = ph.secure_products(_symbols(2, 3), np.broadcast_to(_x_hat(3), (n, 3)), params,
                                   np.random.default_rng(9), 0.5)
    _close(x_meas.mean(0), 0.0, np.sqrt(1 / n), "G = 1 mean")
    _close(x_meas.var(0), 1.0, np.sqrt(2 / n), "G = 1 variance")
    layer = ph.SecureLayer(np.ones((2, 4)), params)
    with pytest.raises(ValueError, match="gain"):
        layer(np.ones((1, 4)), np.random.default_rng(0)).re_beta_estimate()


def test_fast_and_joint_paths_agree_for_the_client():
    x, symbols = _x_hat(6), _symbols(2, 6)
    n = 150_000
    data = np.broadcast_to(x, (n, 6))
    fast, _ = ph.secure_products(symbols, data, REALISTIC, np.random.default_rng(10), 0.0)
    joint, record = ph.secure_products(symbols, data, REALISTIC, np.random.default_rng(11), 1.0)
    assert record.row_indices.tolist() == [0, 1]
    for row in range(2):
        assert stats.ks_2samp(fast[:, row], joint[:, row]).pvalue > 1e-4
        _close(joint[:, row].mean() - fast[:, row].mean(), 0.0, np.sqrt(2 * REALISTIC.client_variance_snu / n),
               "fast vs joint mean")
        _close(joint[:, row].var() / fast[:, row].var(), 1.0, 2 * np.sqrt(1 / n), "fast vs joint variance")


def test_unbiased_dot_product_estimate():
    rng = np.random.default_rng(12)
    w, x = rng.standard_normal((3, 11)), rng.standard_normal(11)
    layer = ph.SecureLayer(w, REALISTIC)
    n = 100_000
    out = layer(np.broadcast_to(x, (n, 11)), rng, verify_fraction=0.5)
    est = out.dot_product_estimate()
    std = np.sqrt(REALISTIC.client_variance_snu) / REALISTIC.client_mean_per_re_beta / layer.scale
    _close(est.mean(0), w @ x / np.linalg.norm(x), std / np.sqrt(n), "dot-product estimate")


# --- the returned state and the server's verification ----------------------------------------------

@pytest.mark.parametrize("params", [IDEAL, REALISTIC], ids=["ideal", "realistic"])
def test_joint_path_matches_closed_forms(params):
    """Client outcome, returned means, per-mode excess noise and all cross-covariances, X and P rows."""
    x, symbols = _x_hat(5), _symbols(2, 5)
    n = 160_000
    x_meas, record = ph.secure_products(symbols, np.broadcast_to(x, (n, 5)), params, np.random.default_rng(13), 1.0)
    assert record.returned_quadratures_snu.shape == (n, 2, 5)
    for j in range(2):
        check_joint_moments(params, symbols[j], x, x_meas[:, j], record.returned_quadratures_snu[:, j],
                            record.measure_p[:, j], f"joint path row {j}")


@pytest.mark.parametrize("params", [IDEAL, REALISTIC], ids=["ideal", "realistic"])
def test_explicit_reference_model_matches_closed_forms(params):
    """The slow mode-by-mode chain (Givens matrices, I - AA^dagger noise) obeys the same closed forms."""
    x, symbols = _x_hat(5), _symbols(1, 5)
    n = 120_000
    rng = np.random.default_rng(14)
    measure_p = rng.random((n, 1)) < 0.5
    x_meas, returned = ph.simulate_rows_reference(symbols, x, params, rng, measure_p)
    check_joint_moments(params, symbols[0], x, x_meas[:, 0], returned[:, 0], measure_p[:, 0], "reference")


def test_excess_noise_per_mode_and_total():
    """Honest client: returned means unchanged, excess (2 - 2/G)|x_i|^2 per mode, 2 - 2/G in total."""
    g = 2.5
    params = ph.LinkParameters(mu_photons=4.0, gain=g)
    x, symbols = _x_hat(6), _symbols(1, 6)
    n = 300_000
    _, record = ph.secure_products(symbols, np.broadcast_to(x, (n, 6)), params, np.random.default_rng(15), 1.0)
    residual = record.returned_quadratures_snu[:, 0] - record.sent_quadratures_snu[:, 0]
    k = 2 - 2 / g
    excess = residual.var(0) - 1.0
    _close(residual.mean(0), 0.0, np.sqrt((1 + k * np.abs(x) ** 2) / n), "returned means")
    _close(excess, k * np.abs(x) ** 2, (1 + k * np.abs(x) ** 2) * np.sqrt(2 / n), "per-mode excess")
    _close(excess.sum(), k, np.sqrt(np.sum(2 * (1 + k * np.abs(x) ** 2) ** 2) / n), "total excess")
    assert params.returned_excess_noise_total_snu == pytest.approx(k)


def test_excess_noise_on_392_modes_projects_onto_the_data():
    """MNIST-sized row: the excess lies along x_hat, Var(sum_i u_i y_i) = sum u_i^2 + (2 - 2/G)|sum_i u_i x_i|^2."""
    g = 2.0
    params = ph.LinkParameters(mu_photons=4.0, gain=g)
    rng = np.random.default_rng(16)
    x = GIVENS_CASES["MNIST-like"]
    symbols = _symbols(1, 392)
    n = 20_000
    _, record = ph.secure_products(symbols, np.broadcast_to(x, (n, 392)), params, rng, 1.0)
    residual = record.returned_quadratures_snu[:, 0] - record.sent_quadratures_snu[:, 0]
    measure_p = record.measure_p[:, 0]
    for p in (False, True):
        u = x.imag if p else x.real
        u = u / np.linalg.norm(u)
        projection = residual[measure_p == p] @ u
        expected = 1.0 + (2 - 2 / g) * np.abs(np.sum(u * x)) ** 2
        _close(projection.var(), expected, expected * np.sqrt(2 / projection.size), "projected excess")
        _close(projection.mean(), 0.0, np.sqrt(expected / projection.size), "projected mean")


# --- plumbing -----------------------------------------------------------------------------------------

def test_seed_reproduces_bit_for_bit_and_chunking_is_bounded():
    x = encoding.unit_vectors(np.random.default_rng(17).standard_normal((10, 9)))
    symbols = _symbols(7, 5)
    run = [ph.secure_products(symbols, x, REALISTIC, np.random.default_rng(99), 0.5, chunk_images=3) for _ in range(2)]
    other = ph.secure_products(symbols, x, REALISTIC, np.random.default_rng(100), 0.5, chunk_images=3)
    (a, rec_a), (b, rec_b) = run
    assert np.array_equal(a, b)
    for field in ("row_indices", "measure_p", "sent_symbols", "returned_quadratures_snu"):
        assert np.array_equal(getattr(rec_a, field), getattr(rec_b, field))
    assert not np.array_equal(a, other[0])
    assert rec_a.returned_quadratures_snu.shape == (10, rec_a.row_indices.size, 5)
    assert rec_a.measure_p.shape == (10, rec_a.row_indices.size)


def test_link_engine_runs_the_network():
    rng = np.random.default_rng(18)
    weights = [rng.standard_normal((6, 8)), rng.standard_normal((3, 6))]
    x = rng.standard_normal((4, 8))
    engine = ph.LinkEngine(ph.LinkParameters(mu_photons=1e6, gain=2.0), verify_fraction=0.5)
    out = secure_forward(weights, x, engine, np.random.default_rng(19))
    digital = secure_forward(weights, x, DigitalEngine(), np.random.default_rng(0))
    np.testing.assert_allclose(out, digital, atol=0.05 * np.abs(digital).max())  # 1e6 photons: nearly noiseless
    assert set(engine.outputs) == {0, 1}


def test_box_muller_normals_are_standard_normal():
    out = np.empty(2_000_001, dtype=np.float32)  # odd: the last sine is dropped
    streams.standard_normal_f32(np.random.default_rng(20), out)
    x = out.astype(np.float64)
    m = x.size
    _close(x.mean(), 0.0, np.sqrt(1 / m), "mean")
    _close(x.var(), 1.0, np.sqrt(2 / m), "variance")
    _close(stats.skew(x), 0.0, np.sqrt(6 / m), "skewness")
    _close(stats.kurtosis(x), 0.0, np.sqrt(24 / m), "excess kurtosis")
    assert stats.kstest(x, "norm").pvalue > 1e-4
    # cosine half and sine half are independent
    half = (m + 1) // 2
    _close(np.corrcoef(x[:half - 1], x[half:])[0, 1], 0.0, np.sqrt(1 / half), "cos-sin correlation")
    again = streams.standard_normal_f32(np.random.default_rng(20), np.empty_like(out))
    assert np.array_equal(out, again)
    with pytest.raises(ValueError, match="float32"):
        streams.standard_normal_f32(np.random.default_rng(0), np.empty(4))


def test_normal_stream_is_independent_of_threads_and_request_sizes():
    total = 3 * streams.NORMAL_STREAM_BLOCK + 12345
    reference = streams.NormalStream([1, 2, 3, 4], threads=0).fill(np.empty(total, dtype=np.float32))
    threaded = streams.NormalStream([1, 2, 3, 4], threads=2, prefetch=3)
    pieces, rng = [], np.random.default_rng(0)
    while sum(p.size for p in pieces) < total:  # odd-sized requests that straddle blocks
        size = min(int(rng.integers(1, streams.NORMAL_STREAM_BLOCK // 3)), total - sum(p.size for p in pieces))
        pieces.append(threaded.fill(np.empty(size, dtype=np.float32)))
    threaded.close()
    assert np.array_equal(np.concatenate(pieces), reference)
    assert not np.array_equal(reference, streams.NormalStream([1, 2, 3, 5], threads=0).fill(np.empty(total, np.float32)))


def test_threaded_verification_reproduces_bit_for_bit(monkeypatch):
    x = encoding.unit_vectors(np.random.default_rng(21).standard_normal((700, 784)))
    symbols = _symbols(40, 392)
    monkeypatch.setattr(ph, "VERIFY_BLOCK_SAMPLES", 2**14)  # many blocks, many stream blocks
    monkeypatch.setattr(streams, "NORMAL_STREAM_BLOCK", 2**15)
    runs = {}
    for threads in (2, 2, 0):
        monkeypatch.setattr(streams, "VERIFY_THREADS", threads)
        runs.setdefault(threads, []).append(
            ph.secure_products(symbols, x, REALISTIC, np.random.default_rng(22), 0.2, chunk_images=300))
    (a, rec_a), (b, rec_b), (c, rec_c) = runs[2][0], runs[2][1], runs[0][0]
    assert rec_a.row_indices.size > 0
    for x_meas, rec in ((b, rec_b), (c, rec_c)):
        assert np.array_equal(a, x_meas)
        assert np.array_equal(rec_a.measure_p, rec.measure_p)
        assert np.array_equal(rec_a.returned_quadratures_snu, rec.returned_quadratures_snu)


def test_link_engine_shares_its_stream_and_reproduces_a_seed(monkeypatch):
    rng = np.random.default_rng(23)
    weights = [rng.standard_normal((50, 64)), rng.standard_normal((10, 50))]
    x = rng.standard_normal((300, 64))
    params = ph.LinkParameters(mu_photons=5.0, gain=1.3)

    def run(threads, seed):
        monkeypatch.setattr(streams, "VERIFY_THREADS", threads)
        engine = ph.LinkEngine(params, verify_fraction=0.3)
        generator = np.random.default_rng(seed)
        outs = [secure_forward(weights, x[k:k + 100], engine, generator) for k in (0, 100, 200)]
        return outs, engine.outputs[0].verification.returned_quadratures_snu

    (first, ret1), (second, ret2), (single, ret3) = run(2, 24), run(2, 24), run(0, 24)
    for a, b, c in zip(first, second, single):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.array_equal(ret1, ret2) and np.array_equal(ret1, ret3)
    # a new rng on the same engine starts its own stream: seed 24 alone reproduces the first batch
    engine = ph.LinkEngine(params, verify_fraction=0.3)
    secure_forward(weights, x[:100], engine, np.random.default_rng(99))
    assert np.array_equal(secure_forward(weights, x[:100], engine, np.random.default_rng(24)), first[0])


def test_pooled_samples_match_the_records():
    from qslab.sequences.simulation import pooled_samples
    x = encoding.unit_vectors(np.random.default_rng(25).standard_normal((30, 12)))
    records = [ph.secure_products(_symbols(5, 6), x, REALISTIC, np.random.default_rng(s), 0.6)[1] for s in (26, 27)]
    sent, returned = pooled_samples(records)
    assert sent.dtype == returned.dtype == np.float64
    assert np.array_equal(sent, np.concatenate([r.sent_quadratures_snu.ravel() for r in records]))
    assert np.array_equal(returned, np.concatenate([r.returned_quadratures_snu.ravel() for r in records]))


@pytest.mark.parametrize("kwargs, name", [
    (dict(gain=0.9), "gain"),
    (dict(forward_transmittance=0.0), "forward_transmittance"),
    (dict(return_transmittance=1.2), "return_transmittance"),
    (dict(client_efficiency=0.0), "client_efficiency"),
    (dict(server_efficiency=1.5), "server_efficiency"),
    (dict(client_electronic_noise_snu=-0.1), "client_electronic_noise_snu"),
    (dict(processor_loss_per_pass_db=-1.0), "processor_loss_per_pass_db"),
    (dict(mu_photons=float("nan")), "mu_photons"),
])
def test_bad_parameters_name_themselves(kwargs, name):
    base = dict(mu_photons=1.0, gain=1.5)
    with pytest.raises(ValueError, match=name):
        ph.LinkParameters(**{**base, **kwargs})


def test_bad_arrays_are_refused():
    symbols, x = _symbols(2, 3), _x_hat(3)[None]
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="x_hat"):
        ph.secure_products(symbols, _x_hat(4)[None], IDEAL, rng)
    with pytest.raises(ValueError, match="unit norm"):
        ph.secure_products(symbols, 2 * x, IDEAL, rng)
    with pytest.raises(ValueError, match="verify_fraction"):
        ph.secure_products(symbols, x, IDEAL, rng, verify_fraction=1.5)
    with pytest.raises(ValueError, match="symbols"):
        ph.secure_products(symbols[0], x, IDEAL, rng)
    with pytest.raises(ValueError, match="weights"):
        encoding.pack_weights(np.ones(4), 1.0)
    with pytest.raises(ValueError, match="zero norm"):
        encoding.unit_vectors(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="transmittance"):
        ph.attenuate(np.zeros(3), 1.5, rng)
    with pytest.raises(ValueError, match="theta_rad"):
        ph.givens_matrix(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="data"):
        ph.SecureLayer(np.ones((2, 4)), IDEAL)(np.ones((1, 5)), rng)


# --- the server's choices given by an instrument (the bench's verification gate) ---------------------

def test_given_rows_replace_exactly_the_row_draw():
    """rows= skips only the verify_fraction draw: drawing it by hand first reproduces the random layout bit for bit."""
    symbols, x = _symbols(40, 6), np.stack([_x_hat(6, seed) for seed in range(5)])
    x_meas, record = ph.secure_products(symbols, x, REALISTIC, np.random.default_rng(21), verify_fraction=0.2)
    rng = np.random.default_rng(21)
    rows = np.flatnonzero(rng.random(40) < 0.2)
    given_meas, given_record = ph.secure_products(symbols, x, REALISTIC, rng, verify_fraction=0.9, rows=rows)
    assert rows.size > 2
    np.testing.assert_array_equal(given_meas, x_meas)
    np.testing.assert_array_equal(given_record.returned_quadratures_snu, record.returned_quadratures_snu)
    np.testing.assert_array_equal(given_record.row_indices, record.row_indices)


def test_given_quadratures_are_the_servers_and_the_moments_follow_them():
    """measure_p= ([v] broadcast over the batch, or [batch, v]) sets the quadrature; the means follow it."""
    params, n = REALISTIC, 4000
    symbols, x = _symbols(5, 4), _x_hat(4)
    rows, choice = np.array([3, 0]), np.array([True, False])
    _, record = ph.secure_products(symbols, np.broadcast_to(x, (n, 4)), params, np.random.default_rng(22),
                                   rows=rows, measure_p=choice)
    np.testing.assert_array_equal(record.row_indices, rows)
    assert record.measure_p.shape == (n, 2) and np.all(record.measure_p == choice)
    np.testing.assert_array_equal(record.sent_symbols, symbols[rows])
    returned = record.returned_quadratures_snu.astype(float)
    for k, (row, p) in enumerate(zip(rows, choice)):
        mean, cov = expected_moments(params, symbols[row], x, p)
        _close(returned[:, k].mean(axis=0), mean[1:], np.sqrt(np.diag(cov)[1:] / n), f"row {row} means")
    per_image = np.random.default_rng(23).random((6, 2)) < 0.5
    _, record = ph.secure_products(symbols, np.broadcast_to(x, (6, 4)), params, np.random.default_rng(24),
                                   rows=rows, measure_p=per_image)
    np.testing.assert_array_equal(record.measure_p, per_image)
    _, record = ph.secure_products(symbols, np.broadcast_to(x, (6, 4)), params, np.random.default_rng(24),
                                   rows=np.zeros(0, dtype=int), measure_p=np.zeros(0, dtype=bool))
    assert record.row_indices.size == 0 and record.returned_quadratures_snu.shape == (6, 0, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=[1, 1]), "distinct"),
    (dict(rows=[5]), "distinct row indices in"),
    (dict(rows=[0.5]), "row indices"),
    (dict(measure_p=[True]), "needs rows"),
    (dict(rows=[0, 1], measure_p=[True]), "measure_p must be bool"),
    (dict(rows=[0, 1], measure_p=[1, 0]), "measure_p must be bool"),
])
def test_bad_server_choices_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ph.secure_products(_symbols(5, 3), _x_hat(3)[None], IDEAL, np.random.default_rng(0), **kwargs)


def test_a_layer_prepared_from_symbols_draws_what_secure_products_draws():
    symbols, x = _symbols(12, 5), np.stack([_x_hat(5, seed) for seed in range(7)])
    layer = ph.SecureLayer.from_symbols(symbols, REALISTIC)
    for kwargs in (dict(verify_fraction=0.3), dict(rows=[2, 7], measure_p=[False, True])):
        expected = ph.secure_products(symbols, x, REALISTIC, np.random.default_rng(25), **kwargs)
        got = layer.products(x, np.random.default_rng(25), **kwargs)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1].returned_quadratures_snu, expected[1].returned_quadratures_snu)


def test_a_stream_told_its_total_draws_no_block_beyond_it():
    """`total` only stops the prefetch: the same values, and nothing queued once the last block is taken."""
    n = streams.NORMAL_STREAM_BLOCK + 1000
    limited = streams.NormalStream([1, 2, 3, 4], threads=1, prefetch=4, total=n)
    free = streams.NormalStream([1, 2, 3, 4], threads=1, prefetch=4)
    a, b = limited.fill(np.empty(n, dtype=np.float32)), free.fill(np.empty(n, dtype=np.float32))
    np.testing.assert_array_equal(a, b)
    assert len(limited._pending) == 0 and len(free._pending) == 4
    limited.close()
    free.close()
