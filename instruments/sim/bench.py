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
|field|^2 slot energy / (h nu) = P_out lambda / (h c R_sym) (qslab.analysis.units), and mean |alpha|^2
is at most that (the difference is the light outside the symbol's temporal mode).

The client's time-bin processor is driven by its own AWG (``client_awg``, the M8195A named by
``client_processor.awg``; every other M8195A emulator plays into ``awg``, the server's): the
codes at the centre sample of each bin, through the processor's true transfer functions, give the
angles of its Givens chain and so the unit vector each row is projected onto (``processor_load``).
The server AWG's ``server_receiver.awg_channel`` gates the verification capture and picks X or P
per row (``verification_gate``).

Randomness: ``rng(name)`` gives each consumer (emulator) its own Generator derived from the
bench seed and the consumer's name, so a seed reproduces each instrument's stream bit for bit
whatever the thread interleaving.
"""

from __future__ import annotations

import hashlib
import math
import threading
import zlib
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qslab.analysis.givens import unit_vector_from_parts
from qslab.analysis.modulator_transfer import iq_field, mzm_field
from qslab.analysis.workers import one_thread
from qslab.analysis.units import db_to_linear, photon_energy_j, photons_per_symbol
from qslab.instruments.sim.bench_parameters import GATE_THRESHOLD_CODE, BenchParameters
from qslab.instruments.sim.clock import BenchClock
from qslab.instruments.sim.link.modulators import arm_phase_rad
from qslab.instruments.sim.link.model import LinkParameters

LASER_PORTS = 4
AWG_CHANNELS = 4
ATTENUATORS = 2            # N7762A: attenuator 1 = slots 1-2, attenuator 2 = slots 3-4
_CHUNK_SYMBOLS = 1 << 14   # symbols per chunk when evaluating long waveforms (bounded memory)
_MIN_POWER_W = 1e-30
MODULATION_CACHE_ENTRIES = 4  # server periods kept (e.g. the segments of every layer, switched by selection)


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
    segment_stamps: dict[int, int] = field(default_factory=dict)  # segment id -> data_version of its last write


@dataclass
class AwgState:
    sample_rate_hz: float = 64e9
    divider: int = 1
    running: bool = False
    channels: dict[int, AwgChannelState] = field(
        default_factory=lambda: {n: AwgChannelState() for n in range(1, AWG_CHANNELS + 1)})
    version: int = 0               # bumped on every change that can alter the drive waveforms
    data_version: int = 0          # bumped on every segment write (stamps segment_stamps)

    @property
    def effective_sample_rate_hz(self) -> float:
        return self.sample_rate_hz / self.divider

    def samples_per_symbol(self, symbol_rate_hz: float) -> int:
        return max(1, int(round(self.effective_sample_rate_hz / symbol_rate_hz)))

    def segment_written(self, channel: AwgChannelState, segment_id: int) -> None:
        """Record that a segment's samples changed (define, write, delete): what the caches key on."""
        self.data_version += 1
        channel.segment_stamps[segment_id] = self.data_version
        self.version += 1

    def playing_codes(self, number: int) -> np.ndarray | None:
        """The int8 samples channel ``number`` plays, or None (stopped, output off, not ARB, no segment)."""
        state = self.channels[number]
        codes = state.segments.get(state.selected_segment)
        if not (self.running and state.output_enabled and state.function_mode == "ARB") or codes is None:
            return None
        return codes

    def content_key(self, numbers) -> tuple[tuple, tuple]:
        """(key, arrays): what channels ``numbers`` play, by value except the samples, which are keyed by
        segment, write stamp and array identity (the arrays are returned so a cache can keep them alive,
        which keeps their ids unique). Selecting another segment changes the key; selecting back restores it."""
        key, arrays = [self.running, self.sample_rate_hz, self.divider], []
        for number in numbers:
            state = self.channels[number]
            codes = state.segments.get(state.selected_segment)
            arrays.append(codes)
            key.append((number, state.selected_segment, state.segment_stamps.get(state.selected_segment, 0),
                        id(codes), state.amplitude_vpp, state.offset_v, state.output_enabled, state.function_mode))
        return tuple(key), tuple(arrays)


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
    """One modulator drive: V = offset_v + scale_v x code (AWG amplitude/offset times the RF driver gain),
    arriving delay_samples late (the periodic waveform interpolated linearly between samples)."""

    codes: np.ndarray | None       # int8 samples over one period; None: 0 V (stopped, output off)
    scale_v: float
    offset_v: float
    delay_samples: float = 0.0

    def volts(self, start: int = 0, stop: int | None = None):
        if self.codes is None:
            return 0.0
        if not self.delay_samples:
            return self.offset_v + self.scale_v * self.codes[start:stop].astype(np.float64)
        period = self.codes.size
        whole = math.floor(self.delay_samples)
        fraction = self.delay_samples - whole
        index = (np.arange(start, period if stop is None else stop) - whole) % period
        codes = (1.0 - fraction) * self.codes[index] + fraction * self.codes[index - 1]  # index - 1 = -1 wraps
        return self.offset_v + self.scale_v * codes

    def volts_table(self) -> np.ndarray:
        """The volts ``volts`` gives for every value ``table_index`` can take, computed the same way: the
        256 codes, or with a delay the 65536 (code, previous code) pairs it interpolates between. Why: a
        drive's few distinct values make the modulator's field a table lookup instead of complex
        exponentials per sample (bit for bit the same fields: the same operations on the same values)."""
        if not self.delay_samples:
            return self.offset_v + self.scale_v * _ALL_CODES.astype(np.float64)
        fraction = self.delay_samples - math.floor(self.delay_samples)
        pairs = np.arange(1 << 16, dtype=np.uint16)
        current = (pairs >> 8).astype(np.uint8).view(np.int8)
        previous = (pairs & 0xFF).astype(np.uint8).view(np.int8)
        codes = (1.0 - fraction) * current + fraction * previous
        return self.offset_v + self.scale_v * codes

    def table_index(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Per sample of [start, stop), the index into ``volts_table`` (the codes as uint8, with a delay the
        pair (code, previous code) as uint16)."""
        codes = self.codes.view(np.uint8)
        if not self.delay_samples:
            return codes[start:stop]
        first = start - math.floor(self.delay_samples)
        last = first + (codes.size if stop is None else stop) - start
        pair = _circular(codes, first, last).astype(np.uint16)
        pair <<= 8
        pair |= _circular(codes, first - 1, last - 1)  # the previous sample, wrapping round the period as in volts
        return pair


def _circular(values: np.ndarray, first: int, last: int) -> np.ndarray:
    """values[k % period] for k in [first, last), at most one period: one slice, or two joined at the wrap."""
    period = values.size
    begin = first % period
    end = begin + last - first
    return values[begin:end] if end <= period else np.concatenate([values[begin:], values[:end - period]])


_ALL_CODES = np.arange(256, dtype=np.uint8).view(np.int8)  # every int8 code, in the order of its uint8 view
_INT8_CODES = np.arange(-128, 128, dtype=np.float64)  # every int8 code's value, at index code + 128


@dataclass(frozen=True)
class ProcessorLoad:
    """What the client's AWG programs into the time-bin processor, through its true transfer functions.

    theta_rad, phi_rad: the chain's angles per time bin over the client's segment [bins];
    x_hat: the unit vectors the chain projects onto, one per row of bins_per_row bins [images, N]
    (None when the segment is not a whole number of rows: ``problem`` says why).
    x_hat_sha256: SHA-256 over x_hat's bytes, where a session acquisition's noise seed starts
    (link/receivers._session_rng): hashed when the load is evaluated, off the trigger's path (~0.5 ms a batch's).
    """

    theta_rad: np.ndarray
    phi_rad: np.ndarray
    bins_per_row: int
    x_hat: np.ndarray | None
    problem: str | None = None
    x_hat_sha256: Any = None

    @property
    def bins(self) -> int:
        return self.theta_rad.size


def _evaluate_processor(codes: list[np.ndarray], sps: int, levels: list[tuple[float, float]],
                        c) -> ProcessorLoad:
    """The chain the processor's two channels program (codes per channel, AWG samples per symbol, each channel's
    (offset V, amplitude Vpp), the processor's true parameters): from these arguments alone, so it runs off the
    bench's lock."""
    bins = max(code.size for code in codes) // sps
    centre = np.arange(bins) * sps + sps // 2
    # per bin, the index of its code among the 256 int8 codes: every angle below is one of 256 per channel, so
    # each function of one is evaluated on the 256 and looked up (the same operations on the same numbers)
    index = [(code[sps // 2:bins * sps:sps] if code.size >= bins * sps else code[centre % code.size]).astype(np.intp)
             + 128 for code in codes]  # (a channel shorter than the other plays its samples again: wrapped)
    volts = [offset_v + 0.5 * amplitude_vpp / 127.0 * _INT8_CODES for offset_v, amplitude_vpp in levels]
    theta = (np.pi * c.beam_splitter_driver_gain * volts[0] / (2.0 * c.beam_splitter_vpi_v)
             + c.beam_splitter_theta_offset_rad)
    phi = np.pi * c.phase_driver_gain * volts[1] / c.phase_vpi_v
    theta_bins, phi_bins = theta[index[0]], phi[index[1]]
    n = c.bins_per_row
    if bins == 0 or bins % n:
        problem = (f"the client's processor segment holds {bins} time bins, not a whole number of {n}-bin rows "
                   "(bench.client_processor.bins_per_row)")
        return ProcessorLoad(theta_bins, phi_bins, n, None, problem)
    try:
        sin_theta, cos_theta, phase = np.sin(theta)[index[0]], np.cos(theta)[index[0]], np.exp(-1j * phi)[index[1]]
        x_hat = unit_vector_from_parts(sin_theta.reshape(-1, n), cos_theta.reshape(-1, n), phase.reshape(-1, n))
    except ValueError as error:
        return ProcessorLoad(theta_bins, phi_bins, n, None, f"the client's processor drive: {error}")
    return ProcessorLoad(theta_bins, phi_bins, n, x_hat, x_hat_sha256=hashlib.sha256(np.ascontiguousarray(x_hat)))


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
        self.clock = BenchClock(self.params.time_scale)
        self.laser_ports = {n: LaserPortState() for n in range(1, LASER_PORTS + 1)}
        self.attenuators = {k: AttenuatorState() for k in range(1, ATTENUATORS + 1)}
        self.awg = AwgState()          # the server's AWG (modulators, verification gate)
        self.client_awg = AwgState()   # the client's AWG (time-bin processor)
        self.bias = {self.params.server_carver.bias_controller: BiasState(),
                     self.params.server_iq.bias_controller: BiasState()}
        self.amplifier = AmplifierState()
        self.last_capture: Any = None  # the digitizer's last CaptureRecord (ground truth for tests)
        self.session_repeats: dict[bytes, int] = {}  # session-mode acquisitions per played state (receivers)
        self.attack: Any = None        # a cheating client (qslab.instruments.sim.faults_attacks.attacks.Attack), armed by set_attack
        self.curious_server: Any = None  # a photon-counting server (faults_attacks/curious_server.py), armed by set_curious_server
        self._modulations: OrderedDict[tuple, tuple[tuple, Modulation]] = OrderedDict()
        self._processor: tuple[tuple, tuple, ProcessorLoad] | None = None
        self._processor_ahead: tuple[tuple, tuple, Future] | None = None  # (key, arrays, its evaluation on the worker)
        self._symbols: OrderedDict[tuple[int, float], tuple[Modulation, np.ndarray]] = OrderedDict()

    def awg_state(self, name: str) -> AwgState:
        """The AWG an M8195A emulator named ``name`` plays into: the client's (client_processor.awg) or the server's."""
        return self.client_awg if name == self.params.client_processor.awg else self.awg

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
            from qslab.instruments.sim.faults_attacks import faults  # the power-drop fault hook (here to keep the change to this method)
            offset_db = self.params.server_laser.power_offset_db - faults.power_drop_db(self)
            return port.power_w * float(db_to_linear(offset_db))

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
        sps = awg.samples_per_symbol(p.server.symbol_rate_hz)
        gains = (p.server_carver.driver_gain, p.server_iq.driver_gain, p.server_iq.driver_gain)
        drives: list[Drive] = []
        for channel, gain in zip(self._modulator_channels(), gains):
            state = awg.channels[channel]
            codes = awg.playing_codes(channel)
            if codes is None:
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
        q = drives[2]
        if q.codes is not None and p.server_iq.iq_skew_s:
            drives[2] = Drive(q.codes, q.scale_v, q.offset_v, p.server_iq.iq_skew_s * awg.effective_sample_rate_hz)
        return drives, sps, False

    def _modulator_channels(self) -> tuple[int, int, int]:
        p = self.params
        return p.server_carver.awg_channel, p.server_iq.awg_channel_i, p.server_iq.awg_channel_q

    def modulation(self) -> Modulation:
        """The modulated field over one AWG period.

        Cached by what the modulator channels play and the bias voltages (MODULATION_CACHE_ENTRIES
        entries, least recently used out), so that switching between uploaded segments (one per
        layer) or re-uploading another channel (the verification gate) costs nothing.
        """
        with self.lock:
            awg_key, arrays = self.awg.content_key(self._modulator_channels())
            key = (awg_key, tuple(sorted((k, v.applied_v) for k, v in self.bias.items())),
                   self.params.server.symbol_rate_hz)
            cached = self._modulations.get(key)
            if cached is not None:
                self._modulations.move_to_end(key)
                return cached[1]
            drives, sps, static = self._drive_waveforms()
            carver_bias = self.bias_voltage(self.params.server_carver.bias_controller)
            iq_bias = self.bias_voltage(self.params.server_iq.bias_controller)
            result = _modulate(self.params, drives, sps, static, carver_bias, iq_bias)
            self._modulations[key] = (arrays, result)
            while len(self._modulations) > MODULATION_CACHE_ENTRIES:
                self._modulations.popitem(last=False)
            return result

    def carver_input_power_w(self) -> float:
        """Light into the pulse carver (the laser through its fibre)."""
        with self.lock:
            return self._input_to_carver_w()

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
        """<n> = P_out lambda / (h c R_sym) (docs/PHYSICS.md 16)."""
        with self.lock:
            return float(photons_per_symbol(self.output_power_w(), self.params.server.symbol_rate_hz,
                                            self.wavelength_m()))

    def symbols(self) -> np.ndarray:
        """Complex amplitude per symbol over one AWG period, sqrt(photons) at the server output.

        Read-only, and the same array whenever the modulation and the power chain are one of the last
        MODULATION_CACHE_ENTRIES seen (so a consumer can key what it derives from them on the array: receivers'
        prepared layer, which a session's layers, each at its own attenuation, would otherwise rebuild on
        every switch).
        """
        with self.lock:
            modulation = self.modulation()
            field_in = np.sqrt(self._input_to_carver_w())
            transmission = self.output_transmission()
            scale = field_in * np.sqrt(transmission / (photon_energy_j(self.wavelength_m())
                                                       * self.params.server.symbol_rate_hz))
            key = (id(modulation), scale)  # the value keeps the modulation alive, so its id stays unique
            cached = self._symbols.get(key)
            if cached is not None:
                self._symbols.move_to_end(key)
                return cached[1]
            symbols = scale * modulation.symbol_fields
            symbols.flags.writeable = False
            self._symbols[key] = (modulation, symbols)
            while len(self._symbols) > MODULATION_CACHE_ENTRIES:
                self._symbols.popitem(last=False)
            return symbols

    # -- the server's verification gate ---------------------------------------------------------
    def verification_gate(self, rows: int, symbols_per_row: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(verified row indices, measure_p per verified row) from the server AWG's gate channel, or None
        when that channel plays nothing. Row r's gate is the code at the centre sample of its first
        symbol: > +GATE_THRESHOLD_CODE X, < -GATE_THRESHOLD_CODE P, otherwise not captured."""
        with self.lock:
            codes = self.awg.playing_codes(self.params.server_receiver.awg_channel)
            if codes is None:
                return None
            sps = self.awg.samples_per_symbol(self.params.server.symbol_rate_hz)
            centre = (np.arange(rows) * (symbols_per_row * sps) + sps // 2) % codes.size
            gate = codes[centre].astype(np.int16)
            captured = np.abs(gate) > GATE_THRESHOLD_CODE
            return np.flatnonzero(captured), gate[captured] < 0

    # -- client side -------------------------------------------------------------------------
    def set_attack(self, attack) -> None:
        """Arm a cheating client (an attacks.Attack or a spec such as "tap=0.05"); None disarms it.

        Every later acquisition returns attacked light and a gain attack sets the amplifier's true gain
        (instruments/sim/faults_attacks/attacks.py). Arm it after the calibrations and the channel record to model a
        client that cheats during inference only; armed before, the server calibrates the cheat in.
        """
        from qslab.instruments.sim.faults_attacks.attacks import parse_attack  # bench.py stays importable without the attack module

        attack = parse_attack(attack) if isinstance(attack, str) else attack
        with self.lock:
            self.attack = attack

    def set_curious_server(self, server) -> None:
        """Arm a curious server (faults_attacks.curious_server.CuriousServer) that counts the returned light of every
        later session acquisition of its layer; None disarms it. Nothing else the bench draws changes."""
        with self.lock:
            self.curious_server = server

    def processor_load(self) -> ProcessorLoad | None:
        """The client's programmed chain, or None while its AWG does not play both processor channels.

        Cached by what those channels hold (one evaluation per uploaded batch of images), and evaluated ahead, on the
        bench's worker, as soon as a message has loaded their samples (samples_loaded): the acquisition that plays
        them finds it done.
        """
        with self.lock:
            numbers = self._processor_channels()
            if any(self.client_awg.playing_codes(n) is None for n in numbers):
                return None
            key, arrays, inputs = self._processor_inputs(numbers)
            if self._processor is None or self._processor[0] != key:
                ahead = self._processor_ahead  # (its worker never takes the lock: waiting for it here is safe)
                load = ahead[2].result() if ahead is not None and ahead[0] == key else _evaluate_processor(*inputs)
                self._processor = (key, arrays, load)
            return self._processor[2]

    def samples_loaded(self, awg: AwgState) -> None:
        """An AWG message has changed samples (emulators.base.LoadsAwgSamples): for the client's AWG, the processor's
        chain is evaluated from them now on the bench's worker. The emulator's own arithmetic (~2 ms a batch), which
        the next acquisition would otherwise do after its trigger; a real processor needs none."""
        if awg is not self.client_awg:
            return
        with self.lock:
            key, arrays, inputs = self._processor_inputs(self._processor_channels())
            if inputs is not None and (self._processor is None or self._processor[0] != key):
                evaluation = one_thread("bench-processor").submit(_evaluate_processor, *inputs)
                self._processor_ahead = (key, arrays, evaluation)

    def _processor_channels(self) -> tuple[int, int]:
        c = self.params.client_processor
        return c.awg_channel_beam_splitter, c.awg_channel_phase

    def _processor_inputs(self, numbers: tuple[int, int]) -> tuple[tuple, tuple, tuple | None]:
        """(key, arrays, _evaluate_processor's arguments, or None while a channel holds no samples) for what the
        processor's channels hold, played or not: content_key's key without the run state. A later write into the
        same samples changes the key (their write stamp), so an evaluation of samples being written is never used."""
        awg, c = self.client_awg, self.params.client_processor
        key, arrays = awg.content_key(numbers)
        key = (key[1:], c, self.params.server.symbol_rate_hz)
        channels = [awg.channels[n] for n in numbers]
        codes = [channel.segments.get(channel.selected_segment) for channel in channels]
        if any(code is None for code in codes):
            return key, arrays, None
        levels = [(channel.offset_v, channel.amplitude_vpp) for channel in channels]
        return key, arrays, (codes, awg.samples_per_symbol(self.params.server.symbol_rate_hz), levels, c)

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
            gain = float(max(db_to_linear(gain_db), 1.0))
            return gain if self.attack is None else float(self.attack.amplifier_gain(gain))

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
    """Field after carver and IQ modulator per sample (relative to the carver input), in chunks.

    Each modulator's terms are evaluated once per value its drive takes (_field_lookup: bit for bit the fields of
    ``sample_fields``), and looked up once per run of samples whose drive values all repeat within a symbol: a
    drive uploaded as codes repeated over each symbol's samples has one or two runs per symbol instead of S
    samples. The sums weigh each run by its length."""
    if static:
        carver, out = sample_fields(params, carver_bias_v, iq_bias_v, 0.0, 0.0, 0.0)
        return Modulation(np.array([complex(out)]), float(abs(carver) ** 2), float(abs(out) ** 2), sps, True)
    period = next(d.codes.size for d in drives if d.codes is not None)
    n_symbols = period // sps
    symbol_fields = np.empty(n_symbols, dtype=np.complex128)
    carver_energy = iq_energy = 0.0
    step = _CHUNK_SYMBOLS * sps
    looked_up = _field_lookup(params, drives, carver_bias_v, iq_bias_v)
    for start in range(0, n_symbols * sps, step):
        stop = min(start + step, n_symbols * sps)
        indices = [None if d.codes is None else d.table_index(start, stop) for d in drives]
        first = np.zeros(stop - start, dtype=bool)  # where a run starts: a symbol's first sample or a new value
        first[::sps] = True
        for index in indices:
            if index is not None:
                first[1:] |= index[1:] != index[:-1]
        starts = np.flatnonzero(first)
        lengths = np.diff(starts, append=stop - start).astype(np.float64)
        carver_power, out = looked_up(*(None if index is None else index[starts] for index in indices))
        out = np.broadcast_to(out, starts.shape)
        carver_energy += float(np.broadcast_to(carver_power, starts.shape) @ lengths)
        iq_energy += float((np.abs(out) ** 2) @ lengths)
        symbol_fields[start // sps:stop // sps] = np.add.reduceat(out * lengths, np.flatnonzero(starts % sps == 0)) / sps
    samples = n_symbols * sps
    return Modulation(symbol_fields, carver_energy / samples, iq_energy / samples, sps, False)


def sample_fields(params: BenchParameters, carver_bias_v: float, iq_bias_v: float, carver_v, i_v, q_v):
    """(carver field, output field) at the given drive volts (relative to the carver input): the model written out
    per sample, which _field_lookup evaluates once per drive value instead."""
    c, q = params.server_carver, params.server_iq
    carver = np.sqrt(db_to_linear(-c.insertion_loss_db)) * mzm_field(
        arm_phase_rad(carver_v, carver_bias_v, c.vpi_v, c.bias_vpi_v, c.bias_phase_rad), c.extinction_ratio_db)
    theta_i = arm_phase_rad(i_v, iq_bias_v, q.vpi_v, q.bias_vpi_v, q.bias_phase_rad)
    theta_q = arm_phase_rad(q_v, iq_bias_v, q.vpi_v, q.bias_vpi_v, q.bias_phase_rad + q.q_bias_phase_offset_rad)
    out = carver * np.sqrt(db_to_linear(-q.insertion_loss_db)) * iq_field(
        theta_i, theta_q, q.extinction_ratio_db, q.iq_gain_imbalance, q.iq_phase_error_rad)
    return carver, out


def _field_lookup(params: BenchParameters, drives: list[Drive], carver_bias_v: float, iq_bias_v: float):
    """``(carver index, I index, Q index) -> (|carver field|^2, output field)``: each modulator's terms evaluated
    once per value its drive takes (Drive.volts_table; a channel that plays nothing is 0 V and its index None),
    then looked up at the given ``Drive.table_index`` values (one per sample, or per run of equal samples).

    Bit for bit ``sample_fields`` at those values: the same operations on the same values, in the same
    order, with the final complex product computed in place in the same operand's buffer as there (numpy
    writes a product of temporaries over one of them, and its complex multiply rounds differently then)."""
    c, q = params.server_carver, params.server_iq
    carver_il = np.sqrt(db_to_linear(-c.insertion_loss_db))
    iq_il = np.sqrt(db_to_linear(-q.insertion_loss_db))
    carver_v, i_v, q_v = (0.0 if d.codes is None else d.volts_table() for d in drives)
    carver = carver_il * mzm_field(arm_phase_rad(carver_v, carver_bias_v, c.vpi_v, c.bias_vpi_v, c.bias_phase_rad),
                                   c.extinction_ratio_db)
    t_i = mzm_field(arm_phase_rad(i_v, iq_bias_v, q.vpi_v, q.bias_vpi_v, q.bias_phase_rad), q.extinction_ratio_db)
    t_q = mzm_field(arm_phase_rad(q_v, iq_bias_v, q.vpi_v, q.bias_vpi_v, q.bias_phase_rad + q.q_bias_phase_offset_rad),
                    q.extinction_ratio_db)
    parent = np.exp(1j * (0.5 * np.pi + q.iq_phase_error_rad))  # iq_field = 0.5 (a t_I + parent b t_Q)
    carver_term, i_term = carver * iq_il, (1.0 + 0.5 * q.iq_gain_imbalance) * t_i
    q_term = parent * (1.0 - 0.5 * q.iq_gain_imbalance) * t_q
    carver_power = np.abs(carver) ** 2

    def at(terms: np.ndarray, index: np.ndarray | None):
        return terms if index is None else terms[index]

    def lookup(carver_index, i_index, q_index) -> tuple[np.ndarray | float, np.ndarray]:
        iq = 0.5 * (at(i_term, i_index) + at(q_term, q_index))
        if carver_index is None:  # a constant carver: as fields() has it, a scalar times the IQ field
            return float(carver_power), carver_term * iq
        return carver_power[carver_index], carver_term[carver_index] * iq

    return lookup
