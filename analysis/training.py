"""Numpy training of the paper's network, plain (docs/PHYSICS.md 10.2) or noise-aware.

Plain training is the authors' recipe (`paper_recipe()`): Adam, cross-entropy, minibatches of 64,
the unnormalised digital network. Noise-aware training (the default) runs the *secure* forward
pass during training: each layer input is normalised (x_hat = a/||a||), and each product gets
Gaussian noise of std sigma_beta/s_phys = sqrt(mean(W^2)/F), exactly the closed-form physics
engine (network.ClosedFormPhysicsEngine). The gradient is exact, through the normalisation and
through the noise scale's dependence on mean(W^2).

What makes the network robust at a few photons per mode:
- the mean(W^2) term: a weight that does not raise the signal still raises the layer's rms and
  hence every product's noise, so training shrinks the rows of unused hidden units and
  concentrates the layer's photon budget on the units (and output rows) that carry the decision;
- the photon budget is drawn log-uniformly per example over a range, so the network works
  across the operating range rather than at one point;
- a cosine learning-rate decay and +-1 pixel shifts raise the noiseless ceiling, which the
  noisy accuracy follows closely once the margins are large compared with the noise.
A plainly trained network gets *less* robust the better it is trained (larger, spread-out
weights); noise-aware training is what buys the low-photon regime.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from qslab.analysis import mnist
from qslab.analysis.provenance import training_provenance
from qslab.analysis.training_checkpoint import Checkpoint, checkpoint_path, config_differences, load_checkpoint, save_checkpoint
from qslab.analysis.network import (ClosedFormPhysicsEngine, accuracy, init_weights, noise_per_rms_weight, predict_digital,
                              predict_secure, save_weights)

BACKGROUND = -1.0  # an empty pixel after Normalize(0.5, 0.5)


@dataclass(frozen=True)
class TrainingConfig:
    """What `train` does; the defaults are the recipe of the shipped weights (analysis/data/weights.npz).

    Photon numbers are mean photons per complex mode at the server's output (DECISIONS G); with an
    ideal client they map to the paper's F = 2 mu g(G) (client_measurement.client_snr).
    `paper_recipe()` gives the authors' plain training instead.
    """

    epochs: int = 45                    # passes over the training split
    batch_size: int = 64                # examples per Adam step (paper: 64)
    learning_rate: float = 1e-3         # peak Adam step size (paper: 1e-3)
    lr_schedule: str = "cosine"         # "constant" (paper) or "cosine" (decays to 0 over the run)
    weight_decay: float = 0.0           # decoupled (AdamW) decay per step, in units of the learning rate
    seed: int = 0                       # initial weights, minibatch order, augmentation and training noise
    split_seed: int = 0                 # the 50k/10k train/validation split of the 60k training set
    n_validation: int = 10_000          # validation images held out of the 60k
    n_train_subset: int | None = None   # use only the first n training images (quick tests); None = all
    hidden_units: int = 784             # width of the hidden layer (paper: 784)
    shift_px: int = 1                   # random translation of each training image by up to +-shift_px pixels (0 = off)
    noise_aware: bool = True            # train through the secure pass with physical noise (paper: False)
    gain: float = 1.4                   # client amplifier power gain G (linear); 1.4 maximises F at fixed leakage
    efficiency: float = 1.0             # client homodyne efficiency eta
    electronic_noise_snu: float = 0.0   # client homodyne electronic noise v_el (SNU)
    inversion_factor: float = 1.0       # amplifier n_sp (1 = quantum limited)
    photons_min: float = 0.5            # lower end of the training photon budget mu per mode (F = 0.33 at G = 1.4)
    photons_max: float = 20.0           # upper end, drawn log-uniformly per example (F = 13)
    monitor_photons: float = 2.0        # mu at which the per-epoch secure validation accuracy is measured
    progress: bool = True               # tqdm progress bar

    def __post_init__(self):
        for name in ("epochs", "batch_size", "hidden_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected a positive integer")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; expected 'constant' or 'cosine'")
        if not 0.0 < self.photons_min <= self.photons_max:
            raise ValueError(f"photons range ({self.photons_min}, {self.photons_max}); expected 0 < min <= max")
        if self.shift_px < 0:
            raise ValueError(f"shift_px={self.shift_px}; expected a non-negative number of pixels")
        if self.gain <= 1.0:
            raise ValueError(f"gain={self.gain}; expected G > 1 (the client sees nothing at G = 1)")


def paper_recipe(epochs: int = 100, **overrides) -> TrainingConfig:
    """The authors' plain training (docs/PHYSICS.md 10.2): Adam 1e-3 constant, batch 64, no noise, no augmentation."""
    return TrainingConfig(**{"epochs": epochs, "lr_schedule": "constant", "shift_px": 0, "noise_aware": False, **overrides})


