"""Interlocks (hypothesis): no sequence, whatever its parameters and whatever limits the config declares, drives a
bench instrument beyond a declared limit.

Each example varies the operating point (mu 0.1..50 photons, G 1..3, laser -10..20 dBm) and the declared limits
(laser power_max_dbm, both AWGs' amplitude_max_vpp, attenuation_min_db, amplifier gain_max_db), connects the
station on the virtual bench and runs what a session sends: SecureLink.prepare (pre-flight check, pilots, every
layer uploaded and nulled) and one image through both layers. A monitor hooked into the bench's servers checks the
instruments' state after EVERY command: laser set power and lit power <= the binding limit (its own or the LO
limits), every AWG channel's amplitude <= its AWG's limit (peak |offset| + Vpp/2 within half of it while the output
is on), attenuation >= attenuation_min_db and no power-control mode while the shutter is open, amplifier gain <=
gain_max_db while on (and on every set). Either the run completes within the limits, or a LimitError refuses it:
a limit the pre-flight can check (laser, gain, drive amplitudes) before a single command is sent, the attenuation
for mu before the VOA is set; other stops (ProtocolError: a receiver that no longer matches its record at another
laser power) are allowed, always inside the limits. Every run ends in the safe state, read back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from station_fixtures import bench_config

from qslab.analysis import mnist
from qslab.analysis.network import load_weights
from qslab.analysis.encoding import weight_symbols
from qslab.analysis.session_results import hidden_vectors
from qslab.calibration.modulators import DRIVER_GAINS
from qslab.calibration.records import RecordStore
from qslab.instruments.optical import LimitError
from qslab.instruments.sim.server import InstrumentServer
from qslab.sequences.protocol import ProtocolError, SecureLink
from qslab.sequences.protocol.setup import GATE_AMPLITUDE_VPP
from qslab.sequences.station import LabStation
from qslab.sequences.station_calibration import load_station_calibration

# what the drivers' set formats can round a requested value up by (the roles re-check read-backs exactly)
TOLERANCE = {"laser_dbm": 1e-6, "amplitude_vpp": 1e-6, "attenuation_db": 1e-9, "gain_db": 1e-4}


@dataclass(frozen=True)
class Limits:
    laser_dbm: float        # the binding laser limit: power_max_dbm or the receivers' LO limits
    awg_vpp: float          # instruments.awg.limits.amplitude_max_vpp (server: I, Q, carver, gate)
    client_awg_vpp: float   # instruments.client_awg.limits.amplitude_max_vpp (the time-bin processor)
    attenuation_min_db: float
    gain_max_db: float


@dataclass
class Monitor:
    """Checks the bench state after every command any bench server handles; keeps the extremes it saw."""

    limits: Limits
    messages: int = 0
    violations: list[str] = field(default_factory=list)
    peaks: dict[str, float] = field(default_factory=dict)
    _previous: dict[tuple, float] = field(default_factory=dict)

    def _peak(self, key: str, value: float, low: bool = False) -> None:
        old = self.peaks.get(key, math.inf if low else -math.inf)
        self.peaks[key] = min(old, value) if low else max(old, value)

    def _changed(self, key: tuple, value: float) -> bool:
        changed = key in self._previous and self._previous[key] != value
        self._previous[key] = value
        return changed

    def watch(self, state) -> Monitor:
        """Start from the bench's current settings (so the very first command that changes one is seen)."""
        with state.lock:
            for number, port in state.laser_ports.items():
                self._previous[("laser", number)] = port.power_w
            for awg in ("awg", "client_awg"):
                for number, channel in (state.awg if awg == "awg" else state.client_awg).channels.items():
                    self._previous[(awg, number)] = channel.amplitude_vpp
            self._previous[("amplifier",)] = state.amplifier.gain_db
        return self

    def after(self, state, message: bytes) -> None:
        self.messages += 1
        lim, tol, bad = self.limits, TOLERANCE, self.violations
        what = message[:60]
        with state.lock:
            for number, port in state.laser_ports.items():
                dbm = 10.0 * math.log10(port.power_w / 1e-3)
                if (self._changed(("laser", number), port.power_w) or port.enabled) and dbm > lim.laser_dbm + tol[
                        "laser_dbm"]:
                    bad.append(f"after {what!r}: laser port {number} at {dbm:.6f} dBm (enabled={port.enabled}), "
                               f"limit {lim.laser_dbm:.6f} dBm")
                if port.enabled:
                    self._peak("laser_dbm", dbm)
            for awg, limit in (("awg", lim.awg_vpp), ("client_awg", lim.client_awg_vpp)):
                awg_state = state.awg if awg == "awg" else state.client_awg
                for number, channel in awg_state.channels.items():
                    if self._changed((awg, number), channel.amplitude_vpp) and channel.amplitude_vpp > limit + tol[
                            "amplitude_vpp"]:
                        bad.append(f"after {what!r}: {awg} ch{number} set to {channel.amplitude_vpp} Vpp, "
                                   f"limit {limit}")
                    if channel.output_enabled:
                        peak_v = abs(channel.offset_v) + channel.amplitude_vpp / 2
                        self._peak(f"{awg}_vpp", channel.amplitude_vpp)
                        if peak_v > limit / 2 + tol["amplitude_vpp"]:
                            bad.append(f"after {what!r}: {awg} ch{number} drives a peak of {peak_v} V with its output "
                                       f"on, limit {limit / 2} V")
            for number, attenuator in state.attenuators.items():
                if attenuator.shutter_open:
                    self._peak("attenuation_db", attenuator.attenuation_db, low=True)
                    if (attenuator.attenuation_db < lim.attenuation_min_db - tol["attenuation_db"]
                            or attenuator.power_control):
                        bad.append(f"after {what!r}: attenuator {number} open at {attenuator.attenuation_db} dB "
                                   f"(power control {attenuator.power_control}), limit {lim.attenuation_min_db} dB")
            amp = state.amplifier
            changed = self._changed(("amplifier",), amp.gain_db)
            if amp.enabled:
                self._peak("gain_db", amp.gain_db)
            if (changed or amp.enabled) and amp.gain_db > lim.gain_max_db + tol["gain_db"]:
                bad.append(f"after {what!r}: amplifier gain {amp.gain_db} dB (enabled={amp.enabled}), "
                           f"limit {lim.gain_max_db} dB")
            if amp.enabled and amp.mode != "GAIN":
                bad.append(f"after {what!r}: amplifier on in mode {amp.mode}, which no declared limit bounds here")


