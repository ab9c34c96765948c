"""The virtual bench's true hardware parameters: a frozen dataclass tree addressed by dotted paths.

These are the numbers a real bench hides and calibration measures (modulator Vpi and bias phase,
extinction ratios, IQ imbalance, losses, detector efficiency and noise, ...). They come from the
``[bench]`` table of ``lab_config.toml`` (documented key by key in ``bench_defaults.toml``) and
only the emulators read them; calibration code must never import this module (it would be
measuring what it already knows). ``BenchParameters.get("server_iq.vpi_v")`` reads one by path.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

DEFAULTS_RESOURCE = "bench_defaults.toml"


@dataclass(frozen=True)
class LaserTruth:
    """The server laser (one port of the N7714A) and the fibre to the modulators."""

    port: int = 1
    power_offset_db: float = -0.15        # emitted minus set power (a power-meter calibration finds it)
    insertion_loss_db: float = 0.5        # laser port -> pulse carver input
    relative_intensity_noise_db_per_hz: float = -165.0  # one-sided RIN, white over the detector band (LOs share it)


@dataclass(frozen=True)
class ModulatorTruth:
    """One Mach-Zehnder modulator (docs/PHYSICS.md 15): field transfer with finite extinction ratio.

    The phase difference of the arms is theta = pi u/vpi_v + pi V_b/bias_vpi_v + bias_phase_rad,
    u the RF drive at the modulator (AWG volts x driver_gain), V_b the bias controller's voltage.
    """

    vpi_v: float = 3.0
    bias_vpi_v: float = 5.0
    bias_phase_rad: float = 0.4
    extinction_ratio_db: float = 30.0
    insertion_loss_db: float = 3.0
    driver_gain: float = 6.0              # RF driver amplifier, V at the modulator per V of AWG output
    awg_channel: int = 3
    monitor_tap_ratio: float = 0.01       # fraction of the output the bias controller's photodiode sees
    bias_controller: str = "bias_carver"  # the MBX instrument that biases it


@dataclass(frozen=True)
class IQModulatorTruth:
    """Nested IQ modulator (docs/PHYSICS.md 15): two child MZMs at null, parent near pi/2.

    Three bias electrodes, two bias voltages (docs/DECISIONS.md R): one MBX loop drives both
    children's DC electrodes in parallel (same bias voltage; the Q child's arm phase at 0 V is
    bias_phase_rad + q_bias_phase_offset_rad, so with an offset one loop, which locks the pair's mean,
    leaves each child off its null by half of it); the parent's electrode is set by hand (no loop) and
    holds the parent phase at pi/2 + iq_phase_error_rad, which the IQ-imbalance calibration measures.
    The I child's field is scaled by (1 + g/2), the Q child's by (1 - g/2) with g = iq_gain_imbalance.
    The Q child's drive arrives iq_skew_s later than the I child's (cables, drivers): its AWG samples
    are delayed by that time, interpolated linearly between samples.
    """

    vpi_v: float = 3.5
    bias_vpi_v: float = 6.0
    bias_phase_rad: float = 1.1
    q_bias_phase_offset_rad: float = 0.0  # Q child's arm phase at 0 V minus the I child's
    extinction_ratio_db: float = 25.0
    insertion_loss_db: float = 5.0
    iq_gain_imbalance: float = 0.03
    iq_phase_error_rad: float = 0.02
    iq_skew_s: float = 12e-12
    driver_gain: float = 7.0
    awg_channel_i: int = 1
    awg_channel_q: int = 2
    monitor_tap_ratio: float = 0.01
    bias_controller: str = "bias_iq"


@dataclass(frozen=True)
class BiasLockTruth:
    """How the MBX loops find their bias points: a sweep and dither lock that takes time and needs light.

    A lock (``MZM:MODE`` to an automatic mode, or ``MZM:RESET``) sweeps the bias for
    ``acquisition_time_s`` of instrument time (``MZM:CALIBRATING?`` reads 1, ``MZM:SETPOINT?`` 0) and then
    holds the point, off by a residual drawn per lock. The sweep needs light on the loop's photodiode:
    at least ``min_tap_power_w`` at the modulator's peak, from the start of the sweep to its end; without
    it the sweep finds no transfer curve and the loop stays unlocked until it is asked to lock again.
    """

    residual_rad: float = 0.005           # rms bias-phase error left after each lock (drawn per lock)
    acquisition_time_s: float = 0.5       # sweep + lock, instrument seconds (bench clock)
    min_tap_power_w: float = 1e-6         # light the loop's photodiode needs (at the modulator's peak), W


@dataclass(frozen=True)
class ServerTruth:
    """The server's output path: monitor tap, fixed attenuation, clock plan."""

    tap_ratio: float = 0.01               # power fraction to the monitor power meter (before the VOA)
    fixed_attenuation_db: float = 20.0    # fixed attenuators between the VOA and the server output
    symbol_rate_hz: float = 1e9


