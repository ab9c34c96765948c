"""Faults in a lab session: a batch is recorded only once the station reads back healthy after it; what can
be cured is cured and the batch taken again; anything else stops the session with one message.

Why a check after every batch, before it is recorded: a fault can land anywhere in a batch (an instrument
reset, a drifted bias, less laser light) and leave numbers that look like data. The check:

    resets      every instrument's SettingsWatch role (LabStation.settings): the *ESR? power-on bit, read-backs that differ from what
                the drivers last set or read;
    light       the monitor tap with layer 1 playing and with the modulators at their bias points, against
                the same readings right after set-up (SecureLink.read_light); at the check's short averaging,
                and when that is out of tolerance, again at the reference's, which decides and measures;
    receivers   every acquisition's vacuum tail (LinkAcquisition._acquire raises ReceiverError) and, when the
                light moved, a vacuum record with the shutter closed: its noise follows the LO, a share of
                the laser, so it tells a weaker laser from modulators that pass less light.

Every instrument is read back at once, each on a thread of its own (a read-back is a round trip: nine in a row were
4.6 ms of a 50 ms batch on the bench, the check's largest part). The next batch's set-ups go out during the check,
each once the instruments it talks to have read back as set (it never overwrites what they held during the batch
before that is read): the client's upload once its AWG has (SecureLink.start_next_upload); the server's set-up
(start_next_server_set_up) once its AWG, attenuator and meter have and the light is read. A settings finding still
comes first; a cure, or a vacuum reading, waits for the set-ups under way. Why: on hardware an upload (a megabyte to
the client's AWG) and a VOA move take the instruments' time, which the rest of the check can hide; the bench, whose
AWGs store an upload in no time, shows no gain from them (session 27, benchmarks/bench_session_ab.py).

Cures, then the batch again: a reset -> that instrument's share of the set-up again, the whole set-up for
an AWG or the digitizer (SecureLink.reapply_instrument); the carrier moved
against the modulated light, or the monitor moved alone -> the bias loops re-locked and the leakage
re-nulled (mu re-measured with it); the monitor and the LO moved alike -> the laser set back within its
declared limit and mu re-measured. Clipping is cured inside the link (a wider digitizer range). Driver
retries of queries are reported through the drivers' retry observers (qslab.instruments.drivers.retry_events),
not their log. Everything
else (a refused command, an instrument that no longer answers, a receiver offset, a cure that does not
cure, a batch failing BATCH_ATTEMPTS times) raises SessionStopped: what happened and what was tried.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from qslab.analysis.workers import one_thread
from qslab.instruments.optical.faults import (ConnectionReopened, InstrumentError, InstrumentFault, QueryRetried,
                                             RetryEvent, add_retry_observer, remove_retry_observer)
from qslab.instruments.optical import LimitError
from qslab.sequences.protocol import ProtocolError
from qslab.sequences.protocol.setup import REFERENCE_AVERAGING_S

T = TypeVar("T")

CARRIER_RATIO_TOLERANCE = 0.05  # carrier / modulated monitor power moved by more: a bias drift (a re-lock: ~1 %)
MONITOR_TOLERANCE_DB = 0.2      # the monitor tap (layer 1 playing) off its set-up reading: mu is off as much
CAUSE_TOLERANCE_DB = 0.15       # the LO's change (+-0.035 dB) within this of the monitor's: the laser; of 0: modulators
LIMIT_SLACK_DB = 0.05           # a laser set-point this close above its limit is taken at the limit
CURE_ROUNDS = 3                 # check-and-cure rounds after one batch before the session stops
BATCH_ATTEMPTS = 3              # takes of one batch before the session stops
READBACK_TOLERANCE = 1e-3       # relative: a read-back this close to what was set is the instrument's rounding


class SessionStopped(RuntimeError):
    """A fault the session could not cure: the message says what happened and what was tried."""


def _batch_faults() -> tuple[type[BaseException], ...]:
    """What a batch raises when an instrument misbehaves (a bug raises anything else and is not caught)."""
    import pyvisa

    return InstrumentFault, InstrumentError, ProtocolError, pyvisa.errors.VisaIOError, OSError


def _instrument_of(error: BaseException) -> str:
    reading = getattr(error, "reading", None)
    return getattr(error, "instrument", None) or getattr(reading, "receiver", "") or ""


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _db(ratio: float) -> float:
    return 10.0 * math.log10(ratio) if ratio > 0 else -math.inf


# --- which faults, where ---------------------------------------------------------------------------------

def parse_faults(config, specs: Iterable[str]) -> list:
    """``--inject-fault`` specs as Faults whose targets are bench instruments of the right kind (ValueError:
    one line naming the spec and what was expected)."""
    from qslab.instruments.sim.faults_attacks.faults import REQUIRED_KIND, Fault
    from qslab.instruments.sim.server import DEFAULT_INSTRUMENTS

    specs = list(specs)
    if specs and not config.uses_bench:
        raise ValueError(f"--inject-fault needs the virtual bench: {config.source} puts every instrument on a "
                         f"hardware address (faults are injected by the bench's emulators, never on hardware)")
    lineup = (config.bench_table or {}).get("instruments") or DEFAULT_INSTRUMENTS
    faults = []
    for spec in specs:
        fault = Fault.parse(spec)
        target = fault.target
        instrument = config.instruments.get(target)
        if instrument is None or not instrument.on_bench or target not in lineup:
            on_bench = sorted(name for name, i in config.instruments.items() if i.on_bench and name in lineup)
            raise ValueError(f"--inject-fault {spec!r}: {target!r} is not an instrument this station has on the "
                             f"bench; there are {', '.join(on_bench)}")
        needed = REQUIRED_KIND.get(fault.kind)
        if needed is not None and lineup[target] != needed:
            raise ValueError(f"--inject-fault {spec!r}: {fault.kind} needs a {needed} instrument, {target!r} is a "
                             f"{lineup[target]}")
        if fault.kind == "bias-drift" and target not in _bias_controllers(config):
            raise ValueError(f"--inject-fault {spec!r}: {target!r} biases no modulator of the station; bias "
                             f"controllers are {', '.join(_bias_controllers(config))}")
        faults.append(fault)
    return faults


def _bias_controllers(config) -> list[str]:
    roles = config.roles
    return [roles.server_iq_modulator.bias_controller, roles.pulse_carver.bias_controller]


# --- the report --------------------------------------------------------------------------------------------

@dataclass
class FaultReport:
    """The session's ``faults``: what was injected, what fired (the bench's record), what the stack did."""

    injected: list[str]
    armed_before_batch: int | None = None
    actions: list[dict] = field(default_factory=list)
    plan: Any = None            # the bench's FaultPlan once the faults are armed
    batch: int | None = None    # the batch under way (None: set-up or closing), for the actions

    def act(self, action: str, instrument: str, detail: str) -> None:
        """One thing the stack did; ``batch`` counts from 1 (None: during set-up or while closing)."""
        self.actions.append({"batch": None if self.batch is None else self.batch + 1, "action": action,
                             "instrument": instrument, "detail": detail})

    def as_dict(self, outcome: str) -> dict:
        fired = [asdict(f) for f in self.plan.fired] if self.plan is not None else []
        return {"injected": self.injected, "armed_before_batch": self.armed_before_batch, "fired": fired,
                "actions": self.actions, "outcome": outcome}

    def warnings(self) -> list[str]:
        """For a session that completed anyway: the cures one per line, retries counted per instrument."""
        counted = ("retried", "reconnected", "re-ranged")
        counts: dict[tuple[str, str], int] = {}
        lines = []
        for action in self.actions:
            if action["action"] in counted:
                key = (action["instrument"], action["action"])
                counts[key] = counts.get(key, 0) + 1
            elif action["action"] in ("foreign-write", "re-applied", "re-calibrated", "repeated"):
                where = f"batch {action['batch']}" if action["batch"] else "set-up"
                who = f"{action['instrument']} " if action["instrument"] else ""
                lines.append(f"{where}: {who}{action['action']}: {action['detail']}")
        return [f"{instrument}: {action} x{count}" for (instrument, action), count in counts.items()] + lines


class RetryWatch:
    """The drivers' retries and reopened connections as report actions: the stack's own account of a
    transient fault. Subscribed to the drivers' retry observers (retry_events) while installed."""

    def __init__(self, report: FaultReport):
        self.report = report

    def __call__(self, event: RetryEvent) -> None:
        if isinstance(event, QueryRetried):
            self.report.act("retried", event.instrument,
                            f"{event.command!r}: {event.what} (attempt {event.attempt} of {event.attempts})")
        elif isinstance(event, ConnectionReopened):
            self.report.act("reconnected", event.instrument, f"the connection to {event.address} was closed: reopened")

    def install(self) -> RetryWatch:
        add_retry_observer(self)
        return self

    def remove(self) -> None:
        remove_retry_observer(self)


