"""The virtual bench's physical state: one object every emulator reads and changes (thread-safe).

It holds the hardware state that couples instruments (laser ports, attenuator, AWG outputs, bias
voltages, amplifier set-points) and computes the optical power chain from it:

    laser (set power + true offset, on/off) -> insertion loss -> pulse carver (MZM, AWG channel 3)
    -> IQ modulator (nested MZM, AWG channels 1/2) -> monitor tap (power meters)
    -> N7762A (attenuation - offset + insertion loss, shutter) -> fixed attenuators -> server output

The AWG's int8 samples scaled by each channel's amplitude and offset (V = offset + Vpp/2 x code/127,
0 V when stopped or the output is off) times the RF driver gain are the modulator drives, sample
by sample; averaging the output field over each symbol slot gives the complex symbol amplitude
alpha_k in sqrt(photons) at the server output (what a homodyne matched to a rect slot sees), and
averaging |field|^2 gives the average power the meters read. So photons per symbol = mean
|field|^2 slot energy / (h nu) = P_out lambda / (h c R_sym) (analysis.units), and mean |alpha|^2
is at most that (the difference is the light outside the symbol's temporal mode).

Randomness: ``rng(name)`` gives each consumer (emulator) its own Generator derived from the
bench seed and the consumer's name, so a seed reproduces each instrument's stream bit for bit
whatever the thread interleaving.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.units import db_to_linear, photon_energy_j, photons_per_symbol
from instruments.sim import modulators as mod
from instruments.sim.bench_parameters import BenchParameters
from instruments.sim.physics import LinkParameters

LASER_PORTS = 4
AWG_CHANNELS = 4
ATTENUATORS = 2            # N7762A: attenuator 1 = slots 1-2, attenuator 2 = slots 3-4
_CHUNK_SYMBOLS = 1 << 14   # symbols per chunk when evaluating long waveforms (bounded memory)
_MIN_POWER_W = 1e-30


# --- hardware state (what the instruments set) -------------------------------------------------

@dataclass
class LaserPortState:
    enabled: bool = False
    power_w: float = 1e-2          # set power (10 dBm)
    wavelength_m: float = 1550e-9


@dataclass
class AttenuatorState:
    attenuation_db: float = 0.0    # as displayed: filter attenuation + offset
    offset_db: float = 0.0
    shutter_open: bool = False
    wavelength_m: float = 1550e-9
    power_control: bool = False
    power_setpoint_w: float = 1e-4


@dataclass
class AwgChannelState:
    amplitude_vpp: float = 0.5
    offset_v: float = 0.0
    output_enabled: bool = False
    function_mode: str = "ARB"
    segments: dict[int, np.ndarray] = field(default_factory=dict)
    selected_segment: int = 1


@dataclass
class AwgState:
    sample_rate_hz: float = 64e9
    divider: int = 1
    running: bool = False
    channels: dict[int, AwgChannelState] = field(
        default_factory=lambda: {n: AwgChannelState() for n in range(1, AWG_CHANNELS + 1)})
    version: int = 0               # bumped on every change that can alter the drive waveforms

    @property
    def effective_sample_rate_hz(self) -> float:
        return self.sample_rate_hz / self.divider


@dataclass
class BiasState:
    applied_v: float = 0.0         # voltage the bias controller puts on the modulator's DC port


@dataclass
class AmplifierState:
    enabled: bool = False
    mode: str = "GAIN"
    gain_db: float = 1.1394        # G = 1.3 (the paper's operating point)
    power_setpoint_dbm: float = 0.0
    current_a: float = 0.1


@dataclass(frozen=True)
class Drive:
    """One modulator drive: V = offset_v + scale_v x code (AWG amplitude/offset times the RF driver gain)."""

    codes: np.ndarray | None       # int8 samples over one period; None: 0 V (stopped, output off)
    scale_v: float
    offset_v: float

    def volts(self, start: int = 0, stop: int | None = None):
        if self.codes is None:
            return 0.0
        return self.offset_v + self.scale_v * self.codes[start:stop].astype(np.float64)


@dataclass(frozen=True)
class Modulation:
    """One period of the server's modulated light, relative to 1 W at the carver input.

    symbol_fields: mean field per symbol slot (sqrt(W) per sqrt(W) in); powers: mean |field|^2.
    """

    symbol_fields: np.ndarray
    carver_power: float
    iq_power: float
    samples_per_symbol: int
    static: bool


# --- the bench ---------------------------------------------------------------------------------

class BenchState:
    """Hardware state + optical chain. Emulators mutate the state under ``lock``."""

    def __init__(self, params: BenchParameters | None = None):
        self.params = params if params is not None else BenchParameters()
        self.lock = threading.RLock()
        self.laser_ports = {n: LaserPortState() for n in range(1, LASER_PORTS + 1)}
        self.attenuators = {k: AttenuatorState() for k in range(1, ATTENUATORS + 1)}
        self.awg = AwgState()
        self.bias = {self.params.server_carver.bias_controller: BiasState(),
                     self.params.server_iq.bias_controller: BiasState()}
        self.amplifier = AmplifierState()
        self.last_capture: Any = None  # the digitizer's last CaptureRecord (ground truth for tests)
        self._modulation_key: tuple | None = None
        self._modulation: Modulation | None = None

    # -- randomness ---------------------------------------------------------------------------
    def rng(self, consumer: str) -> np.random.Generator:
        """A Generator for one consumer, from (seed, crc32(name)): independent of creation order."""
        sequence = np.random.SeedSequence(self.params.seed, spawn_key=(zlib.crc32(consumer.encode()),))
        return np.random.Generator(np.random.PCG64(sequence))

    # -- light source ---------------------------------------------------------------------------
    @property
    def server_laser(self) -> LaserPortState:
        return self.laser_ports[self.params.server_laser.port]

    def laser_power_w(self) -> float:
        """Power the server laser emits (0 when off): the set power plus its true offset."""
        with self.lock:
            port = self.server_laser
            if not port.enabled:
                return 0.0
            return port.power_w * float(db_to_linear(self.params.server_laser.power_offset_db))

    def wavelength_m(self) -> float:
        with self.lock:
            return self.server_laser.wavelength_m

    # -- attenuator ---------------------------------------------------------------------------
    @property
    def server_attenuator(self) -> AttenuatorState:
        return self.attenuators[(self.params.server_attenuator.slot + 1) // 2]

    def attenuator_filter_db(self, attenuator: AttenuatorState, input_power_w: float) -> float:
        """Filter attenuation: programmed (displayed minus offset) or, in power control, what
        holds the output at the set-point, within the filter's 0..45 dB."""
        if not attenuator.power_control:
            return attenuator.attenuation_db - attenuator.offset_db
        loss = self.params.server_attenuator.insertion_loss_db
        if input_power_w <= 0.0:
            return ATTENUATION_RANGE_DB[0]
        wanted = 10.0 * np.log10(input_power_w / attenuator.power_setpoint_w) - loss
        return float(np.clip(wanted, *ATTENUATION_RANGE_DB))

    # -- modulators ---------------------------------------------------------------------------
    def bias_voltage(self, controller: str) -> float:
        state = self.bias.get(controller)
        return 0.0 if state is None else state.applied_v

    def _drive_waveforms(self) -> tuple[list[Drive], int, bool]:
        """Drives of (carver, I, Q) over one AWG period, at the modulators; static when nothing plays.

        Kept as int8 codes with their scale (converted to volts chunk by chunk): a 64 MSa segment
        stays 64 MB instead of half a gigabyte of float64 per channel.
        """
        awg, p = self.awg, self.params
        rate = awg.effective_sample_rate_hz
        sps = max(1, int(round(rate / p.server.symbol_rate_hz)))
        channels = (p.server_carver.awg_channel, p.server_iq.awg_channel_i, p.server_iq.awg_channel_q)
        gains = (p.server_carver.driver_gain, p.server_iq.driver_gain, p.server_iq.driver_gain)
        drives: list[Drive] = []
        for channel, gain in zip(channels, gains):
            state = awg.channels[channel]
            codes = state.segments.get(state.selected_segment)
            if not (awg.running and state.output_enabled and state.function_mode == "ARB") or codes is None:
                drives.append(Drive(None, 0.0, 0.0))
                continue
            drives.append(Drive(codes, gain * 0.5 * state.amplitude_vpp / 127.0, gain * state.offset_v))
        lengths = [d.codes.size for d in drives if d.codes is not None]
        if not lengths:
            return drives, sps, True
        period = max(lengths)
        period = max(sps, period - period % sps)
        drives = [d if d.codes is None or d.codes.size == period else Drive(np.resize(d.codes, period), d.scale_v,
                                                                            d.offset_v) for d in drives]
        return drives, sps, False

    def modulation(self) -> Modulation:
        """The modulated field over one AWG period (cached until the AWG or a bias changes)."""
        with self.lock:
            key = (self.awg.version, self.awg.running, tuple(sorted((k, v.applied_v) for k, v in self.bias.items())),
                   self.params.server.symbol_rate_hz)
            if key == self._modulation_key and self._modulation is not None:
                return self._modulation
            drives, sps, static = self._drive_waveforms()
            carver_bias = self.bias_voltage(self.params.server_carver.bias_controller)
            iq_bias = self.bias_voltage(self.params.server_iq.bias_controller)
            result = _modulate(self.params, drives, sps, static, carver_bias, iq_bias)
            self._modulation_key, self._modulation = key, result
            return result

    def carver_output_power_w(self) -> float:
        with self.lock:
            return self._input_to_carver_w() * self.modulation().carver_power

    def modulator_output_power_w(self) -> float:
        """Average power after the IQ modulator (before the monitor tap)."""
        with self.lock:
            return self._input_to_carver_w() * self.modulation().iq_power

    def _input_to_carver_w(self) -> float:
        return self.laser_power_w() * float(db_to_linear(-self.params.server_laser.insertion_loss_db))

    # -- the server's output ------------------------------------------------------------------
    def tap_power_w(self) -> float:
        """What the monitor power meters receive."""
        with self.lock:
            return self.modulator_output_power_w() * self.params.server.tap_ratio

    def attenuator_input_power_w(self) -> float:
        with self.lock:
            return self.modulator_output_power_w() * (1.0 - self.params.server.tap_ratio)

    def attenuator_output_power_w(self) -> float:
        with self.lock:
            attenuator = self.server_attenuator
            if not attenuator.shutter_open:
                return 0.0
            p_in = self.attenuator_input_power_w()
            loss_db = self.attenuator_filter_db(attenuator, p_in) + self.params.server_attenuator.insertion_loss_db
            return p_in * float(db_to_linear(-loss_db))

    def output_transmission(self) -> float:
        """Power transmission from the IQ modulator's output to the server output (tap, VOA, fixed)."""
        with self.lock:
            p = self.params
            attenuator = self.server_attenuator
            if not attenuator.shutter_open:
                return 0.0
            loss_db = (self.attenuator_filter_db(attenuator, self.attenuator_input_power_w())
                       + p.server_attenuator.insertion_loss_db + p.server.fixed_attenuation_db)
            return (1.0 - p.server.tap_ratio) * float(db_to_linear(-loss_db))

    def output_power_w(self) -> float:
        """Average power at the server output (the reference plane of mu, DECISIONS G)."""
        with self.lock:
            return self.modulator_output_power_w() * self.output_transmission()

    def photons_per_symbol(self) -> float:
        """<n> = P_out lambda / (h c R_sym) (leakage_math.md 5.1)."""
        with self.lock:
            return float(photons_per_symbol(self.output_power_w(), self.params.server.symbol_rate_hz,
                                            self.wavelength_m()))

    def symbols(self) -> np.ndarray:
        """Complex amplitude per symbol over one AWG period, sqrt(photons) at the server output."""
        with self.lock:
            modulation = self.modulation()
            field_in = np.sqrt(self._input_to_carver_w())
            transmission = self.output_transmission()
            scale = field_in * np.sqrt(transmission / (photon_energy_j(self.wavelength_m())
                                                       * self.params.server.symbol_rate_hz))
            return scale * modulation.symbol_fields

    # -- client side -------------------------------------------------------------------------
    def amplifier_input_power_w(self) -> float:
        """Power into the client's amplifier: server output x forward fibre x one processor pass."""
        with self.lock:
            p = self.params
            return (self.output_power_w() * p.channel.forward_transmittance
                    * float(db_to_linear(-p.client_processor.loss_per_pass_db)))

    def amplifier_gain(self) -> float:
        """The amplifier's true linear power gain (1 when its output is off)."""
        with self.lock:
            amp, truth = self.amplifier, self.params.client_amplifier
            if not amp.enabled:
                return 1.0
            if amp.mode == "GAIN":
                gain_db = amp.gain_db + truth.gain_offset_db
            elif amp.mode == "CURR":
                gain_db = truth.gain_db_per_a * amp.current_a + truth.gain_offset_db
            else:  # POW: the loop sets whatever gain reaches the set-point (never below 1)
                p_in = self.amplifier_input_power_w()
                target = 1e-3 * 10.0 ** (amp.power_setpoint_dbm / 10.0)
                gain_db = 10.0 * np.log10(target / p_in) if p_in > 0 else 0.0
            return float(max(db_to_linear(gain_db), 1.0))

    def amplifier_noise_figure_db(self, gain: float) -> float | None:
        """The configured noise figure, raised to the quantum limit 10 log10((2G - 1)/G) if below it."""
        if gain <= 1.0:
            return None
        limit = 10.0 * np.log10((2.0 * gain - 1.0) / gain)
        return max(self.params.client_amplifier.noise_figure_db, limit + 1e-9)

    def link_parameters(self, mu_photons: float | None = None) -> LinkParameters:
        """The colleague's link model at the bench's current settings (electronic noise is added
        by the waveform renderer, so it is zero here)."""
        with self.lock:
            p = self.params
            gain = self.amplifier_gain()
            mu = self.photons_per_symbol() if mu_photons is None else mu_photons
            return LinkParameters(
                mu_photons=mu, gain=gain, amplifier_noise_figure_db=self.amplifier_noise_figure_db(gain),
                forward_transmittance=p.channel.forward_transmittance,
                return_transmittance=p.channel.return_transmittance,
                processor_loss_per_pass_db=p.client_processor.loss_per_pass_db,
                client_efficiency=p.client_receiver.efficiency, client_electronic_noise_snu=0.0,
                server_efficiency=p.server_receiver.efficiency, server_electronic_noise_snu=0.0)

    def lo_power_w(self, receiver: str) -> float:
        """LO power at a receiver ("client_receiver" or "server_receiver"): a fixed share of the laser."""
        with self.lock:
            return self.laser_power_w() * self.params.get(f"{receiver}.lo_transmittance")

    # -- ground truth by dotted path ------------------------------------------------------------
    LIVE = {
        "server.photons_per_symbol": "photons_per_symbol",
        "server.output_power_w": "output_power_w",
        "server.tap_power_w": "tap_power_w",
        "server.modulator_output_power_w": "modulator_output_power_w",
        "server.laser_power_w": "laser_power_w",
        "server.wavelength_m": "wavelength_m",
        "client_amplifier.gain": "amplifier_gain",
        "client_amplifier.input_power_w": "amplifier_input_power_w",
    }

    def truth(self, path: str) -> Any:
        """A true value by dotted path: live quantities (``server.photons_per_symbol``,
        ``client_amplifier.gain``, ``channel.transmittance``, ``<controller>.bias_v``) or a parameter."""
        with self.lock:
            if path in self.LIVE:
                return getattr(self, self.LIVE[path])()
            if path == "channel.transmittance":
                return self.link_parameters(mu_photons=0.0).round_trip_transmittance
            head, _, tail = path.partition(".")
            if tail == "bias_v" and head in self.bias:
                return self.bias[head].applied_v
            return self.params.get(path)

    def truth_paths(self) -> list[str]:
        """Every dotted path ``truth`` accepts."""
        live = list(self.LIVE) + ["channel.transmittance"] + [f"{name}.bias_v" for name in self.bias]
        return sorted(live + list(self.params.paths()))


