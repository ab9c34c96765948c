"""Pulse carver (AmplitudeModulator) and IQ modulator roles: target field in, AWG volts and int8 codes out.

Both bias their Mach-Zehnder children at null (the MBX's ``null`` mode), where the field
transmission of a drive u at the modulator is sin(pi u / (2 Vpi)) (docs/PHYSICS.md 15; the
carrier leakage of a finite extinction ratio lies in the other quadrature). Arcsine predistortion
inverts it: u = (2 Vpi / pi) arcsin(a), and the AWG plays u / driver_gain. The IQ modulator's
output is E = (1/2)[(1 + g/2) t_I + e^{i(pi/2 + delta)} (1 - g/2) t_Q] (docs/PHYSICS.md 15); a
calibrated gain imbalance g and parent phase error delta are undone before the arcsine, so the
field asked for is (1/2)(Re + i Im) of the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from qslab.instruments.optical.awg_channels import (
    AwgChannels,
    codes_to_volts,
    volts_to_codes,
)
from qslab.instruments.optical.bias_controller import BiasLockError
from qslab.instruments.optical.limits import Limit, LimitError
from qslab.instruments.optical.roles import BiasController

BIAS_MODE = "null"
BIAS_LOCK_TIMEOUT_S = 30.0  # real seconds: an MBX sweeps and locks in seconds; a bench in less (its time_scale)


@dataclass(frozen=True)
class ModulatorCalibration:
    """What a calibration record gives a modulator role (record_id names the record it came from)."""

    vpi_v: float                      # RF half-wave voltage at the modulator's RF port
    driver_gain: float = 1.0          # RF driver: V at the modulator per V of AWG output
    iq_gain_imbalance: float = 0.0    # g (IQ modulator only)
    iq_phase_error_rad: float = 0.0   # delta: parent phase minus pi/2 (IQ modulator only)
    extinction_ratio_db: float | None = None  # each child's (IQ modulator only; None: an ideal null)
    record_id: str | None = None

    def __post_init__(self):
        for name in ("vpi_v", "driver_gain"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not abs(self.iq_gain_imbalance) < 2.0:
            raise ValueError(f"iq_gain_imbalance must satisfy |g| < 2, got {self.iq_gain_imbalance!r}")
        if not abs(self.iq_phase_error_rad) < math.pi / 4:
            raise ValueError(f"iq_phase_error_rad must satisfy |delta| < pi/4, got {self.iq_phase_error_rad!r}")
        if self.extinction_ratio_db is not None and not (math.isfinite(self.extinction_ratio_db)
                                                         and self.extinction_ratio_db > 0):
            raise ValueError(f"extinction_ratio_db must be a finite number > 0 or None, got {self.extinction_ratio_db!r}")

    @property
    def leak_ratio(self) -> float:
        """A null-biased child's quadrature leak per unit field at zero drive: 1/sqrt(ER) (0: ideal)."""
        return 0.0 if self.extinction_ratio_db is None else 10.0 ** (-self.extinction_ratio_db / 20.0)

    @property
    def vpi_at_awg_v(self) -> float:
        return self.vpi_v / self.driver_gain


LEAK_BLOCK_SYMBOLS = 1 << 14  # symbols compensated at a time (a few 128 kB arrays: they stay in cache)
FULL_SCALE_CHILD_FIELD = 0.97  # child field at full AWG code (the protocol uses at most 0.9 plus compensations)


def arcsine_drive_v(field, vpi_v: float) -> np.ndarray:
    """u = (2 Vpi / pi) arcsin(a) for fields a in [-1, 1] (what a null-biased MZM turns into a)."""
    field = np.asarray(field, dtype=float)
    if field.size and not (np.all(np.isfinite(field)) and np.max(np.abs(field)) <= 1.0):
        raise ValueError("target fields must lie in [-1, 1] (a fraction of the modulator's full transmission)")
    return 2.0 * vpi_v / np.pi * np.arcsin(field)


