"""Closed forms of the client's measurement of one product (docs/PHYSICS.md 4).

Mode 1 after the client's unitary carries beta = x^dagger alpha. A phase-insensitive amplifier
(gain G, inversion factor n_sp >= 1; n_sp = 1 is the quantum limit) is followed by a
(1 - 1/G):(1/G) coupler; the client homodynes the first port with efficiency eta and electronic
noise v_el (SNU) and re-injects the second. Everything here is in SNU.
"""

from __future__ import annotations

import numpy as np


def amplifier_output_variance_snu(gain, input_variance_snu=1.0, inversion_factor=1.0):
    """V_out = G V_in + (G - 1)(2 n_sp - 1): a phase-insensitive amplifier on a quadrature."""
    gain = np.asarray(gain, dtype=float)
    return gain * input_variance_snu + (gain - 1.0) * (2.0 * np.asarray(inversion_factor, dtype=float) - 1.0)


def inversion_factor_from_noise_figure(gain, noise_figure_db):
    """n_sp from the amplifier noise figure, NF = 1/G + 2 n_sp (G - 1)/G (3 dB at the quantum limit, G >> 1)."""
    gain = np.asarray(gain, dtype=float)
    nf = 10.0 ** (np.asarray(noise_figure_db, dtype=float) / 10.0)
    return (gain * nf - 1.0) / (2.0 * (gain - 1.0))


def snr_factor(gain):
    """The paper's g(G) = G(G - 1)/(2G^2 - 3G + 2): SNR = 4 g (Re beta)^2 for an ideal client."""
    gain = np.asarray(gain, dtype=float)
    return gain * (gain - 1.0) / (2.0 * gain**2 - 3.0 * gain + 2.0)


def measured_mean_per_re_beta(gain, efficiency=1.0):
    """<X_meas> / Re(beta) = 2 sqrt(eta (G - 1))."""
    return 2.0 * np.sqrt(np.asarray(efficiency, dtype=float) * (np.asarray(gain, dtype=float) - 1.0))


def measured_variance_snu(gain, efficiency=1.0, electronic_noise_snu=0.0, inversion_factor=1.0):
    """Var(X_meas) = eta[(1 - 1/G) V_amp + 1/G] + (1 - eta) + v_el; (2G^2 - 3G + 2)/G when ideal."""
    gain = np.asarray(gain, dtype=float)
    eta = np.asarray(efficiency, dtype=float)
    v_amp = amplifier_output_variance_snu(gain, 1.0, inversion_factor)
    return eta * ((1.0 - 1.0 / gain) * v_amp + 1.0 / gain) + (1.0 - eta) + electronic_noise_snu


def product_noise_std(gain, efficiency=1.0, electronic_noise_snu=0.0, inversion_factor=1.0):
    """Std of the unbiased one-shot estimate of Re(beta), in field-amplitude units (sqrt(photons)).

    1/(2 sqrt(g(G))) for an ideal client; infinite at G = 1, where the client sees nothing.
    """
    var = measured_variance_snu(gain, efficiency, electronic_noise_snu, inversion_factor)
    with np.errstate(divide="ignore"):
        return np.sqrt(var) / measured_mean_per_re_beta(gain, efficiency)


def returned_excess_noise_total_snu(gain, inversion_factor=1.0):
    """Excess noise the client adds to returned mode 1, summed over modes: 2 - 2/G at the quantum limit.

    d_ret = sqrt(1/G) c - sqrt(1 - 1/G) u, so Var = V_amp/G + (1 - 1/G) and the excess is that minus 1.
    """
    gain = np.asarray(gain, dtype=float)
    return amplifier_output_variance_snu(gain, 1.0, inversion_factor) / gain + (1.0 - 1.0 / gain) - 1.0


def client_snr(mu_photons, gain, efficiency=1.0, electronic_noise_snu=0.0, inversion_factor=1.0):
    """Mean SNR of one product for a unit-norm data vector and Gaussian weights of mu photons per mode.

    E[(Re beta)^2] = mu/2 when both quadratures carry weights, so SNR = (mu/2)/sigma^2 = 2 mu g(G)
    for an ideal client: the paper's F = 2 mu g (docs/PHYSICS.md 10.3, DECISIONS A).
    """
    sigma = product_noise_std(gain, efficiency, electronic_noise_snu, inversion_factor)
    return 0.5 * np.asarray(mu_photons, dtype=float) / sigma**2
