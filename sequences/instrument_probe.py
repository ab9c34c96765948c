"""Identify every instrument of a station, reachable or not, without connecting a driver: what a lab needs first.

Why separate from ``station.py``: a station connects drivers and stops at the first instrument that fails,
which is right for a session and wrong for bringing a bench up. Here each instrument is asked ``*IDN?`` and
nothing else (read-only: no driver constructor, no set, no light), and each gets a row: its identity, or why
it cannot be identified (no VISA library, no GPIB/USB backend, no answer, another model). A card that is no
message port (transport ``pcie``: an AlazarTech digitizer) is identified through its vendor library's board
queries instead, and its row says so (on the bench: in process). A station without
``[roles]`` (a partial one, e.g. the instruments on the table so far) is enough.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qslab.sequences.config import (BENCH_ADDRESS, UNCABLED_BENCH_ADDRESS, CalibrationConfig, ConfigError,
                                    InstrumentConfig, LabConfig, StationSettings, _check_declared_calibration,
                                    _instrument, bench_error, build, load_config)

# pip extras (pyproject.toml) that give pyvisa-py its GPIB and USB resource types
BACKEND_EXTRAS = {"GPIB": "gpib", "USB": "usb"}
# transports that are not a message port: the instrument is a card its vendor's library reaches, and the adapter
# identifies it through that library's board queries (its ``identify_card``), not *IDN?
CARD_TRANSPORTS = {"pcie": "PCIe card through its vendor's library"}
IN_PROCESS = "in process on the bench"  # the bench's board has no socket: `qslab bench serve` cannot offer it


@dataclass
class Station:
    """What identification needs: the [station] settings, the instruments, their roles (none for a partial
    station) and the [bench] table when an instrument is served by the bench."""

    source: str
    settings: StationSettings
    instruments: Mapping[str, InstrumentConfig]
    roles_of: dict[str, list[str]] = field(default_factory=dict)
    bench_table: dict | None = None
    partial: bool = False


@dataclass
class Probe:
    """One instrument's row: ``identity`` (vendor, model, serial, firmware) or ``problem`` (why not)."""

    name: str
    driver: str
    configured_address: str
    address: str
    roles: list[str]
    identity: dict[str, str] | None = None
    problem: str | None = None
    reached: str | None = None  # how, when it is not a message port (a PCIe card: its vendor's library)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "roles": self.roles, "driver": self.driver,
                "configured_address": self.configured_address, "address": self.address, "reached": self.reached,
                "reachable": self.identity is not None, "identity": self.identity, "problem": self.problem}


def load_station(path: str | Path) -> Station:
    """The station of ``path``: the whole config when it validates, or, when it has no ``[roles]`` at all, its
    ``[station]``, ``[instruments]`` and declared ``[calibration]`` alone (validated the same way). Any other
    problem is its ConfigError."""
    try:
        config = load_config(path)
    except ConfigError as error:
        if error.key not in ("protocol", "roles") or "roles" in tomllib.loads(Path(path).read_text(encoding="utf-8")):
            raise
        return _partial_station(path)  # no [roles] (and maybe no [protocol]): identification only
    return from_config(config)


def from_config(config: LabConfig) -> Station:
    return Station(config.source, config.station, config.instruments,
                   {name: config.roles_of(name) for name in config.instruments}, config.bench_table)


def _partial_station(path: str | Path) -> Station:
    source = str(path)
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))  # it parsed once already
    try:
        settings = build(StationSettings, data.get("station", {}), "station")
        if "instruments" not in data:
            raise ConfigError.missing("instruments", "an [instruments.<name>] table per instrument")
        instruments = {name: _instrument(name, table) for name, table in data["instruments"].items()}
        build(CalibrationConfig, data.get("calibration", {}), "calibration")
        _check_declared_calibration(data.get("calibration", {}), instruments)
        bench_table = copy.deepcopy(data.get("bench")) if any(i.on_bench for i in instruments.values()) else None
        if bench_table is not None:
            _bench(bench_table)  # validated by the bench's own loader, as a whole config's is
    except ConfigError as error:
        raise error.with_source(source) from None
    return Station(source, settings, instruments, bench_table=bench_table, partial=True)


def _bench(table: dict, instruments: dict[str, str] | None = None) -> Any:
    from qslab.instruments.sim.server import Bench

    try:
        return Bench.from_table(copy.deepcopy(table)) if instruments is None else Bench(
            Bench.from_table(copy.deepcopy(table)).params, instruments=instruments, host=table.get("host", "127.0.0.1"))
    except (ValueError, TypeError, KeyError) as error:
        raise bench_error(error) from None


# --- backends ---------------------------------------------------------------------------------------

