"""lab_config.toml: the station's schema and loader (small frozen dataclasses, tomllib).

Tables: ``[station]`` (label, VISA library, default timeout), ``[protocol]`` (the operating
point), ``[session]`` and ``[calibration]`` (defaults of `qslab session` and `qslab calibrate`), ``[instruments.<name>]`` (driver, address, init options, declared limits),
``[roles.<role>]`` (which instrument, port or channels each role of the experiment uses; the
receivers' detector specs and LO limit) and ``[bench]`` (the virtual bench's true parameters,
validated by the bench's own loader). lab_config.toml documents every key where it stands.

Why so strict: a typo in a limit's name must not silently drop the limit. Loading stops at the
first problem with ONE ConfigError naming the dotted key path and what was expected: an unknown
key, a wrong type, an out-of-range value, a missing table, or a role that names no suitable
instrument. Duplicate keys are a TOML error (tomllib refuses them).
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

DEFAULT_CONFIG_PATH = "lab_config.toml"
BENCH_ADDRESS = "bench"                    # served by the embedded bench, cabled into its optical model
UNCABLED_BENCH_ADDRESS = "bench-uncabled"  # served by the bench on its own, cabled to nothing
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VISA_ADDRESS = re.compile(r"^(TCPIP|GPIB|USB|ASRL|VXI|PXI)\d*::.+::(INSTR|SOCKET)$", re.IGNORECASE)
_PCIE_ADDRESS = re.compile(r"^ATS::\d+::\d+$")  # an AlazarTech card: ATS::<system id>::<board id>
_SERIAL_ADDRESS = re.compile(r"^(COM\d+|/dev/\S+|(socket|rfc2217)://[^\s:]+:\d+|loop://.*)$")


class ConfigError(ValueError):
    """The one error a bad config gets: ``key`` is the dotted path, the message says what was expected."""

    def __init__(self, key: str, detail: str, source: str | None = None):
        detail = detail.replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever the keys hold
        self.key, self.detail, self.source = key, detail, source
        super().__init__(f"{source}: {detail}" if source else detail)

    @classmethod
    def invalid(cls, key: str, value: Any, expected: str) -> ConfigError:
        return cls(key, f"{key} = {_show(value)}: expected {expected}")

    @classmethod
    def missing(cls, key: str, expected: str) -> ConfigError:
        return cls(key, f"missing {key}: expected {expected}")

    @classmethod
    def unknown(cls, key: str, known: list[str]) -> ConfigError:
        return cls(key, f"unknown key {key}: expected one of {', '.join(known) or '(none)'}")

    def with_source(self, source: str) -> ConfigError:
        return ConfigError(self.key, self.detail, source)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# --- value specs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Number:
    """A finite number (or integer) in a range; TOML integers are accepted where floats are expected."""

    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    max_open: bool = False
    integer: bool = False

    def expected(self) -> str:
        low = "" if self.minimum is None else f"{'>' if self.min_open else '>='} {self.minimum:g}"
        high = "" if self.maximum is None else f"{'<' if self.max_open else '<='} {self.maximum:g}"
        bounds = " and ".join(b for b in (low, high) if b)
        kind = "an integer" if self.integer else "a number"
        text = f"{kind} {bounds}" if bounds else (kind if self.integer else "a finite number")
        return text + (f" ({self.unit})" if self.unit else "")

    def accepts(self, value: float | int) -> bool:
        """True when ``value`` is finite and inside the range (the one check the CLI and the config share)."""
        try:
            if not math.isfinite(value):
                return False
        except OverflowError:  # an integer beyond any float
            return False
        if self.minimum is not None and not (value > self.minimum if self.min_open else value >= self.minimum):
            return False
        return self.maximum is None or (value < self.maximum if self.max_open else value <= self.maximum)

    def parse(self, key: str, value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.integer and not isinstance(value, int)):
            raise ConfigError.invalid(key, value, self.expected())
        if not self.accepts(value):
            raise ConfigError.invalid(key, value, self.expected())
        return int(value) if self.integer else float(value)


@dataclass(frozen=True)
class Text:
    """A string, optionally matching a pattern (described by ``what``)."""

    what: str = "a string"
    pattern: str | None = None

    def expected(self) -> str:
        return self.what

    def parse(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or (self.pattern is not None and not re.fullmatch(self.pattern, value)):
            raise ConfigError.invalid(key, value, self.what)
        return value


@dataclass(frozen=True)
class Flag:
    """A TOML boolean (true or false; not 0/1 or a string)."""

    def expected(self) -> str:
        return "true or false"

    def parse(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ConfigError.invalid(key, value, self.expected())
        return value


NAME = Text("an instrument name (letters, digits and _, not starting with a digit)", _NAME.pattern)


def setting(spec: Number | Text | Flag, default: Any = MISSING, **meta: Any) -> Any:
    """A dataclass field with its spec (and, for roles, what it refers to)."""
    return field(default=default, metadata={"spec": spec, **meta})


def subtable(cls: type) -> Any:
    return field(metadata={"table": cls})


def _check_table(key: str, table: Any, what: str = "a table") -> dict:
    if not isinstance(table, dict):
        raise ConfigError.invalid(key or "(top level)", table, what)
    return table


def build(cls: type, table: Any, key: str) -> Any:
    """A frozen dataclass from a TOML table: unknown keys, missing keys, types and ranges checked in key order."""
    table = _check_table(key, table)
    known = {f.name: f for f in fields(cls)}
    for name in table:
        if name not in known:
            raise ConfigError.unknown(_join(key, name), list(known))
    values = {}
    for name, f in known.items():
        path = _join(key, name)
        if "table" in f.metadata:
            if name not in table:
                raise ConfigError.missing(path, "a table")
            values[name] = build(f.metadata["table"], table[name], path)
        elif name in table:
            values[name] = f.metadata["spec"].parse(path, table[name])
        elif f.default is MISSING:
            raise ConfigError.missing(path, f.metadata["spec"].expected())
    return cls(**values)


# --- the driver registry ----------------------------------------------------------------------

LIMITS_BY_CATEGORY: dict[str, dict[str, tuple[Number, bool]]] = {
    # category: {limit key: (spec, required)}
    "laser": {"power_max_dbm": (Number("dBm", -30.0, 20.0), True)},
    "awg": {"amplitude_max_vpp": (Number("Vpp at the AWG output", 0.075, 2.0), True)},
    "attenuator": {"attenuation_min_db": (Number("dB", 0.0, 60.0), True)},
    # open below: the amplifier driver's validators run from the fixed lower end to these (an empty range fails)
    "amplifier": {"gain_max_db": (Number("dB", 0.0, 40.0, min_open=True), True),
                  "output_power_max_dbm": (Number("dBm", -10.0, 30.0, min_open=True), False)},
    "bias_controller": {"bias_max_v": (Number("V", 0.0, 10.0, min_open=True), False)},
    "power_meter": {},
    "digitizer": {},
}
INIT_BY_TRANSPORT: dict[str, dict[str, Number]] = {
    "visa": {"timeout_s": Number("s", 0.0, 600.0, min_open=True)},
    "pcie": {"timeout_s": Number("s", 0.0, 600.0, min_open=True)},  # a card in this computer (its vendor's API)
    "serial": {"timeout_s": Number("s", 0.0, 600.0, min_open=True),
               "baudrate": Number("Bd", 1200, 921600, integer=True)},
}


@dataclass(frozen=True)
class DriverSpec:
    """One driver short name: its class, what it is, how it is reached, which models answer for it, and the
    adapter that turns a connected driver into its role (qslab.instruments.optical).

    The adapter class offers ``from_driver(driver, unit, **options)`` (the role), and where its family needs
    them ``safe_state(driver)`` (make safe, return the read-back) and ``driver_options(limits, visa_library)``
    (constructor arguments): a new instrument family is one driver, one adapter and one line here.
    """

    name: str
    import_path: str
    category: str
    transport: str            # "visa", "serial" or "pcie" (a card its vendor's API reaches: the adapter's connect_driver)
    units: int                # laser ports, attenuators, meter/AWG/digitizer channels
    model_pattern: str        # regex the *IDN? model must match
    bench_kind: str | None    # the bench emulator kind that speaks its protocol
    adapter: str              # import path of the role adapter (qslab.instruments.optical...)

    @property
    def limits(self) -> dict[str, tuple[Number, bool]]:
        return LIMITS_BY_CATEGORY[self.category]

    @property
    def init(self) -> dict[str, Number]:
        return INIT_BY_TRANSPORT[self.transport]


_N77 = "qslab.instruments.drivers.keysight_n77xx"
_OPTICAL = "qslab.instruments.optical"
_LASER, _VOA = f"{_OPTICAL}.laser.LaserPort", f"{_OPTICAL}.attenuator.AttenuatorChannel"
_N774X = f"{_OPTICAL}.power_meter.N774xPowerMeter"
DRIVERS: dict[str, DriverSpec] = {spec.name: spec for spec in (
    DriverSpec("keysight_n7711a", f"{_N77}.KeysightN7711A", "laser", "visa", 1, r"N7711A", None, _LASER),
    DriverSpec("keysight_n7714a", f"{_N77}.KeysightN7714A", "laser", "visa", 4, r"N7714A", "keysight_n7714a", _LASER),
    DriverSpec("keysight_n7762a", f"{_N77}.KeysightN7762A", "attenuator", "visa", 2, r"N7762A", "keysight_n7762a",
               _VOA),
    DriverSpec("keysight_n7764a", f"{_N77}.KeysightN7764A", "attenuator", "visa", 4, r"N7764A", None, _VOA),
    DriverSpec("keysight_n7744a", f"{_N77}.KeysightN7744A", "power_meter", "visa", 4, r"N7744[AC]", "keysight_n7744a",
               _N774X),
    DriverSpec("keysight_n7745a", f"{_N77}.KeysightN7745A", "power_meter", "visa", 8, r"N7745[AC]", None, _N774X),
    DriverSpec("thorlabs_pm100d", "qcodes_contrib_drivers.drivers.Thorlabs.PM100D.Thorlab_PM100D", "power_meter",
               "visa", 1, r"PM1\d\d.*", "thorlabs_pm100d", f"{_OPTICAL}.power_meter.PM100DPowerMeter"),
    DriverSpec("keysight_m8195a", "qslab.instruments.drivers.keysight_m8195a.KeysightM8195A", "awg", "visa", 4, r"M8195A",
               "keysight_m8195a", f"{_OPTICAL}.awg_channels.AwgChannels"),
    DriverSpec("thorlabs_mbx", "qslab.instruments.drivers.thorlabs_mbx.ThorlabsMBX", "bias_controller", "serial", 1,
               r"MBX.*", "thorlabs_mbx", f"{_OPTICAL}.bias_controller.MbxBiasController"),
    DriverSpec("scpi_optical_amplifier", "qslab.instruments.drivers.scpi_optical_amplifier.ScpiOpticalAmplifier",
               "amplifier", "visa", 1, r"SCPI optical amplifier\b.*", "scpi_amplifier", f"{_OPTICAL}.amplifier.ScpiAmplifier"),
    DriverSpec("tektronix_awg70002a", "qcodes.instrument_drivers.tektronix.TektronixAWG70002A", "awg", "visa", 2,
               r"AWG70002[AB]", "tektronix_awg70002a", f"{_OPTICAL}.awg70000.Awg70000Channels"),
    DriverSpec("alazar_ats9373", "qslab.instruments.drivers.alazar_ats9373.AlazarATS9373", "digitizer", "pcie", 2,
               r"ATS9373", "alazar_ats9373", f"{_OPTICAL}.alazar_digitizer.AlazarDigitizer"),
    DriverSpec("keysight_infiniium", "qslab.instruments.drivers.keysight_infiniium.KeysightInfiniium", "digitizer", "visa", 4,
               r"(DSO|MSO|DSA|UXR|MXR|EXR).*", "keysight_infiniium", f"{_OPTICAL}.digitizer.InfiniiumDigitizer"),
)}


@dataclass(frozen=True)
class InstrumentConfig:
    """``[instruments.<name>]``."""

    name: str
    driver: str
    address: str
    init: Mapping[str, Any]
    limits: Mapping[str, float]

    @property
    def spec(self) -> DriverSpec:
        return DRIVERS[self.driver]

    @property
    def on_bench(self) -> bool:
        return self.address in (BENCH_ADDRESS, UNCABLED_BENCH_ADDRESS)

    def limit_key(self, limit: str) -> str:
        return f"instruments.{self.name}.limits.{limit}"


def _instrument(name: str, table: Any) -> InstrumentConfig:
    key = f"instruments.{name}"
    if not _NAME.match(name):
        raise ConfigError(key, f"instrument name {name!r}: expected letters, digits and _ (not starting with a digit)")
    table = _check_table(key, table)
    for entry in table:
        if entry not in ("driver", "address", "init", "limits"):
            raise ConfigError.unknown(f"{key}.{entry}", ["driver", "address", "init", "limits"])
    if "driver" not in table:
        raise ConfigError.missing(f"{key}.driver", f"one of {', '.join(DRIVERS)}")
    driver = table["driver"]
    if not isinstance(driver, str) or driver not in DRIVERS:
        raise ConfigError.invalid(f"{key}.driver", driver, f"one of {', '.join(DRIVERS)}")
    spec = DRIVERS[driver]
    if "address" not in table:
        raise ConfigError.missing(f"{key}.address", _address_expected(spec))
    address = table["address"]
    pattern = {"visa": _VISA_ADDRESS, "pcie": _PCIE_ADDRESS}.get(spec.transport, _SERIAL_ADDRESS)
    if not isinstance(address, str) or not (address in (BENCH_ADDRESS, UNCABLED_BENCH_ADDRESS) or pattern.match(address)):
        raise ConfigError.invalid(f"{key}.address", address, _address_expected(spec))
    init = _options(f"{key}.init", table.get("init", {}), {k: (s, False) for k, s in spec.init.items()})
    limits = _options(f"{key}.limits", table.get("limits", {}), spec.limits)
    return InstrumentConfig(name, driver, address, MappingProxyType(init), MappingProxyType(limits))


def _address_expected(spec: DriverSpec) -> str:
    form = {"visa": "a VISA resource such as 'TCPIP::10.0.0.5::5025::SOCKET' or 'TCPIP0::host::hislip0::INSTR'",
            "pcie": "a card as 'ATS::<system id>::<board id>' such as 'ATS::1::1'"}.get(
        spec.transport, "a serial port or pyserial URL such as '/dev/ttyUSB0', 'COM3' or 'socket://host:port'")
    return f"{form}, '{BENCH_ADDRESS}' or '{UNCABLED_BENCH_ADDRESS}' (driver {spec.name})"


def _options(key: str, table: Any, specs: Mapping[str, tuple[Number, bool]]) -> dict[str, Any]:
    table = _check_table(key, table)
    for name in table:
        if name not in specs:
            raise ConfigError.unknown(f"{key}.{name}", list(specs))
    values = {}
    for name, (spec, required) in specs.items():
        if name in table:
            values[name] = spec.parse(f"{key}.{name}", table[name])
        elif required:
            raise ConfigError.missing(f"{key}.{name}", spec.expected())
    return values


# --- the tables --------------------------------------------------------------------------------

@dataclass(frozen=True)
class StationSettings:
    """``[station]``."""

    name: str = setting(Text(), "qslab station")
    visa_library: str = setting(Text("a pyvisa backend: '@py', '@ivi' or a VISA library path"), "@py")
    timeout_s: float = setting(Number("s", 0.0, 600.0, min_open=True), 5.0)


# below 1e-100 the union bound's shares underflow towards 0 and the limits stop being numbers (a NaN bound)
FAILURE_PROBABILITY = Number("probability", 1e-100, 0.5, max_open=True)


@dataclass(frozen=True)
class ProtocolConfig:
    """``[protocol]``: the operating point of one secure layer."""

    mu_photons: float = setting(Number("photons per complex mode", 0.0))
    gain: float = setting(Number("linear power gain", 1.0))
    modes: int = setting(Number("complex modes per row", 1, integer=True))
    symbol_rate_hz: float = setting(Number("Hz", 0.0, min_open=True))
    verify_fraction: float = setting(Number("fraction of rows", 0.0, 1.0, min_open=True), 0.01)
    failure_probability: float = setting(FAILURE_PROBABILITY, 1e-10)
    wavelength_m: float = setting(Number("m", 1.25e-6, 1.65e-6), 1550e-9)


@dataclass(frozen=True)
class SessionConfig:
    """``[session]``: what `qslab session` does when its options do not say."""

    images: int = setting(Number("MNIST test images", 1, 10_000, integer=True), 200)
    batch_images: int = setting(Number("images per acquisition", 1, 1000, integer=True), 50)
    output_dir: str = setting(Text("a directory path"), "qslab-output/sessions")
    laser_power_dbm: float = setting(Number("dBm", -30.0, 20.0), 10.0)
    seed: int = setting(Number("", 0, integer=True), 0)
    max_weight_leakage_bits_per_mode: float = setting(Number("bit per complex mode, cumulative; 0: no cap", 0.0), 0.0)
    reuse_channel_record: bool = setting(Flag(), True)


@dataclass(frozen=True)
class CalibrationConfig:
    """``[calibration]``: where records live and the declared values the procedures need."""

    directory: str = setting(Text("a directory path"), "qslab-output/calibration")
    fixed_attenuation_db: float = setting(Number("dB", 0.0), 20.0)
    fixed_attenuation_uncertainty_db: float = setting(Number("dB", 0.0), 0.02)
    output_meter_channel: int = setting(Number("", 1, 8, integer=True), 2)
    forward_transmittance: float = setting(Number("", 0.0, 1.0, min_open=True), 0.9)
    forward_transmittance_uncertainty: float = setting(Number("", 0.0), 0.01)
    return_transmittance: float = setting(Number("", 0.0, 1.0, min_open=True), 0.9)
    return_transmittance_uncertainty: float = setting(Number("", 0.0), 0.01)


def _ref(category: str) -> Any:
    return setting(NAME, refers=category)


def _unit(of: str, kind: str = "channel", default: Any = MISSING) -> Any:
    return setting(Number("", 1, 64, integer=True), default, unit_of=of, kind=kind)


@dataclass(frozen=True)
class LaserRole:
    instrument: str = _ref("laser")
    port: int = _unit("instrument", "port", 1)


@dataclass(frozen=True)
class AmplitudeModulatorRole:
    awg: str = _ref("awg")
    awg_channel: int = _unit("awg")
    bias_controller: str = _ref("bias_controller")


@dataclass(frozen=True)
class IQModulatorRole:
    awg: str = _ref("awg")
    awg_channel_i: int = _unit("awg")
    awg_channel_q: int = _unit("awg")
    bias_controller: str = _ref("bias_controller")


@dataclass(frozen=True)
class AttenuatorRole:
    instrument: str = _ref("attenuator")
    slot: int = _unit("instrument", "slot", 1)


@dataclass(frozen=True)
class PowerMeterRole:
    instrument: str = _ref("power_meter")
    channel: int = _unit("instrument", "channel", 1)


@dataclass(frozen=True)
class AmplifierRole:
    instrument: str = _ref("amplifier")


@dataclass(frozen=True)
class ProcessorRole:
    """The client's time-bin processor: two AWG channels and its modulators' datasheet values (the start of
    the processor calibration, used until its record exists)."""

    awg: str = _ref("awg")
    awg_channel_beam_splitter: int = _unit("awg")
    awg_channel_phase: int = _unit("awg")
    beam_splitter_vpi_v: float = setting(Number("V at the modulator", 0.0, min_open=True))
    phase_vpi_v: float = setting(Number("V at the modulator", 0.0, min_open=True))
    beam_splitter_driver_gain: float = setting(Number("V/V", 0.0, min_open=True), 1.0)
    phase_driver_gain: float = setting(Number("V/V", 0.0, min_open=True), 1.0)


@dataclass(frozen=True)
class DetectorConfig:
    """The analog balanced detector's datasheet specs (it has no remote control)."""

    model: str = setting(Text())
    gain_v_per_w: float = setting(Number("V/W", 0.0, min_open=True))
    bandwidth_hz: float = setting(Number("Hz", 0.0, min_open=True))
    nep_w_per_rthz: float = setting(Number("W/sqrt(Hz)", 0.0))