def null_biased_field(drive_v, vpi_v: float) -> np.ndarray:
    """sin(pi u / (2 Vpi)): the field of a null-biased MZM for drive u (the inverse of arcsine_drive_v)."""
    return np.sin(np.pi * np.asarray(drive_v, dtype=float) / (2.0 * vpi_v))


class _Biased:
    """The bias side of a modulator (a roles.BiasController): lock at null (or another point), or hold a
    manual bias within the declared ``bias_max_v``."""

    name: str

    def __init__(self, bias_controller: BiasController | None, bias_max: Limit | None):
        self.bias_controller, self.bias_max = bias_controller, bias_max

    def _controller(self) -> BiasController:
        if self.bias_controller is None:
            raise RuntimeError(f"{self.name}: no bias controller is configured")
        return self.bias_controller

    def lock_bias(self, point: str = BIAS_MODE, timeout_s: float = BIAS_LOCK_TIMEOUT_S) -> None:
        """Lock the bias loop at ``point`` (the modulation's null by default; ``peak`` passes the most light, as a
        pulse carver playing rect symbols back to back must) and wait until the controller reports it.

        Needs light on the loop's photodiode (the laser on, the modulators before this one passing light): a
        dither lock sweeps and locks on the light. BiasLockError (a TimeoutError) naming the modulator and its
        controller when the loop has not locked within ``timeout_s`` real seconds."""
        controller = self._controller()
        controller.lock(point)
        try:
            controller.wait_locked(timeout_s)
        except TimeoutError as error:
            raise BiasLockError(f"{self.name}: {error}") from error

    def set_manual_bias_v(self, bias_v: float, *, already_manual: bool = False) -> None:
        """Hold ``bias_v`` (manual mode); |bias_v| is checked against the declared limit first.

        ``already_manual``: the caller put the controller in manual mode itself, so only the voltage is sent
        (one MBX exchange instead of two, for a sweep)."""
        controller = self._controller()
        if self.bias_max is not None:
            if not math.isfinite(bias_v):
                raise LimitError(self.name, f"bias {bias_v!r} V is not a finite number")
            self.bias_max.check_at_most(self.name, "|manual bias|", abs(bias_v))
        controller.set_point_v(bias_v)
        if not already_manual:
            controller.hold()


class AwgAmplitudeModulator(_Biased):
    """The pulse carver: amplitudes a in [0, 1] (fraction of the peak field) per symbol -> one AWG channel."""

    def __init__(self, awg: AwgChannels, calibration: ModulatorCalibration, bias_controller: BiasController | None = None,
                 *, bias_max: Limit | None = None, name: str = "pulse_carver"):
        super().__init__(bias_controller, bias_max)
        if len(awg.channels) != 1:
            raise ValueError(f"{name}: an amplitude modulator drives one AWG channel, got {awg.channels}")
        self.awg, self.calibration, self.name = awg, calibration, name

    def drive_v(self, amplitudes) -> np.ndarray:
        amplitudes = np.asarray(amplitudes, dtype=float)
        if amplitudes.size and not (np.min(amplitudes) >= 0.0 and np.max(amplitudes) <= 1.0):
            raise ValueError(f"{self.name}: amplitudes must lie in [0, 1] (a fraction of the peak field)")
        return arcsine_drive_v(amplitudes, self.calibration.vpi_at_awg_v)

    def drive_codes(self, amplitudes) -> tuple[np.ndarray, float]:
        """(int8 codes per symbol, amplitude Vpp); refuses an amplitude beyond the declared limit."""
        volts = self.drive_v(amplitudes)
        amplitude = self.awg.amplitude_for_volts_vpp(volts)
        self.awg.check_amplitude_vpp(amplitude)
        return volts_to_codes(volts, amplitude), amplitude

    def load(self, amplitudes, samples_per_symbol: int, segment_id: int = 1) -> None:
        codes, amplitude = self.drive_codes(amplitudes)
        self.awg.load([(segment_id, [np.repeat(codes, samples_per_symbol)])], [amplitude])


DESKEW_TAIL = 2.0**-60  # deskewed's last factor: the first one below this (far below a float's resolution) is left out


