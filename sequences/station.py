"""The station: a qcodes Station built from lab_config.toml, connected, identified, and always left safe.

    with LabStation("lab_config.toml") as station:     # starts the embedded bench if an address says so
        laser = station.laser()                         # roles, with the declared limits
        ...
    station.safe_state.as_dict()                        # what was read back after making everything safe

Connecting: each instrument is first probed with its own ``*IDN?`` (a fresh VISA or serial
connection), so an instrument that does not answer, answers nonsense, or is another model than
its driver expects stops the station with ONE line naming the instrument and its address, before
its driver starts sending set-up commands. Then its driver is constructed (qcodes' connect
message goes to the log, not stdout) and the identity is read again through it.

Closing (also after an exception, a failed connect, or Ctrl-C): lasers off, amplifier output off,
AWGs stopped with every output off, attenuator shutters closed; then everything is read back
(``safe_state``), every instrument closed and the bench stopped. A refused or lost command is sent
again (SAFE_ATTEMPTS in all, each retry recorded under ``retried``); an instrument that still fails
is recorded with its outputs as they read back, and the other steps still run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from qslab.instruments.optical import (AwgAmplitudeModulator, AwgIQModulator, AwgTimeBinProcessor, DetectorSpec,
                                       DigitizerHomodyneReceiver, Limit, LoLimit, ModulatorCalibration,
                                       ProcessorCalibration, ReceiverCalibration)
from qslab.instruments.optical.faults import DriverSettings
from qslab.instruments.optical.roles import (Attenuator, Awg, BiasController, Digitizer, Laser, OpticalAmplifier,
                                             PowerMeter, SettingsWatch)
from qslab.sequences.config import UNCABLED_BENCH_ADDRESS, DriverSpec, InstrumentConfig, LabConfig, load_config

log = logging.getLogger(__name__)

RECEIVERS = ("client_receiver", "server_receiver")
SAFE_ORDER = ("laser", "amplifier", "awg", "attenuator")  # light sources first
SAFE_ATTEMPTS = 3  # making one instrument safe: a refused or lost command is sent again this often in all
_IDN = re.compile(r"^([^,]+),([^,]+),([^,]*),([^,]*)$")
_LIMIT_UNITS = {"dbm": "dBm", "db": "dB", "vpp": "Vpp", "v": "V", "w": "W"}


class StationError(RuntimeError):
    """One line naming the instrument, its address and what went wrong."""

    def __init__(self, instrument: str, address: str, detail: str):
        self.instrument, self.address, self.detail = instrument, address, detail
        super().__init__(f"{instrument} at {address}: {detail}")


@dataclass(frozen=True)
class Identity:
    vendor: str
    model: str
    serial: str
    firmware: str

    @classmethod
    def parse(cls, reply: str) -> Identity:
        """``vendor,model,serial,firmware`` (printable text, vendor and model not empty), else ValueError."""
        text = reply.strip()
        match = _IDN.match(text)
        if match is None or not text.isprintable() or not match.group(1).strip() or not match.group(2).strip():
            raise ValueError(f"answered {reply!r} to *IDN?: expected 'vendor,model,serial,firmware'")
        return cls(*(part.strip() for part in match.groups()))

    def as_dict(self) -> dict[str, str]:
        return {"vendor": self.vendor, "model": self.model, "serial": self.serial, "firmware": self.firmware}

    def __str__(self) -> str:
        return f"{self.vendor} {self.model} (serial {self.serial}, firmware {self.firmware})"


@dataclass
class Connection:
    """One connected instrument."""

    config: InstrumentConfig
    address: str        # where it was reached (the bench's loopback address when configured "bench")
    driver: Any         # the qcodes instrument
    identity: Identity
    roles: list[str]

    def describe(self) -> dict[str, Any]:
        return {"name": self.config.name, "roles": self.roles, "driver": self.config.driver,
                "configured_address": self.config.address, "address": self.address,
                "identity": self.identity.as_dict()}


@dataclass
class SafeState:
    """What the instruments read back after being made safe; ``safe`` is False if anything was on or failed."""

    readback: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    retried: dict[str, list[str]] = field(default_factory=dict)  # the failed attempts before one that succeeded

    @property
    def safe(self) -> bool:
        return not self.errors and all(value is False for values in self.readback.values() for value in values.values())

    def as_dict(self) -> dict[str, Any]:
        """``retried`` only when something was retried (a clean close reads as before)."""
        state = {"safe": self.safe, "instruments": self.readback, "errors": self.errors}
        return {**state, "retried": self.retried} if self.retried else state


# --- probing --------------------------------------------------------------------------------------

def _timeout_detail(error: BaseException, timeout_s: float) -> str | None:
    import pyvisa

    if isinstance(error, pyvisa.errors.VisaIOError):
        if error.error_code == pyvisa.constants.StatusCode.error_timeout:
            return f"did not answer within {timeout_s:g} s"
        return f"cannot be reached ({error.abbreviation}: {error.description})"
    if isinstance(error, TimeoutError):
        return f"did not answer within {timeout_s:g} s"
    if isinstance(error, OSError):
        return f"cannot be reached ({error.strerror or error})"
    return None


def _close_drivers(connections: list) -> dict[str, BaseException]:
    """Close every connection's driver, all at once (one thread each): {name: error} of those that failed.

    Why at once: a close may wait (pyserial's socket:// close sleeps 0.3 s "for quick reconnects", which the bias
    controllers' driver no longer waits through: thorlabs_mbx._close_port), and one after the other such waits add
    up at every session's exit. The instruments are already safe and read back (close()), and each driver closes
    only its own port. A KeyboardInterrupt while waiting is kept until every close has finished, then raised (as the
    closes one by one did)."""
    errors: dict[str, BaseException] = {}

    def close(connection) -> None:
        try:
            connection.driver.close()
        except BaseException as error:  # noqa: BLE001 - reported by name, the others still close
            errors[connection.config.name] = error

    threads = [threading.Thread(target=close, args=(c,), name=f"close-{c.config.name}") for c in connections]
    for thread in threads:
        thread.start()
    interrupted = None
    for thread in threads:
        while thread.is_alive():
            try:
                thread.join()
            except BaseException as error:  # noqa: BLE001 - Ctrl-C: every port still closes first
                interrupted = interrupted or error
    if interrupted is not None:
        raise interrupted
    return errors


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def query_idn_serial(port: Any) -> str:
    """``*IDN?`` on an open pyserial port; a reply line ends at CR or LF (as the MBX driver reads it)."""
    port.reset_input_buffer()
    port.write(b"*IDN?\n")
    line = bytearray()
    while True:
        byte = port.read(1)
        if not byte:
            raise TimeoutError(f"no reply to *IDN? (received {bytes(line)!r})")
        if byte in (b"\r", b"\n"):
            if line:
                return line.decode("ascii")
            continue
        line += byte


def query_idn(address: str, transport: str, *, visa_library: str, timeout_s: float, port: Any = None) -> str:
    """``*IDN?`` over a fresh VISA connection, or on ``port`` (an open pyserial port) for serial instruments."""
    if transport == "serial":
        return query_idn_serial(port)
    import pyvisa

    # the manager is not closed: that would close every resource of its VISA library, the drivers' too
    resource = pyvisa.ResourceManager(visa_library).open_resource(
        address, read_termination="\n", write_termination="\n", timeout=int(timeout_s * 1000))
    try:
        return resource.query("*IDN?")
    finally:
        resource.close()


def identify(name: str, address: str, transport: str, model_pattern: str, driver: str, **options: Any) -> Identity:
    """Probe ``*IDN?`` and check the model against the driver's; StationError otherwise."""
    timeout_s = options["timeout_s"]
    try:
        reply = query_idn(address, transport, **options)
    except UnicodeDecodeError as error:
        raise StationError(name, address, f"answered non-text bytes to *IDN? ({error.reason})") from None
    except Exception as error:  # noqa: BLE001 - classified below, one line either way
        detail = _timeout_detail(error, timeout_s) or f"cannot be opened ({_first_line(error)})"
        raise StationError(name, address, f"{detail} (*IDN?)") from None
    try:
        identity = Identity.parse(reply)
    except ValueError as error:
        raise StationError(name, address, str(error)) from None
    if not re.fullmatch(model_pattern, identity.model):
        raise StationError(name, address, f"identifies as {reply.strip()!r}: expected a model matching "
                                          f"{model_pattern!r} for driver {driver}")
    return identity


# --- adapters (sequences/config.py DriverSpec.adapter) -------------------------------------------------

def adapter_class(spec: DriverSpec) -> Any:
    """The class that turns a connected driver of ``spec`` into its role (and makes it safe)."""
    module, _, name = spec.adapter.rpartition(".")
    return getattr(import_module(module), name)


# --- the station ----------------------------------------------------------------------------------

class LabStation:
    """Connects the configured instruments (and the bench they need) and hands out roles with their limits.

    ``bench_process``: the bench served by a process forked from this one (bench_process.ForkedBench), so that its
    emulators and renders compute beside the station's work rather than under its interpreter lock; its state is then
    out of this process's reach (``bench`` is None). Benches someone here observes (``observing_bench_starts``), cards
    a driver calls in this process, and any bench on a system without a safe fork (``CAN_FORK``) are embedded
    whatever this says."""

    def __init__(self, config: LabConfig | str | Path, *, bench_process: bool = False):
        self.config = config if isinstance(config, LabConfig) else load_config(config)
        self.bench_process = bench_process
        self.connections: dict[str, Connection] = {}
        self.benches: list[Any] = []
        self.qcodes: Any = None
        self.safe_state: SafeState | None = None
        self._bench_addresses: dict[str, str] = {}
        self._digitizers: dict[str, Digitizer] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LabStation:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> LabStation:
        from qcodes.station import Station

        try:
            self._start_benches()
            self.qcodes = Station(update_snapshot=False)
            for instrument in self.config.instruments.values():
                connection = self._connect(instrument)
                self.connections[instrument.name] = connection
                self.qcodes.add_component(connection.driver, update_snapshot=False)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> SafeState:
        """Make everything safe, read it back, close every instrument, stop the bench. Idempotent."""
        if not self.connections and not self.benches:
            return self.safe_state or SafeState()
        report, interrupt = SafeState(), None
        by_category = sorted(self.connections.values(), key=lambda c: _safe_rank(c.config.spec.category))
        for connection in by_category:
            action = getattr(adapter_class(connection.config.spec), "safe_state", None)
            if action is None:  # nothing it emits (a meter, a digitizer, a bias controller)
                continue
            try:
                report.readback[connection.config.name] = _made_safe(connection, action, report)
            except BaseException as error:  # noqa: BLE001 - every other instrument must still be made safe
                report.errors[connection.config.name] = _first_line(error)
                readback = _read_back_only(connection)
                if readback:
                    report.readback[connection.config.name] = readback
                interrupt = interrupt or (error if not isinstance(error, Exception) else None)
        closing = []
        for connection in self.connections.values():
            try:
                if self.qcodes is not None and connection.config.name in self.qcodes.components:
                    self.qcodes.remove_component(connection.config.name)
                closing.append(connection)
            except BaseException as error:  # noqa: BLE001
                report.errors.setdefault(connection.config.name, f"close failed: {_first_line(error)}")
                interrupt = interrupt or (error if not isinstance(error, Exception) else None)
        for name, error in _close_drivers(closing).items():
            report.errors.setdefault(name, f"close failed: {_first_line(error)}")
            interrupt = interrupt or (error if not isinstance(error, Exception) else None)
        self.connections.clear()
        self._digitizers.clear()
        for bench in self.benches:
            bench.stop()
        self.benches.clear()
        if self.qcodes is not None:
            from qcodes.station import Station

            if Station.default is self.qcodes:
                Station.default = None
        self.safe_state = report
        if not report.safe:
            log.error("station closed, but not everything read back safe: %s", report.as_dict())
        if interrupt is not None:
            raise interrupt
        return report

    def _start_benches(self) -> None:
        if not self.config.uses_bench:
            return
        from qslab.instruments.sim.bench_process import CAN_FORK, ForkedBench
        from qslab.instruments.sim.server import (DEFAULT_HOST, bench_starts_observed, served_over_sockets,
                                                  station_benches)

        table = self.config.bench_table
        # the uncabled instruments get their own state: nothing they do reaches the bench's optical model
        uncabled = {i.name: i.spec.bench_kind for i in self.config.instruments.values()
                    if i.address == UNCABLED_BENCH_ADDRESS}
        forked = (self.bench_process and CAN_FORK and served_over_sockets(table, uncabled)
                  and not bench_starts_observed())
        for served in [ForkedBench(table, uncabled)] if forked else station_benches(table, uncabled):
            self.benches.append(served)
            try:
                served.start()
            except OSError as error:  # e.g. a fixed [bench.ports] port already in use
                raise StationError("bench", table.get("host", DEFAULT_HOST),
                                   f"cannot serve its instruments ({error})") from None
            self._bench_addresses.update({name: served.address(name) for name in served.instruments})

    @property
    def bench(self) -> Any:
        """The embedded bench (cabled into the optical model), or None (none, or served by a process of its own)."""
        return self.benches[0] if self.benches and hasattr(self.benches[0], "state") else None

    def _connect(self, instrument: InstrumentConfig) -> Connection:
        spec, name = instrument.spec, instrument.name
        address = self._bench_addresses[name] if instrument.on_bench else instrument.address
        visa_library = "@py" if instrument.on_bench else self.config.station.visa_library
        timeout_s = instrument.init.get("timeout_s", self.config.station.timeout_s)
        connect = getattr(adapter_class(spec), "connect_driver", None)
        if connect is not None:  # a card its vendor's API reaches, not VISA or serial: the adapter opens it
            return self._connect_through_adapter(instrument, address, connect, timeout_s)
        options = {"visa_library": visa_library, "timeout_s": timeout_s}
        kwargs: dict[str, Any] = {}
        if spec.transport == "serial":
            # one port for the probe and the driver (opening a pyserial socket:// port twice costs its 0.3 s close)
            options["port"] = kwargs["port"] = _open_serial(name, address, instrument.init.get("baudrate", 115200),
                                                            timeout_s)
        else:
            kwargs.update(visalib=visa_library, timeout=timeout_s)
            if address.upper().endswith("::SOCKET"):
                kwargs["device_clear"] = False  # a fresh raw socket holds no stale bytes (pyvisa-py would wait 0.1 s)
        kwargs.update(_driver_options(instrument, visa_library))
        try:
            identify(name, address, spec.transport, spec.model_pattern, instrument.driver, **options)
        except BaseException:
            if "port" in kwargs:
                kwargs["port"].close()
            raise
        module, _, class_name = spec.import_path.rpartition(".")
        try:
            cls = getattr(import_module(module), class_name)
            captured = io.StringIO()
            with contextlib.redirect_stdout(captured):  # qcodes prints "Connected to: ..."
                driver = cls(name, None if "port" in kwargs else address, **kwargs)
            log.info("%s", captured.getvalue().strip())
        except Exception as error:  # noqa: BLE001 - one line naming the instrument
            if "port" in kwargs:
                kwargs["port"].close()
            detail = _timeout_detail(error, timeout_s) or _first_line(error)
            raise StationError(name, address, f"driver {spec.import_path.rpartition('.')[2]} failed to connect: {detail}") from None
        try:
            identity = Identity.parse(driver.ask("*IDN?"))
        except Exception as error:  # noqa: BLE001
            driver.close()
            detail = _timeout_detail(error, timeout_s) or str(error)
            raise StationError(name, address, f"{detail} (*IDN? through its driver)") from None
        return Connection(instrument, address, driver, identity, self.config.roles_of(name))

    def _connect_through_adapter(self, instrument: InstrumentConfig, address: str, connect: Any,
                                 timeout_s: float) -> Connection:
        """Open the driver with its adapter's ``connect_driver`` and check the identity it reads against the model."""
        spec, name = instrument.spec, instrument.name
        module, _, class_name = spec.import_path.rpartition(".")
        try:
            driver, idn = connect(getattr(import_module(module), class_name), name, address, timeout_s=timeout_s)
        except Exception as error:  # noqa: BLE001 - one line naming the instrument
            raise StationError(name, address, f"driver {class_name} failed to connect: {_first_line(error)}") from None
        identity = Identity(idn["vendor"], idn["model"], idn["serial"], idn["firmware"])
        if not re.fullmatch(spec.model_pattern, identity.model):
            driver.close()
            raise StationError(name, address, f"identifies as {identity}: expected a model matching "
                                              f"{spec.model_pattern!r} for driver {instrument.driver}")
        return Connection(instrument, address, driver, identity, self.config.roles_of(name))

    # -- what the CLI and the session record ---------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        return [connection.describe() for connection in self.connections.values()]

    def driver(self, name: str) -> Any:
        try:
            return self.connections[name].driver
        except KeyError:
            raise KeyError(f"no connected instrument {name!r}; connected: {sorted(self.connections)}") from None

    # -- roles -------------------------------------------------------------------------------------
    def limit(self, instrument: str, key: str) -> Limit:
        config = self.config.instruments[instrument]
        return Limit(config.limits[key], _LIMIT_UNITS[key.rpartition("_")[2]], config.limit_key(key))

    def _role(self, instrument: str, unit: Any = None, **options: Any) -> Any:
        """The role over instrument ``instrument`` (its unit: port, slot, channel(s)), built by its driver's adapter."""
        spec = self.config.instruments[instrument].spec
        return adapter_class(spec).from_driver(self.driver(instrument), unit, **options)

    def laser(self) -> Laser:
        role = self.config.roles.server_laser
        lo_limits = [LoLimit(name, getattr(self.config.roles, name).lo_fraction,
                             Limit(getattr(self.config.roles, name).limits.lo_power_max_w, "W",
                                   f"roles.{name}.limits.lo_power_max_w")) for name in RECEIVERS]
        return self._role(role.instrument, role.port, power_max=self.limit(role.instrument, "power_max_dbm"),
                          lo_limits=lo_limits, name="server_laser")

    def attenuator(self) -> Attenuator:
        role = self.config.roles.server_attenuator
        return self._role(role.instrument, role.slot, attenuation_min=self.limit(role.instrument, "attenuation_min_db"),
                          name="server_attenuator")

    def power_meter(self) -> PowerMeter:
        role = self.config.roles.server_power_meter
        return self._role(role.instrument, role.channel, name="server_power_meter")

    def power_meter_channel(self, instrument: str, channel: int, name: str) -> PowerMeter:
        """Another channel of a meter (the photon calibration's meter on the VOA output)."""
        return self._role(instrument, channel, name=name)

    def amplifier(self) -> OpticalAmplifier:
        role = self.config.roles.client_amplifier
        limits = self.config.instruments[role.instrument].limits
        power_max = self.limit(role.instrument, "output_power_max_dbm") if "output_power_max_dbm" in limits else None
        return self._role(role.instrument, gain_max=self.limit(role.instrument, "gain_max_db"),
                          output_power_max=power_max, name="client_amplifier")

    def awg(self, instrument: str, channels: list[int], role: str) -> Awg:
        """Channels ``channels`` of AWG ``instrument`` lent to role ``role``, with the AWG's declared limit."""
        return self._role(instrument, channels, amplitude_max=self.limit(instrument, "amplitude_max_vpp"), name=role)

    def bias_controller(self, instrument: str) -> BiasController:
        return self._role(instrument)

    def digitizer(self, instrument: str) -> Digitizer:
        """The digitizer role of ``instrument`` (one per instrument: its receivers and the sequences share it)."""
        if instrument not in self._digitizers:
            role = self._role(instrument)
            trigger = self.config.trigger
            if trigger is not None and trigger.digitizer == instrument:  # [trigger]: records start at the marker
                role.configure_trigger(trigger.digitizer_input, trigger.level_v, trigger.slope)
            self._digitizers[instrument] = role
        return self._digitizers[instrument]

    def settings(self, instrument: str) -> SettingsWatch:
        """What ``instrument`` reads back against what the stack last set (reset evidence)."""
        return DriverSettings(self.driver(instrument), name=instrument)

    def _bias_limit(self, controller: str) -> Limit | None:
        limits = self.config.instruments[controller].limits
        return self.limit(controller, "bias_max_v") if "bias_max_v" in limits else None

    def pulse_carver(self, calibration: ModulatorCalibration) -> AwgAmplitudeModulator:
        role = self.config.roles.pulse_carver
        return AwgAmplitudeModulator(self.awg(role.awg, [role.awg_channel], "pulse_carver"), calibration,
                                     self.bias_controller(role.bias_controller),
                                     bias_max=self._bias_limit(role.bias_controller), name="pulse_carver")

    def iq_modulator(self, calibration: ModulatorCalibration) -> AwgIQModulator:
        role = self.config.roles.server_iq_modulator
        channels = self.awg(role.awg, [role.awg_channel_i, role.awg_channel_q], "server_iq_modulator")
        return AwgIQModulator(channels, calibration, self.bias_controller(role.bias_controller),
                              bias_max=self._bias_limit(role.bias_controller), name="server_iq_modulator")

    def lo_phase_gate(self) -> Awg:
        """The server receiver's LO phase modulator channel: it gates the rows the server verifies (X or P)."""
        role = self.config.roles.server_receiver
        return self.awg(role.lo_phase_awg, [role.lo_phase_awg_channel], "server_lo_phase")

    def time_bin_processor(self, calibration: ProcessorCalibration) -> AwgTimeBinProcessor:
        role = self.config.roles.client_processor
        channels = self.awg(role.awg, [role.awg_channel_beam_splitter, role.awg_channel_phase], "client_processor")
        return AwgTimeBinProcessor(channels, calibration, name="client_processor")

    def receiver(self, name: str, calibration: ReceiverCalibration | None = None) -> DigitizerHomodyneReceiver:
        if name not in RECEIVERS:
            raise KeyError(f"no receiver role {name!r}; there are {RECEIVERS}")
        role = getattr(self.config.roles, name)
        d = role.detector
        return DigitizerHomodyneReceiver(
            DetectorSpec(d.model, d.gain_v_per_w, d.bandwidth_hz, d.nep_w_per_rthz),
            lo_power_max=Limit(role.limits.lo_power_max_w, "W", f"roles.{name}.limits.lo_power_max_w"),
            lo_fraction=role.lo_fraction, digitizer=self.digitizer(role.digitizer), channel=role.channel,
            calibration=calibration, adc_bits=role.adc_bits, name=name)


def _open_serial(name: str, address: str, baudrate: int, timeout_s: float) -> Any:
    import serial

    try:
        return serial.serial_for_url(address, baudrate=baudrate, timeout=timeout_s)
    except (serial.SerialException, OSError, ValueError) as error:
        raise StationError(name, address, f"cannot be opened ({_first_line(error)})") from None


def _made_safe(connection: Connection, action: Any, report: SafeState) -> dict[str, Any]:
    """The adapter's safe_state, tried SAFE_ATTEMPTS times: a command refused once (a transient error) is sent
    again and read back; each retry is recorded in ``report.retried``. Raises the last error if all fail."""
    name = connection.config.name
    for attempt in range(1, SAFE_ATTEMPTS + 1):
        try:
            return action(connection.driver)
        except Exception as error:  # noqa: BLE001 - tried again; the last one is raised
            if attempt == SAFE_ATTEMPTS:
                raise
            report.retried.setdefault(name, []).append(f"attempt {attempt} of {SAFE_ATTEMPTS}: {_first_line(error)}")
            log.warning("%s: making it safe failed (%s); trying again", name, _first_line(error))
    raise AssertionError("unreachable")


def _read_back_only(connection: Connection) -> dict[str, Any]:
    """After making an instrument safe failed for good: each output's state as it reads back now (None where it
    cannot be read), so the report says which output is in what state."""
    reader = getattr(adapter_class(connection.config.spec), "read_safe_state", None)
    if reader is None:
        return {}
    try:
        return reader(connection.driver)
    except Exception as error:  # noqa: BLE001 - nothing more can be said than that it is unknown
        log.error("%s: cannot read back its outputs (%s)", connection.config.name, _first_line(error))
        return {}


def _safe_rank(category: str) -> int:
    return SAFE_ORDER.index(category) if category in SAFE_ORDER else len(SAFE_ORDER)


def _driver_options(instrument: InstrumentConfig, visa_library: str) -> dict[str, Any]:
    """Constructor arguments some drivers take from the config (the amplifier's validators from its limits),
    as the driver's adapter says."""
    options = getattr(adapter_class(instrument.spec), "driver_options", None)
    return {} if options is None else options(instrument.limits, visa_library)