@dataclass
class TrainingResult:
    weights: list[np.ndarray]
    history: list[dict] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


# --- layers: forward and exact backward ------------------------------------------------------------

def secure_layer_forward(a, w, noise_scale, noise):
    """h = x_hat W^T + noise_scale rms(W) noise, x_hat = a/||a||; noise_scale is 1/sqrt(F), scalar or [batch, 1]."""
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    x_hat = np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)
    rms = np.sqrt(np.mean(np.square(w)))
    h = x_hat @ w.T + (noise_scale * rms) * noise
    return h, (x_hat, norm, w, rms, noise_scale, noise)


def secure_layer_backward(dh, cache, input_gradient: bool = True):
    """(da, dW) of `secure_layer_forward`, including d rms/dW = W/(n rms) and the projection of the normalisation.

    da is None when not `input_gradient` (the first layer), saving the largest matrix product.
    """
    x_hat, norm, w, rms, noise_scale, noise = cache
    d_rms = np.sum(dh * (noise_scale * noise))
    dw = dh.T @ x_hat + (d_rms / (w.size * rms)) * w
    if not input_gradient:
        return None, dw
    dx_hat = dh @ w
    radial = np.sum(dx_hat * x_hat, axis=1, keepdims=True)
    da = np.divide(dx_hat - radial * x_hat, norm, out=np.zeros_like(dx_hat), where=norm > 0)
    return da, dw


def cross_entropy(logits, labels):
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    n = len(labels)
    loss = -float(np.mean(log_prob[np.arange(n), labels]))
    grad = np.exp(log_prob)
    grad[np.arange(n), labels] -= 1.0
    return loss, grad / n


def loss_and_gradients(weights, x, labels, noise_scales=None, noises=None):
    """Cross-entropy and gradients of the digital net (noise_scales None) or of the secure pass with given noise.

    noise_scales: 1/sqrt(F) per example ([batch, 1]) or a scalar; noises: one standard-normal
    array [batch, out] per layer. Fixing the draw makes the loss a deterministic function of W.
    """
    if noise_scales is None:
        return _digital_loss_and_gradients(weights, x, labels)
    a, caches, pre = x, [], []
    for index, w in enumerate(weights):
        h, cache = secure_layer_forward(a, w, noise_scales, noises[index])
        caches.append(cache)
        pre.append(h)
        a = np.maximum(h, 0.0) if index < len(weights) - 1 else h
    loss, dh = cross_entropy(a, labels)
    grads = [None] * len(weights)
    for index in reversed(range(len(weights))):
        da, grads[index] = secure_layer_backward(dh, caches[index], input_gradient=index > 0)
        if index > 0:
            dh = da * (pre[index - 1] > 0)
    return loss, grads


def _digital_loss_and_gradients(weights, x, labels):
    activations, pre = [x], []
    for w in weights[:-1]:
        pre.append(activations[-1] @ w.T)
        activations.append(np.maximum(pre[-1], 0.0))
    loss, dh = cross_entropy(activations[-1] @ weights[-1].T, labels)
    grads = [None] * len(weights)
    for index in reversed(range(len(weights))):
        grads[index] = dh.T @ activations[index]
        if index > 0:
            dh = (dh @ weights[index]) * (pre[index - 1] > 0)
    return loss, grads
# --- optimiser -------------------------------------------------------------------------------------

