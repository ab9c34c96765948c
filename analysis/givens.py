"""The client's Givens chain (DECISIONS K, M): data vector -> complex unit vector -> per-bin angles -> unitary.

Pure math shared by the instrument role that drives the time-bin processor
(instruments/optical/time_bin_processor.py) and the virtual bench's link model; neither may import
the other, so it lives here. Convention (the same as instruments/sim/link/model.py): the loop holds
the running mode; in bin k the phase modulator gives the incoming pulse the phase phi_k = -arg(x_k)
and the variable beam splitter keeps cos(theta_k) of the loop and takes sin(theta_k) of the pulse,
theta_k = atan2(|x_k|, ||x_0..k-1||); bin 0 loads the empty loop (theta_0 = pi/2). After the last
bin the loop holds sum_i conj(x_i) a_i: the chain's unitary has first row conj(x_hat).
"""

from __future__ import annotations

import numpy as np


def complex_unit_vector(data) -> np.ndarray:
    """x_hat_i = (x_2i + i x_2i+1)/||x|| (two real values per complex mode; an odd length is zero-padded).

    Refuses a zero or non-finite vector: the client cannot normalise it.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError(f"data must be a non-empty 1-D vector, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("data must be finite")
    norm = float(np.linalg.norm(data))
    if norm == 0.0:
        raise ValueError("data has zero norm: it cannot be normalised")
    padded = np.concatenate([data, np.zeros(data.size % 2)]) / norm
    return padded[0::2] + 1j * padded[1::2]


def givens_angles(x_hat) -> tuple[np.ndarray, np.ndarray]:
    """Beam-splitter angles theta_k and phase-modulator phases phi_k (rad) per time bin, shapes [..., N]."""
    x_hat = np.asarray(x_hat, dtype=np.complex128)
    if x_hat.ndim < 1 or x_hat.shape[-1] == 0:
        raise ValueError(f"x_hat must have a non-empty last axis, got shape {x_hat.shape}")
    magnitude = np.abs(x_hat)
    before = np.cumsum(magnitude**2, axis=-1) - magnitude**2  # ||x_0..k-1||^2
    theta = np.arctan2(magnitude, np.sqrt(np.maximum(before, 0.0)))
    theta[..., 0] = np.pi / 2
    return theta, -np.angle(x_hat)


def givens_unitary(theta_rad, phi_rad) -> np.ndarray:
    """The chain as a unitary [..., N, N]: output 0 is the loop mode, output k >= 1 leaves the loop in bin k."""
    theta = np.asarray(theta_rad, dtype=float)
    phi = np.asarray(phi_rad, dtype=float)
    if theta.shape != phi.shape or theta.ndim < 1:
        raise ValueError(f"theta_rad and phi_rad must have one shape [..., N], got {theta.shape} and {phi.shape}")
    if not np.allclose(theta[..., 0], np.pi / 2):
        raise ValueError("theta_rad[..., 0] must be pi/2: bin 0 loads the empty loop")
    n = theta.shape[-1]
    cos, sin, phase = np.cos(theta), np.sin(theta), np.exp(1j * phi)
    matrix = np.zeros(theta.shape + (n,), dtype=np.complex128)
    loop = np.zeros(theta.shape, dtype=np.complex128)
    loop[..., 0] = phase[..., 0]
    for k in range(1, n):
        matrix[..., k, :] = -sin[..., k, None] * loop
        matrix[..., k, k] += cos[..., k] * phase[..., k]
        loop *= cos[..., k, None]
        loop[..., k] += sin[..., k] * phase[..., k]
    matrix[..., 0, :] = loop
    return matrix


def unit_vector_from_angles(theta_rad, phi_rad) -> np.ndarray:
    """The vector x_hat [..., N] the chain projects onto (the inverse of givens_angles), from any angles.

    Bin k's pulse enters the loop with sin(theta_k) e^(i phi_k) and every later bin keeps cos(theta_j)
    of the loop, so the loop ends as sum_k sin(theta_k) prod_{j>k} cos(theta_j) e^(i phi_k) a_k =
    sum_k conj(x_k) a_k: x_k = sin(theta_k) prod_{j>k} cos(theta_j) e^(-i phi_k). Angles a real
    modulator sets (AWG steps, offsets) leave bin 0 slightly short of loading the empty loop fully;
    only the direction then matters (the loop starts empty), so the result is renormalised to unit
    norm. Refuses angles that project onto nothing.
    """
    theta = np.asarray(theta_rad, dtype=float)
    phi = np.asarray(phi_rad, dtype=float)
    if theta.shape != phi.shape or theta.ndim < 1 or theta.shape[-1] == 0:
        raise ValueError(f"theta_rad and phi_rad must have one shape [..., N], got {theta.shape} and {phi.shape}")
    return unit_vector_from_parts(np.sin(theta), np.cos(theta), np.exp(-1j * phi))


def unit_vector_from_parts(sin_theta, cos_theta, phase) -> np.ndarray:
    """unit_vector_from_angles from sin(theta_k), cos(theta_k) and e^(-i phi_k), shapes [..., N]: for a caller whose
    angles take few values (8-bit AWG codes), which looks them up instead of evaluating them per bin."""
    kept_after = np.ones_like(sin_theta)  # prod_{j>k} cos(theta_j)
    kept_after[..., :-1] = np.cumprod(cos_theta[..., :0:-1], axis=-1)[..., ::-1]
    x_hat = (sin_theta * kept_after) * phase
    norm = np.linalg.norm(x_hat, axis=-1, keepdims=True)
    if not np.all(norm > 0.0):
        raise ValueError("the angles project onto nothing (every bin's share is zero): no unit vector")
    return x_hat / norm
