"""Secure forward pass of a 784-784-10 network: physics mode (qslab.instruments.sim.link.model) vs paper mode.

Paper mode is the authors' abstract model, y = x_hat . (s W)^T + N(0, 1): one matmul and one Gaussian
draw per product. Physics mode is the mode-level link model with the server verifying a random
fraction of rows (full joint model on those rows). Both run in the same process on the same
synthetic MNIST-like batch; runs are interleaved and the best (and median) of the repeats
reported, since shared machines disturb single runs.

    python benchmarks/bench_physics.py [--images 10000] [--verify 0.01] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qslab.instruments.sim.link.model import LinkParameters, SecureLayer

LAYERS = (784, 784, 10)


def synthetic_images(n_images: int, rng: np.random.Generator) -> np.ndarray:
    """MNIST-like pixels in [-1, 1] after Normalize(0.5, 0.5): ~80 % background at -1."""
    pixels = np.where(rng.random((n_images, LAYERS[0])) < 0.8, 0.0, rng.random((n_images, LAYERS[0])))
    return 2.0 * pixels - 1.0


def paper_forward(weights, x, scaling_f, rng) -> np.ndarray:
    a = x
    for index, w in enumerate(weights):
        x_hat = a / np.linalg.norm(a, axis=1, keepdims=True)
        s = np.sqrt(scaling_f / np.mean(w**2))
        y = x_hat @ (s * w).T + rng.standard_normal((x_hat.shape[0], w.shape[0]))
        a = np.maximum(y, 0.0) if index < len(weights) - 1 else y
    return a


def physics_forward(layers, x, rng, verify_fraction) -> np.ndarray:
    a = x
    for index, layer in enumerate(layers):
        y = layer(a, rng, verify_fraction).re_beta_estimate()
        a = np.maximum(y, 0.0) if index < len(layers) - 1 else y
    return a


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--verify", type=float, default=0.01, help="fraction of rows the server verifies")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    weights = [0.15 * rng.standard_normal((LAYERS[i + 1], LAYERS[i])) for i in range(len(LAYERS) - 1)]
    x = synthetic_images(args.images, rng)
    params = LinkParameters(mu_photons=6.0, gain=1.3, amplifier_noise_figure_db=4.0, forward_transmittance=0.9,
                            return_transmittance=0.9, client_efficiency=0.8, client_electronic_noise_snu=0.02,
                            server_efficiency=0.8, server_electronic_noise_snu=0.02)
    layers = [SecureLayer(w, params) for w in weights]

    fractions = sorted({0.0, args.verify})
    runs = {"paper": lambda: paper_forward(weights, x, 1.0, np.random.default_rng(1))}
    for fraction in fractions:
        runs[fraction] = lambda f=fraction: physics_forward(layers, x, np.random.default_rng(2), f)
    times = {key: [] for key in runs}
    for _ in range(args.repeats):  # interleaved, so that machine load hits both modes alike
        for key, run in runs.items():
            times[key].append(seconds(run))
    best = {key: min(values) for key, values in times.items()}  # least disturbed run, as timeit does
    median = {key: float(np.median(values)) for key, values in times.items()}
    print(f"{args.images} images, 784-784-10, {args.repeats} interleaved runs: best (median) seconds")
    print(f"  paper mode                   {best['paper']:6.3f} ({median['paper']:6.3f}) s"
          f"  {args.images / best['paper']:8.0f} images/s")
    for fraction in fractions:
        print(f"  physics mode, verify {fraction:5.1%}  {best[fraction]:6.3f} ({median[fraction]:6.3f}) s"
              f"  {args.images / best[fraction]:8.0f} images/s  ratio {best[fraction] / best['paper']:4.2f}"
              f" ({median[fraction] / median['paper']:4.2f})")

if __name__ == "__main__":
    main()
