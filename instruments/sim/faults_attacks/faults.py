"""Fault injection for the virtual bench: what goes wrong with real instruments, on demand.

Why: the lab session must detect each failure a real bench shows, retry what is safe to retry,
re-calibrate where that cures it, and otherwise stop with one clear message. That is only testable
if the bench misbehaves below the drivers (on the socket, in the emulator, in the optics), so the
real pyvisa-py and pyserial code paths meet the fault exactly as they would meet it in the lab.

    bench = Bench(faults=["timeout@laser:after=0"])          # or, once running:
    bench.inject("power-drop:db=6,after=0")
    bench.inject(Fault("garbled", "power_meter", after_messages=5, count=2))
    bench.faults.fired      # [FiredFault(time_s, instrument, kind, detail, message), ...]

Spec strings (``qslab session --inject-fault``): ``KIND[@INSTRUMENT][:OPTION,OPTION...]`` with
options ``after=N`` (messages the instrument handles normally first; counted from injection),
``count=N`` (messages affected), ``persistent`` (every message from then on), ``db=X``
(power-drop), ``rad=X`` (bias-drift), ``v=X``, ``gain=X``, ``ch=N`` (overrange), ``code=N``
(scpi-error).

Message faults act on the instrument's next eligible message(s):

==========  ==========================================================================================
timeout     a query is swallowed: not executed, no reply (persistent: every message, the instrument hangs)
disconnect  a query is executed, half its reply is sent, the connection is closed (reconnects are accepted)
garbled     a query's reply has its digits replaced by junk (``+1.5E-3`` -> ``+@.%E-!``), still terminated
scpi-error  a message that sets something gets ``code,"text"`` queued right after its first command unit runs,
            so the driver's ``SYST:ERR?`` sees it, in the same message or the next; the MBX (no queue)
            refuses it with ``Err: <text>`` instead
reset       the emulator is power-cycled before the message: *RST settings (laser off, AWG stopped,
            outputs off...), empty error queue, ESR power-on bit set
==========  ==========================================================================================

Condition faults switch a physical change on once the instrument has handled ``after`` messages
(at once for ``after=0``) and keep it until ``FaultPlan.clear()``:

==========  ==========================================================================================
overrange   the digitizer's input gets ``gain x v + offset`` so the ADC clips (hook: ``adc_input_v``)
power-drop  the server laser emits ``db`` less than it is set to (hook: ``power_drop_db``)
bias-drift  the controller's bias steps ``rad`` off its lock (the applied voltage moves by
            rad x Vpi_bias / pi); a re-lock (MZM:RESET, a mode set) cures it
==========  ==========================================================================================
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from qslab.instruments.sim.scpi.parsing import STANDARD_ERRORS, ScpiError, split_units

log = logging.getLogger(__name__)

MESSAGE_KINDS = ("timeout", "disconnect", "garbled", "scpi-error", "reset")
CONDITION_KINDS = ("overrange", "power-drop", "bias-drift")
KINDS = MESSAGE_KINDS + CONDITION_KINDS

# The instrument a kind hits when the spec names none (instrument names of the default line-up).
DEFAULT_TARGETS = {
    "timeout": "laser", "disconnect": "power_meter", "garbled": "power_meter", "scpi-error": "attenuator",
    "reset": "laser", "overrange": "digitizer", "power-drop": "laser", "bias-drift": "bias_iq",
}
# Condition faults need an instrument of the right kind (emulator kinds of qslab.instruments.sim.emulators).
REQUIRED_KIND = {"overrange": "keysight_infiniium", "power-drop": "keysight_n7714a", "bias-drift": "thorlabs_mbx"}
# Counted from injection: inject after the station has connected and the fault lands mid-session.
DEFAULT_AFTER_MESSAGES = 10
_JUNK_FOR_DIGITS = bytes.maketrans(b"0123456789", b"#@!?%&*~^$")


@dataclass(frozen=True)
class Fault:
    """One fault to inject. ``instrument`` None: ``DEFAULT_TARGETS[kind]``."""

    kind: str
    instrument: str | None = None
    after_messages: int = DEFAULT_AFTER_MESSAGES
    count: int = 1
    persistent: bool = False
    power_drop_db: float = 3.0
    bias_drift_rad: float = 0.5
    adc_offset_v: float = 10.0        # beyond any Infiniium full scale (8 V range): every sample clips
    adc_gain: float = 1.0
    channel: int | None = None        # overrange: digitizer channel, None = every channel
    error_code: int = -222

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if isinstance(self.after_messages, bool) or not isinstance(self.after_messages, int) or self.after_messages < 0:
            raise ValueError(f"{self.kind}: after_messages must be an integer >= 0, got {self.after_messages!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"{self.kind}: count must be an integer >= 1, got {self.count!r}")
        for name in ("power_drop_db", "bias_drift_rad", "adc_offset_v", "adc_gain"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{self.kind}: {name} must be finite, got {getattr(self, name)!r}")
        if isinstance(self.error_code, bool) or not isinstance(self.error_code, int) or self.error_code == 0:
            raise ValueError(f"{self.kind}: error_code must be a non-zero SCPI error code, got {self.error_code!r}")

    @property
    def target(self) -> str:
        return self.instrument if self.instrument is not None else DEFAULT_TARGETS[self.kind]

    @property
    def error_text(self) -> str:
        return STANDARD_ERRORS.get(self.error_code, "Device-specific error")

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``KIND[@INSTRUMENT][:OPTION,...]`` (module docstring); ValueError names the bad part."""
        head, _, options = spec.strip().partition(":")
        kind, _, instrument = head.partition("@")
        values: dict[str, Any] = {"kind": kind.strip(), "instrument": instrument.strip() or None}
        for option in filter(None, (part.strip() for part in options.split(","))):
            values.update(_parse_option(spec, option))
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"--inject-fault {spec!r}: {error}") from None

    def __str__(self) -> str:
        """The spec string that parses back to this fault (non-default options only)."""
        default = Fault(self.kind)
        options = [f"{key}={getattr(self, name)}" for key, name in _OPTIONS.items()
                   if name != "persistent" and getattr(self, name) != getattr(default, name)]
        if self.persistent:
            options.append("persistent")
        return f"{self.kind}@{self.target}" + (f":{','.join(options)}" if options else "")