def reset_evidence(watch) -> list[str]:
    """Reset evidence from a SettingsWatch role (LabStation.settings) without the instruments' rounding: the *ESR?
    power-on bit, and settings whose read-back differs from what was set by more than READBACK_TOLERANCE (an
    attenuation set to 24.235031 dB reads 24.235: that is no reset)."""
    power_cycled, changes = settings_evidence(watch)
    return (["*ESR? power-on bit set: it was switched off and on"] if power_cycled else []) + changes


def settings_evidence(watch) -> tuple[bool, list[str]]:
    """(the *ESR? power-on bit was set, settings that read back other than this session set them). Without the
    power-on bit a changed setting is a foreign write: another client on the instrument's port (SCPI has no
    credentials, docs/INSTRUMENTS.md) or someone at its front panel changed what the session set."""
    power_cycled, changed = watch.evidence()
    changes = [f"{name} reads {now!r}, was set to {cached!r}"
               for name, (cached, now) in changed.items() if not _rounded(cached, now)]
    return bool(power_cycled), changes




def _rounded(cached: Any, now: Any) -> bool:
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not (number(cached) and number(now)):
        return False
    return math.isclose(float(cached), float(now), rel_tol=READBACK_TOLERANCE, abs_tol=1e-9)


# --- the guard -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """Something the check found: the cure ("reapply", "relock", "laser"; "" = none, stop) and what it saw."""

    cure: str
    instrument: str
    detail: str
    change_db: float = 0.0


