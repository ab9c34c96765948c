"""Client/server receiver DSP: digitiser samples (volts) -> per-symbol quadratures in SNU (docs/PHYSICS.md 8).

Steps: refuse clipped records (a clipped homodyne trace is not Gaussian any more and its variance
is biased low, which would understate excess noise); find the symbol timing (the window offset with
the most matched-filter power); correlate each symbol window with the unit-norm received pulse
(matched filter); divide by the square root of the shot-noise variance of that same filter output,
measured on a vacuum (LO-only) record minus a dark (LO-blocked) record, so that vacuum has variance
1 and the electronic noise is reported separately in SNU. Pure numpy; no instrument imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qslab.analysis import butterworth


class ClippingError(ValueError):
    """The digitiser hit its rails: quadratures from this record would be biased."""


def adc_rails_v(full_scale_v: float, adc_bits: int) -> tuple[float, float]:
    """Lowest and highest representable voltages of a two's-complement ADC over [-FS, +FS)."""
    if not np.isfinite(full_scale_v) or full_scale_v <= 0.0:
        raise ValueError(f"full_scale_v must be > 0, got {full_scale_v!r}")
    if int(adc_bits) != adc_bits or adc_bits < 2:
        raise ValueError(f"adc_bits must be an integer >= 2, got {adc_bits!r}")
    lsb = full_scale_v / 2 ** (adc_bits - 1)
    return -(2 ** (adc_bits - 1)) * lsb, (2 ** (adc_bits - 1) - 1) * lsb


def count_clipped(samples_v, full_scale_v: float, adc_bits: int) -> int:
    """Samples sitting on (or beyond) either ADC rail."""
    low, high = adc_rails_v(full_scale_v, adc_bits)
    half_lsb = 0.5 * full_scale_v / 2 ** (adc_bits - 1)
    samples_v = np.asarray(samples_v)
    if samples_v.size and low + half_lsb < samples_v.min() and samples_v.max() < high - half_lsb:
        return 0  # the usual case, read without two boolean copies of a record of millions of samples
    return int(np.count_nonzero(samples_v >= high - half_lsb) + np.count_nonzero(samples_v <= low + half_lsb))


def check_clipping(samples_v, full_scale_v: float, adc_bits: int, max_fraction: float = 0.0) -> int:
    """Raise ClippingError if more than max_fraction of the samples sit on the rails; else return the count."""
    clipped = count_clipped(samples_v, full_scale_v, adc_bits)
    size = max(np.size(samples_v), 1)
    if clipped > max_fraction * size:
        low, high = adc_rails_v(full_scale_v, adc_bits)
        raise ClippingError(f"{clipped} of {size} samples ({100.0 * clipped / size:.3g} %) sit on the ADC rails "
                            f"[{low:.4g} V, {high:.4g} V]: the digitiser clipped (allowed fraction {max_fraction:g}); "
                            "lower the LO power or the signal, or raise the digitiser range")
    return clipped


def clip_detail(samples_v: np.ndarray, full_scale_v: float, adc_bits: int | None) -> str:
    """How a record clips: on one rail only (a constant offset beyond the range) or on both (too much signal)."""
    bits = adc_bits or 16
    low_v, high_v = adc_rails_v(full_scale_v, bits)
    half_lsb_v = 0.5 * full_scale_v / 2 ** (bits - 1)  # as count_clipped counts them
    high = int(np.count_nonzero(samples_v >= high_v - half_lsb_v))
    low = int(np.count_nonzero(samples_v <= low_v + half_lsb_v))
    share = (high + low) / max(samples_v.size, 1)
    if low == 0 or high == 0:
        rail = "upper" if high else "lower"
        return (f"{100 * share:.3g} % of the samples on the {rail} rail, a constant input beyond its "
                f"+-{full_scale_v:.3g} V full scale (an unbalanced or saturated receiver)")
    return f"{100 * share:.3g} % of the samples on the rails (more signal or noise than the range holds)"


