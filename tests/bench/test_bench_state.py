"""The bench's physics without sockets: parameters, modulator transfer functions, the power chain."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis import modulator_transfer as mt
from qslab.analysis.units import dbm_to_w, photons_per_symbol
from qslab.instruments.sim.link import modulators as mod
from qslab.instruments.sim.bench import BenchState
from qslab.instruments.sim.bench_parameters import BenchParameters, defaults_table, from_mapping


def test_defaults_toml_documents_exactly_the_dataclass_defaults():
    assert from_mapping(defaults_table()) == BenchParameters()


def test_parameters_by_dotted_path_and_errors_name_the_key():
    params = BenchParameters()
    assert params.get("server_iq.vpi_v") == 3.5
    assert params.replace(**{"server_iq.vpi_v": 4.0}).get("server_iq.vpi_v") == 4.0
    assert "client_receiver.electronic_noise_snu" in params.paths()
    with pytest.raises(ValueError, match=r"unknown key 'server_iq.vpi'"):
        from_mapping({"server_iq": {"vpi": 3.0}})
    with pytest.raises(ValueError, match=r"server.tap_ratio: expected a finite number"):
        from_mapping({"server": {"tap_ratio": "a lot"}})
    with pytest.raises(ValueError, match=r"channel.forward_transmittance"):
        from_mapping({"channel": {"forward_transmittance": 1.5}})
    with pytest.raises(KeyError, match="server_iq.nope"):
        params.get("server_iq.nope")


def test_mzm_transfer_has_the_extinction_ratio_and_a_sine_field_at_null():
    er_db = 25.0
    assert mt.mzm_power(0.0, er_db) == pytest.approx(1.0)
    assert mt.mzm_power(np.pi, er_db) == pytest.approx(10 ** (-er_db / 10))
    u = np.linspace(-3.5, 3.5, 11)
    field = mt.mzm_field(np.pi + np.pi * u / 3.5, er_db)
    np.testing.assert_allclose(field.real, np.sin(np.pi * u / (2 * 3.5)), atol=1e-12)
    np.testing.assert_allclose(np.abs(field.imag), 10 ** (-er_db / 20) * np.cos(np.pi * u / 7), atol=1e-15)
    theta = mod.theta_for_power_fraction(0.5, er_db, positive_slope=True)
    assert mt.mzm_power(theta, er_db) == pytest.approx(0.5) and theta < 0


def test_bias_for_phase_lands_on_the_target_modulo_two_pi():
    for target in (0.0, np.pi, -np.pi / 2, 2.5):
        volts = mod.bias_for_phase_v(target, bias_vpi_v=6.0, bias_phase_rad=1.1)
        theta = mod.arm_phase_rad(0.0, volts, 3.5, 6.0, 1.1)
        assert np.cos(theta - target) == pytest.approx(1.0) and abs(volts) <= 6.0


def _playing(state: BenchState, i_codes: np.ndarray, q_codes: np.ndarray) -> None:
    awg = state.awg
    for number, codes in ((1, i_codes), (2, q_codes)):
        channel = awg.channels[number]
        channel.segments[1] = codes.astype(np.int8)
        channel.selected_segment, channel.output_enabled, channel.amplitude_vpp = 1, True, 1.0
    awg.running = True
    awg.version += 1


def test_photons_per_symbol_follow_power_and_match_the_symbols_for_slot_constant_drives():
    state = BenchState(from_mapping({"server_iq": {"iq_skew_s": 0.0}}))  # a skewed Q drive changes within slots
    p = state.params
    port = state.server_laser
    port.enabled, port.power_w = True, float(dbm_to_w(10.0))
    state.server_attenuator.shutter_open = True
    state.server_attenuator.attenuation_db = 12.0
    rng = np.random.default_rng(0)
    sps = 64
    _playing(state, np.repeat(rng.integers(-100, 100, 256), sps), np.repeat(rng.integers(-100, 100, 256), sps))
    expected = photons_per_symbol(state.output_power_w(), p.server.symbol_rate_hz, 1550e-9)
    assert state.photons_per_symbol() == pytest.approx(float(expected))
    symbols = state.symbols()
    assert symbols.shape == (256,)
    # the field is constant within each slot, so the slot mode carries all of the light
    assert np.mean(np.abs(symbols) ** 2) == pytest.approx(state.photons_per_symbol(), rel=1e-12)
    before = state.photons_per_symbol()
    state.server_attenuator.attenuation_db = 15.0
    assert state.photons_per_symbol() == pytest.approx(before / 10 ** 0.3)
    assert state.tap_power_w() == pytest.approx(state.modulator_output_power_w() * p.server.tap_ratio)
    state.server_attenuator.shutter_open = False
    assert state.photons_per_symbol() == 0.0 and state.tap_power_w() > 0.0
    port.enabled = False
    assert state.tap_power_w() == 0.0


def test_attenuator_power_control_holds_the_output_at_the_setpoint():
    state = BenchState()
    state.server_laser.enabled = True
    attenuator = state.server_attenuator
    attenuator.shutter_open, attenuator.power_control = True, True
    attenuator.power_setpoint_w = float(dbm_to_w(-40.0))
    assert state.attenuator_output_power_w() == pytest.approx(1e-7, rel=1e-9)


def test_truth_paths_cover_parameters_and_live_values():
    state = BenchState()
    paths = state.truth_paths()
    for path in ("server.photons_per_symbol", "client_amplifier.gain", "channel.transmittance",
                 "server_iq.bias_phase_rad", "bias_iq.bias_v"):
        assert path in paths
    p = state.params
    expected_t = (p.channel.forward_transmittance * p.channel.return_transmittance
                  * 10 ** (-2 * p.client_processor.loss_per_pass_db / 10))
    assert state.truth("channel.transmittance") == pytest.approx(expected_t)
    assert state.truth("client_amplifier.gain") == 1.0  # output off


def test_each_consumer_gets_its_own_reproducible_stream():
    a, b = BenchState(), BenchState()
    assert a.rng("power_meter").random() == b.rng("power_meter").random()
    assert a.rng("power_meter").random() != a.rng("digitizer").random()
    other = BenchState(BenchParameters(seed=1))
    assert other.rng("power_meter").random() != a.rng("power_meter").random()
