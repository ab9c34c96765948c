"""Waveform level of the virtual bench: per-symbol quadratures -> a digitised balanced-homodyne voltage.

Sample model (docs/PHYSICS.md 7). Symbol k occupies samples [k S, (k+1) S) and is measured in the
temporal mode f (unit norm over the slot, rect or Gaussian). Before the detector's filter a sample
holds, in units of the shot noise per sample (vacuum std 1 per sample),

    s_n = X_k f_n + (white vacuum with its component along f removed) + sqrt(v_el) e_n,

so the matched filter sum_n f_n s_n returns X_k exactly (X_k already carries the vacuum of mode f)
while every other temporal mode is vacuum: each sample of a vacuum record has variance 1 + v_el.
The electronic noise is added before the low-pass filter (input-referred detector noise), so the
detector bandwidth shapes shot and electronic noise alike and v_el is also the electronic noise in
SNU after matched filtering. Then: Butterworth low-pass (order 1 = first-order RC; analysis/butterworth.py),
volts = shot_noise_rms_v x samples, and an ADC of `adc_bits` over [-full scale, +full
scale) that rounds, clips and counts the clipped samples. One guard slot of vacuum follows the last
symbol so that a delayed matched-filter window still fits.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
from qslab.analysis import butterworth
from qslab.instruments.sim.link import render_kernels as kernels
from qslab.instruments.sim.link.random_streams import box_muller_32bit_f32

PULSE_SHAPES = ("rect", "gaussian")


@dataclass(frozen=True)
class WaveformConfig:
    """Detector, pulse and digitiser settings (volts, hertz; noises in SNU)."""

    samples_per_symbol: int = 8
    symbol_rate_hz: float = 100e6
    pulse_shape: str = "rect"
    gaussian_sigma_symbols: float = 0.15      # Gaussian pulse std in symbol periods (truncated to the slot)
    detector_bandwidth_hz: float | None = None  # None: no bandwidth limit
    filter_order: int = 1                     # Butterworth order; 1 is a first-order RC low-pass
    electronic_noise_snu: float = 0.0         # per sample, relative to the shot noise per sample
    shot_noise_rms_v: float = 0.01            # volts per unit quadrature: rms of one vacuum sample before the filter
    adc_bits: int = 12
    adc_full_scale_v: float = 0.5             # ADC input range [-full scale, +full scale)

    def __post_init__(self):
        if int(self.samples_per_symbol) != self.samples_per_symbol or self.samples_per_symbol < 1:
            raise ValueError(f"samples_per_symbol must be an integer >= 1, got {self.samples_per_symbol!r}")
        _positive("symbol_rate_hz", self.symbol_rate_hz)
        if self.pulse_shape not in PULSE_SHAPES:
            raise ValueError(f"pulse_shape must be one of {PULSE_SHAPES}, got {self.pulse_shape!r}")
        _positive("gaussian_sigma_symbols", self.gaussian_sigma_symbols)
        if self.detector_bandwidth_hz is not None:
            nyquist = self.sample_rate_hz / 2.0
            if not 0.0 < float(self.detector_bandwidth_hz) < nyquist:
                raise ValueError(f"detector_bandwidth_hz must be in (0, {nyquist:g}) (below Nyquist) or None, "
                                 f"got {self.detector_bandwidth_hz!r}")
        if int(self.filter_order) != self.filter_order or not 1 <= self.filter_order <= 8:
            raise ValueError(f"filter_order must be an integer in [1, 8], got {self.filter_order!r}")
        if not np.isfinite(self.electronic_noise_snu) or self.electronic_noise_snu < 0.0:
            raise ValueError(f"electronic_noise_snu must be >= 0, got {self.electronic_noise_snu!r}")
        _positive("shot_noise_rms_v", self.shot_noise_rms_v)
        if int(self.adc_bits) != self.adc_bits or not 2 <= self.adc_bits <= 24:
            raise ValueError(f"adc_bits must be an integer in [2, 24], got {self.adc_bits!r}")
        _positive("adc_full_scale_v", self.adc_full_scale_v)

    @property
    def sample_rate_hz(self) -> float:
        return self.samples_per_symbol * self.symbol_rate_hz

    @property
    def volts_per_code(self) -> float:
        return self.adc_full_scale_v / 2 ** (self.adc_bits - 1)


def _positive(name, value) -> None:
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class DigitizedWaveform:
    """What the digitiser hands over: integer codes [..., samples], their scale and the clipping count."""

    codes: np.ndarray
    volts_per_code: float
    clipped_samples: int
    sample_rate_hz: float
    samples_per_symbol: int

    @property
    def samples_v(self) -> np.ndarray:
        return self.codes * self.volts_per_code

    @property
    def clipped_fraction(self) -> float:
        return self.clipped_samples / max(self.codes.size, 1)


def pulse_template(config: WaveformConfig) -> np.ndarray:
    """The signal's temporal mode f over one slot, unit norm (sum f^2 = 1)."""
    sps = config.samples_per_symbol
    if config.pulse_shape == "rect":
        pulse = np.ones(sps)
    else:
        t_symbols = (np.arange(sps) + 0.5) / sps - 0.5
        pulse = np.exp(-0.5 * (t_symbols / config.gaussian_sigma_symbols) ** 2)
    return pulse / np.linalg.norm(pulse)