@dataclass(frozen=True)
class AttenuatorTruth:
    """The N7762A attenuator in the server path."""

    slot: int = 1                         # first slot of the pair (att1 = slot 1, att2 = slot 3)
    insertion_loss_db: float = 1.2        # adds to the programmed attenuation (minus its offset)


@dataclass(frozen=True)
class PowerMeterTruth:
    """The power meters: N7744A channels on the monitor tap and on the VOA output, the PM100D head."""

    channel: int = 1                      # N7744A channel on the monitor tap
    output_channel: int = 2               # N7744A channel on the VOA output, before the fixed attenuators (0: none)
    dark_power_w: float = 3e-12           # offset with no light (zeroing would remove it)
    noise_w: float = 2e-12                # rms noise at 1 s averaging time (scales as 1/sqrt(t))
    relative_noise: float = 2e-4          # rms relative fluctuation of the reading
    pm100d_dark_power_w: float = 2e-9     # the PM100D (a photodiode head) is far less sensitive
    pm100d_noise_w: float = 5e-10


@dataclass(frozen=True)
class ReceiverTruth:
    """A balanced homodyne receiver (PDB48x class, docs/INSTRUMENTS.md 7.7, DC-coupled) and its digitizer channel.

    Shot noise per sample (before the low-pass) is gain_v_per_w sqrt(P_LO h nu f_s / efficiency);
    the electronic noise is a fixed voltage, given in SNU at reference_lo_power_w (so it falls as
    1/P_LO in SNU). The LO is the server laser's light: P_LO = lo_transmittance x laser power.
    The photodiodes are not perfectly balanced (docs/PHYSICS.md 14, CMRR): the difference output
    carries output_offset_v + imbalance_sign gain_v_per_w (P_LO/2) 10^(-common_mode_rejection_db/20)
    of DC, and the laser's intensity noise through the same imbalance (the k2 term of the LO sweep).
    """

    efficiency: float = 0.8
    electronic_noise_snu: float = 0.05
    reference_lo_power_w: float = 1e-3
    gain_v_per_w: float = 4.0e3
    bandwidth_hz: float = 1.6e9
    filter_order: int = 1
    lo_transmittance: float = 0.1
    digitizer_channel: int = 1
    common_mode_rejection_db: float = 30.0  # 20 log10(one diode's output / the balanced output), dB
    imbalance_sign: int = 1               # +1: the + diode is the stronger one (the DC follows +P_LO), -1: the - diode
    output_offset_v: float = 1.5e-3       # the electronics' DC offset (LO off), V


