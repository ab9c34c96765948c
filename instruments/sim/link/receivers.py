"""One digitizer acquisition of the two homodyne receivers, from the bench state.

Single-symbol acquisitions (calibrations): the captured symbols (the AWG period repeated from its
first symbol: the scope is triggered by the AWG's segment start) go through the colleague's link
model, ``physics.secure_products`` with one mode per row and the client's processor passing each
time bin straight to the amplifier (x_hat = 1): row k's client outcome is the client receiver's
quadrature X_k (channel 1), and the server verifies every row, so row k's returned quadrature is
the server receiver's (channel 2): X or P drawn per symbol as in DECISIONS J and recorded here,
unless the server AWG plays its verification gate, which then picks X or P per symbol and blanks
(vacuum) the symbols it does not capture.

Session acquisitions (secure inference through the instruments, see instruments/sim/README.md):
while the client's AWG plays its processor's segment and the server's AWG period is a whole number
R of rows of N = client_processor.bins_per_row symbols, one acquisition is the secure products of
that layer for the B images of the processor's segment: ``secure_products(symbols [R, N], x_hat
[B, N], rows=gated rows, measure_p=gated quadratures)``. Channel 1 carries the B R client outcomes
in (image, row) order and channel 2 the B v N returned quadratures of the v gated rows in (image,
verified row, mode) order, one symbol slot each from the record's start, then vacuum up to
:ACQ:POIN (a shorter record cuts them off: ``session_points`` is what holds everything).

``waveform.digitized_words`` turns each quadrature sequence into detector volts (shot noise per sample from the
LO power, electronic noise, detector and scope bandwidth), then the ADC quantises: in both kinds of acquisition,
one seeded stream per receiver, the two receivers rendered on two cores. The detectors are
DC-coupled and not perfectly balanced: each record sits on the DC level of ``dc_level_v`` (the
electronics' offset plus the LO's unbalanced share, set by the receiver's common-mode rejection),
and the laser's intensity noise leaks through the same imbalance (``rin_residual_rms_v``, white
before the detector's filter like the electronic noise, so it is rendered with it). Without LO
(laser off) both receivers output electronic noise on the electronics' offset only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qslab.analysis.blas_threads import one_blas_thread
from qslab.analysis.encoding import mean_power
from qslab.analysis.units import photon_energy_j
from qslab.analysis.workers import one_thread
from qslab.instruments.sim.faults_attacks import faults
from qslab.instruments.sim.link import waveform as wf
from qslab.instruments.sim.link.model import LinkParameters, SecureLayer, VerificationRecord, secure_products

RECEIVERS = ("client_receiver", "server_receiver")
WORD_BITS = 16


class SessionError(ValueError):
    """Settings that make a session acquisition impossible (the digitizer reports -221 and records nothing)."""


@dataclass(frozen=True)
class ChannelSetup:
    """A digitizer channel's vertical settings: full range (8 divisions) and centre offset, volts."""

    range_v: float
    offset_v: float


@dataclass(frozen=True)
class ChannelRecord:
    """One channel of one acquisition: left-aligned 16-bit words and their scale."""

    words: np.ndarray          # int16, ADC code x 2^(16 - bits) (averaging fills the low bits)
    y_increment_v: float
    y_origin_v: float
    clipped_samples: int
    config: wf.WaveformConfig | None  # the renderer's settings (None for an unconnected channel)

    @property
    def volts(self) -> np.ndarray:
        return self.words * self.y_increment_v + self.y_origin_v


def session_points(client_symbols: int, server_symbols: int, samples_per_symbol: int) -> int:
    """:ACQ:POIN that holds every outcome of a session acquisition, plus one slot for the filter's delay."""
    return (max(int(client_symbols), int(server_symbols), 1) + 1) * int(samples_per_symbol)