def minus_tail_dc(samples_v: np.ndarray, start: int, out: np.ndarray | None = None) -> np.ndarray:
    """The record less the mean of its vacuum tail (from sample ``start``): a DC-coupled receiver sits on its LO's
    unbalanced share (its CMRR), which follows the LO power, so each record's own vacuum gives its DC level
    (the digitizer is centred on the level the homodyne record predicts; this takes off what the LO's drift
    moved since). The whole tail: its mean's noise adds 1/tail symbols of a SNU^2 to every quadrature. ``out``
    (e.g. ``samples_v`` itself, when the caller owns it) saves a copy of a record of millions of samples."""
    return np.subtract(samples_v, float(np.mean(samples_v[start:])), out=out)


RECORD_CHUNK_SYMBOLS = 4096  # symbols per piece of a record filtered (float64, ~256 KiB at 8 samples each)


@dataclass(frozen=True)
class AdcRecord:
    """A record as the digitizer sent it: ADC words and their map to volts about the channel's centre,
    v = words x volts_per_count (+ origin_v when non-zero) - centre_v.

    Why not volts: a session's record is millions of samples; as float64 volts it takes four times the bytes the
    digitizer sent, and each step (the centre, the clipping check, the DC level, the filter) is one more pass over
    memory. ``volts`` gives any stretch with the same float64 operations in the same order as the whole record in
    volts; the clipping check reads the extreme words and the filter the words themselves
    (tests/test_dsp_records.py)."""

    words: np.ndarray          # 1-D ADC words (e.g. int16; float volts with volts_per_count 1 for a digitizer without)
    volts_per_count: float
    origin_v: float = 0.0      # the volts of word 0
    centre_v: float = 0.0      # the channel's centre (its offset), taken off

    @property
    def size(self) -> int:
        return int(self.words.size)

    def volts(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples [start, stop) in volts about the centre (float64)."""
        volts = np.multiply(self.words[start:stop], self.volts_per_count, dtype=np.float64)
        if self.origin_v:  # a zero origin adds nothing (as the digitizer driver's whole-record conversion skips it)
            volts += self.origin_v
        if self.centre_v:  # (x - 0.0 is x)
            volts -= self.centre_v
        return volts

    def extremes_v(self) -> tuple[float, float]:
        """(least, greatest) sample in volts, from the least and greatest word: the map is monotone in floating
        point too, so this is exactly min and max of ``volts()``."""
        if not self.words.size:
            return math.inf, -math.inf
        words = np.array([self.words.min(), self.words.max()])
        low, high = AdcRecord(words, self.volts_per_count, self.origin_v, self.centre_v).volts()
        return float(low), float(high)


def count_clipped_record(record: AdcRecord, full_scale_v: float, adc_bits: int) -> int:
    """count_clipped of ``record.volts()``, from its extremes when nothing sits near a rail (the usual case)."""
    low, high = adc_rails_v(full_scale_v, adc_bits)
    half_lsb = 0.5 * full_scale_v / 2 ** (adc_bits - 1)
    least, greatest = record.extremes_v()
    if record.size and low + half_lsb < least and greatest < high - half_lsb:
        return 0
    return count_clipped(record.volts(), full_scale_v, adc_bits)


def record_quadratures_snu(record: AdcRecord, template, samples_per_symbol: int, offset_samples: int,
                           shot_noise_variance_v2: float, n_symbols: int, dc_v: float = 0.0,
                           chunk_symbols: int = RECORD_CHUNK_SYMBOLS) -> np.ndarray:
    """quadratures_snu of ``record.volts() - dc_v`` (float64 [n_symbols]), filtered from the words.

    The filter is linear: sum_n g_n (a w_n + b) = a (g . w) + b sum_n g_n, with a the volts per count and b the
    origin less the centre and ``dc_v``. So the words are filtered as they came (a chunk of symbols at a time, as
    float64 in one reused buffer, never the record's float64 copy) and the map to volts is applied per symbol, an
    eighth of the arithmetic of applying it per sample. Equal to filtering the volts to float64 rounding, not bit for
    bit (the same terms summed in another order; tests/test_dsp_records.py)."""
    if not np.isfinite(shot_noise_variance_v2) or shot_noise_variance_v2 <= 0.0:
        raise ValueError(f"shot_noise_variance_v2 must be > 0, got {shot_noise_variance_v2!r}")
    g, sps = _symbol_layout(template, samples_per_symbol, offset_samples)
    available = (record.size - offset_samples) // sps
    n = int(n_symbols)
    if not 0 < n <= available:
        raise ValueError(f"n_symbols must be in [1, {available}] for {record.size} samples, got {n_symbols!r}")
    chunk = max(1, int(chunk_symbols))
    buffer = np.empty(min(chunk, n) * sps)
    outputs = np.empty(n)
    for first in range(0, n, chunk):
        last = min(first + chunk, n)
        words = record.words[offset_samples + first * sps:offset_samples + last * sps]
        rows = buffer[:words.size]
        np.copyto(rows, words)
        np.matmul(rows.reshape(last - first, sps), g, out=outputs[first:last])
    outputs *= record.volts_per_count
    outputs += (record.origin_v - record.centre_v - dc_v) * float(np.sum(g))
    outputs /= np.sqrt(shot_noise_variance_v2)
    return outputs


def _symbol_layout(template, samples_per_symbol: int, offset_samples: int) -> tuple[np.ndarray, int]:
    """(unit-norm template, samples per symbol), or a ValueError naming what does not fit."""
    g = _unit_template(template)
    sps = int(samples_per_symbol)
    if sps < 1 or len(g) != sps:
        raise ValueError(f"template length {len(g)} must equal samples_per_symbol {samples_per_symbol}")
    if not 0 <= offset_samples < sps:
        raise ValueError(f"offset_samples must be in [0, {sps}), got {offset_samples!r}")
    return g, sps


def _unit_template(template) -> np.ndarray:
    template = np.asarray(template, dtype=float)
    norm = np.linalg.norm(template)
    if template.ndim != 1 or norm == 0.0 or not np.isfinite(norm):
        raise ValueError(f"template must be a non-zero finite 1-D array, got shape {template.shape}")
    return template / norm


def matched_filter(samples_v, template, samples_per_symbol: int, offset_samples: int = 0,
                   n_symbols: int | None = None) -> np.ndarray:
    """sum_n g_n v[k S + offset + n] per symbol k with the unit-norm template g [..., n_symbols] (volts)."""
    samples_v = np.asarray(samples_v, dtype=float)
    g, sps = _symbol_layout(template, samples_per_symbol, offset_samples)
    available = (samples_v.shape[-1] - offset_samples) // sps
    n = available if n_symbols is None else int(n_symbols)
    if not 0 < n <= available:
        raise ValueError(f"n_symbols must be in [1, {available}] for {samples_v.shape[-1]} samples, got {n_symbols!r}")
    windows = samples_v[..., offset_samples:offset_samples + n * sps]
    return windows.reshape(windows.shape[:-1] + (n, sps)) @ g


def find_symbol_offset(samples_v, template, samples_per_symbol: int, n_symbols: int | None = None) -> int:
    """Symbol timing: the offset in [0, S) whose matched-filter outputs carry the most power.

    Needs a record whose modulation stands out of the shot noise (e.g. a pilot or strong test
    symbols); on vacuum the answer is arbitrary.
    """
    sps = int(samples_per_symbol)
    n = ((np.shape(samples_v)[-1] - sps + 1) // sps) if n_symbols is None else n_symbols
    power = [np.mean(matched_filter(samples_v, template, sps, o, n) ** 2) for o in range(sps)]
    return int(np.argmax(power))


@dataclass(frozen=True)
class ShotNoiseCalibration:
    """1 SNU at the matched-filter output and the electronic noise in SNU (docs/PHYSICS.md 14)."""

    shot_noise_variance_v2: float
    electronic_noise_snu: float
    n_symbols: int


def calibrate_shot_noise(vacuum_samples_v, dark_samples_v, template, samples_per_symbol: int,
                         offset_samples: int = 0) -> ShotNoiseCalibration:
    """Shot-noise variance = Var(MF of LO-only record) - Var(MF of dark record); v_el = Var(dark)/that."""
    vacuum = matched_filter(vacuum_samples_v, template, samples_per_symbol, offset_samples).ravel()
    dark = matched_filter(dark_samples_v, template, samples_per_symbol, offset_samples).ravel()
    dark_variance = float(np.var(dark, ddof=1))
    shot = float(np.var(vacuum, ddof=1)) - dark_variance
    if shot <= 0.0:
        raise ValueError("vacuum record is not noisier than the dark record: no shot noise (is the LO on?)")
    return ShotNoiseCalibration(shot, dark_variance / shot, int(vacuum.size))


def quadratures_snu(samples_v, template, samples_per_symbol: int, offset_samples: int,
                    shot_noise_variance_v2: float, n_symbols: int | None = None, full_scale_v: float | None = None,
                    adc_bits: int | None = None, max_clipped_fraction: float = 0.0) -> np.ndarray:
    """Per-symbol quadratures in SNU [..., n_symbols]; checks clipping first when the ADC range is given."""
    if full_scale_v is not None or adc_bits is not None:
        if full_scale_v is None or adc_bits is None:
            raise ValueError("give both full_scale_v and adc_bits to check clipping, or neither")
        check_clipping(samples_v, full_scale_v, adc_bits, max_clipped_fraction)
    if not np.isfinite(shot_noise_variance_v2) or shot_noise_variance_v2 <= 0.0:
        raise ValueError(f"shot_noise_variance_v2 must be > 0, got {shot_noise_variance_v2!r}")
    outputs = matched_filter(samples_v, template, samples_per_symbol, offset_samples, n_symbols)
    return outputs / np.sqrt(shot_noise_variance_v2)


def temporal_mode_efficiency(bandwidth_hz: float, filter_order: int, sample_rate_hz: float, template,
                             samples_per_symbol: int, offset_samples: int = 0) -> float:
    """Share of a rect symbol's power the matched filter keeps behind a Butterworth detector response.

    Why: a band-limited detector smears each symbol into the next slot and colours the shot noise, so a
    symbol of quadrature X reads sqrt(m) X in SNU at the matched-filter output: m acts as an extra
    efficiency that the shot-noise-level efficiency (measured on white noise) does not contain. With
    the detector's impulse response h (the datasheet bandwidth and order, designed like the receiver's
    own filter), the slot's unit-norm rect f and the unit-norm template g at the offset:
    m = (g . (h * f)[offset:offset + S])^2 / (g^T R g), R the autocorrelation of h (unit white input).
    """
    sps = int(samples_per_symbol)
    g = _unit_template(template)
    if len(g) != sps or not 0 <= offset_samples < sps:
        raise ValueError(f"template length {len(g)} and offset {offset_samples} must fit {sps} samples per symbol")
    if not 0.0 < bandwidth_hz < sample_rate_hz / 2.0:
        raise ValueError(f"bandwidth_hz must be in (0, {sample_rate_hz / 2:g}) Hz, got {bandwidth_hz!r}")
    sos = butterworth.lowpass_sos(int(filter_order), bandwidth_hz, sample_rate_hz)
    length = 64 * sps + int(64 * sample_rate_hz / bandwidth_hz)  # the response decays well within this
    h = butterworth.impulse_response(sos, length)
    response = np.convolve(h, np.ones(sps) / np.sqrt(sps))[offset_samples:offset_samples + sps]
    autocorrelation = np.correlate(h, h, mode="full")[length - 1:length - 1 + sps]
    lags = np.abs(np.subtract.outer(np.arange(sps), np.arange(sps)))
    return float((g @ response) ** 2 / (g @ autocorrelation[lags] @ g))