_OPTIONS = {"after": "after_messages", "count": "count", "persistent": "persistent", "db": "power_drop_db",
            "rad": "bias_drift_rad", "v": "adc_offset_v", "gain": "adc_gain", "ch": "channel", "code": "error_code"}
_INT_OPTIONS = {"after_messages", "count", "channel", "error_code"}


def _parse_option(spec: str, option: str) -> dict[str, Any]:
    key, equals, text = (part.strip() for part in option.partition("="))
    if key == "persistent" and not equals:
        return {"persistent": True}
    name = _OPTIONS.get(key)
    if name is None or name == "persistent" or not equals:
        raise ValueError(f"--inject-fault {spec!r}: unknown option {option!r}; expected "
                         f"{', '.join(k + '=...' for k in _OPTIONS if k != 'persistent')} or persistent")
    try:
        return {name: int(text) if name in _INT_OPTIONS else float(text)}
    except ValueError:
        kind = "an integer" if name in _INT_OPTIONS else "a number"
        raise ValueError(f"--inject-fault {spec!r}: {key}= needs {kind}, got {text!r}") from None


@dataclass(frozen=True)
class FiredFault:
    """One time a fault acted: when (wall clock, s), where, what, and on which message."""

    time_s: float
    instrument: str
    kind: str
    detail: str
    message: str = ""


class Disconnect(Exception):
    """Raised to the server: send ``partial_reply``, then close the connection."""

    def __init__(self, partial_reply: bytes):
        super().__init__("fault: connection dropped mid-reply")
        self.partial_reply = partial_reply


