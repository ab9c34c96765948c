"""The DC-coupled receivers' DC level on the bench against its closed form, computed here independently:
P_LO = set laser power x 10^(power_offset_db/10) x lo_transmittance, V_dc = output_offset_v + sign x G (P_LO/2)
x 10^(-CMRR/20) (each photodiode sees half the LO; the pair keeps 10^(-CMRR/20) of one diode's signal)."""

from __future__ import annotations

import numpy as np
import pytest

Z = 5.0


def _dc_closed_form(params, name: str, laser_dbm: float) -> float:
    rx = params.get(name)
    laser_w = 1e-3 * 10.0 ** ((laser_dbm + params.server_laser.power_offset_db) / 10.0)
    lo_w = rx.lo_transmittance * laser_w
    return rx.output_offset_v + rx.imbalance_sign * rx.gain_v_per_w * lo_w / 2.0 * 10.0 ** (
        -rx.common_mode_rejection_db / 20.0)


@pytest.mark.parametrize("laser_dbm", [None, 6.0, 12.0])
def test_the_rendered_dc_level_is_the_closed_form(bench, connect, laser_dbm):
    laser, scope = connect("laser"), connect("digitizer", silence_pyvisapy_warning=True)
    if laser_dbm is not None:
        laser.port1.power_dbm(laser_dbm)
        laser.port1.output_enabled(True)
    sps, points = 8, 2**18
    scope.acquire_points(points)
    scope.sample_rate(sps * bench.params.server.symbol_rate_hz)
    expected = {name: _dc_closed_form(bench.params, name, laser_dbm) if laser_dbm is not None
                else bench.params.get(name).output_offset_v for name in ("client_receiver", "server_receiver")}
    for channel, name in ((scope.ch1, "client_receiver"), (scope.ch2, "server_receiver")):
        channel.range(0.1)
        channel.offset(expected[name])  # centred where the closed form says: a wrong level would clip or show
    scope.auto_digitize(False)
    scope.digitize()
    record = bench.state.last_capture
    assert record.laser_on is (laser_dbm is not None)
    for number, channel, name in ((1, scope.ch1, "client_receiver"), (2, scope.ch2, "server_receiver")):
        trace = channel.trace()
        config = record.channels[number].config
        assert record.channels[number].clipped_samples == 0
        # the mean of correlated noise: its long-run rms (white before the unit-DC-gain filter) over sqrt(n)
        white_v = config.shot_noise_rms_v * np.sqrt((1.0 if record.laser_on else 0.0) + config.electronic_noise_snu)
        tolerance = Z * white_v / np.sqrt(trace.size) + config.volts_per_code / 2
        assert abs(np.mean(trace) - expected[name]) < tolerance, (name, np.mean(trace), expected[name])
    if laser_dbm == 12.0:  # far from the noise: tens of mV, opposite signs (client +, server -)
        assert expected["client_receiver"] > 0.05 and expected["server_receiver"] < -0.05
