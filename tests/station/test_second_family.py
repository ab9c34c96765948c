"""A second digitizer family (AlazarTech ATS9373, a PCIe card on the bench in process) and a second AWG family
(Tektronix AWG70002A as the client's AWG) through the role contract: the station picks them from lab_config.toml's
driver names alone, and what they deliver is the bench's truth (issue 15, "Prove the roles with a second family")."""

from __future__ import annotations

import numpy as np
import pytest
from station_fixtures import bench_config

from qslab.instruments.optical.faults import InstrumentError
from qslab.instruments.optical.roles import Awg, Digitizer
from qslab.sequences.station import LabStation

ALTERNATIVE = {
    "instruments.digitizer.driver": "alazar_ats9373",
    "bench.instruments.digitizer": "alazar_ats9373",
    "bench.digitizer.adc_bits": 12,
    "roles.client_receiver.adc_bits": 12,
    "roles.server_receiver.adc_bits": 12,
    "instruments.client_awg.driver": "tektronix_awg70002a",
    "instruments.client_awg.limits.amplitude_max_vpp": 0.5,
    "bench.instruments.client_awg": "tektronix_awg70002a",
}
LSB_V = 0.8 / 4095


def test_the_alazar_records_are_the_benchs_rendering_and_start_at_the_marker_only_when_triggered():
    with LabStation(bench_config(**ALTERNATIVE)) as station:
        assert station.connections["digitizer"].identity.model == "ATS9373"
        digitizer = station.digitizer("digitizer")
        assert isinstance(digitizer, Digitizer)
        board = station.bench.instruments["digitizer"].emulator
        awg = station.awg("awg", [1, 2, 3, 4], "server")
        awg.load([(1, [np.zeros(1280, dtype=np.int8)] * 4)], [0.5] * 4, run=True)
        laser = station.laser()
        laser.set_power_dbm(10.0)
        laser.on()
        digitizer.configure(points=4000, sample_rate_hz=2e9)
        assert digitizer.sample_rate_hz() == 2e9 and digitizer.range_v(1) == 0.8
        digitizer.arm()
        digitizer.trigger()
        digitizer.wait()
        truth = station.bench.state.last_capture
        for channel in (1, 2):
            samples = digitizer.read(channel)
            assert samples.shape == (4000,)
            assert np.max(np.abs(samples - truth.channels[channel].volts[:4000])) <= LSB_V
            assert np.std(samples) > 10 * LSB_V  # shot noise, not a flat line
        assert board.triggered_by_marker()  # the station's [trigger] set engine J on TRIG IN at 0.25 V
        digitizer.configure_trigger("AUX", 0.75)  # above the marker's 0.5 V: never crosses
        assert not board.triggered_by_marker()
        awg.stop()
        digitizer.configure_trigger("AUX", 0.25)
        assert not board.triggered_by_marker()  # nothing plays: no marker edge


def test_the_awg70002a_plays_into_the_same_bench_state_and_is_left_safe():
    codes = [(np.arange(4096) % 200 - 100).astype(np.int8), np.full(4096, 17, dtype=np.int8)]
    with LabStation(bench_config(**ALTERNATIVE)) as station:
        assert station.connections["client_awg"].identity.model == "AWG70002A"
        role = station.awg("client_awg", [1, 2], "client_processor")
        assert isinstance(role, Awg)
        role.configure(rate_divider=4)
        assert role.samples_per_symbol(1e9) == 4
        role.load([(1, codes), (2, [c[::-1] for c in codes])], [0.5, 0.3], select=1, run=True)
        state = station.bench.state.client_awg
        assert state.running and state.effective_sample_rate_hz == 4e9
        for channel, amplitude in ((1, 0.5), (2, 0.3)):
            assert np.array_equal(state.playing_codes(channel), codes[channel - 1])
            assert state.channels[channel].amplitude_vpp == amplitude
        role.switch([(1, 2, None), (2, None, False)])  # the AWG70000's channels play their own assets
        assert np.array_equal(state.playing_codes(1), codes[0][::-1]) and state.playing_codes(2) is None
        edges = station.bench.instruments["client_awg"].emulator.marker_edges()
        assert list(edges) == [0]  # marker 1 rises at the start of the waveform channel 1 plays
    readback = station.safe_state.readback["client_awg"]
    assert readback == {"is_running": False, "ch1.output_enabled": False, "ch2.output_enabled": False}
    assert station.safe_state.safe


def test_an_awg70000_refusal_names_the_waveform_it_lacks_quotes_and_all():
    """The emulator doubles a quote inside an error text (IEEE 488.2 string data); the role reads the queue whole."""
    with LabStation(bench_config(**ALTERNATIVE)) as station:
        role = station.awg("client_awg", [1, 2], "client_processor")
        with pytest.raises(InstrumentError, match='select segment 9.*no waveform "qslab_ch1_seg9" in the waveform list'):
            role.select(9)
