"""The paper's network (784-784-10, ReLU, no biases) and its secure forward pass (docs/PHYSICS.md 10).

Weights are a list of float arrays W_l of shape [out, in]; layer l computes z_l = W_l a_l.

The secure pass is written once and takes a *layer engine*, so the same code runs with any noise
model (DECISIONS A):

    engine(layer_index, W [out, in], x_hat [batch, in], rng) -> y [batch, out]

y is a real-valued estimate of x_hat . W^T in weight units, where x_hat is the client's unit-norm
input to that layer. Engines here: `DigitalEngine` (no noise), `PaperEngine` (the authors' abstract
model at scaling F) and `ClosedFormPhysicsEngine` (the client's homodyne noise from mu, G, eta,
v_el, n_sp). An engine driven by the full optical simulator plugs into the same interface.

Bias-free ReLU layers are positively homogeneous, so the client may renormalise every layer input
without changing the digital argmax; the noise, however, is fixed in absolute terms, which is why
the per-layer scale (set by mean(W^2)) matters.
"""

from __future__ import annotations

import copy
import functools
import json
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from qslab.analysis.client_measurement import product_noise_std

LAYER_SIZES = (784, 784, 10)
FORMAT_VERSION = 1


# --- weights on disk -------------------------------------------------------------------------------

def default_weights_path() -> Path:
    """The shipped weights (analysis/data/weights.npz)."""
    return Path(str(resources.files("qslab.analysis") / "data" / "weights.npz"))


def save_weights(path, weights: Sequence[np.ndarray], metadata: dict | None = None) -> Path:
    """Store float32 weights W0, W1, ... and a JSON metadata record (config, seed, accuracy) in one .npz."""
    record = {"format_version": FORMAT_VERSION, "layer_shapes": [list(w.shape) for w in weights], **(metadata or {})}
    arrays = {f"W{i}": np.asarray(w, dtype=np.float32) for i, w in enumerate(weights)}
    path = Path(path)
    with path.open("wb") as fh:  # a file handle keeps numpy from appending '.npz' to the name
        np.savez_compressed(fh, metadata=np.array(json.dumps(record, sort_keys=True)), **arrays)
    return path


def load_weights(path=None) -> tuple[list[np.ndarray], dict]:
    """(weights, metadata) from an .npz written by `save_weights`; the shipped weights by default, read once per
    process (every session and simulation loads them) and handed out read-only, with a metadata dict of its own."""
    if path is None:
        weights, metadata = _shipped_weights()
        return list(weights), copy.deepcopy(metadata)
    return _read_weights(Path(path))


@functools.cache
def _shipped_weights() -> tuple[tuple[np.ndarray, ...], dict]:
    weights, metadata = _read_weights(default_weights_path())
    for matrix in weights:
        matrix.flags.writeable = False
    return tuple(weights), metadata


def _read_weights(path: Path) -> tuple[list[np.ndarray], dict]:
    if not path.is_file():
        raise ValueError(f"{path}: no such weights file; expected an .npz from training.train_and_save")
    if not zipfile.is_zipfile(path):  # else numpy tries it as a pickle and says so, which helps nobody
        raise ValueError(f"{path}: not an .npz archive; expected the weights file `qslab train` writes (W0, W1, ... "
                         "and metadata)")
    try:
        with np.load(path, allow_pickle=False) as data:
            n_layers = sum(1 for key in data.files if key.startswith("W"))
            weights = [data[f"W{i}"] for i in range(n_layers)]
            metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a weights file ({exc}); expected an .npz with W0, W1, ... and metadata") from exc
    _check_chain(weights, path)
    return weights, metadata


def _check_chain(weights, where) -> None:
    if not weights:
        raise ValueError(f"{where}: no weight matrices; expected W0, W1, ...")
    for i in range(1, len(weights)):
        if weights[i].shape[1] != weights[i - 1].shape[0]:
            raise ValueError(f"{where}: W{i} has {weights[i].shape[1]} inputs but W{i - 1} has {weights[i - 1].shape[0]} outputs")


def init_weights(layer_sizes=LAYER_SIZES, seed: int = 0, dtype=np.float32) -> list[np.ndarray]:
    """PyTorch's nn.Linear default, U(-1/sqrt(in), 1/sqrt(in)), so the paper's recipe starts from the same law."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 1.0, size=(n_out, n_in)).astype(dtype) / dtype(np.sqrt(n_in))
            for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])]


# --- digital forward pass --------------------------------------------------------------------------

def relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def digital_forward(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits [batch, 10] of the plain network: ReLU after every layer but the last."""
    a = x
    for w in weights[:-1]:
        a = relu(a @ w.T)
    return a @ weights[-1].T


def predict_digital(weights, x) -> np.ndarray:
    return np.argmax(digital_forward(weights, x), axis=1)


# --- secure forward pass ---------------------------------------------------------------------------