@dataclass(frozen=True)
class ServerReceiverTruth(ReceiverTruth):
    """The server's verification receiver: a receiver whose LO phase modulator (and capture gate) an AWG drives.

    Bench convention for that channel of the server's AWG, read per row at the centre sample of the
    row's first symbol: code > +GATE_THRESHOLD_CODE captures the row and measures X, code <
    -GATE_THRESHOLD_CODE captures it and measures P, anything between leaves it uncaptured.
    """

    efficiency: float = 0.85
    electronic_noise_snu: float = 0.04
    digitizer_channel: int = 2
    common_mode_rejection_db: float = 27.0
    imbalance_sign: int = -1
    output_offset_v: float = -2.0e-3
    awg_channel: int = 4                  # server AWG channel on the LO phase modulator / capture gate


GATE_THRESHOLD_CODE = 32  # |AWG code| above it opens the verification gate (sign: X or P)


@dataclass(frozen=True)
class AmplifierTruth:
    """The client's phase-insensitive amplifier."""

    noise_figure_db: float = 4.0          # raised to the quantum limit at high gain if below it
    gain_offset_db: float = 0.0           # true minus set gain
    gain_db_per_a: float = 30.0           # small-signal gain per pump current (constant-current mode)


@dataclass(frozen=True)
class ProcessorTruth:
    """The client's time-bin processor (DECISIONS M), driven by the client's own AWG.

    Per time bin, at the centre sample of the bin, the beam splitter's angle is theta = pi
    beam_splitter_driver_gain u_bs / (2 beam_splitter_vpi_v) + beam_splitter_theta_offset_rad and the
    phase modulator's phase is phi = pi phase_driver_gain u_ph / phase_vpi_v, u the AWG volts (the
    inverse of qslab.instruments.optical.time_bin_processor's drive). A row is bins_per_row bins: how the
    bench splits the client's segment into images. Without a playing segment on both channels the
    processor passes every bin straight to the amplifier (x_hat = 1), as calibrations assume.
    """

    awg: str = "client_awg"               # the [bench.instruments] M8195A that drives it
    awg_channel_beam_splitter: int = 1
    awg_channel_phase: int = 2
    beam_splitter_vpi_v: float = 3.2      # at the modulator, V
    phase_vpi_v: float = 3.6              # at the modulator, V
    beam_splitter_driver_gain: float = 7.0  # V at the modulator per V of AWG output
    phase_driver_gain: float = 8.0        # (vpi / gain <= 0.46 V: the whole angle range fits 1 Vpp)
    beam_splitter_theta_offset_rad: float = 0.0  # theta at 0 V
    bins_per_row: int = 392               # the processor's programmed row length (complex modes per row)
    loss_per_pass_db: float = 0.3


@dataclass(frozen=True)
class ChannelTruth:
    """Fibre between server and client (DECISIONS G: T = forward x processor^2 x return)."""

    forward_transmittance: float = 0.9
    return_transmittance: float = 0.9


@dataclass(frozen=True)
class DigitizerTruth:
    """The Infiniium's acquisition limits and ADC."""

    adc_bits: int = 10
    min_sample_rate_hz: float = 1e8
    max_sample_rate_hz: float = 2e10
    min_bandwidth_hz: float = 1e8
    max_bandwidth_hz: float = 8e9
    min_points: int = 16
    max_points: int = 50_000_000


@dataclass(frozen=True)
class TriggerTruth:
    """The digitizer's trigger cable: the marker of an AWG, high from every start of the segment it plays,
    into one digitizer input. A record starts at the marker's rising edge only when the digitizer is set to
    an edge trigger on that input, rising, at a level inside the marker's swing, in triggered sweep, and the
    AWG runs; otherwise it starts at a random point of the stream (instruments/sim/emulators/keysight_infiniium)."""

    awg: str = "awg"                      # the [bench.instruments] M8195A whose marker is cabled
    digitizer_input: str = "AUX"          # the Infiniium input it is cabled to: AUX or CHAN1..CHAN4
    marker_low_v: float = 0.0             # the marker's levels into the digitizer's input, V
    marker_high_v: float = 0.5