def skewed(child_field, delay_symbols: float) -> np.ndarray:
    """Per-symbol mean of a periodic rect sequence arriving ``delay_symbols`` (|s| < 1/2) late:
    (1 - |s|) of each symbol and |s| of the previous one (of the next one for an early arrival)."""
    field = np.asarray(child_field)
    neighbour = np.roll(field, 1 if delay_symbols > 0 else -1)
    return (1.0 - abs(delay_symbols)) * field + abs(delay_symbols) * neighbour


def deskewed(child_field, delay_symbols: float) -> np.ndarray:
    """The inverse of ``skewed`` round the period: what to play so that the late-arriving symbols average to
    ``child_field``. ``skewed`` is (1 - s)(1 + r R), R the shift by one symbol round the period and r = s / (1 - s)
    < 1 for s = |delay| < 1/2, so its inverse is (1 + r R)^-1 / (1 - s) = prod_j (1 + (-r R)^(2^j)) / (1 - s): one
    shifted addition per factor, until (-r)^(2^j) is below the float resolution (5 factors at s = 0.1, 14 at
    s = 0.499). Why not a Fourier-domain division: this is O(n), and an FFT of a 784^2-symbol layer (7^4 among
    its factors) took 50 ms, three times per layer in a session's set-up."""
    s = abs(delay_symbols)
    if not s < 0.5:
        raise ValueError(f"delay_symbols must be within (-1/2, 1/2), got {delay_symbols!r}")
    field = np.array(child_field, dtype=float).reshape(-1)  # a copy, worked on in place
    n, direction = field.size, (1 if delay_symbols > 0 else -1)
    field /= 1.0 - s
    term, shift = -s / (1.0 - s), 1
    scaled = np.empty_like(field)
    while n and abs(term) > DESKEW_TAIL:
        np.multiply(field, term, out=scaled)
        d = (direction * shift) % n  # field[k] += term field[k - shift] round the period
        field[d:] += scaled[:n - d]
        field[:d] += scaled[n - d:]
        term, shift = term * term, 2 * shift
    return field.reshape(np.shape(child_field))


def _reach(child) -> float:
    """max |child| (0 for none), without an array of the absolute values."""
    return max(float(np.max(child, initial=0.0)), -float(np.min(child, initial=0.0)))


