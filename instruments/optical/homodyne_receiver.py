"""A balanced homodyne receiver role: an analog detector (no remote control) read by a digitizer channel.

The detector's specs are configuration (gain V/W, bandwidth, noise-equivalent power); its
calibration (1 SNU at the matched-filter output, electronic noise in SNU, pulse template, symbol
timing) comes from a calibration record. Samples in volts become quadratures in shot-noise units
through qslab.analysis.dsp, the same code a replay runs. The declared LO power limit is what the
station turns into a bound on the laser (the LO is a fixed share of it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from qslab.analysis import dsp
from qslab.analysis.units import DEFAULT_WAVELENGTH_M, photon_energy_j
from qslab.instruments.drivers.keysight_infiniium import digitize_and_read, read_trace_block
from qslab.instruments.optical.limits import Limit


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
    """``channel``: a digitizer channel with ``trace()`` (volts) and ``range()`` (full range, 8 divisions), or None."""

    def __init__(self, detector: DetectorSpec, *, lo_power_max: Limit, lo_fraction: float,
                 channel: Any | None = None, calibration: ReceiverCalibration | None = None,
                 adc_bits: int | None = None, name: str = "receiver"):
        self.detector, self.lo_power_max, self.lo_fraction = detector, lo_power_max, lo_fraction
        self.channel, self.calibration, self.adc_bits, self.name = channel, calibration, adc_bits, name

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

    def read_samples_v(self) -> np.ndarray:
        if self.channel is None:
            raise RuntimeError(f"{self.name}: no digitizer channel")
        samples = read_trace_block(self.channel)
        if samples is None:  # not the Infiniium driver's channel: read as it reads
            samples = self.channel.trace()
        return np.asarray(samples, dtype=float)

    def capture_samples_v(self, points: int, sample_rate_hz: float, range_v: float, offset_v: float = 0.0) -> np.ndarray:
        """One new acquisition of ``points`` at ``sample_rate_hz`` on this channel's ``range_v`` centred on
        ``offset_v``, in volts: two messages on an Infiniium (``digitize_and_read``), else the driver's sets,
        digitize and trace."""
        if self.channel is None:
            raise RuntimeError(f"{self.name}: no digitizer channel")
        samples = digitize_and_read(self.channel, points, sample_rate_hz, range_v, offset_v)
        if samples is None:
            scope = self.channel.root_instrument
            scope.acquire_points(points)
            scope.sample_rate(sample_rate_hz)
            self.channel.range(range_v)
            self.channel.offset(offset_v)
            scope.auto_digitize(False)
            scope.digitize()
            samples = self.read_samples_v()
        return np.asarray(samples, dtype=float)
