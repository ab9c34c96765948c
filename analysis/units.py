"""SI constants and the photon-number <-> optical-power conversion (docs/PHYSICS.md 16)."""

from __future__ import annotations

import numpy as np

PLANCK_J_S = 6.62607015e-34
SPEED_OF_LIGHT_M_S = 299_792_458.0
ELEMENTARY_CHARGE_C = 1.602176634e-19
DEFAULT_WAVELENGTH_M = 1550e-9


def photon_energy_j(wavelength_m=DEFAULT_WAVELENGTH_M):
    """Energy of one photon, h c / lambda."""
    return PLANCK_J_S * SPEED_OF_LIGHT_M_S / np.asarray(wavelength_m, dtype=float)


def photons_per_symbol(power_w, symbol_rate_hz, wavelength_m=DEFAULT_WAVELENGTH_M):
    """Mean photons per symbol <n> = P lambda / (h c R_sym) for average power P at the reference plane."""
    return np.asarray(power_w, dtype=float) / (photon_energy_j(wavelength_m) * np.asarray(symbol_rate_hz, dtype=float))


def power_for_photons_w(photons, symbol_rate_hz, wavelength_m=DEFAULT_WAVELENGTH_M):
    """Average optical power that carries `photons` per symbol at `symbol_rate_hz`."""
    return np.asarray(photons, dtype=float) * photon_energy_j(wavelength_m) * np.asarray(symbol_rate_hz, dtype=float)


def ideal_responsivity_a_per_w(wavelength_m=DEFAULT_WAVELENGTH_M):
    """Responsivity of a unit-efficiency photodiode, e lambda / (h c) (1.25 A/W at 1550 nm)."""
    return ELEMENTARY_CHARGE_C / photon_energy_j(wavelength_m)


def db_to_linear(db):
    """Power ratio from decibels."""
    return 10.0 ** (np.asarray(db, dtype=float) / 10.0)


def linear_to_db(ratio):
    """Decibels from a power ratio."""
    return 10.0 * np.log10(np.asarray(ratio, dtype=float))


def dbm_to_w(dbm):
    """Watts from dBm."""
    return 1e-3 * db_to_linear(dbm)


def w_to_dbm(power_w):
    """dBm from watts."""
    return linear_to_db(np.asarray(power_w, dtype=float) / 1e-3)