@dataclass(frozen=True)
class BenchParameters:
    """The whole bench. ``seed`` seeds every random draw (one Generator per consumer)."""

    seed: int = 20240805
    time_scale: float = 1.0    # real seconds per instrument second (instruments/sim/clock.py)
    server_laser: LaserTruth = field(default_factory=LaserTruth)
    server_carver: ModulatorTruth = field(default_factory=ModulatorTruth)
    server_iq: IQModulatorTruth = field(default_factory=IQModulatorTruth)
    bias_lock: BiasLockTruth = field(default_factory=BiasLockTruth)
    server: ServerTruth = field(default_factory=ServerTruth)
    server_attenuator: AttenuatorTruth = field(default_factory=AttenuatorTruth)
    server_power_meter: PowerMeterTruth = field(default_factory=PowerMeterTruth)
    client_receiver: ReceiverTruth = field(default_factory=ReceiverTruth)
    server_receiver: ServerReceiverTruth = field(default_factory=ServerReceiverTruth)
    client_amplifier: AmplifierTruth = field(default_factory=AmplifierTruth)
    client_processor: ProcessorTruth = field(default_factory=ProcessorTruth)
    channel: ChannelTruth = field(default_factory=ChannelTruth)
    digitizer: DigitizerTruth = field(default_factory=DigitizerTruth)
    trigger: TriggerTruth = field(default_factory=TriggerTruth)

    def __post_init__(self):
        _validate(self)

    def get(self, path: str) -> Any:
        """One parameter by dotted path, e.g. ``"server_iq.bias_phase_rad"``."""
        node: Any = self
        for part in path.split("."):
            if not dataclasses.is_dataclass(node) or part not in {f.name for f in fields(node)}:
                raise KeyError(f"no bench parameter {path!r} (at {part!r})")
            node = getattr(node, part)
        return node

    def paths(self) -> dict[str, Any]:
        """Every leaf as {dotted path: value}."""
        return dict(_leaves(self, ""))

    def replace(self, **changes: Any) -> BenchParameters:
        """A copy with dotted-path changes: ``params.replace(**{"server_iq.vpi_v": 4.0})``."""
        return from_mapping(_nest(changes), base=self)