ArmObserver = Callable[[Any, int], None]  # (station, batch about to be taken)
_arm_observers: list[ArmObserver] = []


@contextmanager
def observing_arms(observer: ArmObserver) -> Iterator[ArmObserver]:
    """Call ``observer(station, batch)`` each time a session arms its faults (after set-up, before ``batch``; also
    when it has none), for the ``with`` block: e.g. a benchmark arming a cheating client at the same moment."""
    _arm_observers.append(observer)
    try:
        yield observer
    finally:
        _arm_observers.remove(observer)


class BatchGuard:
    """Checks the station after every batch and cures what it can (module docstring)."""

    def __init__(self, link, station, report: FaultReport, faults: list = ()):
        self.link, self.station, self.report, self.faults = link, station, report, list(faults)
        self.light0 = None
        self.vacuum0 = None
        self._watches: dict = {}  # instrument -> its SettingsWatch, kept for the session (it keeps its plan)

    # -- set-up --------------------------------------------------------------------------------------
    def start(self) -> None:
        """The reference readings right after set-up; every driver's cache and *ESR? bit read once (ignored:
        the power-on bit of the instruments' own start, read-backs the instruments round)."""
        self._resets()
        self.light0 = self.link.read_light(REFERENCE_AVERAGING_S)  # the reference every check compares with
        self.vacuum0 = self.link.read_vacuum()
        self.link.events.clear()

    def arm(self, batch: int) -> None:
        """Inject the faults now (after set-up: their ``after`` counts messages from here); tell the arm observers."""
        if self.faults:
            bench = self.station.bench
            if bench is None:
                raise SessionStopped("faults can only be injected on the virtual bench")
            for fault in self.faults:
                bench.inject(fault)
            self.report.plan = bench.faults
            self.report.armed_before_batch = batch + 1
        for observer in list(_arm_observers):
            observer(self.station, batch)

    # -- one batch -------------------------------------------------------------------------------------
    def take(self, batch: int, run: Callable[[], T], before_again: Callable[[], None] | None = None) -> T:
        """Run a batch until the check after it finds nothing (then it may be recorded); SessionStopped if not.
        ``before_again`` runs before the batch is taken again (the session's leakage cap: it raises to stop)."""
        self.report.batch = batch
        try:
            last = ""
            for attempt in range(BATCH_ATTEMPTS):
                if attempt and before_again is not None:
                    before_again()
                try:
                    result = run()
                except _batch_faults() as error:
                    last = self._after_failure(error)
                    continue
                finally:
                    self._link_events()
                found = self._check_and_cure()
                if not found:
                    return result
                last = found
                self.report.act("repeated", "", "the batch is taken again, not recorded: the check after it found a "
                                                "fault (cured, above)")
            raise SessionStopped(f"batch {batch + 1} failed {BATCH_ATTEMPTS} times (last: {last})")
        except SessionStopped as stop:
            self.report.act("stopped", "", str(stop))
            raise
        except (*_batch_faults(), LimitError) as error:  # the check or a cure met a fault it cannot cure
            self.report.act("stopped", "", one_line(error))
            raise SessionStopped(f"batch {batch + 1}: {one_line(error)}") from error
        finally:
            self.report.batch = None

    def _after_failure(self, error: BaseException) -> str:
        """A batch that raised: cured and taken again, or taken again when the instrument answers again (a
        transient fault), or stopped (a refused command, a receiver or protocol error nothing cures)."""
        what = one_line(error)
        self.report.act("failed", _instrument_of(error), what)
        self._resync(error)
        if isinstance(error, InstrumentError) and not self._power_cycled():
            raise SessionStopped(f"batch {self.report.batch + 1}: {what}") from error
        found = self._check_and_cure()
        if found:
            self.report.act("repeated", "", "the batch is taken again after it failed (the cause cured, above)")
            return found
        if isinstance(error, ProtocolError):
            raise SessionStopped(f"batch {self.report.batch + 1}: {what}") from error
        self.report.act("repeated", _instrument_of(error), "it answers again: the batch is taken again")
        return what

    def _resync(self, error: BaseException) -> None:
        """A fresh connection to an instrument the error names whose driver does not reconnect by itself
        (qcodes' PM100D): a fault can leave a partial or late reply on the line, read as the next answer."""
        for name in self.station.connections:
            watch = self._watch(name)
            if name in str(error) and not watch.reconnects_by_itself():
                watch.reconnect()
                self.report.act("reconnected", name, "connection reopened after the failure (its driver does not "
                                                     "retry)")

    def _power_cycled(self) -> bool:
        """Whether an instrument was switched off and on (what would explain a refused command)."""
        return any([self._watch(name).power_cycled() for name in self.station.connections])

    def _link_events(self) -> None:
        for event in self.link.events:
            self.report.act("re-ranged", event.partition(":")[0], event)
        self.link.events.clear()

    # -- check and cure ----------------------------------------------------------------------------------
    def _check_and_cure(self) -> str:
        """"" when the station reads back healthy; else what was found and cured (SessionStopped if no cure)."""
        try:
            return self._check_and_cure_rounds()
        except (SessionStopped, *_batch_faults(), LimitError):
            raise
        except Exception as unexpected:  # noqa: BLE001 - what a fault left behind: one line, not a traceback
            raise SessionStopped(f"batch {self.report.batch + 1}: the station could not be read back "
                                 f"({type(unexpected).__name__}: {one_line(unexpected)})") from unexpected

    def _check_and_cure_rounds(self) -> str:
        cured: list[str] = []
        for _ in range(CURE_ROUNDS):
            findings = self._examine()
            if not findings:
                return "; ".join(cured)
            self.link.settle_ahead()  # the next batch's set-ups, if the check started them, end before any cure
            finding = findings[0]
            if not finding.cure:
                raise SessionStopped(f"batch {self.report.batch + 1}: {finding.detail}")
            cured.append(f"{finding.detail} -> {self._cure(finding)}")
        raise SessionStopped(f"batch {self.report.batch + 1}: still not healthy after {CURE_ROUNDS} cures "
                             f"({'; '.join(cured)})")

    def _examine(self) -> list[Finding]:
        """What the check finds: settings first (a reset or a foreign write explains the rest), then the light. The
        next batch's set-ups go out as the read-backs come in: the client's upload once the client's instruments are
        read, the light and then the server's set-up once the server's are (those its set-up and the light reading
        use; SecureLink.start_next_upload, start_next_server_set_up)."""
        light = []

        def light_then_set_up() -> None:
            light.append(self._light())
            if self._within_tolerance(light[0]):  # (else a cure comes first)
                self.link.start_next_server_set_up()

        changed = self._settings_changes([(self.link.client_instruments(), self.link.start_next_upload),
                                          (self.link.server_instruments(), light_then_set_up)])
        findings = []
        for name, (power_cycled, changes) in changed.items():  # a reset or a foreign write explains the rest: first
            if power_cycled:
                findings.append(Finding("reapply", name, f"{name} was reset (*ESR? power-on bit set: it was "
                                                         f"switched off and on)"))
            else:
                detail = (f"foreign write to {name}: {'; '.join(changes)} (a change this session did not make: "
                          f"another client on its port or its front panel)")
                self.report.act("foreign-write", name, detail)
                findings.append(Finding("reapply", name, detail))
        return findings or self._light_findings(light[0] if light else self._light())

    def _light(self):
        """The light after a batch: the quick reading (CHECK_AVERAGING_S), or, when that is out of tolerance, a
        precise one (REFERENCE_AVERAGING_S) that decides and measures the cure (a laser set back by its dB)."""
        light = self.link.read_light()
        return light if self._within_tolerance(light) else self.link.read_light(REFERENCE_AVERAGING_S)

    def _within_tolerance(self, light) -> bool:
        return (abs(self._ratio_change(light)) <= CARRIER_RATIO_TOLERANCE
                and abs(self._monitor_db(light)) <= MONITOR_TOLERANCE_DB)

    def _ratio_change(self, light) -> float:
        """The carrier / modulated-light ratio against set-up's, relative."""
        return light.carrier_ratio / self.light0.carrier_ratio - 1.0

    def _monitor_db(self, light) -> float:
        """The monitor tap (layer 1 playing) against set-up's, dB."""
        return _db(light.playing_w / self.light0.playing_w)

    def _settings_changes(self, stages: Iterable[tuple[Iterable[str], Callable[[], None]]] = ()
                          ) -> dict[str, tuple[bool, list[str]]]:
        """{instrument: (power-cycled, changes)} of every instrument whose settings read back otherwise than set, in
        the station's order. Every instrument is read at once, each on a thread of its own. ``stages``: (instruments,
        then), met in order: each ``then`` is called once its instruments are read, when nothing was found among
        those read so far. A failed read raises once every read has ended (the first failure in the stages' order,
        then the station's)."""
        names = list(self.station.connections)
        reads = {name: one_thread(f"qslab-read-back-{name}").submit(settings_evidence, self._watch(name))
                 for name in names}
        read, found = [], {}
        try:
            for instruments, then in [*stages, (names, None)]:
                group = [name for name in instruments if name in reads and name not in read]
                for name in group:
                    power_cycled, changes = reads[name].result()
                    read.append(name)
                    if power_cycled or changes:
                        found[name] = (power_cycled, changes)
                if group and then is not None and not found:
                    then()
        finally:
            futures.wait(reads.values())  # no read is left talking to its instrument (a cure, the safe state follow)
        return {name: found[name] for name in names if name in found}

    def _watch(self, name: str):
        """The SettingsWatch of instrument ``name`` (LabStation.settings), made once per guard."""
        watch = self._watches.get(name)
        if watch is None:
            watch = self._watches[name] = self.station.settings(name)
        return watch

    def _resets(self) -> dict[str, tuple[bool, list[str]]]:
        """Every driver's cache and *ESR? bit read (and so cleared) once: the evidence now, for callers that only
        need the slate clean."""
        return self._settings_changes()

    def _light_findings(self, light) -> list[Finding]:
        config = self.station.config
        iq_bias = config.roles.server_iq_modulator.bias_controller
        ratio_change = self._ratio_change(light)
        if abs(ratio_change) > CARRIER_RATIO_TOLERANCE:
            return [Finding("relock", iq_bias, f"the carrier at the IQ modulator's bias point moved "
                                               f"{100 * ratio_change:+.0f} % against the modulated light (monitor "
                                               f"tap): its bias drifted")]
        monitor_db = self._monitor_db(light)
        if abs(monitor_db) <= MONITOR_TOLERANCE_DB:
            return []
        lo_db = self._lo_change_db()
        seen = f"monitor tap {monitor_db:+.2f} dB, the receivers' LO {lo_db:+.2f} dB against set-up"
        laser_like = abs(lo_db - monitor_db) < abs(lo_db)  # the LO, a share of the laser, moved with the monitor
        if min(abs(lo_db - monitor_db), abs(lo_db)) > CAUSE_TOLERANCE_DB:
            return [Finding("", config.roles.server_laser.instrument,
                            f"the light changed and neither the laser nor the modulators alone explain it ({seen}): "
                            f"check the laser, the modulators and the LO path")]
        if laser_like:
            return [Finding("laser", config.roles.server_laser.instrument,
                            f"the server laser's light moved {monitor_db:+.2f} dB ({seen})", monitor_db)]
        return [Finding("relock", iq_bias, f"the modulators pass {monitor_db:+.2f} dB of light ({seen}, the LO "
                                           f"did not move)")]

    def _lo_change_db(self) -> float:
        """The LO power against set-up, from both receivers' vacuum noise (shutter closed)."""
        vacuum = self.link.read_vacuum()
        changes = [_db(vacuum[name].optical_noise_snu / self.vacuum0[name].optical_noise_snu) for name in vacuum]
        return sum(changes) / len(changes)

    def _cure(self, finding: Finding) -> str:
        if finding.cure == "reapply":
            done, action = self.link.reapply_instrument(finding.instrument), "re-applied"
            self._resets()  # the drivers' caches now hold what the set-up sent
        elif finding.cure == "relock":
            self.link.relock_biases()
            self.link.renull()
            done, action = "bias loops re-locked, carrier leakage re-nulled, mu re-measured", "re-calibrated"
        else:
            done, action = self._restore_laser(finding), "re-calibrated"
        self.link.reset_ranges()  # ranges widened for the fault's light or noise: back to the set-up's
        self.link.events.clear()
        self.report.act(action, finding.instrument, f"{finding.detail}: {done}")
        return done

    def _restore_laser(self, finding: Finding) -> str:
        """The laser set back to the set-up's light (within its declared limit), then mu measured again."""
        link = self.link
        before_dbm = link.laser_power_dbm
        wanted_dbm = before_dbm - finding.change_db
        limit_dbm = link.laser.power_max_dbm
        if limit_dbm < wanted_dbm <= limit_dbm + LIMIT_SLACK_DB:
            wanted_dbm = limit_dbm
        try:
            link.set_laser_power_dbm(wanted_dbm)
        except LimitError as error:
            raise SessionStopped(f"batch {self.report.batch + 1}: {finding.detail}; setting it back needs "
                                 f"{wanted_dbm:.2f} dBm, refused: {error}. Check the laser and its fibre") from None
        link.remeasure_mu()
        mus = ", ".join(f"{layer.mu_photons.value:.3g}" for layer in link.layers)
        return f"laser set {before_dbm:.2f} -> {wanted_dbm:.2f} dBm, mu re-measured ({mus} photons per layer)"