class Adam:
    """Adam (PyTorch defaults) with optional decoupled weight decay, updating the weights in place.

    Works in preallocated scratch buffers: at 64 examples per step the 615k-element update costs as
    much as the matrix products, and temporaries would dominate it.
    """

    def __init__(self, weights, beta1=0.9, beta2=0.999, eps=1e-8):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = [np.zeros_like(w) for w in weights]
        self.v = [np.zeros_like(w) for w in weights]
        self.scratch = [np.empty_like(w) for w in weights]
        self.steps = 0

    def step(self, weights, grads, learning_rate, weight_decay=0.0):
        self.steps += 1
        correction1 = 1.0 - self.beta1**self.steps
        root_correction2 = np.sqrt(1.0 - self.beta2**self.steps)
        # w -= lr m_hat/(sqrt(v_hat) + eps) with m_hat = m/c1 and sqrt(v_hat) = sqrt(v)/rc2
        step_size = learning_rate * root_correction2 / correction1
        for w, g, m, v, tmp in zip(weights, grads, self.m, self.v, self.scratch):
            np.subtract(g, m, out=tmp)
            m += _scaled(tmp, 1.0 - self.beta1)
            np.multiply(g, g, out=tmp)
            tmp -= v
            v += _scaled(tmp, 1.0 - self.beta2)
            if weight_decay:
                w *= 1.0 - learning_rate * weight_decay
            np.sqrt(v, out=tmp)
            tmp += self.eps * root_correction2
            np.divide(m, tmp, out=tmp)
            w -= _scaled(tmp, step_size)


def _scaled(array, factor):
    """array *= factor in place, returned (for one-line in-place updates)."""
    array *= array.dtype.type(factor)
    return array


def learning_rate_at(config: TrainingConfig, step: int, total_steps: int) -> float:
    """Constant, or a cosine decay from the peak to 0 that lifts the final accuracy at no cost."""
    if config.lr_schedule == "cosine":
        return 0.5 * config.learning_rate * (1.0 + np.cos(np.pi * step / total_steps))
    return config.learning_rate


# --- training loop ---------------------------------------------------------------------------------

def training_noise_scales(config: TrainingConfig, batch: int, rng: np.random.Generator) -> np.ndarray:
    """1/sqrt(F) per example [batch, 1], from photon budgets drawn log-uniformly in [photons_min, photons_max]."""
    mu = np.exp(rng.uniform(np.log(config.photons_min), np.log(config.photons_max), size=(batch, 1)))
    scales = noise_per_rms_weight(mu, config.gain, config.efficiency, config.electronic_noise_snu, config.inversion_factor)
    return scales.astype(np.float32)


def monitor_engine(config: TrainingConfig) -> ClosedFormPhysicsEngine:
    return ClosedFormPhysicsEngine(config.monitor_photons, config.gain, config.efficiency,
                                   config.electronic_noise_snu, config.inversion_factor)


