"""Gaussian-state tools in shot-noise units: entropy functions and symplectic spectra.

g(N) takes a mean photon number, G(nu) a symplectic eigenvalue (vacuum nu = 1); mixing them is
the classic bug (docs/PHYSICS.md 11.1), so both are named for their argument.
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr, xlogy

LN2 = np.log(2.0)


def entropy_photons_bits(mean_photons):
    """g(N) = (N+1) log2(N+1) - N log2 N, the entropy of a thermal state with N photons.

    Exact 0 at N = 0; round-off below 0 is clamped, not raised.
    """
    n = np.clip(np.asarray(mean_photons, dtype=float), 0.0, None)
    small = np.minimum(n, 1.0)
    large = np.maximum(n, 1.0)
    # Two cancellation-free forms: (n+1) ln(1+n) - n ln n below 1, ln(1+n) + n ln(1+1/n) above.
    below = (small + 1.0) * np.log1p(small) - xlogy(small, small)
    above = np.log1p(large) + large * np.log1p(1.0 / large)
    out = np.where(n < 1.0, below, above) / LN2
    return out if out.ndim else float(out)


def entropy_snu_bits(nu):
    """G(nu) = g((nu - 1)/2) for a symplectic eigenvalue nu in SNU; G(1) = 0, nu < 1 clamped."""
    return entropy_photons_bits((np.asarray(nu, dtype=float) - 1.0) / 2.0)


def binary_entropy_bits(p):
    """h2(p) in bits, 0 at p in {0, 1}."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    out = (entr(p) + entr(1.0 - p)) / LN2
    return out if out.ndim else float(out)


def symplectic_form(n_modes: int) -> np.ndarray:
    """Omega for xpxp ordering: block-diagonal [[0, 1], [-1, 0]]."""
    return np.kron(np.eye(n_modes), np.array([[0.0, 1.0], [-1.0, 0.0]]))


def symplectic_eigenvalues(cov: np.ndarray) -> np.ndarray:
    """Symplectic eigenvalues (ascending) of a 2n x 2n covariance matrix in xpxp order.

    Eigenvalues of the Hermitian matrix i Omega sigma come in +/- pairs; take the moduli, sort,
    and keep every second one (never index an unsorted spectrum).
    """
    cov = np.asarray(cov, dtype=float)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] % 2:
        raise ValueError(f"covariance matrix must be square with even size, got shape {cov.shape}")
    n_modes = cov.shape[0] // 2
    cov = 0.5 * (cov + cov.T)
    root = _sqrtm_psd(cov)
    omega = symplectic_form(n_modes)
    # sigma^(1/2) Omega sigma^(1/2) is real antisymmetric: i times it is Hermitian.
    mat = 1j * (root @ omega @ root)
    moduli = np.sort(np.abs(np.linalg.eigvalsh(mat)))
    return moduli[::2]


def von_neumann_entropy_bits(cov: np.ndarray) -> float:
    """Entropy of a Gaussian state from its covariance matrix (SNU, xpxp)."""
    return float(np.sum(entropy_snu_bits(symplectic_eigenvalues(cov))))


def is_physical(cov: np.ndarray, tol: float = 1e-12) -> bool:
    """Uncertainty principle sigma + i Omega >= 0, i.e. every symplectic eigenvalue >= 1."""
    return bool(np.all(symplectic_eigenvalues(cov) >= 1.0 - tol))


def _sqrtm_psd(mat: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(mat)
    if vals.min() < -1e-12 * max(1.0, abs(vals.max())):
        raise ValueError("covariance matrix is not positive semi-definite")
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