def _lowpass_sos(config: WaveformConfig):
    if config.detector_bandwidth_hz is None:
        return None
    return butterworth.lowpass_sos(config.filter_order, config.detector_bandwidth_hz, config.sample_rate_hz)


def detector_filter(samples, config: WaveformConfig) -> np.ndarray:
    """The detector's low-pass along the last (time) axis; identity without a bandwidth limit."""
    sos = _lowpass_sos(config)
    return np.asarray(samples, dtype=float) if sos is None else butterworth.sosfilt(sos, samples, axis=-1)


def analog_waveform(quadratures_snu, config: WaveformConfig, rng: np.random.Generator) -> np.ndarray:
    """Detector output in volts [..., (n_symbols + 1) S] for per-symbol quadratures [..., n_symbols] (SNU)."""
    quadratures = np.asarray(quadratures_snu, dtype=float)
    if quadratures.ndim < 1 or quadratures.shape[-1] == 0:
        raise ValueError(f"quadratures_snu must have a non-empty symbol axis, got shape {quadratures.shape}")
    sps, n_symbols = config.samples_per_symbol, quadratures.shape[-1]
    template = pulse_template(config)
    slots = rng.standard_normal(quadratures.shape[:-1] + (n_symbols + 1, sps))
    signal_slots = slots[..., :n_symbols, :]
    signal_slots -= (signal_slots @ template)[..., None] * template  # vacuum of mode f is inside X_k
    signal_slots += quadratures[..., None] * template
    _add_electronic_noise(slots, config, rng)
    return config.shot_noise_rms_v * detector_filter(slots.reshape(slots.shape[:-2] + (-1,)), config)


def dark_analog_waveform(n_symbols: int, config: WaveformConfig, rng: np.random.Generator,
                         batch_shape=()) -> np.ndarray:
    """LO blocked: electronic noise only, same length and filter as `analog_waveform` (for v_el calibration)."""
    slots = np.zeros(tuple(batch_shape) + (int(n_symbols) + 1, config.samples_per_symbol))
    _add_electronic_noise(slots, config, rng)
    return config.shot_noise_rms_v * detector_filter(slots.reshape(slots.shape[:-2] + (-1,)), config)


def _add_electronic_noise(slots: np.ndarray, config: WaveformConfig, rng: np.random.Generator) -> None:
    if config.electronic_noise_snu > 0.0:
        slots += np.sqrt(config.electronic_noise_snu) * rng.standard_normal(slots.shape)


def digitize(volts, config: WaveformConfig) -> DigitizedWaveform:
    """Round to ADC codes, clip to [-2^(b-1), 2^(b-1) - 1] and count what was clipped."""
    lsb = config.volts_per_code
    low, high = -(2 ** (config.adc_bits - 1)), 2 ** (config.adc_bits - 1) - 1
    codes = np.rint(np.asarray(volts, dtype=float) / lsb)
    clipped = int(np.count_nonzero(codes < low) + np.count_nonzero(codes > high))
    dtype = np.int16 if config.adc_bits <= 16 else np.int32
    codes = np.clip(codes, low, high).astype(dtype)
    return DigitizedWaveform(codes, lsb, clipped, config.sample_rate_hz, config.samples_per_symbol)


