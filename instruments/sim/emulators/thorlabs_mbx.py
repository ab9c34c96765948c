"""Thorlabs MBX bias controller emulator: the serial protocol of docs/INSTRUMENTS.md 5.1, line by line.

Setters are ``NODE:LEAF: <value>`` and answer ``1``; queries end in ``?``; refusals answer
``Err: <text>`` with the manual's texts; replies end in LF; only the exact short or long form of
a node is accepted. The bias loop acts on the bench: the automatic modes put the bias voltage
where the *true* transfer function (bench parameters) has its peak, null, quadrature or power
ratio, plus a small residual drawn at each lock; manual mode applies the held voltage; off
applies 0 V. The MBX's own VOA is emulated as an instrument but is not in the optical path
(nothing on the bench is cabled through it), so it sees no light.

A lock takes its time and needs light (bench parameters ``bias_lock``): setting an automatic mode
or ``MZM:RESET`` starts a sweep of ``acquisition_time_s`` instrument seconds (bench clock) during which
``MZM:CALIBRATING?`` reads 1, ``MZM:SETPOINT?`` 0 and the previous voltage stays applied. The sweep needs
``min_tap_power_w`` on the loop's photodiode (at the modulator's peak) from its start to its end,
checked whenever the MBX is asked anything; without it the sweep ends unlocked (``CALIBRATING?`` 0,
``SETPOINT?`` 0) and stays so until a new mode or ``MZM:RESET``. A locked loop reads ``SETPOINT?`` 0
while its light is gone (it cannot confirm the point) and 1 again when it returns. ``MZM:SETpoint?``
and ``MZM:CALIBRATING?`` are 0|1 flags (PyMeasure's driver and tests); the Remote Control User Guide
(TTN116413-D04 Rev. E) documents no error reply for a loop without light (its VOA section, p. 15, says
only that holding a power "requires adequate optical power input"), so the bench reports a dark lock as
the flags would: not locked, never an ``Err:``.
"""

from __future__ import annotations

import re

import numpy as np

from qslab.instruments.sim.bench import BiasState
from qslab.instruments.sim.bench_parameters import ModulatorTruth
from qslab.instruments.sim.emulators.base import SERIAL_FRAMING, Emulator
from qslab.instruments.sim.link.modulators import bias_for_phase_v, theta_for_power_fraction
from qslab.instruments.sim.scpi.engine import Call, CommandTree
from qslab.instruments.sim.scpi.parsing import ScpiError, tokenize_header

MODES = range(0, 10)
OFF, PEAK, NULL, QUAD_PLUS, QUAD_MINUS, HOLD_PLUS, HOLD_MINUS, MANUAL, POWER_PLUS, POWER_MINUS = MODES
AUTO_MODES = {PEAK, NULL, QUAD_PLUS, QUAD_MINUS, HOLD_PLUS, HOLD_MINUS, POWER_PLUS, POWER_MINUS}
MANUAL_LIMITS_MV = (-10_000, 10_000)
RATIO_LIMITS_X100 = (250, 10_000)
VOA_ATTENUATION_LIMITS_DB = (1.0, 20.0)
VOA_OUTPUT_LIMITS_MW = (0.01, 100.0)
BIAS_OUTPUT_LIMIT_V = 10.0

# ScpiError codes -> the MBX's "Err: <text>" replies (docs/INSTRUMENTS.md 5.1)
ERROR_TEXTS = {
    -113: "Undefined header", -110: "Undefined header", -222: "Data out of range",
    -224: "Illegal parameter value", -104: "Data type error", -120: "Numeric data error",
    -121: "Numeric data error", -108: "Parameter error", -109: "Parameter error", -220: "Parameter error",
    -241: "Feature not present",
}
_SET = re.compile(r"^([A-Za-z*][A-Za-z0-9:*_]*?):\s+(\S.*)$")
_QUERY = re.compile(r"^([A-Za-z*][A-Za-z0-9:*_]*)\?$")
_COMMAND = re.compile(r"^([A-Za-z*][A-Za-z0-9:*_]*)$")


