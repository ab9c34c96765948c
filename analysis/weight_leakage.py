"""What the client can learn about the weights: Holevo bounds (docs/PHYSICS.md 11).

All quantities in SNU. `mu` is the mean photon number per complex mode at the server's output
(DECISIONS G); a complex mode carries two real weights, so bits per real weight are half the bits
per mode (DECISIONS D).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from qslab.analysis.gaussian import entropy_photons_bits, entropy_snu_bits

LN2 = np.log(2.0)


# --- the paper's verification-based bound (Eq. 2) ------------------------------------------------

def holevo_verified_bits(variance_snu, transmittance, excess_noise_snu):
    """chi_E(V, T, eps): bits per complex mode the client can hold about the server's symbol.

    Entanglement-based picture: the server's Gaussian modulation of total variance V goes through
    the client as a channel of transmittance T and output-referred excess noise eps; the client
    purifies it. a = V, b = T(V - 1) + 1 + eps, c = sqrt(T(V^2 - 1)); chi = G(nu+) + G(nu-) - G(nu3)
    with nu3 = b - c^2/(a + 1) the conditional eigenvalue after the server's heterodyne.
    """
    a = np.asarray(variance_snu, dtype=float)
    t = np.asarray(transmittance, dtype=float)
    eps = np.asarray(excess_noise_snu, dtype=float)
    b = t * (a - 1.0) + 1.0 + eps
    c2 = t * (a * a - 1.0)
    z = np.sqrt(np.clip((a + b) ** 2 - 4.0 * c2, 0.0, None))
    nu_plus = 0.5 * (z + (b - a))
    nu_minus = 0.5 * (z - (b - a))
    nu_cond = b - c2 / (a + 1.0)
    chi = entropy_snu_bits(nu_plus) + entropy_snu_bits(nu_minus) - entropy_snu_bits(nu_cond)
    chi = np.clip(chi, 0.0, None)
    return chi if np.ndim(chi) else float(chi)


def modulation_variance_snu(mu_photons):
    """V = 2 mu + 1: total quadrature variance of a symmetric Gaussian modulation of mu photons."""
    return 2.0 * np.asarray(mu_photons, dtype=float) + 1.0


def honest_excess_noise_snu(gain, n_modes):
    """Average excess noise per returned mode of an honest client, eps = (2G - 2)/(G n)."""
    gain = np.asarray(gain, dtype=float)
    return (2.0 * gain - 2.0) / (gain * np.asarray(n_modes, dtype=float))


def per_mode_excess_noise_snu(gain, data):
    """eta_i = (2 - 2/G)|x_i|^2 for the normalised (complex-packed) data vector x (DECISIONS F)."""
    x = np.asarray(data)
    norm2 = np.sum(np.abs(x) ** 2, axis=-1, keepdims=True)
    weights = np.abs(x) ** 2 / np.where(norm2 > 0, norm2, 1.0)
    gain = np.asarray(gain, dtype=float)
    return (2.0 - 2.0 / gain)[..., None] * weights if gain.ndim else (2.0 - 2.0 / gain) * weights


def weight_leakage_bits_per_mode(mu_photons, gain, n_modes=392, transmittance=1.0, technical_noise_snu=0.0):
    """Eq. 2 at the honest client's average excess noise plus untrusted technical noise xi.

    Loss (T < 1) and technical noise are both attributed to the client (docs/PHYSICS.md 11.3).
    """
    eps = honest_excess_noise_snu(gain, n_modes) + np.asarray(technical_noise_snu, dtype=float)
    return holevo_verified_bits(modulation_variance_snu(mu_photons), transmittance, eps)


def worst_mode_weight_leakage_bits(mu_photons, gain, data, transmittance=1.0, technical_noise_snu=0.0):
    """Eq. 2 at the largest per-mode excess noise of an actual data vector (worst case over modes)."""
    eps = np.max(per_mode_excess_noise_snu(gain, data), axis=-1) + technical_noise_snu
    return holevo_verified_bits(modulation_variance_snu(mu_photons), transmittance, eps)


# --- bounds without verification ------------------------------------------------------------------

def unverified_bound_bits(mean_photons):
    """g(<n>): a prior-independent bound per mode from the power-meter photon number alone (1.3)."""
    return entropy_photons_bits(mean_photons)


def one_quadrature_bound_bits(real_amplitude_variance):
    """g((sqrt(1 + 4 s) - 1)/2) for a one-quadrature modulation with s = Var(Re alpha) (1.3)."""
    s = np.asarray(real_amplitude_variance, dtype=float)
    return entropy_photons_bits((np.sqrt(1.0 + 4.0 * s) - 1.0) / 2.0)


# --- trusted-detector CV-QKD forms (docs/PHYSICS.md 11.4) --------------------------------

def holevo_lossy_channel_bits(modulation_variance_snu, transmittance, input_excess_noise_snu=0.0):
    """chi(A;B) = G(eta (V_A + xi) + 1) - G(1 + eta xi): information at the output of a Gaussian channel."""
    va = np.asarray(modulation_variance_snu, dtype=float)
    t = np.asarray(transmittance, dtype=float)
    xi = np.asarray(input_excess_noise_snu, dtype=float)
    return entropy_snu_bits(t * (va + xi) + 1.0) - entropy_snu_bits(1.0 + t * xi)


def _eve_symplectic_ab(v, t, xi):
    chi_line = 1.0 / t - 1.0 + xi
    a_term = v * v * (1.0 - 2.0 * t) + 2.0 * t + t * t * (v + chi_line) ** 2
    b_term = t * t * (v * chi_line + 1.0) ** 2
    disc = np.sqrt(np.clip(a_term * a_term - 4.0 * b_term, 0.0, None))
    nu1 = np.sqrt(0.5 * (a_term + disc))
    nu2 = np.sqrt(np.clip(0.5 * (a_term - disc), 0.0, None))
    return chi_line, a_term, b_term, nu1, nu2


def _pair_entropy(c_term, d_term):
    disc = np.sqrt(np.clip(c_term * c_term - 4.0 * d_term, 0.0, None))
    nu3 = np.sqrt(0.5 * (c_term + disc))
    nu4 = np.sqrt(np.clip(0.5 * (c_term - disc), 0.0, None))
    return entropy_snu_bits(nu3) + entropy_snu_bits(nu4)


def holevo_trusted_homodyne_bits(modulation_variance_snu, transmittance, input_excess_noise_snu, efficiency, electronic_noise_snu):
    """chi_BE for reverse reconciliation with a trusted homodyne detector (Lodewyck et al. 2007)."""
    v = np.asarray(modulation_variance_snu, dtype=float) + 1.0
    t = np.asarray(transmittance, dtype=float)
    chi_line, a_term, b_term, nu1, nu2 = _eve_symplectic_ab(v, t, np.asarray(input_excess_noise_snu, dtype=float))
    chi_hom = (1.0 + electronic_noise_snu) / efficiency - 1.0
    chi_tot = chi_line + chi_hom / t
    sqrt_b = np.sqrt(b_term)
    denom = t * (v + chi_tot)
    c_term = (v * sqrt_b + t * (v + chi_line) + a_term * chi_hom) / denom
    d_term = sqrt_b * (v + sqrt_b * chi_hom) / denom
    return entropy_snu_bits(nu1) + entropy_snu_bits(nu2) - _pair_entropy(c_term, d_term)


def holevo_trusted_heterodyne_bits(modulation_variance_snu, transmittance, input_excess_noise_snu, efficiency, electronic_noise_snu):
    """chi_BE for reverse reconciliation with a trusted heterodyne detector (Fossier et al. 2009).

    v_el is per quadrature in the QOSST convention (heterodyne noise 2 + 2 v_el).
    """
    v = np.asarray(modulation_variance_snu, dtype=float) + 1.0
    t = np.asarray(transmittance, dtype=float)
    chi_line, a_term, b_term, nu1, nu2 = _eve_symplectic_ab(v, t, np.asarray(input_excess_noise_snu, dtype=float))
    chi_het = (2.0 - efficiency + 2.0 * electronic_noise_snu) / efficiency
    chi_tot = chi_line + chi_het / t
    sqrt_b = np.sqrt(b_term)
    denom2 = (t * (v + chi_tot)) ** 2
    c_term = (a_term * chi_het**2 + b_term + 1.0 + 2.0 * chi_het * (v * sqrt_b + t * (v + chi_line))
              + 2.0 * t * (v * v - 1.0)) / denom2
    d_term = (v + sqrt_b * chi_het) ** 2 / denom2
    return entropy_snu_bits(nu1) + entropy_snu_bits(nu2) - _pair_entropy(c_term, d_term)


def holevo_untrusted_homodyne_bits(modulation_variance_snu, transmittance, input_excess_noise_snu):
    """chi_BE with an untrusted ideal homodyne (Garcia-Patron & Cerf 2006), square roots included."""
    v = np.asarray(modulation_variance_snu, dtype=float) + 1.0
    t = np.asarray(transmittance, dtype=float)
    xi = np.asarray(input_excess_noise_snu, dtype=float)
    w = 1.0 + t * (v - 1.0) + t * xi
    z2 = t * (v * v - 1.0)
    delta = v * v + w * w - 2.0 * z2
    det = (w * v - z2) ** 2
    disc = np.sqrt(np.clip(delta * delta - 4.0 * det, 0.0, None))
    nu1 = np.sqrt(0.5 * (delta + disc))
    nu2 = np.sqrt(np.clip(0.5 * (delta - disc), 0.0, None))
    nu3 = np.sqrt(v * (v - z2 / w))
    return entropy_snu_bits(nu1) + entropy_snu_bits(nu2) - entropy_snu_bits(nu3)


# --- discrete alphabets ---------------------------------------------------------------------------

def coherent_overlap(alpha, beta):
    """<alpha|beta> = exp(-|alpha - beta|^2/2 + i Im(conj(alpha) beta)): never overflows."""
    alpha = np.asarray(alpha, dtype=complex)
    beta = np.asarray(beta, dtype=complex)
    return np.exp(-0.5 * np.abs(alpha - beta) ** 2 + 1j * np.imag(np.conj(alpha) * beta))


def holevo_alphabet_bits(amplitudes, probabilities=None):
    """Exact chi of a pure coherent-state alphabet from its Gram matrix (docs/PHYSICS.md 11.5)."""
    amps = np.asarray(amplitudes, dtype=complex).ravel()
    probs = _probabilities(probabilities, amps.size)
    root = np.sqrt(probs)
    gram = root[:, None] * root[None, :] * coherent_overlap(amps[:, None], amps[None, :])
    return _entropy_of_spectrum_bits(np.linalg.eigvalsh(0.5 * (gram + gram.conj().T)))


def coherent_fock_vectors(amplitudes, cutoff):
    """Fock coefficients <n|alpha> for n < cutoff, in log space so large n never overflows."""
    amps = np.asarray(amplitudes, dtype=complex).ravel()
    n = np.arange(cutoff)
    mag = np.abs(amps)[:, None]
    with np.errstate(divide="ignore"):
        log_mod = -0.5 * mag**2 + n * np.log(np.where(mag > 0, mag, 1.0)) - 0.5 * gammaln(n + 1)
    coeff = np.exp(log_mod) * np.exp(1j * n * np.angle(amps)[:, None])
    coeff[:, 1:] *= (mag > 0)  # vacuum has only the n = 0 component
    return coeff


def holevo_fock_bits(amplitudes, probabilities=None, cutoff=None):
    """chi = S(rho_bar) of a coherent-state ensemble from its truncated Fock density matrix (1.5).

    Linear in the number of symbols, so it suits empirical weight histograms; fails loudly when the
    cutoff loses more than 1e-12 of the trace.
    """
    amps = np.asarray(amplitudes, dtype=complex).ravel()
    probs = _probabilities(probabilities, amps.size)
    if cutoff is None:
        n_max = float(np.max(np.abs(amps)) ** 2)
        cutoff = int(np.ceil(n_max + 12.0 * np.sqrt(n_max + 1.0) + 30.0))
    vecs = coherent_fock_vectors(amps, cutoff)
    rho = (vecs.T * probs) @ vecs.conj()
    missing = 1.0 - float(np.real(np.trace(rho)))
    if missing > 1e-12:
        raise ValueError(f"Fock cutoff {cutoff} loses {missing:.2e} of the trace; raise the cutoff")
    return _entropy_of_spectrum_bits(np.linalg.eigvalsh(0.5 * (rho + rho.conj().T)))


def _probabilities(probabilities, size):
    if probabilities is None:
        return np.full(size, 1.0 / size)
    probs = np.asarray(probabilities, dtype=float).ravel()
    if probs.size != size or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0, atol=1e-10):
        raise ValueError(f"probabilities must be {size} non-negative numbers summing to 1")
    return probs


def _entropy_of_spectrum_bits(eigenvalues):
    lam = np.clip(np.real(eigenvalues), 0.0, None)
    lam = lam[lam > 0]
    return float(-np.sum(lam * np.log2(lam)))