@dataclass(frozen=True)
class ReceiverLimits:
    lo_power_max_w: float = setting(Number("W", 0.0, 0.1, min_open=True))


@dataclass(frozen=True)
class ReceiverRole:
    digitizer: str = _ref("digitizer")
    channel: int = _unit("digitizer")
    lo_fraction: float = setting(Number("LO power at the detector per W of laser power", 0.0, 1.0, min_open=True))
    detector: DetectorConfig = subtable(DetectorConfig)
    limits: ReceiverLimits = subtable(ReceiverLimits)
    adc_bits: int = setting(Number("bits", 4, 16, integer=True), 10)


@dataclass(frozen=True, kw_only=True)
class ServerReceiverRole(ReceiverRole):
    """The verification receiver, which also has an LO phase modulator on an AWG channel: it picks X or P per
    row and gates the digitizer's capture of the rows the server verifies."""

    lo_phase_awg: str = _ref("awg")
    lo_phase_awg_channel: int = _unit("lo_phase_awg")


@dataclass(frozen=True)
class Roles:
    """``[roles]``: every role the sequences use, mapped to instruments (all required)."""

    server_laser: LaserRole = subtable(LaserRole)
    pulse_carver: AmplitudeModulatorRole = subtable(AmplitudeModulatorRole)
    server_iq_modulator: IQModulatorRole = subtable(IQModulatorRole)
    server_attenuator: AttenuatorRole = subtable(AttenuatorRole)
    server_power_meter: PowerMeterRole = subtable(PowerMeterRole)
    client_amplifier: AmplifierRole = subtable(AmplifierRole)
    client_processor: ProcessorRole = subtable(ProcessorRole)
    client_receiver: ReceiverRole = subtable(ReceiverRole)
    server_receiver: ServerReceiverRole = subtable(ServerReceiverRole)

    def items(self) -> Iterator[tuple[str, Any]]:
        for f in fields(self):
            yield f.name, getattr(self, f.name)