def setting(low: float, high: float) -> st.SearchStrategy[float]:
    """A value as a person types it (two decimals, like the instruments' 0.01 dB resolution): a request equal to a
    limit then stays equal after the drivers' set formats (9 significant digits for the laser)."""
    return st.floats(low, high).map(lambda value: min(max(round(value, 2), low), high))


def usually(common: st.SearchStrategy[float], anywhere: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    """Mostly values the sequence can run with (so that most examples send commands), sometimes any in range."""
    return st.one_of(common, common, anywhere)


@pytest.fixture(scope="module")
def store(bench_calibration) -> RecordStore:
    """The calibration records of the default station, what a session's pre-flight runs (tests/conftest.py: made
    once per run; only read here)."""
    return RecordStore(bench_calibration)


@pytest.fixture(scope="module")
def material():
    """Both layers' symbols are made per mu; the weights and one image are loaded once."""
    weights, _ = load_weights(None)
    images, _ = mnist.load_mnist("test")
    return weights, mnist.preprocess(images[:1].reshape(1, -1))


@pytest.fixture
def monitor(monkeypatch) -> list[Monitor]:
    """Installs the hook on every bench server: after each message, the active monitor checks the state."""
    active: list[Monitor] = []
    original = InstrumentServer._exchange

    def exchange(self, message: bytes) -> bytes:
        try:
            return original(self, message)
        finally:
            if active:
                active[0].after(self.emulator.bench, message)

    monkeypatch.setattr(InstrumentServer, "_exchange", exchange)
    return active


def preflight_refusals(link: SecureLink, limits: Limits) -> list[str]:
    """What check_limits must refuse: each declared limit (and the laser's and amplifier's settable ranges) against
    what the sequence will ask of it."""
    c = link.processor.calibration
    processor_vpp = max(2 * c.beam_splitter_vpi_v / c.beam_splitter_driver_gain,
                        2 * c.phase_vpi_v / c.phase_driver_gain)
    laser_range = link.laser.port.power_dbm.vals  # what the instrument reported it can be set to
    refusals = {
        "server_laser": not (laser_range.min_value <= link.laser_power_dbm <= min(limits.laser_dbm,
                                                                                  laser_range.max_value)),
        "client_amplifier": not 0.0 <= link.set_gain_db() <= limits.gain_max_db,
        "server_lo_phase": GATE_AMPLITUDE_VPP > limits.awg_vpp,
        "server_iq_modulator": link.iq.full_scale_amplitude_vpp() > limits.awg_vpp,
        "client_processor": processor_vpp > limits.client_awg_vpp,
    }
    return [role for role, refused in refusals.items() if refused]


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mu=setting(0.1, 50.0), gain=setting(1.0, 3.0), laser_dbm=usually(setting(8.0, 12.0), setting(-10.0, 20.0)),
       power_max_dbm=usually(setting(10.0, 20.0), setting(-10.0, 20.0)),
       awg_vpp=usually(setting(1.0, 2.0), setting(0.4, 2.0)),
       client_awg_vpp=usually(setting(0.95, 2.0), setting(0.4, 2.0)), attenuation_min_db=setting(0.0, 30.0),
       gain_max_db=usually(setting(3.0, 6.0), setting(0.05, 6.0)))
