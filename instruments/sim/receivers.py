"""One digitizer acquisition of the two homodyne receivers, from the bench state.

The captured symbols (the AWG period repeated from its first symbol: the scope is triggered by the
AWG's segment start) go through the colleague's link model, ``physics.secure_products`` with one
mode per row and the client's processor passing each time bin straight to the amplifier (x_hat =
1): row k's client outcome is the client receiver's quadrature X_k (channel 1), and the server
verifies every row, so row k's returned quadrature (X or P, drawn per symbol as in DECISIONS J and
recorded here) is the server receiver's (channel 2). ``waveform.analog_waveform`` turns each
quadrature sequence into detector volts (shot noise per sample from the LO power, electronic
noise, detector and scope bandwidth), then the ADC quantises. Without LO (laser off) both
receivers output electronic noise only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.units import photon_energy_j
from instruments.sim import waveform as wf
from instruments.sim.physics import LinkParameters, secure_products

RECEIVERS = ("client_receiver", "server_receiver")
WORD_BITS = 16


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


@dataclass(frozen=True)
class CaptureRecord:
    """Ground truth of the last acquisition (what the tests and calibration checks compare with)."""

    sample_rate_hz: float
    samples_per_symbol: int
    points: int
    laser_on: bool
    sent_symbols: np.ndarray               # alpha_k at the server output, sqrt(photons), captured order
    client_quadratures_snu: np.ndarray     # per average x symbol (empty when the laser is off)
    server_quadratures_snu: np.ndarray
    server_measure_p: np.ndarray           # True where the server receiver measured P
    link: LinkParameters | None
    channels: dict[int, ChannelRecord]


def shot_noise_rms_v(lo_power_w: float, gain_v_per_w: float, efficiency: float, sample_rate_hz: float,
                     wavelength_m: float) -> float:
    """Vacuum rms per sample: gain sqrt(P_LO h nu f_s / eta) (shot noise 2 e I B with B = f_s/2)."""
    return gain_v_per_w * float(np.sqrt(lo_power_w * photon_energy_j(wavelength_m) * sample_rate_hz / efficiency))


def electronic_noise_rms_v(receiver, sample_rate_hz: float, wavelength_m: float) -> float:
    """Fixed input-referred electronic noise per sample, from its SNU value at the reference LO."""
    reference = shot_noise_rms_v(receiver.reference_lo_power_w, receiver.gain_v_per_w, receiver.efficiency,
                                 sample_rate_hz, wavelength_m)
    return float(np.sqrt(receiver.electronic_noise_snu)) * reference


def waveform_config(receiver, *, lo_power_w: float, samples_per_symbol: int, symbol_rate_hz: float,
                    scope_bandwidth_hz: float, adc_bits: int, range_v: float, wavelength_m: float) -> wf.WaveformConfig:
    """The renderer's settings for one receiver; with no LO, shot_noise_rms_v carries the electronic noise."""
    sample_rate = samples_per_symbol * symbol_rate_hz
    bandwidth = min(receiver.bandwidth_hz, scope_bandwidth_hz, 0.45 * sample_rate)
    electronic_v = electronic_noise_rms_v(receiver, sample_rate, wavelength_m)
    if lo_power_w > 0.0:
        shot_v = shot_noise_rms_v(lo_power_w, receiver.gain_v_per_w, receiver.efficiency, sample_rate, wavelength_m)
        noise_snu, scale_v = (electronic_v / shot_v) ** 2, shot_v
    else:
        noise_snu, scale_v = 1.0, max(electronic_v, 1e-30)
    return wf.WaveformConfig(samples_per_symbol=samples_per_symbol, symbol_rate_hz=symbol_rate_hz,
                             pulse_shape="rect", detector_bandwidth_hz=bandwidth,
                             filter_order=receiver.filter_order, electronic_noise_snu=noise_snu,
                             shot_noise_rms_v=scale_v, adc_bits=adc_bits, adc_full_scale_v=0.5 * range_v)