@dataclass
class _Armed:
    fault: Fault
    seen: int = 0       # messages its instrument handled since the fault was armed
    acted: int = 0      # messages it acted on (a condition: 1 once switched on)

    @property
    def due(self) -> bool:
        return self.seen >= self.fault.after_messages

    @property
    def spent(self) -> bool:
        if self.fault.kind in CONDITION_KINDS:
            return self.acted >= 1  # switched on once, in force until cleared
        return not self.fault.persistent and self.acted >= self.fault.count


@dataclass
class _Conditions:
    """The physical changes in force (read by the hooks below)."""

    power_drop_db: float = 0.0
    adc: dict[int | None, tuple[float, float]] = field(default_factory=dict)  # channel -> (gain, offset_v)


# The plan of each BenchState, for the hooks the physics calls (weak: a finished bench is forgotten).
_PLANS: weakref.WeakKeyDictionary[Any, FaultPlan] = weakref.WeakKeyDictionary()


class FaultPlan:
    """The faults armed on one bench, what they did (``fired``) and the conditions in force."""

    def __init__(self):
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []
        self._conditions = _Conditions()
        self.fired: list[FiredFault] = []
        self.state: Any = None
        self.lineup: dict[str, str] = {}

    parse = staticmethod(Fault.parse)  # FaultPlan.parse("timeout@laser") -> Fault, as Fault.parse

    def bind(self, state: Any, lineup: dict[str, str]) -> None:
        """Attach to a bench: its state (for the hooks) and its instruments' kinds {name: kind}."""
        self.state, self.lineup = state, dict(lineup)
        _PLANS[state] = self

    # -- arming -------------------------------------------------------------------------------
    def add(self, fault: Fault | str) -> Fault:
        """Arm a fault (a spec string is parsed); a condition due at once (after=0) switches on now."""
        if self.state is None:
            raise RuntimeError("this FaultPlan is not bound to a bench: use Bench(faults=...) or bench.inject(...)")
        fault = Fault.parse(fault) if isinstance(fault, str) else fault
        fault = replace(fault, instrument=fault.target)
        self._check_target(fault)
        armed = _Armed(fault)
        with self._lock:
            self._armed.append(armed)
        log.info("fault armed: %s", fault)
        if fault.kind in CONDITION_KINDS and armed.due:
            self._switch_on(armed)
        return fault

    def _check_target(self, fault: Fault) -> None:
        if fault.target not in self.lineup:
            raise ValueError(f"fault {fault.kind}: no instrument {fault.target!r} on the bench; "
                             f"there are {', '.join(sorted(self.lineup))}")
        needed = REQUIRED_KIND.get(fault.kind)
        if needed is not None and self.lineup[fault.target] != needed:
            raise ValueError(f"fault {fault.kind}@{fault.target}: needs a {needed} instrument, "
                             f"{fault.target!r} is a {self.lineup[fault.target]}")
        if fault.kind == "bias-drift" and _modulator_of(self.state, fault.target) is None:
            raise ValueError(f"fault bias-drift@{fault.target}: that controller biases no modulator of the bench")

    @property
    def armed(self) -> list[Fault]:
        """Faults not yet spent (persistent ones stay)."""
        with self._lock:
            return [a.fault for a in self._armed if not a.spent]

    def clear(self) -> None:
        """Disarm everything and end the conditions (power and ADC back; a bias drift needs a re-lock)."""
        with self._lock:
            self._armed.clear()
            self._conditions = _Conditions()
        log.info("faults cleared")

    # -- the server calls this for every message ----------------------------------------------
    def exchange(self, emulator: Any, message: bytes, handle: Callable[[bytes], bytes]) -> bytes:
        """Handle one message with the faults due on this instrument; raises Disconnect to drop it."""
        name = emulator.name
        with self._lock:
            mine = [a for a in self._armed if a.fault.target == name]
            acting = [a for a in mine if a.fault.kind in MESSAGE_KINDS and a.due and not a.spent
                      and _acts_on(a.fault, message)]
            for armed in acting:
                armed.acted += 1
            for armed in mine:
                armed.seen += 1
            switching = [a for a in mine if a.fault.kind in CONDITION_KINDS and a.due and not a.spent]
        kinds = {armed.fault.kind: armed.fault for armed in acting}
        try:
            return self._apply(emulator, message, handle, kinds)
        finally:
            for armed in switching:
                self._switch_on(armed)

    def _apply(self, emulator: Any, message: bytes, handle: Callable[[bytes], bytes],
               kinds: dict[str, Fault]) -> bytes:
        text = _text(message)
        if "reset" in kinds:
            emulator.power_cycle()
            self._record(emulator.name, "reset", "power-cycled (*RST settings, power-on bit set)", text)
        if "timeout" in kinds:
            self._record(emulator.name, "timeout", "swallowed: no reply", text)
            return b""
        serial_refusal = "scpi-error" in kinds and not hasattr(emulator, "engine")
        if serial_refusal:
            fault = kinds["scpi-error"]
            self._record(emulator.name, "scpi-error", f"refused with 'Err: {fault.error_text}'", text)
            return f"Err: {fault.error_text}\n".encode("ascii")
        if "scpi-error" in kinds:
            fault = kinds["scpi-error"]
            reply = _with_error_after_command(emulator.engine, message, handle, fault.error_code, fault.error_text)
            self._record(emulator.name, "scpi-error", f'queued {fault.error_code},"{fault.error_text}"', text)
        else:
            reply = handle(message)
        if "garbled" in kinds:
            reply = garble(reply)
            self._record(emulator.name, "garbled", f"reply garbled to {_text(reply)!r}", text)
        if "disconnect" in kinds:
            partial = half_reply(reply)
            self._record(emulator.name, "disconnect", f"closed after {len(partial)} of {len(reply)} reply bytes", text)
            raise Disconnect(partial)
        return reply

    # -- conditions ---------------------------------------------------------------------------
    def _switch_on(self, armed: _Armed) -> None:
        fault = armed.fault
        with self._lock:
            if armed.spent or armed not in self._armed:
                return
            armed.acted += 1
            if fault.kind == "power-drop":
                self._conditions.power_drop_db += fault.power_drop_db
                detail = f"server laser emits {fault.power_drop_db:g} dB less"
            elif fault.kind == "overrange":
                self._conditions.adc[fault.channel] = (fault.adc_gain, fault.adc_offset_v)
                which = "every channel" if fault.channel is None else f"channel {fault.channel}"
                detail = f"ADC input x{fault.adc_gain:g} + {fault.adc_offset_v:g} V on {which}"
        if fault.kind == "bias-drift":
            detail = self._drift_bias(fault)
        self._record(fault.target, fault.kind, detail)

    def _drift_bias(self, fault: Fault) -> str:
        modulator = _modulator_of(self.state, fault.target)
        step_v = fault.bias_drift_rad * modulator.bias_vpi_v / math.pi
        with self.state.lock:
            bias = self.state.bias[fault.target]
            bias.applied_v += step_v
        return f"bias stepped {fault.bias_drift_rad:g} rad ({step_v:+.4f} V) off its lock"

    def power_drop_db(self) -> float:
        with self._lock:
            return self._conditions.power_drop_db

    def adc_distortion(self, channel: int) -> tuple[float, float]:
        """(gain, offset_v) on a digitizer channel's input; (1, 0) when no overrange is in force."""
        with self._lock:
            adc = self._conditions.adc
            return adc.get(channel, adc.get(None, (1.0, 0.0)))

    # -- the record -----------------------------------------------------------------------------
    def _record(self, instrument: str, kind: str, detail: str, message: str = "") -> None:
        fired = FiredFault(time.time(), instrument, kind, detail, message)
        with self._lock:
            self.fired.append(fired)
        log.warning("fault injected: %s on %s: %s%s", kind, instrument, detail,
                    f" (message {message!r})" if message else "")

    def fired_on(self, instrument: str, kind: str | None = None) -> list[FiredFault]:
        """The firings on one instrument (of one kind)."""
        with self._lock:
            return [f for f in self.fired if f.instrument == instrument and kind in (None, f.kind)]