@dataclass(frozen=True)
class SessionTruth:
    """Ground truth of one session acquisition: the layer, the images, the server's choices and the outcomes."""

    images: int                            # B: the client's segment holds B rows of bins_per_row bins
    rows: int                              # R: the server's period holds R rows of bins_per_row symbols
    bins_per_row: int                      # N
    x_hat: np.ndarray                      # [B, N] what the processor projects onto (its true drive)
    sent_symbols: np.ndarray               # [R, N] alpha at the server output, sqrt(photons)
    verified_rows: np.ndarray              # [v] the rows the gate captured
    measure_p: np.ndarray                  # [v] the gate's quadrature per verified row (True = P), every image
    client_quadratures_snu: np.ndarray     # [B, R] on channel 1 in this order (empty when the laser is off)
    returned_quadratures_snu: np.ndarray   # [B, v, N] on channel 2 in this order (empty when the laser is off)
    verification: VerificationRecord | None
    link: LinkParameters | None
    samples_per_symbol: int

    @property
    def client_symbols(self) -> int:
        return self.images * self.rows

    @property
    def server_symbols(self) -> int:
        return self.images * self.verified_rows.size * self.bins_per_row

    @property
    def points_required(self) -> int:
        return session_points(self.client_symbols, self.server_symbols, self.samples_per_symbol)


@dataclass(frozen=True)
class CaptureRecord:
    """Ground truth of the last acquisition (what the tests and calibration checks compare with)."""

    sample_rate_hz: float
    samples_per_symbol: int
    points: int
    laser_on: bool
    sent_symbols: np.ndarray               # alpha_k at the server output, sqrt(photons), captured order
    client_quadratures_snu: np.ndarray     # per average x symbol slot of channel 1 (empty when the laser is off)
    server_quadratures_snu: np.ndarray     # per average x symbol slot of channel 2
    server_measure_p: np.ndarray           # True where the server receiver measured P
    link: LinkParameters | None
    channels: dict[int, ChannelRecord]
    session: SessionTruth | None = None    # set for a session acquisition
    error: str | None = None               # why nothing was recorded (the digitizer's -221 text)


def shot_noise_rms_v(lo_power_w: float, gain_v_per_w: float, efficiency: float, sample_rate_hz: float,
                     wavelength_m: float) -> float:
    """Vacuum rms per sample: gain sqrt(P_LO h nu f_s / eta) (shot noise 2 e I B with B = f_s/2)."""
    return gain_v_per_w * float(np.sqrt(lo_power_w * photon_energy_j(wavelength_m) * sample_rate_hz / efficiency))


def electronic_noise_rms_v(receiver, sample_rate_hz: float, wavelength_m: float) -> float:
    """Fixed input-referred electronic noise per sample, from its SNU value at the reference LO."""
    reference = shot_noise_rms_v(receiver.reference_lo_power_w, receiver.gain_v_per_w, receiver.efficiency,
                                 sample_rate_hz, wavelength_m)
    return float(np.sqrt(receiver.electronic_noise_snu)) * reference


def imbalance(receiver) -> float:
    """(G+ - G-)/G+ = 10^(-CMRR/20): the share of one diode's LO signal the difference output keeps."""
    return float(10.0 ** (-receiver.common_mode_rejection_db / 20.0))


def dc_level_v(receiver, lo_power_w: float) -> float:
    """The detector's DC output: offset + sign G (P_LO/2) 10^(-CMRR/20) (each diode sees half the LO)."""
    return receiver.output_offset_v + receiver.imbalance_sign * receiver.gain_v_per_w * 0.5 * lo_power_w * imbalance(
        receiver)


def rin_residual_rms_v(receiver, lo_power_w: float, rin_db_per_hz: float, sample_rate_hz: float) -> float:
    """Per-sample rms of the LO's intensity noise left by the imbalance: G eps (P_LO/2) sqrt(RIN f_s/2)
    (one-sided RIN over the sampled band, like the shot noise's 2 e I B): a variance in P_LO^2."""
    return (receiver.gain_v_per_w * imbalance(receiver) * 0.5 * lo_power_w
            * float(np.sqrt(10.0 ** (rin_db_per_hz / 10.0) * 0.5 * sample_rate_hz)))


