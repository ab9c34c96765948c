"""The one model of a calibrated value: Estimate's limits take their coverage factor, MeasuredValues reads back
exactly what it records (and what sessions recorded before it existed), and names a broken entry."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import pytest

from qslab.analysis.estimate import Estimate
from qslab.analysis.measured_values import MeasuredValues, server_detector
from qslab.calibration import result

FULL = MeasuredValues(
    mu_photons=Estimate(6.000000000000002, 0.041261517109438754), mu_per_layer=(Estimate(6.0, 0.0413),
                                                                              Estimate(5.99, 0.0408)),
    gain=Estimate(1.3, 0.003076259499512202), transmittance=Estimate(0.6331, 0.0513),
    excess_noise_snu=Estimate(0.0056, 0.0055, "SNU"), amplitude_transmittance=Estimate(0.7404, 0.00066),
    amplifier_noise_figure_db=Estimate(3.8, 0.135, "dB"), server_efficiency=Estimate(0.8659, 0.0249),
    server_electronic_noise_snu=Estimate(0.0417, 0.0002, "SNU"), attenuation_db_per_layer=(11.86, 24.25),
    pilot={"client_lo_phase_rad": 3.12, "server_lo_phase_rad": 3.14, "leakage_field": [-0.0016, -0.002]})
# what a session wrote before the honest amplitude and the noise figure were recorded (schema 1 all along)
OLD = {"mu_photons": {"value": 6.0, "uncertainty": 0.05}, "gain": {"value": 1.3},
       "transmittance": {"value": 0.6, "uncertainty": 0.01},
       "server_efficiency": {"value": 0.85, "uncertainty": 0.01},
       "server_electronic_noise_snu": {"value": 0.04, "uncertainty": 0.001}}


def test_calibration_results_use_the_analysis_estimate():
    assert result.Estimate is Estimate


def test_limits_take_the_coverage_factor_explicitly():
    e = Estimate(1.0, 0.1)
    assert (e.upper(2.0), e.lower(3.0)) == (1.2, pytest.approx(0.7))
    with pytest.raises(TypeError):
        e.upper()


def test_the_json_round_trip_gives_the_same_values_through_the_file_text():
    text = json.dumps(FULL.to_json(), sort_keys=True)
    assert MeasuredValues.from_json(json.loads(text)) == FULL


def test_the_json_keeps_the_schema_1_layout():
    """{field: {"value", "uncertainty"}}: files written now replay with the qslab that wrote the older ones."""
    data = FULL.to_json()
    assert data["mu_photons"] == {"value": 6.000000000000002, "uncertainty": 0.041261517109438754}
    assert data["mu_per_layer"][1] == {"value": 5.99, "uncertainty": 0.0408}
    assert data["attenuation_db_per_layer"] == [11.86, 24.25] and data["pilot"] == FULL.pilot
    assert set(data) == {"mu_photons", "mu_per_layer", "gain", "transmittance", "excess_noise_snu",
                         "amplitude_transmittance", "amplifier_noise_figure_db", "server_efficiency",
                         "server_electronic_noise_snu", "attenuation_db_per_layer", "pilot"}


def test_an_older_session_s_values_read_back_with_what_they_lack_as_none():
    measured = MeasuredValues.from_json(OLD)
    assert measured.gain == Estimate(1.3, 0.0) and measured.transmittance == Estimate(0.6, 0.01)
    assert measured.amplitude_transmittance is None and measured.excess_noise_snu is None
    assert measured.amplifier_noise_figure_db is None and measured.mu_per_layer == ()
    assert measured.server_electronic_noise_snu.unit == "SNU"  # the field names the unit


@pytest.mark.parametrize("key, entry, expected", [
    ("mu_photons", None, "measured.mu_photons is None"),
    ("gain", {"value": 0.5}, "measured.gain is {'value': 0.5}, expected {\"value\": a finite number >= 1"),
    ("server_efficiency", {"value": math.nan}, "measured.server_efficiency"),
    ("excess_noise_snu", {"value": 0.01, "uncertainty": -1}, "measured.excess_noise_snu"),
    ("mu_per_layer", [{"value": "six"}], "measured.mu_per_layer[0]"),
])
def test_a_broken_entry_is_named(key, entry, expected):
    with pytest.raises(ValueError, match="^" + re.escape(expected)):
        MeasuredValues.from_json({**OLD, key: entry})


def test_the_honest_link_is_required():
    with pytest.raises(ValueError, match="measured.transmittance"):
        MeasuredValues.from_json({k: v for k, v in OLD.items() if k != "transmittance"})
    MeasuredValues.from_json({**{k: v for k, v in OLD.items() if k != "transmittance"},
                              "amplitude_transmittance": {"value": 0.7, "uncertainty": 0.001}})


def test_the_detector_is_widened_once_by_the_factor_given():
    detector = FULL.server_detector(2.0)
    assert detector.efficiency_uncertainty == 2.0 * 0.0249
    assert detector.electronic_noise_uncertainty_snu == 2.0 * 0.0002
    capped = server_detector(Estimate(0.5, 0.4), Estimate(0.04, 0.0), 3.0)
    assert capped.efficiency_uncertainty == pytest.approx(0.99 * 0.5)  # below the efficiency itself
    assert replace(FULL, server_efficiency=Estimate(0.9, 0.01)).server_detector(3.0, trusted=False).trusted is False
