"""A balanced homodyne receiver role: an analog detector (no remote control) read by a digitizer channel.

The detector's specs are configuration (gain V/W, bandwidth, noise-equivalent power); its
calibration (1 SNU at the matched-filter output, electronic noise in SNU, pulse template, symbol
timing) comes from a calibration record. Samples in volts become quadratures in shot-noise units
through qslab.analysis.dsp, the same code a replay runs. The declared LO power limit is what the
station turns into a bound on the laser (the LO is a fixed share of it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from qslab.analysis import dsp
from qslab.analysis.units import DEFAULT_WAVELENGTH_M, photon_energy_j
from qslab.instruments.optical.limits import Limit
from qslab.instruments.optical.roles import CapturingDigitizer, Digitizer, RecordingDigitizer


@dataclass(frozen=True)
class DetectorSpec:
    """Datasheet values of the analog balanced detector."""

    model: str
    gain_v_per_w: float       # output volts per W of difference optical power
    bandwidth_hz: float       # -3 dB bandwidth
    nep_w_per_rthz: float     # noise-equivalent power (the electronic noise, referred to the optical input)

    def electronic_noise_rms_v(self, bandwidth_hz: float | None = None) -> float:
        """gain x NEP x sqrt(B): the dark output noise in the detector's bandwidth (or a narrower one)."""
        return self.gain_v_per_w * self.nep_w_per_rthz * math.sqrt(self._band(bandwidth_hz))

    def shot_noise_rms_v(self, lo_power_w: float, bandwidth_hz: float | None = None, efficiency: float = 1.0,
                         wavelength_m: float = DEFAULT_WAVELENGTH_M) -> float:
        """Vacuum rms in bandwidth B: gain sqrt(2 h nu P_LO B / eta) (2 e I B in optical-power units)."""
        return self.gain_v_per_w * math.sqrt(2.0 * float(photon_energy_j(wavelength_m)) * lo_power_w
                                             * self._band(bandwidth_hz) / efficiency)

    def expected_electronic_noise_snu(self, lo_power_w: float, efficiency: float = 1.0,
                                      wavelength_m: float = DEFAULT_WAVELENGTH_M) -> float:
        """Electronic over shot-noise variance, NEP^2 eta / (2 h nu P_LO), in any common bandwidth (a pre-flight
        estimate: the calibration measures it)."""
        return self.nep_w_per_rthz**2 * efficiency / (2.0 * float(photon_energy_j(wavelength_m)) * lo_power_w)

    def _band(self, bandwidth_hz: float | None) -> float:
        return self.bandwidth_hz if bandwidth_hz is None else min(bandwidth_hz, self.bandwidth_hz)


@dataclass(frozen=True)
class ReceiverCalibration:
    """1 SNU at the matched-filter output, the electronic noise in SNU, and the filter and timing it holds for."""

    shot_noise_variance_v2: float
    electronic_noise_snu: float
    template: tuple[float, ...]
    samples_per_symbol: int
    offset_samples: int = 0
    record_id: str | None = None
    dc_offset_v: float = 0.0           # the DC-coupled output's level with the LO off (the electronics' offset)
    dc_slope_v_per_w: float = 0.0      # and its growth per W of LO: the imbalanced diodes (CMRR)

    def dc_level_v(self, lo_power_w: float) -> float:
        """The output's expected DC level at this LO power (for the digitizer's range; the DSP subtracts the
        record's own)."""
        return self.dc_offset_v + self.dc_slope_v_per_w * lo_power_w

    @classmethod
    def from_records(cls, vacuum_samples_v, dark_samples_v, template, samples_per_symbol: int,
                     offset_samples: int = 0, record_id: str | None = None) -> ReceiverCalibration:
        """From an LO-only record and a dark record (qslab.analysis.dsp.calibrate_shot_noise)."""
        fit = dsp.calibrate_shot_noise(vacuum_samples_v, dark_samples_v, template, samples_per_symbol, offset_samples)
        return cls(fit.shot_noise_variance_v2, fit.electronic_noise_snu, tuple(float(t) for t in template),
                   samples_per_symbol, offset_samples, record_id)


