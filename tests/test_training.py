"""Manual backprop and the numpy trainer (analysis/training.py)."""

import numpy as np
import pytest

from qslab.analysis import mnist, training
from qslab.analysis.network import ClosedFormPhysicsEngine, load_weights
from qslab.analysis.training import (Adam, TrainingConfig, loss_and_gradients, paper_recipe, secure_layer_forward, train,
                               train_and_save, training_noise_scales)


def _numerical_gradient(weights, layer, *args, step=1e-6):
    grad = np.zeros_like(weights[layer])
    for index in np.ndindex(grad.shape):
        values = []
        for sign in (1.0, -1.0):
            shifted = [w.copy() for w in weights]
            shifted[layer][index] += sign * step
            values.append(loss_and_gradients(shifted, *args)[0])
        grad[index] = (values[0] - values[1]) / (2.0 * step)
    return grad


@pytest.fixture
def tiny_problem():
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(6, 8)), rng.normal(size=(3, 6))]
    x = rng.normal(size=(5, 8))
    x[2] = 0.0  # the zero vector path of the normalisation
    labels = rng.integers(0, 3, size=5)
    noise_scales = rng.uniform(0.3, 2.0, size=(5, 1))
    noises = [rng.normal(size=(5, 6)), rng.normal(size=(5, 3))]
    return weights, x, labels, noise_scales, noises


@pytest.mark.parametrize("noisy", [False, True])
def test_backprop_matches_finite_differences(tiny_problem, noisy):
    weights, x, labels, noise_scales, noises = tiny_problem
    args = (x, labels, noise_scales, noises) if noisy else (x, labels)
    _, grads = loss_and_gradients(weights, *args)
    for layer in range(2):
        numerical = _numerical_gradient(weights, layer, *args)
        np.testing.assert_allclose(grads[layer], numerical, rtol=1e-6, atol=1e-8)


def test_training_noise_matches_physics_engine():
    config = TrainingConfig(photons_min=2.0, photons_max=2.0, gain=1.3, efficiency=0.9, progress=False)
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 5))
    scale = training_noise_scales(config, 1, rng)[0, 0]
    noise = np.ones((1, 4))
    h, _ = secure_layer_forward(np.ones((1, 5)), w, scale, noise)
    engine = ClosedFormPhysicsEngine(2.0, 1.3, efficiency=0.9)
    np.testing.assert_allclose(h - np.ones((1, 5)) / np.sqrt(5) @ w.T, engine.noise_std(w) * noise, rtol=1e-6)


@pytest.fixture(scope="module")
def small_data():
    (x_train, y_train), (x_val, y_val), _ = mnist.load_split(seed=0)
    return (x_train[:3000], y_train[:3000]), (x_val[:1000], y_val[:1000])


@pytest.mark.parametrize("noise_aware", [False, True])
def test_tiny_training_beats_chance(small_data, noise_aware):
    config = TrainingConfig(epochs=3, hidden_units=128, shift_px=0, noise_aware=noise_aware, progress=False)
    result = train(config, data=small_data)
    assert len(result.history) == 3
    assert result.history[-1]["val_accuracy_digital"] > 0.7  # chance is 0.1
    assert result.history[-1]["val_accuracy_secure"] > 0.5
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert [w.dtype for w in result.weights] == [np.float32, np.float32]


def test_training_is_seeded(small_data):
    config = TrainingConfig(epochs=1, hidden_units=16, noise_aware=True, progress=False)
    first, second = train(config, data=small_data), train(config, data=small_data)
    np.testing.assert_array_equal(first.weights[0], second.weights[0])


def test_train_and_save_writes_metadata(tmp_path):
    config = TrainingConfig(epochs=1, hidden_units=32, n_train_subset=2000, n_validation=1000, progress=False)
    result = train_and_save(tmp_path / "weights.npz", config)
    weights, meta = load_weights(tmp_path / "weights.npz")
    assert meta["test_accuracy_digital"] == result.metadata["test_accuracy_digital"]
    assert meta["config"]["hidden_units"] == 32 and meta["seed"] == 0
    assert 0.5 < meta["test_accuracy_digital"] <= 1.0
    assert weights[0].shape == (32, 784)
    # everything needed to reproduce it (issue 13, defect 7), and a second run with the seed gives the same weights
    provenance = meta["provenance"]
    assert provenance["seed"] == 0 and provenance["numpy"] == np.__version__ and provenance["git_revision"]
    assert set(provenance["mnist_sha256"]) >= {"train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"}
    assert all(len(h) == 64 for h in provenance["mnist_sha256"].values()) and "blas" in provenance
    train_and_save(tmp_path / "again.npz", config)
    again, _ = load_weights(tmp_path / "again.npz")
    for first, second in zip(weights, again):
        np.testing.assert_allclose(first, second, rtol=0, atol=1e-6)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="gain"):
        TrainingConfig(gain=1.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainingConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="epochs=0"):
        TrainingConfig(epochs=0)
    assert paper_recipe(15).noise_aware is False and paper_recipe(15).lr_schedule == "constant"


def test_adam_matches_reference_formula():
    rng = np.random.default_rng(5)
    weights = [rng.normal(size=(4, 3))]
    reference, m, v = weights[0].copy(), np.zeros((4, 3)), np.zeros((4, 3))
    optimiser = Adam(weights)
    for step in range(1, 4):
        grad = rng.normal(size=(4, 3))
        optimiser.step(weights, [grad], learning_rate=0.01, weight_decay=0.1)
        reference *= 1.0 - 0.01 * 0.1
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        reference -= 0.01 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    np.testing.assert_allclose(weights[0], reference, rtol=1e-12, atol=1e-14)


def test_random_shift_moves_a_pixel_within_range():
    x = np.full((50, 784), -1.0, dtype=np.float32)
    x[:, 14 * 28 + 14] = 1.0
    shifted = training.random_shift(x, 2, np.random.default_rng(0))
    rows, cols = np.nonzero(shifted.reshape(50, 28, 28) == 1.0)[1:]
    assert len(rows) == 50 and set(rows) == set(range(12, 17)) and set(cols) == set(range(12, 17))
    assert np.all(shifted[shifted != 1.0] == -1.0)