def waveform_config(receiver, *, lo_power_w: float, samples_per_symbol: int, symbol_rate_hz: float,
                    scope_bandwidth_hz: float, adc_bits: int, range_v: float, wavelength_m: float,
                    rin_db_per_hz: float = -math.inf) -> wf.WaveformConfig:
    """The renderer's settings for one receiver; with no LO, shot_noise_rms_v carries the electronic noise.

    The LO's residual intensity noise is white before the detector's filter and independent of the
    shot noise, as the electronic noise is: it is rendered as part of electronic_noise_snu (not part
    of the SNU the DSP's calibration finds with the LO off, but of its k2 term)."""
    sample_rate = samples_per_symbol * symbol_rate_hz
    bandwidth = min(receiver.bandwidth_hz, scope_bandwidth_hz, 0.45 * sample_rate)
    electronic_v = electronic_noise_rms_v(receiver, sample_rate, wavelength_m)
    if lo_power_w > 0.0:
        shot_v = shot_noise_rms_v(lo_power_w, receiver.gain_v_per_w, receiver.efficiency, sample_rate, wavelength_m)
        rin_v = rin_residual_rms_v(receiver, lo_power_w, rin_db_per_hz, sample_rate) if math.isfinite(
            rin_db_per_hz) else 0.0
        noise_snu, scale_v = (electronic_v**2 + rin_v**2) / shot_v**2, shot_v
    else:
        noise_snu, scale_v = 1.0, max(electronic_v, 1e-30)
    return wf.WaveformConfig(samples_per_symbol=samples_per_symbol, symbol_rate_hz=symbol_rate_hz,
                             pulse_shape="rect", detector_bandwidth_hz=bandwidth,
                             filter_order=receiver.filter_order, electronic_noise_snu=noise_snu,
                             shot_noise_rms_v=scale_v, adc_bits=adc_bits, adc_full_scale_v=0.5 * range_v)


WordsBuffer = Callable[[int, int], np.ndarray]  # (digitizer channel, points) -> int16 [points] to render into


def acquire(bench, *, points: int, sample_rate_hz: float, scope_bandwidth_hz: float,
            channels: dict[int, ChannelSetup], rng: np.random.Generator, averages: int = 1,
            words_buffer: WordsBuffer | None = None) -> CaptureRecord:
    """Render one (averaged) acquisition of every channel; unconnected channels read 0 V.

    ``words_buffer``: where a session acquisition renders each receiver's int16 words (the digitizer's reply
    buffer: the words are not copied again on their way out); by default new arrays.

    A session acquisition (see the module docstring) is single-shot: averaging raises SessionError,
    as do a client segment that is not a whole number of rows and a processor drive that projects
    onto nothing.

    BLAS runs on one thread meanwhile, in the whole process: a threaded OpenBLAS splits some products' sums
    (qslab.analysis.blas_threads), so the record would depend on the bench process's core count and settings,
    and an embedded bench (inside the session's one-thread window) would read other bits than a served one.
    """
    with one_blas_thread():
        return _acquire(bench, points=points, sample_rate_hz=sample_rate_hz, scope_bandwidth_hz=scope_bandwidth_hz,
                        channels=channels, rng=rng, averages=averages, words_buffer=words_buffer)


def _acquire(bench, *, points: int, sample_rate_hz: float, scope_bandwidth_hz: float,
             channels: dict[int, ChannelSetup], rng: np.random.Generator, averages: int,
             words_buffer: WordsBuffer | None) -> CaptureRecord:
    params = bench.params
    symbol_rate = params.server.symbol_rate_hz
    sps = max(1, int(round(sample_rate_hz / symbol_rate)))
    with bench.lock:
        laser_on = bench.laser_power_w() > 0.0
        period = bench.symbols()
        wavelength = bench.wavelength_m()
        lo = {name: bench.lo_power_w(name) for name in RECEIVERS}
        session = _session_inputs(bench, period)
        gate = None if session is not None else bench.verification_gate(period.size, 1)
        link = bench.link_parameters(mu_photons=_mean_photons(period)) if laser_on else None
        attack = bench.attack if bench.attack is not None and bench.attack.acts_on_returned_light else None
    bits = params.digitizer.adc_bits
    configs, dc_v = {}, {}
    for name in RECEIVERS:
        receiver = params.get(name)
        setup = channels.get(receiver.digitizer_channel, ChannelSetup(1.0, 0.0))
        configs[name] = waveform_config(receiver, lo_power_w=lo[name], samples_per_symbol=sps,
                                        symbol_rate_hz=symbol_rate, scope_bandwidth_hz=scope_bandwidth_hz,
                                        adc_bits=bits, range_v=setup.range_v, wavelength_m=wavelength,
                                        rin_db_per_hz=params.server_laser.relative_intensity_noise_db_per_hz)
        dc_v[name] = dc_level_v(receiver, lo[name])
    if session is not None:
        if averages > 1:
            raise SessionError(f"averaging is on ({averages} acquisitions): a session acquisition is single-shot, "
                               "every slot a different measurement (switch :ACQ:AVER off)")
        return _acquire_session(bench, session, link, configs, dc_v, points=points, sps=sps, channels=channels,
                                rng=_session_rng(bench, session, points), laser_on=laser_on, attack=attack,
                                words_buffer=words_buffer)
    return _acquire_symbols(bench, period, gate, link, configs, dc_v, points=points, sps=sps, channels=channels,
                            rng=rng, averages=averages, laser_on=laser_on, attack=attack)