class AwgIQModulator(_Biased):
    """The server's IQ modulator: complex fields (|Re|, |Im| <= 1 per child) per symbol -> AWG channels I and Q."""

    def __init__(self, awg: AwgChannels, calibration: ModulatorCalibration, bias_controller: BiasController | None = None,
                 *, bias_max: Limit | None = None, name: str = "server_iq_modulator"):
        super().__init__(bias_controller, bias_max)
        if len(awg.channels) != 2:
            raise ValueError(f"{name}: an IQ modulator drives two AWG channels (I, Q), got {awg.channels}")
        self.awg, self.calibration, self.name = awg, calibration, name

    def child_fields(self, fields) -> tuple[np.ndarray, np.ndarray]:
        """The I and Q children's fields that give ``fields`` after the calibrated imbalance and phase error."""
        fields = np.asarray(fields, dtype=np.complex128)
        return self._children(fields.real, fields.imag)

    def _children(self, re, im) -> tuple[np.ndarray, np.ndarray]:
        """child_fields of the field ``re + i im`` (real arrays of one shape)."""
        a, b, cos_d, _ = self._output_gains()
        q_child = im / (cos_d * b)
        i_child = (re + im * math.tan(self.calibration.iq_phase_error_rad)) / a
        reach = max(_reach(i_child), _reach(q_child))
        if not reach <= 1.0:
            raise ValueError(f"{self.name}: the fields need a child field of {reach:.4g} after imbalance "
                             "compensation; it must be at most 1 (scale the symbols down)")
        return i_child, q_child

    def drive_v(self, fields) -> tuple[np.ndarray, np.ndarray]:
        i_child, q_child = self.leak_compensated_children(fields)
        vpi = self.calibration.vpi_at_awg_v
        return arcsine_drive_v(i_child, vpi), arcsine_drive_v(q_child, vpi)

    def drive_codes(self, fields) -> tuple[np.ndarray, np.ndarray, float]:
        """(I codes, Q codes, common amplitude Vpp); refuses an amplitude beyond the declared limit.

        Why one amplitude for both: I and Q then share one volts-per-code scale, so an AWG amplitude
        error scales the constellation instead of distorting it.
        """
        v_i, v_q = self.drive_v(fields)
        amplitude = self.awg.amplitude_for_volts_vpp(np.concatenate([v_i.ravel(), v_q.ravel()]))
        self.awg.check_amplitude_vpp(amplitude)
        return volts_to_codes(v_i, amplitude), volts_to_codes(v_q, amplitude), amplitude

    def full_scale_amplitude_vpp(self) -> float:
        """The amplitude that plays a child field of FULL_SCALE_CHILD_FIELD at full code: one setting for every
        segment (the M8195A's amplitude belongs to the channel, not to a segment). Below 1 because a child
        field of 1 needs exactly 2 V_pi at the AWG, which on a station sized for it (1 Vpp) would put the
        limit check at the mercy of the V_pi estimate's last digit."""
        return self.awg.amplitude_for_volts_vpp(arcsine_drive_v(np.array([FULL_SCALE_CHILD_FIELD]),
                                                       self.calibration.vpi_at_awg_v))

    def _output(self, t_i, u_i, t_q, u_q) -> np.ndarray:
        """The output field of the children's fields t_I - i u_I and t_Q - i u_Q (each a field and its leak's
        magnitude, real arrays): (1 + g/2) t_I + e^{i(pi/2 + delta)} (1 - g/2) t_Q, in real and imaginary parts.

        The math of analysis.modulator_transfer.iq_children_field (tests/station/test_iq_predistortion_model.py).
        Why in parts: the children's fields are real but for their leaks, and complex arithmetic on layers of 6e5
        symbols (complex temporaries of 10 MB each) was most of a segment upload's time. With the phasor
        e^{i(pi/2 + delta)} = -sin delta + i cos delta, the output is
        Re = a t_I + b (cos delta u_Q - sin delta t_Q), Im = b (cos delta t_Q + sin delta u_Q) - a u_I."""
        a, b, cos_d, sin_d = self._output_gains()
        out = np.empty(np.shape(t_i), dtype=np.complex128)
        out.real = a * t_i + b * (cos_d * u_q - sin_d * t_q)
        out.imag = b * (cos_d * t_q + sin_d * u_q) - a * u_i
        return out

    def _output_gains(self) -> tuple[float, float, float, float]:
        """(1 + g/2, 1 - g/2, cos delta, sin delta) of ``_output``."""
        g, delta = self.calibration.iq_gain_imbalance, self.calibration.iq_phase_error_rad
        return 1.0 + 0.5 * g, 1.0 - 0.5 * g, math.cos(delta), math.sin(delta)

    def _leak(self, child) -> np.ndarray:
        """The magnitude of a child's leak at drive giving field ``child``: the leak is -i cos(x/2)/sqrt(ER)
        (qslab.analysis.modulator_transfer: t(pi + x) = sin(x/2) - i cos(x/2)/sqrt(ER)), and cos(x/2) is
        sqrt(1 - child^2)."""
        magnitude = np.square(child)
        np.subtract(1.0, magnitude, out=magnitude)
        np.maximum(magnitude, 0.0, out=magnitude)
        np.sqrt(magnitude, out=magnitude)
        magnitude *= self.calibration.leak_ratio
        return magnitude

    def leak_compensated_children(self, fields, iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Child fields whose output, with each child's extinction leak, is ``fields``: the leak follows the
        drives (largest at small fields), so a constant offset cannot cancel it for every symbol. Symbol by
        symbol, so a block of LEAK_BLOCK_SYMBOLS at a time, in cache (a layer is up to 6e5 symbols)."""
        fields = np.asarray(fields, dtype=np.complex128)
        re, im = fields.real.reshape(-1), fields.imag.reshape(-1)
        i_child, q_child = np.empty(re.size), np.empty(re.size)
        for first in range(0, re.size, LEAK_BLOCK_SYMBOLS):
            block = slice(first, first + LEAK_BLOCK_SYMBOLS)
            i_child[block], q_child[block] = self._compensated(re[block], im[block], iterations)
        return i_child.reshape(fields.shape), q_child.reshape(fields.shape)

    def _compensated(self, re, im, iterations: int) -> tuple[np.ndarray, np.ndarray]:
        """leak_compensated_children of the field ``re + i im``: the leaks -i u_I, -i u_Q alone give the output
        b cos(delta) u_Q + i (b sin(delta) u_Q - a u_I) (``_output``), which the children's fields make up for."""
        i_child, q_child = self._children(re, im)
        if self.calibration.leak_ratio:
            a, b, cos_d, sin_d = self._output_gains()
            for _ in range(iterations):  # contracts by ~ leak x slope, < 0.2 up to child fields of 0.97
                u_i, u_q = self._leak(i_child), self._leak(q_child)
                i_child, q_child = self._children(re - (b * cos_d) * u_q, im + a * u_i - (b * sin_d) * u_q)
        return i_child, q_child

    def drive_codes_at(self, fields, amplitude_vpp: float, q_delay_symbols: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(I codes, Q codes) for ``fields`` (in the order played) at a given amplitude (checked against the
        declared limit): the children's extinction leak compensated, and the Q child for arriving
        ``q_delay_symbols`` late (IQ skew)."""
        self.awg.check_amplitude_vpp(amplitude_vpp)
        i_child, q_child = self.leak_compensated_children(fields)
        if q_delay_symbols:
            q_child = deskewed(q_child.ravel(), q_delay_symbols).reshape(q_child.shape)
            reach = float(np.max(np.abs(q_child), initial=0.0))
            if not reach <= 1.0:
                raise ValueError(f"{self.name}: the skew compensation needs a Q child field of {reach:.4g}; it must "
                                 "be at most 1 (scale the symbols down)")
        vpi = self.calibration.vpi_at_awg_v
        return (volts_to_codes(arcsine_drive_v(i_child, vpi), amplitude_vpp),
                volts_to_codes(arcsine_drive_v(q_child, vpi), amplitude_vpp))

    def played_fields(self, codes_i, codes_q, amplitude_vpp: float, q_delay_symbols: float = 0.0) -> np.ndarray:
        """The fields the calibrated model predicts for int8 codes: the reference the server verifies against.

        Why not the fields asked for: 8-bit codes round the drives by up to half a step, which would
        otherwise show up in the verification as excess noise the client never added. With an IQ skew,
        each symbol's Q child is (1 - s) of its own field and s of the one before (rect symbols).
        """
        (t_i, u_i), (t_q, u_q) = (self._code_fields(codes, amplitude_vpp) for codes in (codes_i, codes_q))
        if q_delay_symbols:  # (linear with real weights: the Q child's field and its leak each)
            t_q, u_q = (skewed(np.ravel(part), q_delay_symbols).reshape(np.shape(part)) for part in (t_q, u_q))
        return self._output(t_i, u_i, t_q, u_q)

    def _code_fields(self, codes, amplitude_vpp: float) -> tuple[np.ndarray, np.ndarray]:
        """(field, leak magnitude) of a child at each int8 code: looked up in the 256 codes' values (the same
        operations on the same numbers, so the same bits as evaluating them symbol by symbol)."""
        every_code = np.arange(-128, 128)
        field = null_biased_field(codes_to_volts(every_code, amplitude_vpp), self.calibration.vpi_at_awg_v)
        index = np.asarray(codes, dtype=np.int8).astype(np.intp) + 128
        return field[index], self._leak(field)[index]

    def load(self, fields, samples_per_symbol: int, segment_id: int = 1) -> None:
        codes_i, codes_q, amplitude = self.drive_codes(fields)
        self.awg.load([(segment_id, [np.repeat(codes_i, samples_per_symbol), np.repeat(codes_q, samples_per_symbol)])],
                      [amplitude, amplitude])