# --- hooks for the physics (cheap when no plan or no condition) ------------------------------------

def plan_for(state: Any) -> FaultPlan | None:
    return _PLANS.get(state)


def power_drop_db(state: Any) -> float:
    """How much less the server laser emits than it is set to (BenchState.laser_power_w subtracts it)."""
    plan = _PLANS.get(state)
    return 0.0 if plan is None else plan.power_drop_db()


def adc_input_v(state: Any, channel: int, volts: Any) -> Any:
    """A digitizer channel's input as the ADC sees it: ``gain x volts + offset`` under an overrange."""
    plan = _PLANS.get(state)
    if plan is None:
        return volts
    gain, offset_v = plan.adc_distortion(channel)
    if gain == 1.0 and offset_v == 0.0:
        return volts
    return gain * volts + offset_v


# --- helpers -------------------------------------------------------------------------------------

def garble(reply: bytes) -> bytes:
    """Digits replaced by junk (a number no longer parses), the terminator kept."""
    body = reply.rstrip(b"\r\n")
    junk = body.translate(_JUNK_FOR_DIGITS)
    if junk == body:
        junk = b"#@" + body
    return junk + reply[len(body):]


def half_reply(reply: bytes) -> bytes:
    """The first half of a reply's text (never its terminator): what arrives before the line drops."""
    body = reply.rstrip(b"\r\n")
    return body[:max(1, len(body) // 2)] if body else b""


def is_query(message: bytes | bytearray | memoryview) -> bool:
    """A '?' in the headers (before any block or string, in the first 256 bytes): it will be answered."""
    head = bytes(message[:256])
    for mark in (b"#", b'"'):
        head = head.split(mark, 1)[0]
    return b"?" in head


def has_command(message: bytes | bytearray | memoryview) -> bool:
    """A program unit without '?' in its header: something is set, whatever queries share the message (a set and
    its own ``SYST:ERR?`` in one message, as drivers batch them)."""
    try:
        units = split_units(message)
    except ScpiError:
        return not is_query(message)
    for unit in units:
        head = bytes(unit[:256]).strip().split(None, 1)
        if head and not head[0].endswith(b"?"):
            return True
    return False


def _with_error_after_command(engine, message: bytes, handle: Callable[[bytes], bytes], code: int, text: str) -> bytes:
    """handle(message) with ``code,"text"`` queued right after its first command unit runs, so that a query later in
    the same message (its ``SYST:ERR?``) reads it, as an instrument that refuses the command would have it; after
    the message when no command unit ran."""
    queued: list[bool] = []

    def queue() -> None:
        engine.push_error(code, text)
        queued.append(True)

    engine.after_command = queue
    try:
        reply = handle(message)
    finally:
        engine.after_command = None
    if not queued:
        queue()
    return reply


def _acts_on(fault: Fault, message: bytes) -> bool:
    if fault.kind == "reset":
        return True
    if fault.kind == "scpi-error":
        return has_command(message)
    if fault.kind == "timeout" and fault.persistent:
        return True  # the instrument hangs: writes vanish too
    return is_query(message)


def _text(message: bytes | bytearray | memoryview, limit: int = 80) -> str:
    return bytes(message[:limit]).decode("ascii", errors="replace")


def _modulator_of(state: Any, controller: str) -> Any:
    """The true modulator a bias controller drives (bench parameters), or None."""
    if state is None:
        return None
    params = state.params
    for modulator in (params.server_carver, params.server_iq):
        if modulator.bias_controller == controller:
            return modulator
    return None


__all__ = ["CONDITION_KINDS", "DEFAULT_AFTER_MESSAGES", "DEFAULT_TARGETS", "KINDS", "MESSAGE_KINDS", "Disconnect",
           "Fault", "FaultPlan", "FiredFault", "adc_input_v", "garble", "plan_for", "power_drop_db"]