# N7762A filter range (the driver reads it with INP:ATT? MIN|MAX; offset shifts it)
ATTENUATION_RANGE_DB = (0.0, 45.0)


def _modulate(params: BenchParameters, drives: list[Drive], sps: int, static: bool, carver_bias_v: float,
              iq_bias_v: float) -> Modulation:
    """Field after carver and IQ modulator per sample (relative to the carver input), in chunks."""
    c, q = params.server_carver, params.server_iq
    carver_il = np.sqrt(db_to_linear(-c.insertion_loss_db))
    iq_il = np.sqrt(db_to_linear(-q.insertion_loss_db))

    def fields(carver_v, i_v, q_v):
        carver = carver_il * mod.mzm_field(mod.arm_phase_rad(carver_v, carver_bias_v, c.vpi_v, c.bias_vpi_v,
                                                             c.bias_phase_rad), c.extinction_ratio_db)
        theta_i = mod.arm_phase_rad(i_v, iq_bias_v, q.vpi_v, q.bias_vpi_v, q.bias_phase_rad)
        theta_q = mod.arm_phase_rad(q_v, iq_bias_v, q.vpi_v, q.bias_vpi_v, q.bias_phase_rad)
        out = carver * iq_il * mod.iq_field(theta_i, theta_q, q.extinction_ratio_db, q.iq_gain_imbalance,
                                            q.iq_phase_error_rad)
        return carver, out

    if static:
        carver, out = fields(0.0, 0.0, 0.0)
        return Modulation(np.array([complex(out)]), float(abs(carver) ** 2), float(abs(out) ** 2), sps, True)
    period = next(d.codes.size for d in drives if d.codes is not None)
    n_symbols = period // sps
    symbol_fields = np.empty(n_symbols, dtype=np.complex128)
    carver_energy = iq_energy = 0.0
    step = _CHUNK_SYMBOLS * sps
    for start in range(0, n_symbols * sps, step):
        stop = min(start + step, n_symbols * sps)
        carver, out = fields(*(d.volts(start, stop) for d in drives))
        out = np.broadcast_to(out, (stop - start,))
        carver_energy += float(np.sum(np.abs(np.broadcast_to(carver, (stop - start,))) ** 2))
        iq_energy += float(np.sum(np.abs(out) ** 2))
        symbol_fields[start // sps:stop // sps] = out.reshape(-1, sps).mean(axis=1)
    samples = n_symbols * sps
    return Modulation(symbol_fields, carver_energy / samples, iq_energy / samples, sps, False)
