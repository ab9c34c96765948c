"""The pilots' fits: LO phases, carrier leakage and IQ skew from one pilot acquisition (docs/ARCHITECTURE.md,
"One secure layer").

The pilot rows and the client's pilot vectors are public, so both parties know the symbols beta the
client's processor projects onto, and the server knows the fields it sent on its gated rows. These
least-squares fits turn what the receivers read into the quantities the link compensates: the
client's LO phase and gain, the returned light's phase at the server, the carrier leakage (in each
party's frame) and the Q drive's delay behind the I drive. Pure numpy on arrays; the link
(sequences/protocol/setup.py) runs the acquisitions and applies the results.

``capture`` is one (batch, layer) acquisition (sequences/protocol/layers.py, LayerCapture): its
``measure_p`` [B, v] (True: the server measured P on that gated row), ``returned_snu`` [B, v, modes]
(the server's quadratures of the returned light) and ``verified_rows`` [v].
"""

from __future__ import annotations

import math

import numpy as np

from qslab.analysis.estimate import Estimate

CONDITION_LIMIT = 1e6  # a Gram matrix worse conditioned than this is solved by lstsq instead (its cond is squared)


def least_squares(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients, the Gram matrix design^T design) of the least-squares fit y ~ design @ coefficients.

    Why the normal equations: the pilots' designs are tall (10^5-10^6 rows) and narrow (4-7 well-scaled columns),
    where solving the small Gram system is 5-6x faster than lstsq's SVD and as accurate (relative error about
    cond(Gram) x 1e-16); a poorly conditioned design still goes through lstsq."""
    gram = design.T @ design
    if not np.linalg.cond(gram) < CONDITION_LIMIT:
        return np.linalg.lstsq(design, y, rcond=None)[0], gram
    return np.linalg.solve(gram, design.T @ y), gram


def quadrature_pair(capture, alpha: np.ndarray):
    """The sent quadrature the server measured (own) and the other one, signed so that a returned phase phi
    gives y = t (own cos phi + other sin phi); and the P flags, broadcast like the returned samples."""
    p = np.broadcast_to(capture.measure_p[..., None], capture.returned_snu.shape)
    own = np.where(p, 2.0 * alpha.imag, 2.0 * alpha.real)
    other = np.where(p, 2.0 * alpha.real, -2.0 * alpha.imag)
    return own, other, p


def server_offsets(capture, alpha: np.ndarray) -> tuple[complex, tuple[float, float], float]:
    """Least squares y = ts own + tc other + c_X [X] + c_P [P]: the offsets (c_X + i c_P, the carrier leakage in
    the server's LO frame), (ts, tc) and the amplitude hypot(ts, tc)."""
    own, other, p = quadrature_pair(capture, alpha)
    flags = p.ravel()
    design = np.stack([own.ravel(), other.ravel(), ~flags, flags], axis=1).astype(np.float64)
    (ts, tc, c_x, c_p), _ = least_squares(design, capture.returned_snu.ravel().astype(np.float64))
    return complex(c_x, c_p), (float(ts), float(tc)), float(math.hypot(ts, tc))


def server_pilot_fit(capture, alpha: np.ndarray) -> tuple[float, complex, np.ndarray, np.ndarray]:
    """The server's side of the pilots, from its gated rows' sent fields ``alpha`` [v, modes]: the returned
    light's phase phi_s, the carrier leakage at its output (sqrt(photons), rotated back by phi_s), its
    phase-corrected reference quadratures (float32) and the returned samples less the offsets (float32):
    the honest channel's samples."""
    offset, (ts, tc), amplitude = server_offsets(capture, alpha)
    c_x, c_p = offset.real, offset.imag
    server_phase = math.atan2(tc, ts)
    leakage = (c_x + 1j * c_p) / (2.0 * amplitude) * np.exp(-1j * server_phase)
    own, other, p = quadrature_pair(capture, alpha)
    rotated = np.cos(server_phase) * own + np.sin(server_phase) * other
    return (server_phase, complex(leakage), rotated.astype(np.float32),
            capture.returned_snu - (np.where(p, c_p, c_x)).astype(np.float32))


def client_pilot_fit(x_hat: np.ndarray, reference: np.ndarray,
                     client_quadratures_snu: np.ndarray) -> tuple[float, float, complex]:
    """The client's side of the pilots: X = k Re(2 (beta + sigma l) e^{i phi_c}) per (image, row), beta the
    projection of its unit vectors ``x_hat`` [images, modes] on the pilot rows ``reference`` [rows, modes]
    (sqrt(photons) at the server's output), sigma = sum conj(x_i), l the carrier leakage.

    Returns phi_c (rad), k (the client's gain per SNU) and l as the client sees it (sqrt(photons)).
    """
    rows = reference.shape[0]
    beta = (np.conj(x_hat) @ reference.T).ravel()  # [images x rows], sqrt(photons) at the server's output
    sigma = np.repeat(np.conj(x_hat).sum(axis=1), rows)
    measured = client_quadratures_snu.ravel().astype(np.float64)
    design = np.stack([2 * beta.real, -2 * beta.imag, 2 * sigma.real, -2 * sigma.imag], axis=1)
    (a, b, a2, b2), _ = least_squares(design, measured)
    return math.atan2(b, a), math.hypot(a, b), complex((a2 + 1j * b2) / (a + 1j * b))


def iq_skew(capture, reference: np.ndarray, server_phase_rad: float) -> Estimate:
    """The Q drive's delay behind the I drive, in symbol periods, from the server's receiver on known rows.

    A Q child late by s adds i s (Q_{k-1} - Q_k) to symbol k (early: i |s| (Q_{k+1} - Q_k)). The receiver's
    own memory of the previous symbol (its bandwidth) acts on both quadratures alike, so it is fitted
    jointly: X rows (which see I at the server's LO phase near 0 or pi) pin it down, P rows then show
    the skew on top. Least squares over the inner modes of every gated row (the outer ones' optical
    neighbours are in other rows): y = a sig_k + b sig_{k-1} + d_prev z(Q_{k-1}) + d_next z(Q_{k+1}) +
    d_now z(Q_k) + c_X + c_P; s = (d_prev - d_next)/a (d_now absorbs a residual Q gain).
    """
    rows = capture.verified_rows
    alpha = reference[rows]                                  # [v, N], played order within a row
    p = np.broadcast_to(capture.measure_p[..., None], capture.returned_snu.shape)[..., 1:-1]
    rotation = complex(math.cos(server_phase_rad), math.sin(server_phase_rad))

    def signal(field):   # 2 Re(field e^{i phi}) on X rows, 2 Im on P rows, broadcast over images
        rotated = field * rotation
        return np.where(p, 2.0 * rotated.imag, 2.0 * rotated.real)

    def skew_term(q):    # the same quadrature of i q
        return signal(1j * q)

    before, now, after = alpha[:, :-2], alpha[:, 1:-1], alpha[:, 2:]
    y = capture.returned_snu[..., 1:-1].astype(np.float64)
    columns = [signal(now), signal(before), skew_term(before.imag), skew_term(after.imag), skew_term(now.imag), ~p, p]
    design = np.stack(np.broadcast_arrays(*columns), axis=-1).reshape(-1, len(columns)).astype(np.float64)
    coef, gram = least_squares(design, y.ravel())
    residual = y.ravel() - design @ coef
    covariance = np.linalg.inv(gram) * float(residual @ residual) / (y.size - len(columns))
    skew = (coef[2] - coef[3]) / coef[0]
    gradient = np.zeros(len(columns))
    gradient[[0, 2, 3]] = -skew / coef[0], 1.0 / coef[0], -1.0 / coef[0]
    return Estimate(float(skew), float(math.sqrt(gradient @ covariance @ gradient)))
