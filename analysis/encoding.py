"""How the server's weights and the client's data become complex modes (DECISIONS G, K; docs/PHYSICS.md 1).

Two real values per complex mode: the server's row w becomes alpha_i = s (w_2i + i w_2i+1), one
scale s per layer so that the layer's mean |alpha|^2 is mu; the client's vector x becomes the unit
vector x_hat_i = (x_2i + i x_2i+1)/||x||. Then Re(sum_i conj(x_hat_i) alpha_i) = s (w . x)/||x||.
An odd length is zero-padded. The lab's protocol (sequences/protocol/) and the bench's link
model (instruments/sim/link/model.py) both encode through this module, so they cannot drift apart.
"""

from __future__ import annotations

import math

import numpy as np

PILOT_SEED = 20240805   # public: the pilots and the client's pilot vectors are known to both parties


def _complex_pairs(rows: np.ndarray) -> np.ndarray:
    """(v_0 + i v_1, v_2 + i v_3, ...) along the last axis of a 2-D float64 array; an odd length gets one zero.

    The bits of v + 1j * w, signed zeros included (real part v + 0 w, imaginary part w + 0: what numpy's
    complex product and sum give), written into the complex array's real view: without the complex
    temporaries, a third of the client's encoding time. A new array, never a view of the caller's."""
    count, features = rows.shape
    half = features // 2
    pairs = np.empty((count, -(-features // 2)), dtype=np.complex128)
    view = pairs.view(np.float64)
    real, imag = view[:, 0:2 * half:2], view[:, 1:2 * half:2]
    np.multiply(rows[:, 1::2], 0.0, out=real)
    np.add(rows[:, 0:2 * half:2], real, out=real)
    np.add(rows[:, 1::2], 0.0, out=imag)
    if features % 2:  # the padding zero: v + 0 and +0
        np.add(rows[:, -1], 0.0, out=view[:, -2])
        view[:, -1] = 0.0
    return pairs


def pack_weights(weights, mu_photons: float) -> tuple[np.ndarray, float]:
    """Complex symbols [rows, ceil(features/2)] alpha_i = s (w_2i + i w_2i+1) and the layer scale s.

    One scale per layer (docs/PHYSICS.md 10.1) so that mean |alpha|^2 over every mode of the layer is mu.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] == 0 or weights.shape[1] == 0:
        raise ValueError(f"weights must be a non-empty 2-D array [rows, features], got shape {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise ValueError("weights must be finite")
    try:
        mu_photons = float(mu_photons)
    except (TypeError, ValueError):
        raise ValueError(f"mu_photons must be a real number, got {mu_photons!r}") from None
    if not math.isfinite(mu_photons) or mu_photons < 0.0:
        raise ValueError(f"mu_photons must be finite and >= 0, got {mu_photons!r}")
    symbols = _complex_pairs(weights)
    power = float(np.mean(np.abs(symbols) ** 2))
    if power == 0.0:
        raise ValueError("weights must not be all zero (the layer scale would be undefined)")
    scale = math.sqrt(mu_photons / power)
    return symbols * scale, scale


def weight_symbols(weights, mu_photons: float) -> np.ndarray:
    """The symbols of pack_weights alone: what the server's modulator is asked to send."""
    return pack_weights(weights, mu_photons)[0]


def unit_vectors(data) -> np.ndarray:
    """The client's x_hat: [batch, ceil(features/2)] for data [batch, features], [N] for one vector.

    Refuses a zero or non-finite vector: the client cannot normalise it. Each norm is the square root of
    the row's BLAS dot product with itself, as np.linalg.norm computes it (numpy's matmul of a vector by a
    vector is that dot), so a row encodes bit for bit as qslab.analysis.givens.complex_unit_vector.
    """
    data = np.asarray(data, dtype=np.float64)
    single = data.ndim == 1
    rows = np.ascontiguousarray(data[None] if single else data)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise ValueError(f"data must be a non-empty vector or 2-D array [rows, features], got shape {data.shape}")
    norms = np.sqrt(np.matmul(rows[:, None, :], rows[:, :, None])[:, 0, 0])  # a BLAS dot per row, as norm(row)
    # a non-finite entry makes its row's norm non-finite, so the whole array is scanned only then
    if not np.all(np.isfinite(norms)) and not np.all(np.isfinite(rows)):
        raise ValueError("data must be finite")
    zero = np.flatnonzero(norms == 0.0)
    if zero.size:
        raise ValueError(f"data rows {zero[:10].tolist()} have zero norm: the client cannot normalise them")
    x_hat = _complex_pairs(rows / norms[:, None])
    return x_hat[0] if single else x_hat


def pilot_symbol_table(rows: int, modes: int, mu_photons: float) -> np.ndarray:
    """Public test symbols: circular Gaussian of mean |alpha|^2 = mu (the modulation the weights look like)."""
    rng = np.random.default_rng(PILOT_SEED)
    symbols = rng.standard_normal((rows, modes)) + 1j * rng.standard_normal((rows, modes))
    return symbols * math.sqrt(mu_photons / float(np.mean(np.abs(symbols) ** 2)))