TRIGGER_INPUTS = ("AUX", "CHAN1", "CHAN2", "CHAN3", "CHAN4")


@dataclass(frozen=True, kw_only=True)
class TriggerConfig:
    """``[trigger]``: the cable that starts every digitizer record at the AWG's segment start (the AWG's marker
    into a digitizer input), and the edge trigger the digitizer role sets on it."""

    awg: str = _ref("awg")
    digitizer: str = _ref("digitizer")
    digitizer_input: str = setting(Text("AUX or CHAN1..CHAN4", r"^(AUX|CHAN[1-4])$"), "AUX")
    marker_low_v: float = setting(Number("V", -8.0, 8.0), 0.0)
    marker_high_v: float = setting(Number("V", -8.0, 8.0))
    level_v: float = setting(Number("V", -8.0, 8.0))
    slope: str = setting(Text("POS (the marker rises at the segment start)", r"^POS$"), "POS")


@dataclass(frozen=True)
class LabConfig:
    """The whole station. ``bench_table`` returns a fresh copy of ``[bench]`` (the bench's loader wants plain dicts)."""

    source: str
    station: StationSettings
    protocol: ProtocolConfig
    instruments: Mapping[str, InstrumentConfig]
    roles: Roles
    session: SessionConfig = field(default_factory=SessionConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    _bench_table: dict | None = field(default=None, repr=False)
    text: str = field(default="", repr=False)
    trigger: TriggerConfig | None = None

    @property
    def bench_table(self) -> dict | None:
        return copy.deepcopy(self._bench_table)

    @property
    def uses_bench(self) -> bool:
        return any(i.on_bench for i in self.instruments.values())

    def roles_of(self, instrument: str) -> list[str]:
        """Role names that use ``instrument`` (e.g. ['pulse_carver', 'server_iq_modulator'] for the AWG)."""
        return [role for role, config in self.roles.items()
                if any(getattr(config, f.name) == instrument for f in fields(config) if "refers" in f.metadata)]


TOP_LEVEL = ("station", "protocol", "session", "calibration", "instruments", "roles", "trigger", "bench")


def parse_config(data: Mapping[str, Any], source: str = "<config>", text: str = "") -> LabConfig:
    """A LabConfig from parsed TOML; any problem is one ConfigError naming the key path."""
    try:
        return _parse(data, source, text)
    except ConfigError as error:
        raise error.with_source(source) from None


def loads_config(text: str, source: str = "<config>") -> LabConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("", f"not valid TOML ({error})", source) from None
    except RecursionError:  # arrays or inline tables nested thousands deep
        raise ConfigError("", "not a usable TOML file: arrays or tables nested too deep (expected the flat tables "
                              "of lab_config.toml)", source) from None
    return parse_config(data, source, text)


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> LabConfig:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")  # as written: text mode would turn a bare CR, which TOML refuses, into LF
    except OSError as error:
        raise ConfigError("", f"cannot read the station config ({error.strerror or error})", str(path)) from None
    except UnicodeDecodeError as error:
        raise ConfigError("", f"not UTF-8 text ({error.reason} at byte {error.start})", str(path)) from None
    return loads_config(text, str(path))


def served_config_text(text: str, addresses: Mapping[str, str]) -> str:
    """A config's text with each ``[instruments.NAME]`` the bench serves (``address = "bench"``) at ``addresses[NAME]``
    instead (a bench served by a process of its own: ``qslab bench serve``); every other line as it was."""
    lines, table = [], None
    for line in text.splitlines():
        if line.startswith("["):
            header = re.match(r"\[instruments\.(\w+)\]", line)
            table = header.group(1) if header else None
        if table in addresses and line.strip() == f'address = "{BENCH_ADDRESS}"':
            line = f'address = "{addresses[table]}"'
        lines.append(line)
    return "\n".join(lines) + "\n"


def _parse(data: Mapping[str, Any], source: str, text: str) -> LabConfig:
    data = _check_table("", data)
    for name in data:
        if name not in TOP_LEVEL:
            raise ConfigError.unknown(name, list(TOP_LEVEL))
    station = build(StationSettings, data.get("station", {}), "station")
    if "protocol" not in data:
        raise ConfigError.missing("protocol", "a [protocol] table (mu_photons, gain, modes, symbol_rate_hz, ...)")
    protocol = build(ProtocolConfig, data["protocol"], "protocol")
    if "instruments" not in data:
        raise ConfigError.missing("instruments", "an [instruments.<name>] table per instrument")
    instruments = {name: _instrument(name, table)
                   for name, table in _check_table("instruments", data["instruments"]).items()}
    if "roles" not in data:
        raise ConfigError.missing("roles", "a [roles.<role>] table per role: " + ", ".join(f.name for f in fields(Roles)))
    roles = build(Roles, data["roles"], "roles")
    _check_role_references(roles, instruments)
    if "trigger" not in data:
        raise ConfigError.missing("trigger", "a [trigger] table: the AWG whose marker starts the digitizer's records "
                                             "(awg, digitizer, digitizer_input, marker_high_v, level_v)")
    trigger = build(TriggerConfig, data["trigger"], "trigger")
    _check_trigger(trigger, roles, instruments)
    bench_table = _check_bench(data, instruments, roles, protocol, trigger)
    session = build(SessionConfig, data.get("session", {}), "session")
    calibration = build(CalibrationConfig, data.get("calibration", {}), "calibration")
    _check_declared_calibration(data.get("calibration", {}), instruments)
    return LabConfig(source, station, protocol, MappingProxyType(instruments), roles, session, calibration,
                     bench_table, text, trigger)


# --- cross-checks ---------------------------------------------------------------------------

def _check_role_references(roles: Roles, instruments: Mapping[str, InstrumentConfig]) -> None:
    """Each role names an instrument of the right kind, and ports/channels that exist and no other role uses."""
    taken: dict[tuple[str, str, int], str] = {}
    for role, config in roles.items():
        refs = {f.name: f for f in fields(config) if "refers" in f.metadata}
        for name, f in refs.items():
            key, target = f"roles.{role}.{name}", getattr(config, name)
            category = f.metadata["refers"]
            matching = sorted(n for n, i in instruments.items() if i.spec.category == category)
            if target not in instruments or instruments[target].spec.category != category:
                kind = category.replace("_", " ")
                expected = f"the name of an [instruments] table with {'an' if kind[0] in 'aeiou' else 'a'} {kind} driver"
                raise ConfigError.invalid(key, target, f"{expected} ({', '.join(matching) or 'none is configured'})")
        for f in fields(config):
            if "unit_of" not in f.metadata:
                continue
            key, number = f"roles.{role}.{f.name}", getattr(config, f.name)
            instrument = instruments[getattr(config, f.metadata["unit_of"])]
            kind, units = f.metadata["kind"], instrument.spec.units
            if kind == "slot":
                ok, expected = number % 2 == 1 and number < 2 * units, f"an odd slot 1..{2 * units - 1} (first slot of an attenuator's pair)"
            else:
                ok, expected = number <= units, f"a {kind} 1..{units} of {instrument.name} ({instrument.driver})"
            if not ok:
                raise ConfigError.invalid(key, number, expected)
            used = (instrument.name, kind, number)
            if used in taken:
                raise ConfigError.invalid(key, number, f"a {kind} of {instrument.name} that no other role uses "
                                                       f"({taken[used]} uses it)")
            taken[used] = key


def _check_trigger(trigger: TriggerConfig, roles: Roles, instruments: Mapping[str, InstrumentConfig]) -> None:
    """The trigger names an AWG and a digitizer, an input no receiver uses, and a level inside the marker's swing."""
    for name, category in (("awg", "awg"), ("digitizer", "digitizer")):
        target = getattr(trigger, name)
        if target not in instruments or instruments[target].spec.category != category:
            matching = sorted(n for n, i in instruments.items() if i.spec.category == category)
            article = "an" if category[0] in "aeiou" else "a"
            raise ConfigError.invalid(f"trigger.{name}", target, f"the name of an [instruments] table with {article} "
                                                                 f"{category} driver ({', '.join(matching) or 'none'})")
    for role in ("client_receiver", "server_receiver"):
        config = getattr(roles, role)
        if config.digitizer == trigger.digitizer and trigger.digitizer_input == f"CHAN{config.channel}":
            raise ConfigError.invalid("trigger.digitizer_input", trigger.digitizer_input,
                                      f"AUX or a channel no receiver uses (roles.{role}.channel = {config.channel})")
    if not trigger.marker_low_v < trigger.marker_high_v:
        raise ConfigError.invalid("trigger.marker_high_v", trigger.marker_high_v,
                                  f"above trigger.marker_low_v ({trigger.marker_low_v:g} V)")
    if not trigger.marker_low_v < trigger.level_v < trigger.marker_high_v:
        raise ConfigError.invalid("trigger.level_v", trigger.level_v, f"a level between the marker's levels "
                                                                      f"({trigger.marker_low_v:g} V and "
                                                                      f"{trigger.marker_high_v:g} V)")


# role key -> (the role's instrument field, the bench parameter saying how the bench is cabled, and the bench
# kind it applies to or None for any); checked when that instrument is the bench's (address "bench")
BENCH_CABLING = {
    "roles.server_laser.port": ("instrument", "server_laser.port", None),
    "roles.pulse_carver.awg_channel": ("awg", "server_carver.awg_channel", None),
    "roles.pulse_carver.bias_controller": ("bias_controller", "server_carver.bias_controller", None),
    "roles.server_iq_modulator.awg_channel_i": ("awg", "server_iq.awg_channel_i", None),
    "roles.server_iq_modulator.awg_channel_q": ("awg", "server_iq.awg_channel_q", None),
    "roles.server_iq_modulator.bias_controller": ("bias_controller", "server_iq.bias_controller", None),
    "roles.server_attenuator.slot": ("instrument", "server_attenuator.slot", None),
    "roles.server_power_meter.channel": ("instrument", "server_power_meter.channel", "keysight_n7744a"),
    "roles.client_receiver.channel": ("digitizer", "client_receiver.digitizer_channel", None),
    "roles.server_receiver.channel": ("digitizer", "server_receiver.digitizer_channel", None),
}
_BENCH_MESSAGE = re.compile(r"^\[bench\] (?:unknown key '(?P<unknown>[^']+)'|(?P<path>[A-Za-z_][\w.]*))(?P<rest>.*)$", re.S)


def bench_error(error: Exception) -> ConfigError:
    """The bench loader's message ("[bench] server_iq.vpi_v = ...") as a ConfigError keyed bench.<path>."""
    message = str(error).strip()
    match = _BENCH_MESSAGE.match(message)
    if match is None:
        return ConfigError("bench", f"bench: {message}")
    if match.group("unknown"):
        key = f"bench.{match.group('unknown')}"
        return ConfigError(key, f"unknown key {key}{match.group('rest')}")
    key = f"bench.{match.group('path')}"
    return ConfigError(key, f"{key}{match.group('rest')}")


def _check_bench(data: Mapping[str, Any], instruments: Mapping[str, InstrumentConfig], roles: Roles,
                 protocol: ProtocolConfig, trigger: TriggerConfig | None = None) -> dict | None:
    """Validate ``[bench]`` with the bench's own loader, then check the station against its cabling."""
    on_bench = {name: i for name, i in instruments.items() if i.on_bench}
    if "bench" not in data:
        if on_bench:
            name = next(iter(on_bench))
            raise ConfigError.missing("bench", f"a [bench] table: instruments.{name}.address is "
                                               f"{on_bench[name].address!r} (see instruments/sim/bench_defaults.toml)")
        return None
    table = _check_table("bench", data["bench"])
    for key, what in (("host", str), ("ports", dict), ("instruments", dict)):
        if key in table and not isinstance(table[key], what):
            raise ConfigError.invalid(f"bench.{key}", table[key], "a string" if what is str else "a table")
    for name, kind in table.get("instruments", {}).items():
        if not isinstance(kind, str):
            raise ConfigError.invalid(f"bench.instruments.{name}", kind, "an emulator kind (a string)")
    from qslab.instruments.sim.server import Bench  # the bench validates its own table

    try:
        bench = Bench.from_table(copy.deepcopy(table))
    except (ValueError, TypeError, KeyError) as error:
        raise bench_error(error) from None
    lineup = {name: b.kind for name, b in bench.instruments.items()}
    for name, instrument in on_bench.items():
        key, kind = f"instruments.{name}.address", instrument.spec.bench_kind
        if kind is None:
            raise ConfigError.invalid(key, instrument.address, f"a real address: the bench has no emulator for "
                                                               f"driver {instrument.driver}")
        if instrument.address == BENCH_ADDRESS:
            if name not in lineup:
                raise ConfigError.invalid(key, instrument.address, f"an instrument of [bench.instruments] "
                                                                   f"({', '.join(lineup)}), or '{UNCABLED_BENCH_ADDRESS}'")
            if lineup[name] != kind:
                raise ConfigError.invalid(f"instruments.{name}.driver", instrument.driver,
                                          f"a driver for the bench's {lineup[name]} emulator named {name}")
    for role_key, (ref, bench_path, only_kind) in BENCH_CABLING.items():
        _, role, entry = role_key.split(".")
        config = getattr(roles, role)
        instrument = instruments[getattr(config, ref)]
        if instrument.address != BENCH_ADDRESS or only_kind not in (None, instrument.spec.bench_kind):
            continue
        wanted, value = bench.params.get(bench_path), getattr(config, entry)
        if value != wanted:
            raise ConfigError.invalid(role_key, value, f"{wanted!r}, as the bench is cabled (bench.{bench_path})")
    if trigger is not None and instruments[trigger.digitizer].address == BENCH_ADDRESS:
        for key in ("awg", "digitizer_input"):
            wanted, value = bench.params.get(f"trigger.{key}"), getattr(trigger, key)
            if value != wanted:
                raise ConfigError.invalid(f"trigger.{key}", value, f"{wanted!r}, as the bench is cabled (bench.trigger.{key})")
    if on_bench and protocol.symbol_rate_hz != bench.params.server.symbol_rate_hz:
        raise ConfigError.invalid("protocol.symbol_rate_hz", protocol.symbol_rate_hz,
                                  f"{bench.params.server.symbol_rate_hz:g}, the bench's clock (bench.server.symbol_rate_hz)")
    return copy.deepcopy(table)


# --- a real station declares what mu rests on ----------------------------------------------------------

# [calibration] keys a station with real instruments must declare: the fixed attenuation and the fibre
# transmittances are not measured by any procedure, and mu (hence the security claim) rests on them.
DECLARED_FOR_HARDWARE = ("fixed_attenuation_db", "fixed_attenuation_uncertainty_db", "forward_transmittance",
                         "forward_transmittance_uncertainty", "return_transmittance", "return_transmittance_uncertainty")


def _check_declared_calibration(table: Mapping[str, Any], instruments: Mapping[str, InstrumentConfig]) -> None:
    """A station with any non-bench address must state every DECLARED_FOR_HARDWARE key: the code's defaults
    describe the virtual bench, not a lab's fibres and attenuators."""
    real = [i for i in instruments.values() if not i.on_bench]
    if not real:
        return
    for key in DECLARED_FOR_HARDWARE:
        if key not in table:
            raise ConfigError.missing(f"calibration.{key}", f"a declared value measured on this station "
                                      f"(instruments.{real[0].name}.address is {real[0].address!r}, not the bench): "
                                      "mu and the security bound rest on it; the default describes the virtual bench")