def quadratures_to_waveform(quadratures_snu, config: WaveformConfig, rng: np.random.Generator) -> DigitizedWaveform:
    """Per-symbol quadratures (SNU) -> digitised detector waveform."""
    return digitize(analog_waveform(quadratures_snu, config, rng), config)


def dark_waveform(n_symbols: int, config: WaveformConfig, rng: np.random.Generator,
                  batch_shape=()) -> DigitizedWaveform:
    """Digitised dark record (LO blocked)."""
    return digitize(dark_analog_waveform(n_symbols, config, rng, batch_shape), config)


# --- what the matched filter sees (for the DSP and its tests) --------------------------------------

@dataclass(frozen=True)
class MatchedFilterResponse:
    """Noise-free response of detector + matched filter, from the configuration alone.

    template: the received pulse over one window, unit norm (what the DSP should correlate with).
    offset_samples: window start relative to the slot start, in [0, S).
    taps[j + 1]: contribution of symbol k - j to the SNU-scaled output of window k, j = -1, 0, 1, ...
    (taps[1] is the main tap, sqrt of the mode-matching efficiency). With iid symbols of mean m_j and
    variance V_j the output has mean sum_j taps_j m_j and variance 1 + v_el + sum_j taps_j^2 (V_j - 1).
    shot_noise_variance_v2: vacuum variance of the matched-filter output (unit-norm template), V^2.
    """

    template: np.ndarray
    offset_samples: int
    taps: np.ndarray
    shot_noise_variance_v2: float
    electronic_noise_snu: float

    @property
    def main_tap(self) -> float:
        return float(self.taps[1])

    @property
    def mode_matching_efficiency(self) -> float:
        return self.main_tap**2


