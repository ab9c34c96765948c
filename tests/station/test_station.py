"""The station on the embedded bench: connect, identify, and always close safely (also after an exception,
Ctrl-C, or a failing safe-state step); one clear line for an instrument that does not answer or answers nonsense."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest
from qcodes.instrument import Instrument
from station_fixtures import bench_config, bench_data

from qslab.instruments.optical import ModulatorCalibration
from qslab.instruments.sim.server import observing_bench_starts, served_over_sockets
from qslab.sequences.station import Identity, LabStation, StationError

MODELS = {"laser": "N7714A", "awg": "M8195A", "client_awg": "M8195A", "bias_carver": "MBX", "bias_iq": "MBX",
          "attenuator": "N7762A", "power_meter": "N7744A", "amplifier": "SCPI optical amplifier (simulated)",
          "digitizer": "DSOS804A"}


def _all_closed(names) -> bool:
    return not any(Instrument.exist(name) for name in names)


def _bench_is_stopped(address: str) -> bool:
    host, port = address.split("::")[1:3]
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=0.5).close()
    return True


def _light_everything(station: LabStation) -> None:
    """Laser on, attenuator open, amplifier on, IQ modulator playing: everything the close must undo."""
    laser, attenuator, amplifier = station.laser(), station.attenuator(), station.amplifier()
    laser.set_power_dbm(10.0)
    laser.on()
    attenuator.set_attenuation_db(20.0)
    attenuator.open_shutter()
    amplifier.set_gain_db(1.14)
    amplifier.on()
    truth = station.bench.params.server_iq
    iq = station.iq_modulator(ModulatorCalibration(truth.vpi_v, truth.driver_gain))
    iq.lock_bias()
    fields = 0.5 * np.exp(2j * np.pi * np.arange(64) / 8)
    iq.load(fields, iq.awg.samples_per_symbol(station.config.protocol.symbol_rate_hz))
    station.driver("awg").run()
    state = station.bench.state
    assert state.laser_power_w() > 0 and state.amplifier.enabled and state.awg.running
    assert state.photons_per_symbol() > 0 and not state.modulation().static


def _assert_bench_dark(bench) -> None:
    state = bench.state
    assert state.laser_power_w() == 0.0
    assert not any(port.enabled for port in state.laser_ports.values())
    assert not state.awg.running and not any(ch.output_enabled for ch in state.awg.channels.values())
    assert state.modulation().static  # no drive reaches the modulators: 0 V
    assert not state.amplifier.enabled
    assert not any(att.shutter_open for att in state.attenuators.values())


def test_connects_identifies_every_instrument_and_closes_safe():
    with LabStation(bench_config()) as station:
        assert {c.config.name: c.identity.model for c in station.connections.values()} == MODELS
        assert set(station.qcodes.components) == set(MODELS)
        described = {entry["name"]: entry for entry in station.describe()}
        assert described["awg"]["roles"] == ["pulse_carver", "server_iq_modulator", "server_receiver"]
        assert described["bias_iq"]["address"].startswith("socket://127.0.0.1:")
        assert described["client_awg"]["configured_address"] == "bench"
        laser_address = described["laser"]["address"]
        bench = station.bench
    report = station.safe_state
    assert report.safe and report.errors == {}
    assert report.readback["laser"] == {f"port{n}.output_enabled": False for n in range(1, 5)}
    assert report.readback["awg"]["is_running"] is False and report.readback["amplifier"] == {"output_enabled": False}
    assert set(report.readback) == {"laser", "awg", "client_awg", "amplifier", "attenuator"}
    assert _all_closed(MODELS) and station.connections == {} and station.benches == []
    assert _bench_is_stopped(laser_address)
    _assert_bench_dark(bench)
    assert station.close() is report  # idempotent


@pytest.mark.parametrize("interruption", [RuntimeError("sequence failed"), KeyboardInterrupt()])
def test_an_exception_inside_leaves_lasers_off_and_drives_at_zero(interruption):
    station = LabStation(bench_config())
    with pytest.raises(type(interruption)):
        with station:
            bench = station.bench
            _light_everything(station)
            raise interruption
    report = station.safe_state
    assert report.safe, report.as_dict()
    assert report.readback["laser"]["port1.output_enabled"] is False
    assert all(value is False for value in report.readback["awg"].values())
    assert report.readback["attenuator"]["att1.shutter_open"] is False
    _assert_bench_dark(bench)
    assert _all_closed(MODELS)


@pytest.mark.parametrize("failure", [RuntimeError("amplifier stuck"), KeyboardInterrupt()])
def test_a_failing_safe_state_step_does_not_stop_the_others(failure, monkeypatch):
    station = LabStation(bench_config())
    with pytest.raises(KeyboardInterrupt) if isinstance(failure, KeyboardInterrupt) else _nothing():
        with station:
            bench = station.bench
            _light_everything(station)

            def stuck(self):
                raise failure

            # on the class: qcodes strips a closed instrument's attributes, so an instance patch could not be undone
            monkeypatch.setattr(type(station.driver("amplifier")), "safe_state", stuck)
    report = station.safe_state
    assert not report.safe and set(report.errors) == {"amplifier"}
    assert report.readback["laser"]["port1.output_enabled"] is False  # lasers go first, amplifier after
    assert report.readback["awg"]["is_running"] is False and "attenuator" in report.readback
    assert bench.state.laser_power_w() == 0.0 and not bench.state.awg.running
    assert _all_closed(MODELS)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_silent_instrument_is_named_with_its_address(fake_instrument):
    """The instrument's own 0.3 s timeout applies, not the station's: that one is set to 300 s here, so a station
    that fell back to it would hang far beyond the 120 s guard, however loaded the machine."""
    silent = fake_instrument(None)
    config = bench_config(**{"instruments.amplifier.address": silent.visa_address,
                             "instruments.amplifier.init": {"timeout_s": 0.3}, "station.timeout_s": 300.0})
    station = LabStation(config)
    started = time.monotonic()
    with pytest.raises(StationError) as error:
        station.connect()
    assert time.monotonic() - started < 120.0
    assert str(error.value) == f"amplifier at {silent.visa_address}: did not answer within 0.3 s (*IDN?)"
    assert error.value.instrument == "amplifier"
    assert _all_closed(MODELS) and station.benches == []  # the ones connected before it were closed
    assert station.safe_state.safe


def test_a_silent_serial_instrument_is_named(fake_instrument):
    silent = fake_instrument(None)
    config = bench_config(**{"instruments.bias_iq.address": silent.serial_address,
                             "instruments.bias_iq.init": {"timeout_s": 0.3}})
    with pytest.raises(StationError, match=rf"^bias_iq at {silent.serial_address}: did not answer within 0.3 s"):
        LabStation(config).connect()
    assert _all_closed(MODELS)


@pytest.mark.parametrize(("reply", "detail"), [
    ("hello there", "answered 'hello there' to *IDN?: expected 'vendor,model,serial,firmware'"),
    (",,,", "answered ',,,' to *IDN?: expected 'vendor,model,serial,firmware'"),
    ("Keysight Technologies,N7762A,DE1,V1.0", "identifies as 'Keysight Technologies,N7762A,DE1,V1.0': expected a "
                                              "model matching 'N7714A' for driver keysight_n7714a"),
])
def test_nonsense_or_another_model_is_named(fake_instrument, reply, detail):
    fake = fake_instrument(reply)
    config = bench_config(**{"instruments.laser.address": fake.visa_address})
    with pytest.raises(StationError) as error:
        LabStation(config).connect()
    assert str(error.value) == f"laser at {fake.visa_address}: {detail}"


def test_an_unreachable_instrument_is_named():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    address = f"TCPIP::127.0.0.1::{port}::SOCKET"
    with pytest.raises(StationError, match=rf"^power_meter at {address}: cannot be reached \(.*refused"):
        LabStation(bench_config(**{"instruments.power_meter.address": address})).connect()
    assert _all_closed(MODELS)


def test_identity_parsing():
    identity = Identity.parse("THORLABS,MBX,M00000001,1.9.4\r\n")
    assert identity.as_dict() == {"vendor": "THORLABS", "model": "MBX", "serial": "M00000001", "firmware": "1.9.4"}
    for reply in ("", "MBX", "a,b,c", "a,b,c,d,e", " ,MBX,1,2", "a,\x00,c,d"):
        with pytest.raises(ValueError, match="expected 'vendor,model,serial,firmware'"):
            Identity.parse(reply)


def test_a_bench_port_in_use_is_one_line():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(StationError, match=rf"^bench at 127.0.0.1: cannot serve its instruments \(laser: cannot "
                                               rf"listen on 127.0.0.1:{port}"):
            LabStation(bench_config(**{"bench.ports.laser": port})).connect()
    assert _all_closed(MODELS)


class _Driver:
    """A driver whose close waits at a barrier: it can only return if every other close runs at the same time."""

    def __init__(self, barrier, fails: bool = False):
        self.barrier, self.fails, self.closed = barrier, fails, False

    def close(self) -> None:
        self.barrier.wait()
        self.closed = True
        if self.fails:
            raise OSError("port already gone")


def test_drivers_close_at_once_and_a_failing_close_is_named_without_stopping_the_others():
    """Closes run side by side (a serial socket port sleeps 0.3 s in its close; one after the other, two bias
    controllers made every exit 0.6 s longer): three closes that each wait for the other two all return."""
    import threading
    from types import SimpleNamespace

    from qslab.sequences.station import _close_drivers

    barrier = threading.Barrier(3, timeout=60)  # broken (an error for every close) only if they ran one by one
    drivers = {name: _Driver(barrier, fails=name == "bias_iq") for name in ("bias_carver", "bias_iq", "laser")}
    connections = [SimpleNamespace(driver=d, config=SimpleNamespace(name=n)) for n, d in drivers.items()]
    errors = _close_drivers(connections)
    assert all(d.closed for d in drivers.values())
    assert list(errors) == ["bias_iq"] and "port already gone" in str(errors["bias_iq"])


def test_a_station_may_serve_its_bench_from_a_forked_process_unless_someone_here_observes_it():
    with LabStation(bench_config(), bench_process=True) as station:
        served = station.benches[0]
        assert station.bench is None and served.pid not in (None, os.getpid())  # its state is out of this one's reach
        assert {c.config.name: c.identity.model for c in station.connections.values()} == MODELS
        laser_address = {entry["name"]: entry for entry in station.describe()}["laser"]["address"]
        sent = served.message_counts()
    assert station.safe_state.safe and _all_closed(MODELS) and _bench_is_stopped(laser_address)
    assert sent["laser"] > 0 and served.message_counts()["laser"] >= sent["laser"]  # the close's read-back is counted
    started = []
    with observing_bench_starts(started.append), LabStation(bench_config(), bench_process=True) as station:
        assert started == [station.bench] and station.bench is not None  # an observer is handed the Bench itself


def test_only_benches_every_instrument_of_which_is_reached_over_a_socket_can_be_served_by_another_process():
    table = bench_data()["bench"]
    assert served_over_sockets(table, {"spare_meter": "thorlabs_pm100d"})
    assert not served_over_sockets(table, {"card": "alazar_ats9373"})  # its driver calls the emulator in this process
    assert not served_over_sockets({**table, "instruments": {"digitizer": "alazar_ats9373"}}, {})


def test_without_a_safe_fork_the_station_keeps_its_bench(monkeypatch):
    from qslab.instruments.sim import bench_process

    monkeypatch.setattr(bench_process, "CAN_FORK", False)  # as on macOS or Windows
    with LabStation(bench_config(), bench_process=True) as station:
        assert station.bench is not None and station.bench.state.laser_power_w() == 0.0