@example(mu=6.0, gain=1.3, laser_dbm=10.0, power_max_dbm=13.0, awg_vpp=1.0, client_awg_vpp=1.0,
         attenuation_min_db=0.0, gain_max_db=3.0)                               # the paper's point: completes
@example(mu=20.0, gain=1.5, laser_dbm=10.0, power_max_dbm=11.0, awg_vpp=1.5, client_awg_vpp=1.2,
         attenuation_min_db=5.0, gain_max_db=1.8)                               # tighter limits, still completes
@example(mu=50.0, gain=2.0, laser_dbm=10.0, power_max_dbm=10.0, awg_vpp=2.0, client_awg_vpp=2.0,
         attenuation_min_db=25.0, gain_max_db=4.0)                              # mu needs less than the VOA's least
@example(mu=6.0, gain=1.3, laser_dbm=16.0, power_max_dbm=20.0, awg_vpp=1.0, client_awg_vpp=1.0,
         attenuation_min_db=0.0, gain_max_db=3.0)                               # the LO limit binds (13 dBm)
@example(mu=6.0, gain=1.3, laser_dbm=0.0, power_max_dbm=13.0, awg_vpp=1.0, client_awg_vpp=1.0,
         attenuation_min_db=0.0, gain_max_db=3.0)                               # below the laser's settable range
@example(mu=6.0, gain=1.3, laser_dbm=10.0, power_max_dbm=13.0, awg_vpp=0.9, client_awg_vpp=0.8,
         attenuation_min_db=0.0, gain_max_db=4.0)                               # drives beyond both AWGs' limits
@example(mu=6.0, gain=3.0, laser_dbm=10.0, power_max_dbm=13.0, awg_vpp=1.0, client_awg_vpp=1.0,
         attenuation_min_db=0.0, gain_max_db=4.0)                               # G beyond the amplifier's limit
