"""Photon number per symbol from power, wavelength and symbol rate (docs/PHYSICS.md 16)."""

import pytest
from hypothesis import given, strategies as st

from qslab.analysis.units import (dbm_to_w, ideal_responsivity_a_per_w, photon_energy_j, photons_per_symbol,
                            power_for_photons_w, w_to_dbm)


def test_photon_energy_at_telecom_wavelengths():
    assert photon_energy_j(1550e-9) == pytest.approx(1.281578e-19, rel=1e-6)
    assert photon_energy_j(1310e-9) == pytest.approx(1.516371e-19, rel=1e-6)


@pytest.mark.parametrize("power_w, rate_hz, photons", [(1e-9, 1e9, 7.802881), (1e-12, 1e9, 0.007803), (10e-9, 10e9, 7.802881)])
def test_photons_per_symbol_reference(power_w, rate_hz, photons):
    assert photons_per_symbol(power_w, rate_hz) == pytest.approx(photons, rel=1e-4)


def test_responsivity_of_an_ideal_diode_at_1550_nm():
    assert ideal_responsivity_a_per_w(1550e-9) == pytest.approx(1.250159, rel=1e-6)


@given(st.floats(1e-15, 1.0), st.floats(1e6, 1e11), st.floats(400e-9, 2000e-9))
def test_power_and_photons_round_trip(power_w, rate_hz, wavelength_m):
    n = photons_per_symbol(power_w, rate_hz, wavelength_m)
    assert power_for_photons_w(n, rate_hz, wavelength_m) == pytest.approx(power_w, rel=1e-12)


def test_dbm():
    assert dbm_to_w(0.0) == pytest.approx(1e-3)
    assert w_to_dbm(1e-6) == pytest.approx(-30.0)
