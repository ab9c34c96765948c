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


_NEGATIVE_ZERO_BITS = np.int64(-2**63)  # -0.0 as an int64 bit pattern


def _complex_pairs(rows: np.ndarray, divisors: np.ndarray | None = None) -> np.ndarray:
    """(v_0 + i v_1, v_2 + i v_3, ...) along the last axis of a 2-D float64 array; an odd length gets one zero.
    ``divisors`` (positive, one per row): the pairs of rows / divisors[:, None] instead, without that temporary.

    The bits of v + 1j * w, signed zeros included (real part v + 0 w, imaginary part w + 0: what numpy's
    complex product and sum give). A complex array's real view is the pairs' values in the rows' own order, so
    the values are written there in one pass; they equal v and w except for signed zeros (a -0 becomes +0 in
    places), so the two additions that settle those run only when the values hold a -0. A new array, never a view
    of the caller's."""
    count, features = rows.shape
    pairs = np.empty((count, -(-features // 2)), dtype=np.complex128)
    view = pairs.view(np.float64)
    if features % 2:
        view[:, -1] = 0.0  # the padding zero
    if divisors is None:
        np.copyto(view[:, :features], rows)
    else:
        np.divide(rows, divisors[:, None], out=view[:, :features])
    if np.any(view.view(np.int64) == _NEGATIVE_ZERO_BITS):
        real, imag = view[:, 0::2], view[:, 1::2]
        real += imag * 0.0
        imag += 0.0
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
    power = mean_power(symbols)
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
    x_hat = _complex_pairs(rows, norms)  # the pairs of rows / norms[:, None]
    return x_hat[0] if single else x_hat


def mean_power(fields) -> float:
    """mean |z|^2 of complex fields (photons per symbol for fields in sqrt-photon units): re^2 + im^2, without the
    square roots np.abs would take (a layer is up to 6e5 symbols)."""
    fields = np.asarray(fields)
    if not np.iscomplexobj(fields):
        return float(np.mean(np.square(fields)))
    power = np.square(fields.real)
    power += np.square(fields.imag)
    return float(np.mean(power))


def pilot_symbol_table(rows: int, modes: int, mu_photons: float) -> np.ndarray:
    """Public test symbols: circular Gaussian of mean |alpha|^2 = mu (the modulation the weights look like)."""
    rng = np.random.default_rng(PILOT_SEED)
    symbols = rng.standard_normal((rows, modes)) + 1j * rng.standard_normal((rows, modes))
    return symbols * math.sqrt(mu_photons / mean_power(symbols))