def _acquire_symbols(bench, period, gate, link, configs, dc_v, *, points, sps, channels, rng, averages, laser_on,
                     attack=None):
    """One mode per row, x_hat = 1 (calibrations): the module docstring's single-symbol acquisition."""
    params = bench.params
    n_symbols = -(-points // sps)
    sent = period[np.arange(n_symbols) % period.size]
    gated = None
    if gate is not None:  # the gate's choice per captured symbol (period symbol k % P)
        captured = np.zeros(period.size, dtype=bool)
        captured[gate[0]] = True
        choice = np.zeros(period.size, dtype=bool)
        choice[gate[0]] = gate[1]
        index = np.arange(n_symbols) % period.size
        gated = (np.flatnonzero(captured[index]), choice[index])
    bits = params.digitizer.adc_bits
    client_q, server_q, measure_p = [], [], []
    count = max(1, averages)
    codes = {name: np.zeros(points) if count > 1 else None for name in RECEIVERS}  # one record's codes, or their sum
    clipped = dict.fromkeys(RECEIVERS, 0)
    quadratures = dict.fromkeys(RECEIVERS)
    for _ in range(count):
        if laser_on:
            client, server, chosen = _single_mode_products(sent, gated, link, rng, attack)
            quadratures = {"client_receiver": client, "server_receiver": server}
            client_q.append(client)
            server_q.append(server)
            measure_p.append(chosen)
        seeds = dict(zip(RECEIVERS, rng.integers(0, 2**63, size=len(RECEIVERS))))  # one stream per receiver

        def render(name: str) -> tuple[np.ndarray, int]:
            offset = channels.get(params.get(name).digitizer_channel, ChannelSetup(1.0, 0.0)).offset_v
            return wf.digitized_words(quadratures[name], points, configs[name],
                                      np.random.Generator(np.random.SFC64(seeds[name])), lo_on=laser_on,
                                      offset_v=offset - dc_v[name])

        other = one_thread("qslab-digitizer").submit(render, RECEIVERS[1])  # two receivers on two cores
        for name, (words, clipped_samples) in ((RECEIVERS[0], render(RECEIVERS[0])), (RECEIVERS[1], other.result())):
            if count > 1:
                codes[name] += words
            else:
                codes[name] = words
            clipped[name] += clipped_samples

    shift = 2 ** (WORD_BITS - bits)
    records: dict[int, ChannelRecord] = {}
    for number, setup in channels.items():
        records[number] = _unconnected(points, setup, bits)
    for name in RECEIVERS:
        number = params.get(name).digitizer_channel
        setup = channels.get(number, ChannelSetup(1.0, 0.0))
        words = _averaged_words(codes[name], count, shift)
        records[number] = ChannelRecord(words, configs[name].volts_per_code / shift, setup.offset_v,
                                        clipped[name], configs[name])
    empty = np.empty((0, n_symbols))
    return CaptureRecord(
        sample_rate_hz=sps * params.server.symbol_rate_hz, samples_per_symbol=sps, points=points, laser_on=laser_on,
        sent_symbols=sent, client_quadratures_snu=np.array(client_q) if client_q else empty,
        server_quadratures_snu=np.array(server_q) if server_q else empty,
        server_measure_p=np.array(measure_p) if measure_p else empty.astype(bool), link=link, channels=records)


def _averaged_words(codes: np.ndarray, count: int, shift) -> np.ndarray:
    """The mean of `count` acquisitions' ADC codes (their sum, or the one record's codes), left-aligned in int16
    words, rounded and clipped to 16 bits. One int16 record: its codes times shift, which a word holds exactly."""
    if count == 1 and codes.dtype == np.int16 and isinstance(shift, int):
        return codes * np.int16(shift)
    mean_codes = codes / count
    return np.clip(np.rint(mean_codes * shift), -(2 ** 15), 2 ** 15 - 1).astype(np.int16)


def _single_mode_products(sent, gated, link, rng, attack=None):
    """(client X, server quadrature, measure_p) per symbol; with a gate, uncaptured symbols read vacuum."""
    x_hat = np.ones((1, 1), dtype=np.complex128)
    if gated is None:
        x_meas, record = secure_products(sent[:, None], x_hat, link, rng, verify_fraction=1.0, attack=attack)
        return x_meas[0], record.returned_quadratures_snu[0, :, 0], record.measure_p[0]
    rows, choice = gated
    x_meas, record = secure_products(sent[:, None], x_hat, link, rng, rows=rows, measure_p=choice[rows],
                                     attack=attack)
    server = rng.standard_normal(sent.size)  # blanked slots: the receiver's vacuum
    server[rows] = record.returned_quadratures_snu[0, :, 0]
    measure_p = np.zeros(sent.size, dtype=bool)
    measure_p[rows] = choice[rows]
    return x_meas[0], server, measure_p


@dataclass(frozen=True)
class _SessionInputs:
    period: np.ndarray         # bench.symbols(), what the layer cache keys on
    symbols: np.ndarray        # [R, N]
    x_hat: np.ndarray          # [B, N]
    rows: np.ndarray           # [v]
    measure_p: np.ndarray      # [v]
    x_hat_sha256: Any = None   # SHA-256 over x_hat's bytes (ProcessorLoad), or None: hashed here


_LAYERS: list[tuple[np.ndarray, LinkParameters, SecureLayer]] = []
_MEAN_PHOTONS: list[tuple[np.ndarray, float]] = []


def _mean_photons(period: np.ndarray) -> float:
    """mean |alpha|^2 of the period's symbols, once per period array (keyed as _prepared_layer: a layer's millions of
    symbols are summed at its first acquisition, not at every batch's)."""
    for cached, photons in _MEAN_PHOTONS:
        if cached is period:
            return photons
    photons = mean_power(period)
    _MEAN_PHOTONS.insert(0, (period, photons))
    del _MEAN_PHOTONS[4:]
    return photons


def _prepared_layer(period: np.ndarray, symbols: np.ndarray, link: LinkParameters) -> SecureLayer:
    """The layer prepared for the link model once per (period array, link): every batch of a layer reuses it.

    Keyed on the array itself: BenchState.symbols() returns the same read-only array while nothing
    changes it (the cache holds it, so its identity stays unique)."""
    for cached_period, cached_link, layer in _LAYERS:
        if cached_period is period and cached_link == link:
            return layer
    layer = SecureLayer.from_symbols(symbols, link)
    _LAYERS.insert(0, (period, link, layer))
    del _LAYERS[2:]
    return layer


def _session_inputs(bench, period: np.ndarray) -> _SessionInputs | None:
    """The session's layer, images and gate, or None for a single-symbol acquisition (call under bench.lock)."""
    load = bench.processor_load()
    n = bench.params.client_processor.bins_per_row
    if load is None or period.size % n:
        return None
    if load.x_hat is None:
        raise SessionError(load.problem)
    rows = period.size // n
    gate = bench.verification_gate(rows, n)
    verified, measure_p = gate if gate is not None else (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=bool))
    return _SessionInputs(period, period.reshape(rows, n), load.x_hat, verified, measure_p, load.x_hat_sha256)