class DigitizerHomodyneReceiver:
    """The receiver read by channel ``channel`` of ``digitizer`` (a roles.Digitizer), or by no digitizer (None)."""

    def __init__(self, detector: DetectorSpec, *, lo_power_max: Limit, lo_fraction: float,
                 digitizer: Digitizer | None = None, channel: int | None = None,
                 calibration: ReceiverCalibration | None = None, adc_bits: int | None = None, name: str = "receiver"):
        self.detector, self.lo_power_max, self.lo_fraction = detector, lo_power_max, lo_fraction
        self.digitizer, self.digitizer_channel = digitizer, channel
        self._records_from, self._recording = None, False  # the digitizer last checked, and whether it is recording
        self.calibration, self.adc_bits, self.name = calibration, adc_bits, name

    def check_lo_power_w(self, lo_power_w: float) -> None:
        self.lo_power_max.check_at_most(self.name, "LO power", lo_power_w)

    def quadratures_snu(self, samples_v, n_symbols: int | None = None, full_scale_v: float | None = None) -> np.ndarray:
        """Per-symbol quadratures in SNU; refuses a clipped record when the ADC range and resolution are known."""
        c = self.calibration
        if c is None:
            raise RuntimeError(f"{self.name}: no shot-noise calibration (a ReceiverCalibration) is loaded")
        clip = full_scale_v is not None and self.adc_bits is not None
        return dsp.quadratures_snu(samples_v, np.asarray(c.template), c.samples_per_symbol, c.offset_samples,
                                   c.shot_noise_variance_v2, n_symbols=n_symbols,
                                   full_scale_v=full_scale_v if clip else None, adc_bits=self.adc_bits if clip else None)

    # -- the digitizer channel ----------------------------------------------------------------------
    def _digitizer(self) -> Digitizer:
        if self.digitizer is None or self.digitizer_channel is None:
            raise RuntimeError(f"{self.name}: no digitizer channel")
        return self.digitizer

    def range_v(self) -> float:
        """The channel's full-scale range (8 divisions), as the digitizer took it."""
        return self._digitizer().range_v(self.digitizer_channel)

    def offset_v(self) -> float:
        """The centre of the channel's range."""
        return self._digitizer().offset_v(self.digitizer_channel)

    def set_range_v(self, range_v: float) -> None:
        """Ask for ``range_v`` full scale (the digitizer may round or clamp it: ``range_v()`` tells)."""
        self._digitizer().configure_channel(self.digitizer_channel, range_v=range_v)

    def set_offset_v(self, offset_v: float) -> None:
        self._digitizer().configure_channel(self.digitizer_channel, offset_v=offset_v)

    def read_samples_v(self) -> np.ndarray:
        """The channel's last record, in volts."""
        return np.asarray(self._digitizer().read(self.digitizer_channel), dtype=float)

    def read_record(self) -> dsp.AdcRecord:
        """The channel's last record about the channel's centre (its volts are ``read_samples_v() - offset_v()``, bit
        for bit), as the digitizer sent it where it can (roles.RecordingDigitizer), else its volts."""
        digitizer = self._digitizer()
        if self._records_from is not digitizer:  # a Protocol's isinstance checks every member: once per digitizer
            self._records_from, self._recording = digitizer, isinstance(digitizer, RecordingDigitizer)
        if self._recording:
            record = digitizer.read_record(self.digitizer_channel)
        else:
            record = dsp.AdcRecord(self.read_samples_v(), 1.0)
        return replace(record, centre_v=self.offset_v())

    def record_quadratures_snu(self, record: dsp.AdcRecord, n_symbols: int, dc_v: float = 0.0) -> np.ndarray:
        """``quadratures_snu(record.volts() - dc_v, n_symbols)``, a piece of the record at a time (dsp.AdcRecord)."""
        c = self.calibration
        if c is None:
            raise RuntimeError(f"{self.name}: no shot-noise calibration (a ReceiverCalibration) is loaded")
        return dsp.record_quadratures_snu(record, np.asarray(c.template), c.samples_per_symbol, c.offset_samples,
                                          c.shot_noise_variance_v2, n_symbols, dc_v)

    def capture_samples_v(self, points: int, sample_rate_hz: float, range_v: float, offset_v: float = 0.0) -> np.ndarray:
        """One new acquisition of ``points`` at ``sample_rate_hz`` on this channel's ``range_v`` centred on
        ``offset_v``, in volts: the digitizer's one-call capture where it has one, else its five verbs."""
        digitizer = self._digitizer()
        if isinstance(digitizer, CapturingDigitizer):
            return np.asarray(digitizer.capture(self.digitizer_channel, points=points, sample_rate_hz=sample_rate_hz,
                                                range_v=range_v, offset_v=offset_v), dtype=float)
        digitizer.configure(points=points, sample_rate_hz=sample_rate_hz)
        digitizer.configure_channel(self.digitizer_channel, range_v=range_v, offset_v=offset_v)
        digitizer.arm()
        digitizer.trigger()
        digitizer.wait()
        return self.read_samples_v()


class ReceiverDigitizer:
    """The receivers' side of one digitizer, as the homodyne and amplifier calibrations take it
    (qslab.calibration.homodyne.Digitizer): settings and samples per receiver name."""

    def __init__(self, digitizer: Digitizer, receivers):
        self.digitizer, self.receivers = digitizer, list(receivers)

    def configure(self, *, points: int, sample_rate_hz: float, ranges_v: dict[str, float]) -> float:
        """Points, rate and each receiver's range, single acquisitions armed; returns the rate taken."""
        self.digitizer.configure(points=int(points), sample_rate_hz=sample_rate_hz)
        for rx in self.receivers:
            self.digitizer.configure_channel(rx.digitizer_channel, range_v=ranges_v[rx.name])
        self.digitizer.arm()
        return self.digitizer.sample_rate_hz()

    def acquire(self) -> dict[str, np.ndarray]:
        self.digitizer.trigger()
        self.digitizer.wait()
        return {rx.name: rx.read_samples_v() for rx in self.receivers}

    def set_offsets(self, offsets_v: dict[str, float]) -> None:
        for rx in self.receivers:
            if rx.name in offsets_v:
                rx.set_offset_v(float(offsets_v[rx.name]))