class ThorlabsMBXEmulator(Emulator):
    """One MBX: ``mzm`` bias loop (wired to the modulator whose ``bias_controller`` names it) and ``voa``."""

    framing = SERIAL_FRAMING
    driver = "qslab.instruments.drivers.thorlabs_mbx.ThorlabsMBX"
    idn = "THORLABS,MBX,M00000001,1.9.4"

    def __init__(self, bench, name: str):
        super().__init__(bench, name)
        self.rng = bench.rng(name)
        self.tree = CommandTree()
        self._register(self.tree)
        with bench.lock:
            bench.bias.setdefault(name, BiasState())
            self.power_cycle()

    def power_cycle(self) -> None:
        """Power-on settings: loop off (0 V on the modulator), set-points at their defaults, VOA off."""
        with self.bench.lock:
            self.mode = OFF
            self.manual_mv = 0
            self.ratio_x100 = 1000
            self.hold_v = {HOLD_PLUS: None, HOLD_MINUS: None}
            self.sweep: tuple[float, float, int] | None = None  # (started at, target theta, mode) while acquiring
            self.locked = False
            self.voa_enabled, self.voa_mode = False, 0
            self.voa_attenuation_db, self.voa_output_mw = 10.0, 1.0
            self.voa_error_db = 0.0
            self._apply()

    # -- which modulator, and its true transfer function -------------------------------------
    def _modulator(self) -> ModulatorTruth:
        p = self.bench.params
        if p.server_carver.bias_controller == self.name:
            return p.server_carver
        if p.server_iq.bias_controller == self.name:
            return p.server_iq  # its children are what the bias moves
        return ModulatorTruth(bias_controller=self.name)  # not cabled: any MZM will do

    def _loop_light_w(self) -> float:
        """What the loop's photodiode sees at the modulator's peak: the light into the modulator, through its
        insertion loss, times the tap ratio (what a sweep has to work with, whatever the bias is now)."""
        p = self.bench.params
        if p.server_carver.bias_controller == self.name:
            into_w, truth = self.bench.carver_input_power_w(), p.server_carver
        elif p.server_iq.bias_controller == self.name:
            into_w, truth = self.bench.carver_output_power_w(), p.server_iq
        else:
            return 0.0
        return into_w * 10.0 ** (-truth.insertion_loss_db / 10.0) * truth.monitor_tap_ratio

    def _has_light(self) -> bool:
        return self._loop_light_w() >= self.bench.params.bias_lock.min_tap_power_w

    def _tap_power_w(self) -> float:
        p = self.bench.params
        if p.server_carver.bias_controller == self.name:
            return self.bench.carver_output_power_w() * p.server_carver.monitor_tap_ratio
        if p.server_iq.bias_controller == self.name:
            return self.bench.modulator_output_power_w() * p.server_iq.monitor_tap_ratio
        return 0.0

    def _bias_phase_rad(self, truth) -> float:
        """The arm phase at 0 V the loop compensates: for the IQ's children wired in parallel, their mean (the
        one loop's dither sees the sum of both)."""
        return truth.bias_phase_rad + 0.5 * getattr(truth, "q_bias_phase_offset_rad", 0.0)

    def _start_lock(self, theta_rad: float) -> None:
        """Start a sweep towards ``theta_rad`` (caller holds the bench lock); it fails at once in the dark."""
        self.locked = False
        self.sweep = (self.bench.clock.now_s(), theta_rad, self.mode) if self._has_light() else None

    def _progress(self) -> None:
        """Advance a running sweep to now (every message calls it): lost light ends it unlocked; a sweep that ran
        its acquisition time with light locks, with a residual drawn per lock."""
        if self.sweep is None:
            return
        started_s, theta_rad, mode = self.sweep
        if not self._has_light():
            self.sweep = None
            return
        if self.bench.clock.now_s() - started_s < self.bench.params.bias_lock.acquisition_time_s:
            return
        truth = self._modulator()
        residual = self.bench.params.bias_lock.residual_rad * self.rng.standard_normal()
        volts = bias_for_phase_v(theta_rad + residual, truth.bias_vpi_v, self._bias_phase_rad(truth),
                                 BIAS_OUTPUT_LIMIT_V)
        self.sweep, self.locked = None, True
        self.bench.clock.charge(self.bench.params.bias_lock.acquisition_time_s)  # the sweep the lock asked for
        self.bench.bias[self.name].applied_v = volts
        if mode in (QUAD_PLUS, HOLD_PLUS):
            self.hold_v[HOLD_PLUS] = volts
        elif mode in (QUAD_MINUS, HOLD_MINUS):
            self.hold_v[HOLD_MINUS] = volts

    def _target_rad(self, mode: int) -> float:
        if mode == PEAK:
            return 0.0
        if mode == NULL:
            return np.pi
        if mode in (QUAD_PLUS, HOLD_PLUS):
            return -0.5 * np.pi
        if mode in (QUAD_MINUS, HOLD_MINUS):
            return 0.5 * np.pi
        return theta_for_power_fraction(100.0 / self.ratio_x100, self._modulator().extinction_ratio_db,
                                        positive_slope=(mode == POWER_PLUS))

    def _apply(self) -> None:
        """Put the voltage of the current mode on the modulator, or start its lock (caller holds the bench lock)."""
        state = self.bench.bias[self.name]
        self.sweep = None
        if self.mode == OFF:
            self.locked, state.applied_v = False, 0.0
        elif self.mode == MANUAL:
            self.locked, state.applied_v = False, self.manual_mv / 1000.0
        elif self.mode in (HOLD_PLUS, HOLD_MINUS) and self.hold_v[self.mode] is not None:
            self.locked, state.applied_v = True, self.hold_v[self.mode]
        else:
            self._start_lock(self._target_rad(self.mode))

    def calibrating(self) -> bool:
        return self.sweep is not None

    def at_setpoint(self) -> bool:
        """SETPOINT?: an automatic mode, its lock acquired, and light to hold it by."""
        return self.mode in AUTO_MODES and self.locked and self._has_light()

    # -- protocol ----------------------------------------------------------------------------
    def handle(self, message: bytes) -> bytes:
        text = message.decode("ascii", errors="replace").strip()
        if not text:
            return b""
        return (self._execute(text) + "\n").encode("ascii")

    def _execute(self, text: str) -> str:
        if (match := _QUERY.match(text)) is not None:
            header, args, query = match.group(1), [], True
        elif (match := _SET.match(text)) is not None:
            header, args, query = match.group(1), [match.group(2).strip()], False
        elif (match := _COMMAND.match(text)) is not None:
            header, args, query = match.group(1), [], False
        else:
            return "Err: Undefined header"
        try:
            run = self.tree.bind(self.tree.lookup(tokenize_header(header)), header, query)
            with self.bench.lock:
                self._progress()
                reply = run(args)
        except ScpiError as error:
            return f"Err: {ERROR_TEXTS.get(error.code, 'Execution error')}"
        return "1" if reply is None else str(reply)

    def _register(self, tree: CommandTree) -> None:
        def integer(call: Call, low: int, high: int) -> int:
            call.count(1)
            text = call.text()
            try:
                value = float(text)
            except ValueError:
                raise ScpiError(-104) from None
            if value != int(value):
                raise ScpiError(-104)
            if not low <= value <= high:
                raise ScpiError(-222)
            return int(value)

        def number(call: Call, low: float, high: float) -> float:
            call.count(1)
            try:
                value = float(call.text())
            except ValueError:
                raise ScpiError(-104) from None
            if not low <= value <= high:
                raise ScpiError(-222)
            return value

        def set_mode(call: Call) -> None:
            self.mode = integer(call, MODES.start, MODES.stop - 1)
            self._apply()

        def set_manual(call: Call) -> None:
            self.manual_mv = integer(call, *MANUAL_LIMITS_MV)
            if self.mode == MANUAL:
                self._apply()

        def set_ratio(call: Call) -> None:
            self.ratio_x100 = integer(call, *RATIO_LIMITS_X100)
            if self.mode in (POWER_PLUS, POWER_MINUS):
                self._apply()

        def reset(call: Call) -> None:
            call.count(0)
            if self.mode in (HOLD_PLUS, HOLD_MINUS):
                self.hold_v[self.mode] = None
            self._apply()

        def query(value):
            def handler(call: Call) -> str:
                call.count(0)
                return str(value())
            return handler

        def set_voa_enabled(call: Call) -> None:
            self.voa_enabled = bool(integer(call, 0, 1))

        def set_voa_mode(call: Call) -> None:
            self.voa_mode = integer(call, 0, 1)

        def set_voa_attenuation(call: Call) -> None:
            self.voa_attenuation_db = number(call, *VOA_ATTENUATION_LIMITS_DB)
            self.voa_error_db = 0.01 * self.rng.standard_normal()

        def set_voa_output(call: Call) -> None:
            self.voa_output_mw = number(call, *VOA_OUTPUT_LIMITS_MW)

        def voa_measured_db() -> float:
            if not self.voa_enabled:
                return 0.0
            if self.voa_mode == 0:
                return self.voa_attenuation_db + self.voa_error_db
            return VOA_ATTENUATION_LIMITS_DB[0]  # no light: the power loop opens fully

        def voa_error_db() -> float:
            return (self.voa_attenuation_db - voa_measured_db()) if self.voa_enabled and self.voa_mode == 0 else 0.0

        def g(value: float) -> str:
            return f"{value:.6g}"

        tree.add("*IDN", query=query(lambda: self.idn))
        tree.add("MZM:MODE", set=set_mode, query=query(lambda: self.mode))
        tree.add("MZM:RESET", set=reset)
        tree.add("MZM:CALIBRATING", query=query(lambda: int(self.calibrating())))
        tree.add("MZM:SETpoint", query=query(lambda: int(self.at_setpoint())))
        tree.add("MZM:HOLD:VOLTage", set=set_manual, query=query(lambda: self.manual_mv))
        tree.add("MZM:HOLD:RATIO", set=set_ratio, query=query(lambda: self.ratio_x100))
        tree.add("MZM:VOLTage", query=query(lambda: f"{self.bench.bias[self.name].applied_v:.3f}"))
        tree.add("MZM:TAP:MW", query=query(lambda: g(self._tap_power_w() * 1e3)))
        tree.add("VOA:POWer", set=set_voa_enabled, query=query(lambda: int(self.voa_enabled)))
        tree.add("VOA:MODE", set=set_voa_mode, query=query(lambda: self.voa_mode))
        tree.add("VOA:ATTen", set=set_voa_attenuation, query=query(lambda: g(self.voa_attenuation_db)))
        tree.add("VOA:OUTput:MW", set=set_voa_output, query=query(lambda: g(self.voa_output_mw)))
        tree.add("VOA:MEASured", query=query(lambda: g(voa_measured_db())))
        tree.add("VOA:ERRor", query=query(lambda: g(voa_error_db())))
        tree.add("VOA:SETpoint", query=query(lambda: int(self.voa_enabled and abs(voa_error_db()) <= 0.1)))
        tree.add("VOA:TAP:MW", query=query(lambda: g(0.0)))