def _session_rng(bench, inputs: _SessionInputs, points: int) -> np.random.Generator:
    """The noise of a session acquisition, drawn from (bench seed, what is played and loaded, how often this
    very state was acquired before): a batch gives the same record whatever else ran before it, so an
    interrupted session resumed on a fresh bench ends exactly where a clean one does."""
    # SHA-256: on CPUs with SHA extensions 3x as fast as BLAKE2b over a batch's x_hat (hashed ahead, ProcessorLoad)
    digest = (inputs.x_hat_sha256.copy() if inputs.x_hat_sha256 is not None
              else hashlib.sha256(np.ascontiguousarray(inputs.x_hat)))
    for array in (inputs.rows, inputs.measure_p, inputs.period[::97]):
        digest.update(np.ascontiguousarray(array))
    digest.update(str((inputs.period.size, points)).encode())
    key = digest.digest()[:16]
    repeat = bench.session_repeats[key] = bench.session_repeats.get(key, -1) + 1  # the same state again: fresh noise
    words = np.frombuffer(key, dtype=np.uint32)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([bench.params.seed, repeat, *words.tolist()])))


def _acquire_session(bench, inputs: _SessionInputs, link, configs, dc_v, *, points, sps, channels, rng, laser_on,
                     attack=None, words_buffer: WordsBuffer | None = None):
    """secure_products of the layer for the processor's images, rendered on both receivers' channels; a
    cheating client's `attack` acts on the returned light (its record: SessionTruth.verification.attacker)."""
    params = bench.params
    symbols, x_hat = inputs.symbols, inputs.x_hat
    images, (rows, n) = x_hat.shape[0], symbols.shape
    verification = None
    client = returned = np.empty(0, dtype=np.float32)
    if laser_on:
        client, verification = _prepared_layer(inputs.period, symbols, link).products(
            x_hat, rng, rows=inputs.rows, measure_p=inputs.measure_p, attack=attack)
        returned = verification.returned_quadratures_snu
        curious = bench.curious_server  # a photon-counting server (faults_attacks/curious_server.py): its own stream
        if curious is not None and curious.listens_to(rows):
            curious.observe(x_hat, symbols, inputs.rows, link, params.seed)
    truth = SessionTruth(images, rows, n, x_hat, symbols, inputs.rows, inputs.measure_p, client, returned,
                         verification, link, sps)
    streams = {"client_receiver": client, "server_receiver": returned}
    bits = params.digitizer.adc_bits
    shift = 2 ** (WORD_BITS - bits)
    rendered = {params.get(name).digitizer_channel for name in RECEIVERS}
    records = {number: _unconnected(points, setup, bits) for number, setup in channels.items()
               if number not in rendered}
    seeds = dict(zip(RECEIVERS, rng.integers(0, 2**63, size=len(RECEIVERS))))  # one stream per receiver

    def render(name: str) -> tuple[int, ChannelRecord]:
        number = params.get(name).digitizer_channel
        setup = channels.get(number, ChannelSetup(1.0, 0.0))
        gain, offset_v = _adc_input(bench, number)
        words, clipped = wf.digitized_words(streams[name], points, configs[name],
                                            np.random.Generator(np.random.SFC64(seeds[name])), lo_on=laser_on,
                                            offset_v=setup.offset_v - offset_v - gain * dc_v[name], volts_gain=gain,
                                            code_scale=shift,
                                            out=words_buffer(number, points) if words_buffer is not None else None)
        return number, ChannelRecord(words, configs[name].volts_per_code / shift, setup.offset_v, clipped,
                                     configs[name])

    other = one_thread("qslab-digitizer").submit(render, RECEIVERS[1])  # two receivers on two cores
    records.update([render(RECEIVERS[0]), other.result()])
    measure_p_slots = np.broadcast_to(inputs.measure_p[None, :, None], (images, inputs.rows.size, n)).reshape(1, -1)
    return CaptureRecord(
        sample_rate_hz=sps * params.server.symbol_rate_hz, samples_per_symbol=sps, points=points, laser_on=laser_on,
        sent_symbols=symbols.reshape(-1), client_quadratures_snu=client.reshape(1, -1),
        server_quadratures_snu=returned.reshape(1, -1), server_measure_p=measure_p_slots, link=link,
        channels=records, session=truth)


