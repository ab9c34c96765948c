"""The client's time-bin processor role: data vector -> Givens angles -> drives of its beam splitter and phase modulator.

One time bin per symbol (DECISIONS M). The variable beam splitter (an MZM-type coupler) keeps
cos(theta) of the loop for theta = pi u / (2 Vpi) + theta_offset, so u = 2 Vpi (theta - offset)/pi
with theta in [0, pi/2]; the phase modulator gives phi = pi u / Vpi, so u = Vpi phi / pi with phi
wrapped into [-pi, pi). Both are linear in the angle (the angle is what the data set), and the
AWG plays u / driver_gain. The angle math is qslab.analysis.givens, shared with the bench's link model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qslab.analysis.givens import complex_unit_vector, givens_angles
from qslab.instruments.optical.awg_channels import AwgChannels, codes_to_volts, volts_to_codes
from qslab.instruments.optical.limits import LimitError


@dataclass(frozen=True)
class ProcessorCalibration:
    """The processor's modulators as a calibration record gives them."""

    beam_splitter_vpi_v: float
    phase_vpi_v: float
    beam_splitter_driver_gain: float = 1.0
    phase_driver_gain: float = 1.0
    beam_splitter_theta_offset_rad: float = 0.0  # theta at 0 V drive
    record_id: str | None = None

    def __post_init__(self):
        for name in ("beam_splitter_vpi_v", "phase_vpi_v", "beam_splitter_driver_gain", "phase_driver_gain"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not math.isfinite(self.beam_splitter_theta_offset_rad):
            raise ValueError("beam_splitter_theta_offset_rad must be finite")


MIN_REACH = 0.95  # the least share of each angle's full range the declared amplitude must reach (below: refused)


def wrap_phase_rad(phi) -> np.ndarray:
    """Phases into [-pi, pi); those already there as they are (the modulo would round them, and costs 20 ns each)."""
    phi = np.array(phi, dtype=float)
    outside = (phi < -np.pi) | (phi >= np.pi)
    if outside.any():
        phi[outside] = (phi[outside] + np.pi) % (2.0 * np.pi) - np.pi
    return phi


class AwgTimeBinProcessor:
    """``awg``: two AWG channels, (beam splitter, phase modulator)."""

    def __init__(self, awg: AwgChannels, calibration: ProcessorCalibration, *, name: str = "client_processor"):
        if len(awg.channels) != 2:
            raise ValueError(f"{name}: the processor drives two AWG channels (beam splitter, phase), got {awg.channels}")
        self.awg, self.calibration, self.name = awg, calibration, name
        self._prepared: tuple | None = None  # (x_hat, calibration, amplitude limit, codes and amplitudes): prepare_batch

    def full_range_peaks_v(self) -> tuple[float, float]:
        """The largest |AWG volts| of each channel over the whole angle range (theta in [0, pi/2], phi in [-pi, pi))."""
        c = self.calibration
        thetas = np.array([0.0, 0.5 * np.pi]) - c.beam_splitter_theta_offset_rad
        beam_splitter = float(np.max(np.abs(2.0 * c.beam_splitter_vpi_v * thetas / np.pi))) / c.beam_splitter_driver_gain
        return beam_splitter, c.phase_vpi_v / c.phase_driver_gain

    def reach(self) -> list[str]:
        """What the declared amplitude limit leaves out of each angle's range: one line per channel that cannot reach
        all of it (its angles beyond are played at the nearest reachable one); [] when both reach everything.
        LimitError when a channel reaches less than MIN_REACH of its range (its angles would be too wrong).

        Why not refuse at the first volt over: a modulator 1 % harder to drive than the datasheet says misses the
        last 1 % of its range, which few bins use and then by a fraction of a degree; refusing would stop the whole
        station at a limit edge."""
        limit = self.awg.amplitude_max
        notes = []
        for (label, angle), peak_v in zip((("beam splitter", "theta in [0, pi/2]"), ("phase modulator", "phi in [-pi, pi)")),
                                          self.full_range_peaks_v()):
            share = 0.5 * limit.value / peak_v
            if share >= 1.0:
                continue
            line = (f"its {label} reaches {100 * share:.1f} % of {angle} at the declared "
                    f"{limit.describe()} (the full range needs {2 * peak_v:.4g} Vpp)")
            if share < MIN_REACH:
                raise LimitError(self.name, f"{line}; at least {100 * MIN_REACH:g} % is needed")
            notes.append(f"{self.name}: {line}; angles beyond are played at the nearest reachable one")
        return notes

    def angles(self, data) -> tuple[np.ndarray, np.ndarray]:
        """(theta_k, phi_k) per time bin for a real data vector (two values per complex mode)."""
        return givens_angles(complex_unit_vector(data))

    def drive_v(self, data) -> tuple[np.ndarray, np.ndarray]:
        """AWG volts per bin for the beam splitter and the phase modulator."""
        return self.drive_v_for_unit_vectors(complex_unit_vector(data))

    def drive_v_for_unit_vectors(self, x_hat) -> tuple[np.ndarray, np.ndarray]:
        """AWG volts per bin for complex unit vectors [..., N] (a batch of images at once)."""
        theta, phi = givens_angles(x_hat)
        c = self.calibration
        beam_splitter_v = 2.0 * c.beam_splitter_vpi_v * (theta - c.beam_splitter_theta_offset_rad) / np.pi
        phase_v = c.phase_vpi_v * wrap_phase_rad(phi) / np.pi
        # within the declared amplitude: angles out of reach (reach()) at the nearest reachable one
        half = 0.5 * self.awg.amplitude_max.value
        return (np.clip(beam_splitter_v / c.beam_splitter_driver_gain, -half, half),
                np.clip(phase_v / c.phase_driver_gain, -half, half))

    def angles_from_drive_v(self, beam_splitter_v, phase_v) -> tuple[np.ndarray, np.ndarray]:
        """What the modulators do with AWG volts (the inverse of drive_v, for checks)."""
        c = self.calibration
        theta = np.pi * c.beam_splitter_driver_gain * np.asarray(beam_splitter_v) / (2.0 * c.beam_splitter_vpi_v)
        phi = np.pi * c.phase_driver_gain * np.asarray(phase_v) / c.phase_vpi_v
        return theta + c.beam_splitter_theta_offset_rad, phi

    def drive_codes(self, data) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """(beam-splitter codes, phase codes, their amplitudes Vpp); refuses amplitudes beyond the declared limit."""
        (beam_splitter, phase), amplitudes = self._batch_codes(complex_unit_vector(data))
        return beam_splitter, phase, tuple(amplitudes)

    def _batch_codes(self, x_hat) -> tuple[list[np.ndarray], list[float]]:
        """Codes per bin of both channels (flattened over images) and their amplitudes; checks the limit."""
        volts = [v.ravel() for v in self.drive_v_for_unit_vectors(x_hat)]
        amplitudes = [self.awg.amplitude_for_volts_vpp(v) for v in volts]  # the AWG family's least amplitude
        for amplitude in amplitudes:
            self.awg.check_amplitude_vpp(amplitude)
        return [volts_to_codes(v, a) for v, a in zip(volts, amplitudes)], amplitudes

    def played_volts(self, x_hat) -> tuple[np.ndarray, np.ndarray]:
        """AWG volts per bin that load_batch plays for x_hat [B, N] (the 8-bit codes): what a calibration fits."""
        codes, amplitudes = self._batch_codes(x_hat)
        shape = np.shape(x_hat)
        return tuple(codes_to_volts(c, a).reshape(shape) for c, a in zip(codes, amplitudes))

    def prepare_batch(self, x_hat) -> None:
        """Work out the codes of a batch that ``load_batch`` will be given later; nothing is sent.

        Why: the session knows its next batch's images while it takes this one; the codes (the Givens angles of every
        image, ~2 ms) are then worked out while the bench computes this batch's products, instead of when the next
        batch's upload waits for them. One batch is kept, for a load of the same x_hat at the same calibration and
        amplitude limit; any other load (this batch's next layer) works its codes out as before and leaves them."""
        x_hat = np.array(x_hat, dtype=np.complex128)  # a copy: the caller may reuse its array
        self._prepared = None
        self._prepared = (x_hat, self.calibration, self.awg.amplitude_max, self._batch_codes(x_hat))

    def load_batch(self, x_hat, samples_per_symbol: int, segment_id: int = 1) -> None:
        """One segment holding the bins of several images, one block of N bins per image, in order: one message
        (segments, amplitudes, selection, outputs on; the AWG stopped, as for every upload, and left stopped: the
        session starts it for the acquisition only). Sent whole: another batch's images change every bin, so
        comparing with the last upload (a partial reload) finds nothing to keep."""
        codes, amplitudes = self._codes_for(x_hat)
        self.awg.load([(segment_id, [np.repeat(c, samples_per_symbol) for c in codes])], amplitudes, partial=False)

    def _codes_for(self, x_hat) -> tuple[list[np.ndarray], list[float]]:
        """_batch_codes(x_hat): prepare_batch's when it was for this x_hat at this calibration and limit (taken once)."""
        prepared = self._prepared
        if (prepared is not None and prepared[1] is self.calibration and prepared[2] is self.awg.amplitude_max
                and np.array_equal(prepared[0], x_hat)):
            self._prepared = None
            return prepared[3]
        return self._batch_codes(x_hat)

    def load(self, data, samples_per_symbol: int, segment_id: int = 1) -> None:
        beam_splitter, phase, amplitudes = self.drive_codes(data)
        self.awg.load([(segment_id, [np.repeat(beam_splitter, samples_per_symbol), np.repeat(phase, samples_per_symbol)])],
                      list(amplitudes))