def visa_backend_problem(address: str, visa_library: str) -> str | None:
    """Why ``address`` cannot be opened on ``visa_library`` before trying (None: it can be tried).

    pyvisa-py ("@py") reports per resource type what it lacks (GPIB: linux-gpib or gpib-ctypes; USB: PyUSB and
    libusb); any other library must load (NI-VISA, Keysight IO Libraries)."""
    interface = next((name for name in ("TCPIP", "GPIB", "USB", "ASRL", "VXI", "PXI")
                      if address.upper().startswith(name)), None)
    if visa_library == "@py":
        try:
            from pyvisa_py.highlevel import PyVisaLibrary
        except ImportError:
            return "no VISA backend: pyvisa-py is not installed (pip install pyvisa-py), and [station] visa_library is '@py'"
        resource_class = address.rsplit("::", 1)[-1].upper()
        info = PyVisaLibrary.get_debug_info()
        for key in (f"{interface} {resource_class}", f"{interface} INTFC"):
            status = info.get(key)
            if isinstance(status, list):  # pyvisa-py lists what is missing
                extra = BACKEND_EXTRAS.get(interface or "")
                hint = f"; pip install 'qslab[{extra}]'" if extra else ""
                return f"no {interface} backend in pyvisa-py ({str(status[0]).rstrip('.')}{hint})"
        return None
    import pyvisa

    try:
        pyvisa.ResourceManager(visa_library)
    except (OSError, ValueError) as error:
        return (f"no VISA library: [station] visa_library = {visa_library!r} cannot be loaded ({_first_line(error)}); "
                "install NI-VISA or Keysight IO Libraries Suite, or use '@py' (pyvisa-py)")
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# --- probing ----------------------------------------------------------------------------------------

def probe_station(station: Station) -> list[Probe]:
    """Every instrument's row, in config order; the bench (if any) is served for the duration."""
    from qslab.sequences.station import StationError, identify

    benches, addresses = _serve_bench(station)
    try:
        rows = []
        for name, instrument in station.instruments.items():
            address = addresses.get(name, instrument.address)
            row = Probe(name, instrument.driver, instrument.address, address, station.roles_of.get(name, []))
            rows.append(row)
            if instrument.on_bench and name not in addresses:
                row.problem = (f"not served: address {instrument.address!r} needs [bench.instruments] {name} and a "
                               "[bench] table")
                continue
            if instrument.spec.transport in CARD_TRANSPORTS:
                _identify_card(row, instrument, station.settings.timeout_s)
                continue
            visa_library = "@py" if instrument.on_bench else station.settings.visa_library
            if instrument.spec.transport == "visa":
                row.problem = visa_backend_problem(address, visa_library)
                if row.problem is not None:
                    continue
            timeout_s = instrument.init.get("timeout_s", station.settings.timeout_s)
            options: dict[str, Any] = {"visa_library": visa_library, "timeout_s": timeout_s}
            try:
                if instrument.spec.transport == "serial":
                    options["port"] = _open_serial(address, instrument.init.get("baudrate", 115200), timeout_s)
                try:
                    identity = identify(name, address, instrument.spec.transport, instrument.spec.model_pattern,
                                        instrument.driver, **options)
                finally:
                    if "port" in options:
                        options["port"].close()
                row.identity = identity.as_dict()
            except StationError as error:
                row.problem = error.detail
            except OSError as error:
                row.problem = f"cannot be opened ({_first_line(error)})"
        return rows
    finally:
        for bench in benches:
            bench.stop()


def _identify_card(row: Probe, instrument: InstrumentConfig, timeout_s: float) -> None:
    """A card's row: how it is reached, and its identity from the adapter's ``identify_card`` (the vendor library's
    read-only board queries) or why there is none."""
    from qslab.sequences.station import adapter_class

    transport = CARD_TRANSPORTS[instrument.spec.transport]
    row.reached = f"{transport}, {IN_PROCESS}" if instrument.on_bench else transport
    identify = getattr(adapter_class(instrument.spec), "identify_card", None)
    if identify is None:
        row.problem = f"{transport}: its adapter offers no identify_card"
        return
    try:
        identity = identify(row.address, timeout_s=instrument.init.get("timeout_s", timeout_s))
    except (OSError, ValueError, RuntimeError) as error:
        row.problem = f"{transport}: cannot be opened ({_first_line(error)})"
        return
    if not re.fullmatch(instrument.spec.model_pattern, identity["model"]):
        row.problem = (f"identifies as {','.join(identity.values())!r}: expected a model matching "
                       f"{instrument.spec.model_pattern!r} for driver {instrument.driver}")
        return
    row.identity = identity


def _serve_bench(station: Station) -> tuple[list[Any], dict[str, str]]:
    """The bench's instruments served, as a station serves them ("bench" cabled, "bench-uncabled" alone)."""
    on_bench = {name: i for name, i in station.instruments.items() if i.on_bench}
    if not on_bench or station.bench_table is None:
        return [], {}
    cabled = [name for name, i in on_bench.items() if i.address == BENCH_ADDRESS]
    uncabled = {name: i.spec.bench_kind for name, i in on_bench.items() if i.address == UNCABLED_BENCH_ADDRESS}
    benches = [_bench(station.bench_table)] if cabled else []
    if uncabled:
        benches.append(_bench(station.bench_table, uncabled))
    addresses: dict[str, str] = {}
    for bench in benches:
        bench.start()
        addresses.update({name: bench.address(name) for name in bench.instruments if name in on_bench})
    return benches, addresses


def _open_serial(address: str, baudrate: int, timeout_s: float) -> Any:
    import serial

    try:
        return serial.serial_for_url(address, baudrate=baudrate, timeout=timeout_s)
    except (serial.SerialException, ValueError) as error:
        raise OSError(_first_line(error)) from None