def acquire(bench, *, points: int, sample_rate_hz: float, scope_bandwidth_hz: float,
            channels: dict[int, ChannelSetup], rng: np.random.Generator, averages: int = 1) -> CaptureRecord:
    """Render one (averaged) acquisition of every channel; unconnected channels read 0 V."""
    params = bench.params
    with bench.lock:
        symbol_rate = params.server.symbol_rate_hz
        sps = max(1, int(round(sample_rate_hz / symbol_rate)))
        n_symbols = -(-points // sps)
        laser_on = bench.laser_power_w() > 0.0
        period = bench.symbols()
        wavelength = bench.wavelength_m()
        lo = {name: bench.lo_power_w(name) for name in RECEIVERS}
        link = bench.link_parameters(mu_photons=float(np.mean(np.abs(period) ** 2))) if laser_on else None
    sent = period[np.arange(n_symbols) % period.size]
    bits = params.digitizer.adc_bits
    configs = {}
    for name in RECEIVERS:
        receiver = params.get(name)
        setup = channels.get(receiver.digitizer_channel, ChannelSetup(1.0, 0.0))
        configs[name] = waveform_config(receiver, lo_power_w=lo[name], samples_per_symbol=sps,
                                        symbol_rate_hz=symbol_rate, scope_bandwidth_hz=scope_bandwidth_hz,
                                        adc_bits=bits, range_v=setup.range_v, wavelength_m=wavelength)

    client_q, server_q, measure_p = [], [], []
    sums = {name: np.zeros(points) for name in RECEIVERS}
    clipped = dict.fromkeys(RECEIVERS, 0)
    for _ in range(max(1, averages)):
        if laser_on:
            x_meas, record = secure_products(sent[:, None], np.ones((1, 1), dtype=np.complex128), link, rng,
                                             verify_fraction=1.0)
            quadratures = {"client_receiver": x_meas[0], "server_receiver": record.returned_quadratures_snu[0, :, 0]}
            client_q.append(x_meas[0])
            server_q.append(quadratures["server_receiver"])
            measure_p.append(record.measure_p[0])
        for name in RECEIVERS:
            config = configs[name]
            if laser_on:
                volts = wf.analog_waveform(quadratures[name], config, rng)[:points]
            else:
                volts = wf.dark_analog_waveform(n_symbols, config, rng)[:points]
            offset = channels.get(params.get(name).digitizer_channel, ChannelSetup(1.0, 0.0)).offset_v
            digitized = wf.digitize(volts - offset, config)
            sums[name] += digitized.codes
            clipped[name] += digitized.clipped_samples

    shift = 2 ** (WORD_BITS - bits)
    records: dict[int, ChannelRecord] = {}
    for number, setup in channels.items():
        records[number] = _unconnected(points, setup, bits)
    for name in RECEIVERS:
        number = params.get(name).digitizer_channel
        setup = channels.get(number, ChannelSetup(1.0, 0.0))
        mean_codes = sums[name] / max(1, averages)
        words = np.clip(np.rint(mean_codes * shift), -(2 ** 15), 2 ** 15 - 1).astype(np.int16)
        records[number] = ChannelRecord(words, configs[name].volts_per_code / shift, setup.offset_v,
                                        clipped[name], configs[name])
    empty = np.empty((0, n_symbols))
    return CaptureRecord(
        sample_rate_hz=sps * symbol_rate, samples_per_symbol=sps, points=points, laser_on=laser_on,
        sent_symbols=sent, client_quadratures_snu=np.array(client_q) if client_q else empty,
        server_quadratures_snu=np.array(server_q) if server_q else empty,
        server_measure_p=np.array(measure_p) if measure_p else empty.astype(bool), link=link, channels=records)


def _unconnected(points: int, setup: ChannelSetup, bits: int) -> ChannelRecord:
    lsb = 0.5 * setup.range_v / 2 ** (bits - 1)
    shift = 2 ** (WORD_BITS - bits)
    return ChannelRecord(np.zeros(points, dtype=np.int16), lsb / shift, setup.offset_v, 0, None)