class LayerEngine(Protocol):
    def __call__(self, layer_index: int, weights: np.ndarray, x_hat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Estimates [batch, out] of x_hat . W^T for unit-norm rows x_hat [batch, in] and W [out, in]."""


def normalize_rows(z: np.ndarray) -> np.ndarray:
    """x_hat = z/||z|| per row, as the client does before every layer; an all-zero row stays zero."""
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return np.divide(z, norm, out=np.zeros_like(z), where=norm > 0)


def secure_forward(weights: Sequence[np.ndarray], x: np.ndarray, engine: LayerEngine, rng: np.random.Generator,
                   engine_normalises: bool = False) -> np.ndarray:
    """Final-layer estimates [batch, 10]: normalise, engine, ReLU between layers.

    ``engine_normalises``: the engine takes inputs of any norm and normalises them itself (the link model's
    LinkEngine encodes through encoding.unit_vectors), so each layer's input is passed as it is instead of being
    normalised twice (two passes over every batch; the second division by a norm of 1 +- 1 ulp only moved the last
    bits)."""
    a = np.asarray(x)
    for index, w in enumerate(weights):
        y = engine(index, w, a if engine_normalises else normalize_rows(a), rng)
        a = relu(y) if index < len(weights) - 1 else y
    return a


def predict_secure(weights, x, engine: LayerEngine, rng: np.random.Generator, engine_normalises: bool = False
                   ) -> np.ndarray:
    """The client's decision: argmax of the final homodyne estimates (engine_normalises: see secure_forward)."""
    return np.argmax(secure_forward(weights, x, engine, rng, engine_normalises), axis=1)


def accuracy(predictions, labels) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def secure_accuracies(weights, x, labels, engine: LayerEngine, seeds: Sequence[int]) -> np.ndarray:
    """Accuracy for each noise seed (DECISIONS H: several seeds, report mean and std)."""
    return np.array([accuracy(predict_secure(weights, x, engine, np.random.default_rng(s)), labels) for s in seeds])


# --- engines ---------------------------------------------------------------------------------------

def mean_square_weight(w: np.ndarray) -> float:
    """mean(W^2) over the whole layer: the server scales a layer with one global factor (docs/PHYSICS.md 10.1)."""
    return float(np.mean(np.square(w, dtype=np.float64)))


def _gaussian(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return rng.standard_normal(shape, dtype=dtype)
    return rng.standard_normal(shape)


@dataclass(frozen=True)
class DigitalEngine:
    """Noise-free products: the secure pass then equals the digital network up to per-layer scale."""

    def __call__(self, layer_index, weights, x_hat, rng):
        return x_hat @ weights.T


@dataclass(frozen=True)
class PaperEngine:
    """The authors' abstract model (DECISIONS A, paper mode): y = x_hat . (s W)^T + N(0, 1), s = sqrt(F/mean(W^2)).

    Returned in weight units (divided by s). `scaling_f` is the paper's F = FSD^2 (linear, not dB).
    """

    scaling_f: float

    def scale(self, weights) -> float:
        return float(np.sqrt(self.scaling_f / mean_square_weight(weights)))

    def __call__(self, layer_index, weights, x_hat, rng):
        s = self.scale(weights)
        y_scaled = x_hat @ (s * weights).T + _gaussian(rng, (x_hat.shape[0], weights.shape[0]), x_hat.dtype)
        return y_scaled / s


def physical_scale(weights, photons_per_mode: float) -> float:
    """s_phys = sqrt(mu/(2 mean(W^2))) in sqrt(photons) per weight unit: two real weights per complex mode (DECISIONS K)."""
    return float(np.sqrt(photons_per_mode / (2.0 * mean_square_weight(weights))))


@dataclass(frozen=True)
class ClosedFormPhysicsEngine:
    """The client's homodyne estimate from the closed forms (docs/PHYSICS.md 10.3): y = x_hat . W^T + N(0, sigma^2).

    sigma = product_noise_std(G, eta, v_el, n_sp)/s_phys in weight units, i.e. the paper's model at
    F = client_snr(mu, G, ...) = 2 mu g(G) for an ideal client.
    """

    photons_per_mode: float
    gain: float
    efficiency: float = 1.0
    electronic_noise_snu: float = 0.0
    inversion_factor: float = 1.0

    def product_noise_std_sqrt_photons(self) -> float:
        """Std of the client's one-shot estimate of Re(beta), in sqrt(photons)."""
        return float(product_noise_std(self.gain, self.efficiency, self.electronic_noise_snu, self.inversion_factor))

    def noise_std(self, weights) -> float:
        """Std of each product estimate in weight units for this layer."""
        return self.product_noise_std_sqrt_photons() / physical_scale(weights, self.photons_per_mode)

    def __call__(self, layer_index, weights, x_hat, rng):
        noise = _gaussian(rng, (x_hat.shape[0], weights.shape[0]), x_hat.dtype)
        return x_hat @ weights.T + np.asarray(self.noise_std(weights), dtype=x_hat.dtype) * noise


def noise_per_rms_weight(photons_per_mode, gain, efficiency=1.0, electronic_noise_snu=0.0, inversion_factor=1.0):
    """Product-noise std divided by the layer's rms weight, = 1/sqrt(F): sigma_beta sqrt(2/mu).

    The physics engine's noise is this times sqrt(mean(W^2)); noise-aware training uses the same form.
    """
    sigma = product_noise_std(gain, efficiency, electronic_noise_snu, inversion_factor)
    return sigma * np.sqrt(2.0 / np.asarray(photons_per_mode, dtype=float))


def photons_for_snr(scaling_f, gain, efficiency=1.0, electronic_noise_snu=0.0, inversion_factor=1.0):
    """mu that gives the client SNR F (inverse of client_measurement.client_snr): mu = 2 F sigma_beta^2."""
    sigma = product_noise_std(gain, efficiency, electronic_noise_snu, inversion_factor)
    return 2.0 * np.asarray(scaling_f, dtype=float) * sigma**2