def test_no_sequence_drives_an_instrument_beyond_its_declared_limit(store, material, monitor, mu, gain, laser_dbm,
                                                                    power_max_dbm, awg_vpp, client_awg_vpp,
                                                                    attenuation_min_db, gain_max_db):
    config = bench_config(**{"instruments.laser.limits.power_max_dbm": power_max_dbm,
                             "instruments.awg.limits.amplitude_max_vpp": awg_vpp,
                             "instruments.client_awg.limits.amplitude_max_vpp": client_awg_vpp,
                             "instruments.attenuator.limits.attenuation_min_db": attenuation_min_db,
                             "instruments.amplifier.limits.gain_max_db": gain_max_db})
    weights, data = material
    calibration = load_station_calibration(store, DRIVER_GAINS["server_iq"], channel=False)
    station = LabStation(config)
    with station:
        link = SecureLink(station, calibration, gain=gain, laser_power_dbm=laser_dbm, verify_fraction=0.05)
        limits = Limits(link.laser.power_max_dbm, awg_vpp, client_awg_vpp, attenuation_min_db, gain_max_db)
        expected = preflight_refusals(link, limits)
        watch = Monitor(limits).watch(station.bench.state)
        monitor.append(watch)
        outcome = "completed"
        try:
            link.prepare([weight_symbols(w, mu) for w in weights], mu)
            vectors = data
            for index in range(len(weights)):
                capture = link.run_layer(index, vectors, np.random.default_rng(index))
                vectors, unusable = hidden_vectors(capture.client_quadratures_snu)
                vectors[unusable] = 1.0
        except LimitError as error:
            outcome = f"refused by {error.role}"
            if expected:  # the pre-flight refuses before the first command
                assert error.role in expected and watch.messages == 0, (str(error), expected, watch.messages)
            else:  # only the VOA setting for mu is checked later, before it is sent
                assert error.role == "server_attenuator" and "below the declared limit" in str(error), str(error)
        except ProtocolError as error:
            outcome = f"stopped: {error}"
        if outcome == "completed" or outcome.startswith("stopped"):
            assert not expected, (outcome, expected)
    monitor.clear()
    print(f"mu={mu} G={gain} laser={laser_dbm} dBm limits={limits}: {outcome}; {watch.messages} commands, "
          f"extremes {watch.peaks}")
    assert watch.violations == [], watch.violations[:5]
    assert station.safe_state.safe, station.safe_state.as_dict()
    if outcome == "completed":  # the extremes the run reached are within the limits, and were reached
        assert watch.peaks["laser_dbm"] <= limits.laser_dbm + TOLERANCE["laser_dbm"]
        assert watch.peaks["attenuation_db"] >= attenuation_min_db
        assert watch.peaks["gain_db"] <= gain_max_db + TOLERANCE["gain_db"]
        assert watch.peaks["awg_vpp"] <= awg_vpp and watch.peaks["client_awg_vpp"] <= client_awg_vpp


def test_a_gain_limit_of_zero_db_is_a_config_error():
    """gain_max_db = 0 leaves the amplifier driver an empty validator range (0..0 dB): the config refuses it, naming
    the key, instead of the station failing to connect with a TypeError from qcodes."""
    from qslab.sequences.config import ConfigError

    with pytest.raises(ConfigError, match=r"instruments.amplifier.limits.gain_max_db = 0.0: expected a number > 0"):
        bench_config(**{"instruments.amplifier.limits.gain_max_db": 0.0})
    with pytest.raises(ConfigError, match=r"output_power_max_dbm = -10.0: expected a number > -10"):
        bench_config(**{"instruments.amplifier.limits.output_power_max_dbm": -10.0})


def test_the_monitor_sees_a_violation(monitor):
    """The monitor is not vacuous: a laser set above its limit straight through the driver (bypassing the role)
    is caught after that very command."""
    station = LabStation(bench_config())
    with station:
        watch = Monitor(Limits(5.0, 1.0, 1.0, 0.0, 3.0)).watch(station.bench.state)
        monitor.append(watch)
        station.driver("laser").port1.power_dbm(8.0)
        monitor.clear()
    assert any("laser port 1 at 8.000000 dBm" in v for v in watch.violations), watch.violations

