"""The paper's network, its secure forward pass and the noise engines (analysis/network.py)."""

import numpy as np
import pytest

from qslab.analysis import mnist
from qslab.analysis.client_measurement import client_snr, product_noise_std
from qslab.analysis.network import (ClosedFormPhysicsEngine, DigitalEngine, PaperEngine, digital_forward, init_weights,
                              load_weights, noise_per_rms_weight, normalize_rows, photons_for_snr, physical_scale,
                              predict_digital, predict_secure, save_weights, secure_forward)


@pytest.fixture(scope="module")
def weights():
    return init_weights((784, 784, 10), seed=0)


def test_forward_shapes(weights):
    x = np.random.default_rng(0).uniform(-1, 1, size=(7, 784)).astype(np.float32)
    assert digital_forward(weights, x).shape == (7, 10)
    out = secure_forward(weights, x, PaperEngine(1.0), np.random.default_rng(0))
    assert out.shape == (7, 10) and out.dtype == np.float32


def test_argmax_invariant_under_positive_scaling(weights):
    x = np.random.default_rng(1).uniform(-1, 1, size=(50, 784))
    reference = predict_digital(weights, x)
    for factor in (1e-3, 0.5, 7.0):
        assert np.array_equal(predict_digital(weights, factor * x), reference)
    assert np.array_equal(predict_secure(weights, x, DigitalEngine(), np.random.default_rng(0)), reference)


def test_zero_input_stays_zero():
    z = np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(normalize_rows(z), [[0.0, 0.0], [0.6, 0.8]])


def test_paper_mode_noise_has_unit_variance_per_product():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(40, 30))
    x_hat = normalize_rows(rng.normal(size=(2000, 30)))
    engine = PaperEngine(scaling_f=3.0)
    s = engine.scale(w)
    np.testing.assert_allclose(s**2 * np.mean(w**2), 3.0)
    residual = s * (engine(0, w, x_hat, rng) - x_hat @ w.T)  # back in the paper's scaled units
    assert abs(residual.mean()) < 0.01
    assert abs(residual.var() - 1.0) < 0.02  # 80k samples: std of the variance estimate is 0.005


def test_physics_noise_std_matches_closed_form():
    rng = np.random.default_rng(3)
    w = rng.normal(scale=0.2, size=(50, 60))
    x_hat = normalize_rows(rng.normal(size=(2000, 60)))
    engine = ClosedFormPhysicsEngine(photons_per_mode=2.5, gain=1.3, efficiency=0.8, electronic_noise_snu=0.05)
    expected = product_noise_std(1.3, 0.8, 0.05) / np.sqrt(2.5 / (2.0 * np.mean(w**2)))
    assert engine.noise_std(w) == pytest.approx(expected, rel=1e-12)
    assert physical_scale(w, 2.5) == pytest.approx(np.sqrt(2.5 / (2.0 * np.mean(w**2))))
    residual = engine(0, w, x_hat, rng) - x_hat @ w.T
    assert residual.std() == pytest.approx(expected, rel=0.01)


def test_physics_engine_is_paper_model_at_client_snr():
    w = np.random.default_rng(4).normal(size=(10, 20))
    mu, gain = 3.0, 1.4
    f = client_snr(mu, gain)
    np.testing.assert_allclose(f, 2 * mu * gain * (gain - 1) / (2 * gain**2 - 3 * gain + 2))
    assert ClosedFormPhysicsEngine(mu, gain).noise_std(w) == pytest.approx(1.0 / PaperEngine(f).scale(w))
    assert noise_per_rms_weight(mu, gain) == pytest.approx(1.0 / np.sqrt(f))
    assert photons_for_snr(f, gain) == pytest.approx(mu)


def test_save_and_load_round_trip(tmp_path, weights):
    path = save_weights(tmp_path / "w.npz", weights, {"seed": 5, "test_accuracy_digital": 0.9})
    loaded, meta = load_weights(path)
    assert [w.shape for w in loaded] == [(784, 784), (10, 784)] and loaded[0].dtype == np.float32
    assert meta["seed"] == 5 and meta["layer_shapes"] == [[784, 784], [10, 784]]
    np.testing.assert_array_equal(loaded[1], weights[1])


def test_bad_weights_file(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        load_weights(path)


def test_shipped_weights_reach_digital_accuracy():
    weights, meta = load_weights()
    assert [w.dtype for w in weights] == [np.float32, np.float32]
    images, labels = mnist.load_mnist("test")
    acc = np.mean(predict_digital(weights, mnist.preprocess(images)) == labels)
    assert acc >= 0.975
    assert meta["test_accuracy_digital"] == pytest.approx(acc, abs=1e-4)


def test_an_engine_that_normalises_itself_gets_each_layer_input_as_it_is(weights):
    """engine_normalises: the inputs are passed as they are (the engine normalises them); else normalised rows."""
    seen = {True: [], False: []}

    def recording(flag):
        def engine(index, w, x_hat, rng):
            seen[flag].append(x_hat)
            return x_hat @ w.T
        return engine

    x = np.random.default_rng(4).uniform(-1, 1, size=(20, 784))
    for flag in (True, False):
        secure_forward(weights, x, recording(flag), np.random.default_rng(0), engine_normalises=flag)
    assert seen[True][0] is x or np.array_equal(seen[True][0], x)
    np.testing.assert_allclose(np.linalg.norm(seen[False][0], axis=1), 1.0, rtol=1e-12)
    assert np.linalg.norm(seen[True][1], axis=1).max() > 1.5  # the hidden activations as the ReLU left them
    np.testing.assert_allclose(seen[True][1] / np.linalg.norm(seen[True][1], axis=1, keepdims=True), seen[False][1],
                               rtol=1e-10, atol=1e-12)


def test_the_shipped_weights_are_read_once_read_only_with_metadata_of_ones_own():
    (first, meta), (again, meta_again) = load_weights(), load_weights()
    assert all(a is b for a, b in zip(first, again)) and len(first) == 2
    with pytest.raises(ValueError, match="read-only"):
        first[0][0, 0] = 1.0
    meta["changed"] = True
    assert "changed" not in meta_again and "changed" not in load_weights()[1]