def _impulse_response(config: WaveformConfig) -> np.ndarray:
    """Filter impulse response, long enough that its energy tail is below 1e-15 of the total."""
    sos = _lowpass_sos(config)
    if sos is None:
        return np.ones(1)
    length = 64 * config.samples_per_symbol
    while True:
        h = butterworth.impulse_response(sos, length)
        energy = np.cumsum(h[::-1] ** 2)
        if energy[length // 4] <= 1e-15 * energy[-1] or length > 2**22:
            return h
        length *= 2


def matched_filter_response(config: WaveformConfig) -> MatchedFilterResponse:
    """Template, timing offset, ISI taps and shot-noise variance that the DSP should find."""
    sps = config.samples_per_symbol
    h = _impulse_response(config)
    span = len(h) + 2 * sps
    pulse = np.convolve(np.concatenate([pulse_template(config), np.zeros(span - sps)]), h)[:span]
    energies = [np.sum(pulse[o:o + sps] ** 2) for o in range(sps)]
    offset = int(np.argmax(energies))
    template = pulse[offset:offset + sps] / np.sqrt(energies[offset])
    autocorr = np.array([np.dot(h[:len(h) - d], h[d:]) if d < len(h) else 0.0 for d in range(sps)])
    lags = np.abs(np.arange(sps)[:, None] - np.arange(sps)[None, :])
    vacuum_variance = float(template @ autocorr[lags] @ template)  # in units of the per-sample shot variance
    padded = np.concatenate([np.zeros(sps), pulse])  # index shift sps so that j = -1 is defined
    n_taps = (span - offset) // sps
    taps = np.array([template @ padded[sps + j * sps + offset: sps + (j + 1) * sps + offset]
                     for j in range(-1, n_taps - 1)]) / np.sqrt(vacuum_variance)
    return MatchedFilterResponse(template, offset, taps, vacuum_variance * config.shot_noise_rms_v**2,
                                 float(config.electronic_noise_snu))


# --- the same model, rendered fast (the bench's session acquisitions) ------------------------------

RENDER_CHUNK_SLOTS = 16384    # symbol slots rendered at a time (about a MB of work arrays: stays in cache)
IIR_TRUNCATION = 2.0 ** -21   # first-order filter: impulse-response tail dropped below this of its peak (4.8e-7: a code
#                                step is ~1/30 of the shot noise rms, so the ADC's own rounding is ~10^4 times larger)
MAX_IIR_TAPS = 64             # longer first-order responses (low bandwidth) run through sosfilt instead
_RENDER_WORK = threading.local()


def digitized_words(quadratures_snu, n_samples: int, config: WaveformConfig, rng: np.random.Generator, *,
                    lo_on: bool = True, offset_v: float = 0.0, volts_gain: float = 1.0,
                    code_scale: int = 1, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """ADC codes x code_scale (int16 [n_samples], written into ``out`` when given) and the clipped count for
    per-symbol quadratures.

    The model of analog_waveform + digitize (docs/PHYSICS.md 7) for records of millions of samples:
    float32, rendered chunk by chunk in cache, one normal per sample. Why one normal is enough: per
    slot, with u white N(0, 1), s = sqrt(1 + v_el) u + (X_k + (sqrt(v_el) - sqrt(1 + v_el)) f.u) f has
    the distribution of the two-draw form (I - f f^T) w + X_k f + sqrt(v_el) e: the part orthogonal to
    f is white with variance 1 + v_el, the part along f is X_k plus electronic noise of variance v_el,
    and the two are independent. Slots beyond the quadratures given are vacuum (the receiver's output
    with no signal) up to n_samples; quadratures beyond it are cut off. lo_on False: electronic noise
    only (config.electronic_noise_snu is then the per-sample variance, as in dark_analog_waveform).
    The ADC sees volts_gain x the detector's volts - offset_v (the digitizer's vertical offset, and
    any distortion of its input); code_scale left-aligns the codes in 16-bit words. float32 is exact
    enough: its 6e-8 relative resolution is far below one ADC step. The normals come from Box-Muller on
    32-bit uniforms of rng's bit generator (a fast one, e.g. SFC64, pays off: drawing them is most of the
    cost); the steps after them are compiled (render_kernels). A first-order detector filter keeps its
    impulse response down to IIR_TRUNCATION of its peak (what it drops is far below the ADC's rounding);
    higher orders run scipy's sosfilt.
    """
    sps, n_samples = config.samples_per_symbol, int(n_samples)
    if config.adc_bits - 1 + int(code_scale).bit_length() - 1 > 15:
        raise ValueError(f"{config.adc_bits}-bit codes x {code_scale} do not fit 16-bit words")
    n_slots = -(-n_samples // sps)
    quadratures = np.asarray(quadratures_snu, dtype=np.float32).reshape(-1)[:n_slots] if lo_on else np.empty(0)
    v_el = config.electronic_noise_snu
    white = np.sqrt(1.0 + v_el) if lo_on else np.sqrt(v_el)
    codes_per_unit = volts_gain * config.shot_noise_rms_v / config.volts_per_code
    template = _template_f32(config)
    filt = _ChunkFilter(config)
    scale = np.float32(white * codes_per_unit * filt.input_gain)
    along_gain = np.float32((np.sqrt(v_el) - white) / scale)
    signal_gain = (codes_per_unit * filt.input_gain * template).astype(np.float32)
    offset_codes = np.float32(offset_v / config.volts_per_code)
    low, high = np.float32(-(2 ** (config.adc_bits - 1))), np.float32(2 ** (config.adc_bits - 1) - 1)
    if out is None:
        out = np.empty(n_samples, dtype=np.int16)
    elif out.dtype != np.int16 or out.shape != (n_samples,):
        raise ValueError(f"out must be int16 of shape ({n_samples},), got {out.dtype} {out.shape}")
    clipped = 0
    for first in range(0, n_slots, RENDER_CHUNK_SLOTS):
        last = min(first + RENDER_CHUNK_SLOTS, n_slots)
        x = filt.input((last - first) * sps)
        box_muller_f32(rng.bit_generator, x, scale)  # white noise, already x scale
        q = quadratures[first:last]
        if q.size:  # the slot's mode: X_k plus its electronic noise, the white part along f taken out
            kernels.add_along_mode(x, q, template, along_gain, signal_gain)
        kept = min(last * sps, n_samples) - first * sps  # the last slot may reach past the record
        clipped += kernels.quantize(filt.run()[:kept], offset_codes, low, high, np.float32(code_scale),
                                    out[first * sps:first * sps + kept])
    return out, clipped


def box_muller_f32(bit_generator: np.random.BitGenerator, out: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Fill the float32 C-contiguous 1-D `out` with N(0, scale^2) normals (random_streams.box_muller_32bit_f32,
    about 2.4 ns per normal with SFC64) in this thread's render work arrays, kept whatever the record's length."""
    pairs = (out.size + 1) // 2
    buffers = getattr(_RENDER_WORK, "normals", None)
    if buffers is None or buffers[0].size < pairs:
        buffers = (np.empty(pairs, dtype=np.float32), np.empty(pairs, dtype=np.float32))
        _RENDER_WORK.normals = buffers
    return box_muller_32bit_f32(bit_generator, out, scale, buffers)


class _ChunkFilter:
    """The detector's low-pass over consecutive chunks, state carried across them (per-thread buffers).

    First order (the bench's receivers): y[n] = p y[n-1] + b (x[n] + x[n-1]) with b folded into the input
    (input_gain), as a filter of H taps p^k (render_kernels.first_order_fir; the response's tail below
    IIR_TRUNCATION of its peak dropped): the previous chunk's last H inputs make each chunk exact. Otherwise (or
    when H would be long): sosfilt with its state carried.
    """

    def __init__(self, config: WaveformConfig):
        self.input_gain, self.taps, sos = _filter_design(config)
        self.history = self.taps.size
        self.sos = None if sos is None else sos.copy()  # sosfilt wants a writable array; the design's stays intact
        self.zi = None if sos is None else np.zeros((sos.shape[0], 2), dtype=np.float32)
        self.started = False

    def input(self, size: int) -> np.ndarray:
        """The buffer to write this chunk's (scaled) input into."""
        total = self.history + size
        buffers = getattr(_RENDER_WORK, "buffers", None)
        if buffers is None or buffers[0].size < total:
            grown = tuple(np.empty(total, dtype=np.float32) for _ in range(3))
            if self.started:  # a chunk longer than the buffers: the previous chunk's tail moves with them
                grown[0][:self.history] = self.work[:self.history]
            buffers = _RENDER_WORK.buffers = grown
        self.work, self.pairs, self.filtered = buffers[0][:total], buffers[1][:total - 1], buffers[2][:size]
        if not self.started:
            self.work[:self.history] = 0.0  # zero initial state, as sosfilt starts
            self.started = True
        return self.work[self.history:]

    def run(self) -> np.ndarray:
        """This chunk filtered (a float32 view, overwritten by the next chunk)."""
        h, work = self.history, self.work
        x = work[h:]
        if self.sos is not None:
            y, self.zi = butterworth.sosfilt(self.sos, x, zi=self.zi)
            return y
        if not h:
            return x
        kernels.first_order_fir(work, self.taps, self.pairs, self.filtered)
        if x.size >= h:  # the next chunk's history (only the last chunk is shorter)
            work[:h] = x[-h:]
        return self.filtered


@functools.lru_cache(maxsize=16)
def _filter_design(config: WaveformConfig) -> tuple[float, np.ndarray, np.ndarray | None]:
    """_ChunkFilter's constants for a configuration: (input gain, the first order's taps p^k, float32, as many as
    the response needs rounded up to a multiple of render_kernels.TAP_GROUP (none: no filter, or sosfilt), float32
    sos for sosfilt or None). Kept per configuration: designing a higher order (scipy.signal.butter) costs ~2 ms,
    about what rendering 10^5 samples does, and every acquisition of a session renders with the same few."""
    no_taps = np.empty(0, dtype=np.float32)
    sos = None if config.detector_bandwidth_hz is None else _lowpass_sos(config)
    section = None if sos is None else butterworth.first_order_section(sos)
    if section is not None:
        gain, pole = section
        needed = int(np.ceil(max(np.log(IIR_TRUNCATION) / np.log(abs(pole)), 1.0))) if pole else 1
        length = -(-needed // kernels.TAP_GROUP) * kernels.TAP_GROUP
        if length <= MAX_IIR_TAPS:
            powers = np.zeros(length, dtype=np.float32)
            powers[:needed] = pole ** np.arange(needed)
            powers.flags.writeable = False
            return gain, powers, None
    if sos is None:
        return 1.0, no_taps, None
    return 1.0, no_taps, sos.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _template_f32(config: WaveformConfig) -> np.ndarray:
    """pulse_template as float32, read-only, kept per configuration (as _filter_design)."""
    template = pulse_template(config).astype(np.float32)
    template.flags.writeable = False
    return template