def _leaves(node: Any, prefix: str):
    for f in fields(node):
        value = getattr(node, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _nest(changes: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in changes.items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _coerce(path: str, value: Any, default: Any) -> Any:
    """Config values take the type of the default; errors name the key path and what was expected."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"[bench] {path}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"[bench] {path}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"[bench] {path}: expected a finite number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"[bench] {path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"[bench] {path}: unsupported parameter type {type(default).__name__}")


def _build(cls_or_obj: Any, table: dict[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(cls_or_obj)}
    changes = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if key not in known:
            raise ValueError(f"[bench] unknown key {path!r}; expected one of {sorted(known)}")
        current = getattr(cls_or_obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"[bench] {path}: expected a table, got {value!r}")
            changes[key] = _build(current, value, path + ".")
        else:
            changes[key] = _coerce(path, value, current)
    return dataclasses.replace(cls_or_obj, **changes)


# Keys of [bench] that are not hardware truth (read by the server / station, not by the physics; ``spread`` is
# read here, after the truths: it perturbs them).
NON_PARAMETER_KEYS = ("host", "ports", "instruments", "embedded", "allow_non_loopback", "spread")


def from_mapping(table: dict[str, Any], base: BenchParameters | None = None) -> BenchParameters:
    """Parameters from a ``[bench]`` table (unknown keys are errors); missing keys keep ``base``. An optional
    ``[bench.spread]`` table (``fraction``, ``seed``) then perturbs them (``perturbed``): a bench whose parts
    differ from the configured values, the same for the same seed."""
    spread = table.get("spread")
    params = _build(base if base is not None else BenchParameters(),
                    {k: v for k, v in table.items() if k not in NON_PARAMETER_KEYS}, "")
    return params if spread is None else _spread(params, spread)


def _spread(params: BenchParameters, spread: Any) -> BenchParameters:
    if not isinstance(spread, dict) or set(spread) != {"fraction", "seed"}:
        raise ValueError(f"[bench] spread: expected a table with fraction and seed, got {spread!r}")
    fraction, seed = spread["fraction"], spread["seed"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"[bench] spread.fraction: expected a relative spread in [0, 1), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"[bench] spread.seed: expected an integer >= 0, got {seed!r}")
    return perturbed(params, float(fraction), seed)


def defaults_table() -> dict[str, Any]:
    """The ``[bench]`` table of the packaged ``bench_defaults.toml``."""
    text = resources.files("qslab.instruments.sim").joinpath(DEFAULTS_RESOURCE).read_text()
    return tomllib.loads(text)["bench"]


def load_bench_table(path: str | Path) -> dict[str, Any]:
    """The ``[bench]`` table of a TOML file (lab_config.toml or a bench-only file)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"bench config {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None
    if "bench" not in data:
        raise ValueError(f"{path}: has no [bench] table (see instruments/sim/bench_defaults.toml)")
    if not isinstance(data["bench"], dict):
        raise ValueError(f"{path}: [bench] must be a table")
    return data["bench"]


# (key, largest value, unit) of a receiver's datasheet figures: larger ones describe no balanced detector and
# surface much later as digitizer overrange or VISA timeouts
RECEIVER_MAXIMA = (("reference_lo_power_w", 0.1, "W"), ("gain_v_per_w", 1e7, "V/W"), ("bandwidth_hz", 1e11, "Hz"))


def _validate(params: BenchParameters) -> None:
    def check(path: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ValueError(f"[bench] {path} = {params.get(path)!r}: expected {expected}")

    def fraction(path: str, open_low: bool = True) -> None:
        value = params.get(path)
        check(path, (0.0 < value if open_low else 0.0 <= value) and value <= 1.0,
              "a fraction in (0, 1]" if open_low else "a fraction in [0, 1]")

    def positive(path: str) -> None:
        check(path, params.get(path) > 0.0, "> 0")

    def non_negative(path: str) -> None:
        check(path, params.get(path) >= 0.0, ">= 0")

    check("server_laser.port", 1 <= params.server_laser.port <= 4, "an N7714A port 1..4")
    receiver_inputs = {f"CHAN{params.get(f'{name}.digitizer_channel')}" for name in ("client_receiver", "server_receiver")}
    check("trigger.digitizer_input", params.trigger.digitizer_input in {"AUX", "CHAN1", "CHAN2", "CHAN3", "CHAN4"}
          - receiver_inputs, "AUX or a CHAN1..CHAN4 no receiver is cabled to")
    check("trigger.marker_high_v", params.trigger.marker_high_v > params.trigger.marker_low_v, "> marker_low_v")
    check("server_laser.relative_intensity_noise_db_per_hz", params.server_laser.relative_intensity_noise_db_per_hz < 0,
          "< 0 dB/Hz (a laser's RIN, e.g. -165)")
    for name in ("server_carver", "server_iq"):
        for key in ("vpi_v", "bias_vpi_v", "extinction_ratio_db", "driver_gain"):
            positive(f"{name}.{key}")
        non_negative(f"{name}.insertion_loss_db")
        fraction(f"{name}.monitor_tap_ratio")
    check("server_carver.awg_channel", 1 <= params.server_carver.awg_channel <= 4, "an AWG channel 1..4")
    for key in ("awg_channel_i", "awg_channel_q"):
        check(f"server_iq.{key}", 1 <= params.get(f"server_iq.{key}") <= 4, "an AWG channel 1..4")
    check("server_iq.iq_gain_imbalance", abs(params.server_iq.iq_gain_imbalance) < 2.0, "|g| < 2")
    check("server_iq.q_bias_phase_offset_rad", abs(params.server_iq.q_bias_phase_offset_rad) < 0.5 * math.pi,
          "|offset| < pi/2 rad (one loop on both children must still find a common null)")
    check("server_iq.iq_skew_s", abs(params.server_iq.iq_skew_s) < 0.5 / params.server.symbol_rate_hz,
          "|skew| < half a symbol period (s)")
    check("server_iq.awg_channel_q", params.server_iq.awg_channel_q != params.server_iq.awg_channel_i,
          "a channel other than awg_channel_i")
    positive("time_scale")
    non_negative("bias_lock.residual_rad")
    non_negative("bias_lock.acquisition_time_s")
    positive("bias_lock.min_tap_power_w")
    check("server.tap_ratio", 0.0 < params.server.tap_ratio < 1.0, "a fraction in (0, 1)")
    non_negative("server.fixed_attenuation_db")
    positive("server.symbol_rate_hz")
    check("server_attenuator.slot", params.server_attenuator.slot in (1, 2, 3, 4), "an N7762A slot 1..4")
    non_negative("server_attenuator.insertion_loss_db")
    check("server_power_meter.channel", 1 <= params.server_power_meter.channel <= 4, "an N7744A channel 1..4")
    check("server_power_meter.output_channel",
          params.server_power_meter.output_channel in {0, 1, 2, 3, 4} - {params.server_power_meter.channel},
          "0 (none) or an N7744A channel 1..4 other than server_power_meter.channel")
    for key in ("dark_power_w", "noise_w", "relative_noise", "pm100d_dark_power_w", "pm100d_noise_w"):
        non_negative(f"server_power_meter.{key}")
    for name in ("client_receiver", "server_receiver"):
        fraction(f"{name}.efficiency")
        fraction(f"{name}.lo_transmittance")
        non_negative(f"{name}.electronic_noise_snu")
        for key, most, unit in RECEIVER_MAXIMA:  # beyond these no detector of this class exists (PDB48x: mW LO)
            check(f"{name}.{key}", 0.0 < params.get(f"{name}.{key}") <= most, f"> 0 and <= {most:g} {unit}")
        check(f"{name}.filter_order", 1 <= params.get(f"{name}.filter_order") <= 8, "an integer 1..8")
        check(f"{name}.digitizer_channel", 1 <= params.get(f"{name}.digitizer_channel") <= 4, "a channel 1..4")
        positive(f"{name}.common_mode_rejection_db")
        check(f"{name}.imbalance_sign", params.get(f"{name}.imbalance_sign") in (-1, 1), "+1 or -1")
    check("server_receiver.digitizer_channel",
          params.server_receiver.digitizer_channel != params.client_receiver.digitizer_channel,
          "a channel other than client_receiver.digitizer_channel")
    server_awg_channels = {params.server_carver.awg_channel, params.server_iq.awg_channel_i,
                           params.server_iq.awg_channel_q}
    check("server_receiver.awg_channel", params.server_receiver.awg_channel in {1, 2, 3, 4} - server_awg_channels,
          "a server AWG channel 1..4 that no modulator uses")
    non_negative("client_amplifier.gain_db_per_a")
    _validate_processor(params, check, positive)
    fraction("channel.forward_transmittance")
    fraction("channel.return_transmittance")
    d = params.digitizer
    check("digitizer.adc_bits", 4 <= d.adc_bits <= 16, "an integer 4..16 (WORD transfers hold 16 bits)")
    check("digitizer.max_sample_rate_hz", 0 < d.min_sample_rate_hz < d.max_sample_rate_hz,
          "> digitizer.min_sample_rate_hz > 0")
    check("digitizer.max_bandwidth_hz", 0 < d.min_bandwidth_hz < d.max_bandwidth_hz, "> digitizer.min_bandwidth_hz > 0")
    check("digitizer.max_points", 1 <= d.min_points < d.max_points, "> digitizer.min_points >= 1")
    check("digitizer.max_sample_rate_hz", d.max_sample_rate_hz >= params.server.symbol_rate_hz,
          ">= server.symbol_rate_hz (at least one sample per symbol)")


def _validate_processor(params: BenchParameters, check, positive) -> None:
    c = params.client_processor
    check("client_processor.awg", bool(c.awg.strip()), "the [bench.instruments] name of the client's AWG")
    check("client_processor.awg", c.awg != "awg", "an AWG other than the server's (awg)")
    for key in ("awg_channel_beam_splitter", "awg_channel_phase"):
        check(f"client_processor.{key}", 1 <= params.get(f"client_processor.{key}") <= 4, "an AWG channel 1..4")
    check("client_processor.awg_channel_phase", c.awg_channel_phase != c.awg_channel_beam_splitter,
          "a channel other than awg_channel_beam_splitter")
    for key in ("beam_splitter_vpi_v", "phase_vpi_v", "beam_splitter_driver_gain", "phase_driver_gain"):
        positive(f"client_processor.{key}")
    check("client_processor.bins_per_row", c.bins_per_row >= 1, "an integer >= 1")
    check("client_processor.loss_per_pass_db", c.loss_per_pass_db >= 0.0, ">= 0")


# What "hardware spread" perturbs (issue 15), each by a relative +-fraction: modulator V_pi and extinction ratios,
# detector efficiencies and electronic noise, the photon calibration's path (insertion losses, the monitor tap),
# the RF drivers' gains (datasheet values to the stack), the IQ imbalance, the amplifier's noise figure, the
# processor's V_pi and loss. Not perturbed: positions (ports, channels), seeds, the clock plan, the digitizer's
# limits, and the fibres, fixed attenuators and detector gains the station declares ([calibration], [roles]; a lab
# measures them apart: a truth 10 % off its declaration is a wrong declaration, which the photon cross-check and
# the homodyne's efficiency check refuse, and a detector shows its gain and efficiency only as gain^2 x efficiency).
SPREAD_PATHS = (
    "server_laser.insertion_loss_db",
    "server_carver.vpi_v", "server_carver.bias_vpi_v", "server_carver.extinction_ratio_db",
    "server_carver.insertion_loss_db", "server_carver.driver_gain",
    "server_iq.vpi_v", "server_iq.bias_vpi_v", "server_iq.extinction_ratio_db", "server_iq.insertion_loss_db",
    "server_iq.driver_gain", "server_iq.iq_gain_imbalance", "server_iq.iq_phase_error_rad",
    "server.tap_ratio", "server_attenuator.insertion_loss_db",
    "client_receiver.efficiency", "client_receiver.electronic_noise_snu",
    "server_receiver.efficiency", "server_receiver.electronic_noise_snu",
    "client_amplifier.noise_figure_db",
    "client_processor.beam_splitter_vpi_v", "client_processor.phase_vpi_v",
    "client_processor.beam_splitter_driver_gain", "client_processor.phase_driver_gain",
    "client_processor.loss_per_pass_db",
)


def perturbed(params: BenchParameters, fraction: float, seed: int,
              paths: tuple[str, ...] = SPREAD_PATHS) -> BenchParameters:
    """A bench like ``params`` with each of ``paths`` scaled by 1 + u, u uniform in [-fraction, fraction], drawn from
    ``seed`` (the same seed, the same bench); fractions (efficiencies, transmittances, taps) stay below 1 and a
    perturbed value that breaks a rule of the bench is one ValueError naming it. Why relative and uniform: real
    parts differ from their datasheets by a tolerance, not by a distribution anyone publishes."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction: expected a relative spread in [0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    changes = {}
    for path in paths:
        value = params.get(path)
        new = float(value) * (1.0 + fraction * float(rng.uniform(-1.0, 1.0)))
        if path.endswith(("efficiency", "transmittance")) or path == "server.tap_ratio":
            new = min(new, 0.999)
        changes[path] = new
    return params.replace(**changes)


def as_table(params: BenchParameters) -> dict[str, Any]:
    """``params`` as a nested ``[bench]`` table (what from_mapping reads back to the same parameters)."""
    return _nest(params.paths())