def random_shift(x, max_shift_px: int, rng: np.random.Generator, side_px: int = mnist.IMAGE_SIDE_PX):
    """Translate each flattened square image by up to +-max_shift_px in x and y, filling with background (-1)."""
    if max_shift_px == 0:
        return x
    batch, pad = len(x), max_shift_px
    images = x.reshape(batch, side_px, side_px)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)), constant_values=BACKGROUND)
    offsets = rng.integers(0, 2 * pad + 1, size=(2, batch))
    rows = offsets[0][:, None] + np.arange(side_px)
    cols = offsets[1][:, None] + np.arange(side_px)
    shifted = padded[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return shifted.reshape(batch, -1)


def _step_gradients(config, weights, x, y, rng):
    x = random_shift(x, config.shift_px, rng)
    if not config.noise_aware:
        return loss_and_gradients(weights, x, y)
    scales = training_noise_scales(config, len(x), rng)
    noises = [rng.standard_normal((len(x), w.shape[0]), dtype=np.float32) for w in weights]
    return loss_and_gradients(weights, x, y, scales, noises)


def _validate(config, weights, x_val, y_val) -> dict:
    if len(x_val) == 0:
        return {}
    return {"val_accuracy_digital": accuracy(predict_digital(weights, x_val), y_val),
            "val_accuracy_secure": accuracy(predict_secure(weights, x_val, monitor_engine(config),
                                                           np.random.default_rng(10_000 + config.seed)), y_val)}


def load_training_data(config: TrainingConfig):
    """((x_train, y_train), (x_val, y_val)) of the seeded split, optionally cut to n_train_subset."""
    (x_train, y_train), validation, _ = mnist.load_split(config.split_seed, n_validation=config.n_validation)
    if config.n_train_subset is not None:
        x_train, y_train = x_train[:config.n_train_subset], y_train[:config.n_train_subset]
    return (x_train, y_train), validation


def train(config: TrainingConfig = TrainingConfig(), data=None, checkpoint: str | Path | None = None,
          resume: bool = False) -> TrainingResult:
    """Train from scratch; returns float32 weights, per-epoch history and a metadata record.

    data: ((x_train, y_train), (x_val, y_val)) preprocessed; loaded from the package files if None.
    checkpoint: a file written after every epoch (training_checkpoint.py); with ``resume`` training continues
    from it and ends with the weights the uninterrupted run would have (ValueError if it was made with
    another config).
    """
    (x_train, y_train), (x_val, y_val) = data if data is not None else load_training_data(config)
    rng = np.random.default_rng(config.seed)
    weights = init_weights((x_train.shape[1], config.hidden_units, mnist.N_CLASSES), seed=config.seed)
    optimiser = Adam(weights)
    steps_per_epoch = int(np.ceil(len(x_train) / config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    history, first_epoch, elapsed_before = [], 0, 0.0
    if resume:
        first_epoch, history, elapsed_before = _restore(checkpoint, config, weights, optimiser, rng)
    start = time.perf_counter() - elapsed_before
    with tqdm(total=total_steps, initial=first_epoch * steps_per_epoch, disable=not config.progress,
              desc="noise-aware" if config.noise_aware else "plain", unit="batch") as bar:
        for epoch in range(first_epoch, config.epochs):
            order, losses = rng.permutation(len(x_train)), []
            for first in range(0, len(x_train), config.batch_size):
                batch = order[first:first + config.batch_size]
                loss, grads = _step_gradients(config, weights, x_train[batch], y_train[batch], rng)
                rate = learning_rate_at(config, optimiser.steps, total_steps)
                optimiser.step(weights, grads, rate, config.weight_decay)
                losses.append(loss)
                bar.update(1)
            record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                      "seconds": time.perf_counter() - start, **_validate(config, weights, x_val, y_val)}
            history.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k.startswith("val")})
            if checkpoint is not None:
                save_checkpoint(checkpoint, Checkpoint(asdict(config), epoch + 1, weights, optimiser.m, optimiser.v,
                                                       optimiser.steps, rng.bit_generator.state, history,
                                                       time.perf_counter() - start))
    metadata = {"config": asdict(config), "seed": config.seed, "training_seconds": time.perf_counter() - start,
                "mode": "noise_aware" if config.noise_aware else "plain", **_final_validation(history)}
    if resume:
        metadata["resumed_after_epochs"] = first_epoch
    return TrainingResult(weights, history, metadata)


def _restore(path, config: TrainingConfig, weights, optimiser: Adam, rng: np.random.Generator):
    """Weights, Adam's moments and steps and the generator from the checkpoint, in place; (epochs done, history,
    seconds spent)."""
    if path is None:
        raise ValueError("resume needs the checkpoint to continue from")
    saved = load_checkpoint(path)
    differences = config_differences(config, saved)
    if differences:
        raise ValueError(f"{path} was written by another training run ({'; '.join(differences)}): resume with "
                         "the options it was started with")
    if [w.shape for w in saved.weights] != [w.shape for w in weights]:
        raise ValueError(f"{path}: its weights have shapes {[w.shape for w in saved.weights]}, this run "
                         f"{[w.shape for w in weights]}")
    for target, source in ((weights, saved.weights), (optimiser.m, saved.adam_m), (optimiser.v, saved.adam_v)):
        for array, stored in zip(target, source):
            array[...] = stored
    optimiser.steps = saved.adam_steps
    rng.bit_generator.state = saved.rng_state
    return saved.epochs_done, list(saved.history), saved.elapsed_s


def _final_validation(history) -> dict:
    return {k: v for k, v in history[-1].items() if k.startswith("val")} if history else {}


def train_and_save(path, config: TrainingConfig = TrainingConfig(), resume: bool = False) -> TrainingResult:
    """Train, measure the digital accuracy on the official 10k test set, and write weights + metadata to `path`.

    A checkpoint beside `path` (training_checkpoint.checkpoint_path) is written after every epoch and removed
    once the weights are written; ``resume`` continues from it.
    """
    checkpoint = checkpoint_path(path)
    result = train(config, checkpoint=checkpoint, resume=resume)
    test_images, y_test = mnist.load_mnist("test")
    result.metadata["test_accuracy_digital"] = accuracy(predict_digital(result.weights, mnist.preprocess(test_images)), y_test)
    result.metadata["history"] = result.history
    result.metadata["provenance"] = training_provenance(config.seed)
    save_weights(Path(path), result.weights, result.metadata)
    checkpoint.unlink(missing_ok=True)
    return result