def _adc_input(bench, channel: int) -> tuple[float, float]:
    """(gain, offset_v) of a digitizer channel's input: what faults.adc_input_v does to the volts (linear)."""
    offset_v = float(faults.adc_input_v(bench, channel, 0.0))
    return float(faults.adc_input_v(bench, channel, 1.0)) - offset_v, offset_v


def failed_capture(points: int, sample_rate_hz: float, symbol_rate_hz: float, channels: dict[int, ChannelSetup],
                   bits: int, error: str) -> CaptureRecord:
    """What an acquisition that could not run leaves: every channel at 0 V, and why."""
    sps = max(1, int(round(sample_rate_hz / symbol_rate_hz)))
    empty = np.empty((0, 0))
    return CaptureRecord(sps * symbol_rate_hz, sps, points, False, np.empty(0, dtype=np.complex128), empty, empty,
                         empty.astype(bool), None, {n: _unconnected(points, s, bits) for n, s in channels.items()},
                         error=error)


def _unconnected(points: int, setup: ChannelSetup, bits: int) -> ChannelRecord:
    """A channel with nothing on its input: zero words, as a read-only view of one zero (a record's megabytes of
    zeros would be written at every acquisition, for channels nobody reads)."""
    lsb = 0.5 * setup.range_v / 2 ** (bits - 1)
    shift = 2 ** (WORD_BITS - bits)
    return ChannelRecord(np.broadcast_to(_ZERO_WORD, (points,)), lsb / shift, setup.offset_v, 0, None)


_ZERO_WORD = np.zeros(1, dtype=np.int16)
