"""The roles the sequences talk to, as typing.Protocols (never a vendor driver).

Concrete compositions over our qcodes drivers live beside this module (one adapter per instrument
family; sequences/config.py's DriverSpec names it). Every setter checks the declared limits
(lab_config.toml) before it sends a command; a refusal is a LimitError.

Why small Protocols of one verb per capability (as Bluesky's Readable/Triggerable): a second instrument
family (another digitizer, another AWG) is one adapter that satisfies the same Protocol, and a procedure
can be exercised against a fake that implements only what the Protocol names. The instrument-level
roles (Digitizer, Awg, BiasController, SettingsWatch) are what the optical roles and the sequences
compose; what an adapter does in fewer messages than its verbs suggest (an Infiniium acquires and
answers *OPC? in one message) is the adapter's business, never the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


class Answered:
    """What a role's ``*_sent`` verb returns when its instrument cannot defer the reply: the step is done already."""

    def replies(self) -> list[str]:
        return []


def together(*sends: Callable[[], Any]) -> None:
    """Each of ``sends`` (a role's ``*_sent`` verb: it sends one message and returns what reads its reply) made in
    order, then every reply read in that order: one round trip for all. A failure, sending or in a reply, is raised
    once every later message was sent and every sent one answered (the first failure): no reply is left on a line,
    and a step that must happen whatever the others do (a stop) is always sent."""
    sent, failure = [], None
    for send in sends:
        try:
            sent.append(send())
        except BaseException as error:  # noqa: BLE001 - raised below, once the others are sent and answered (as a
            failure = failure or error  # finally would: an interrupt too)
    for message in sent:
        try:
            message.replies()
        except BaseException as error:  # noqa: BLE001 - as above
            failure = failure or error
    if failure is not None:
        raise failure


@runtime_checkable
class Laser(Protocol):
    power_max_dbm: float

    def set_power_dbm(self, power_dbm: float) -> None: ...
    def power_dbm(self) -> float: ...
    def set_wavelength_m(self, wavelength_m: float) -> None: ...
    def on(self) -> None: ...
    def off(self) -> None: ...
    def is_on(self) -> bool: ...


@runtime_checkable
class Attenuator(Protocol):
    def set_attenuation_db(self, attenuation_db: float) -> None: ...
    def attenuation_db(self) -> float: ...
    def open_shutter(self) -> None: ...
    def close_shutter(self) -> None: ...


@runtime_checkable
class PowerMeter(Protocol):
    def read_power_w(self) -> float: ...
    def read_powers_w(self, count: int) -> list[float]:
        """``count`` readings, in one message where the meter takes compound reads."""
    def set_wavelength_m(self, wavelength_m: float) -> None: ...


@runtime_checkable
class AveragingPowerMeter(PowerMeter, Protocol):
    def use_averaging_time_s(self, averaging_time_s: float) -> None:
        """Each later reading averages ``averaging_time_s``; a command only when the meter holds another one."""


@runtime_checkable
class OpticalAmplifier(Protocol):
    def set_gain_db(self, gain_db: float) -> None: ...
    def gain_db(self) -> float: ...
    def on(self) -> None: ...
    def off(self) -> None: ...


@runtime_checkable
class AmplitudeModulator(Protocol):
    def drive_v(self, amplitudes) -> np.ndarray: ...
    def load(self, amplitudes, samples_per_symbol: int, segment_id: int = 1) -> None: ...
    def lock_bias(self, point: str = "null", timeout_s: float = 30.0) -> None:
        """Lock and wait until locked (needs the light on); a TimeoutError naming the controller otherwise."""


@runtime_checkable
class IQModulator(Protocol):
    def drive_v(self, fields) -> tuple[np.ndarray, np.ndarray]: ...
    def load(self, fields, samples_per_symbol: int, segment_id: int = 1) -> None: ...
    def lock_bias(self, point: str = "null", timeout_s: float = 30.0) -> None:
        """Lock the children's loop and wait until locked (the parent's bias is manual: DECISIONS.md)."""


@runtime_checkable
class TimeBinProcessor(Protocol):
    def angles(self, data) -> tuple[np.ndarray, np.ndarray]: ...
    def drive_v(self, data) -> tuple[np.ndarray, np.ndarray]: ...
    def load(self, data, samples_per_symbol: int, segment_id: int = 1) -> None: ...


@runtime_checkable
class HomodyneReceiver(Protocol):
    def check_lo_power_w(self, lo_power_w: float) -> None: ...
    def quadratures_snu(self, samples_v, n_symbols: int | None = None,
                        full_scale_v: float | None = None) -> np.ndarray: ...


# --- instrument-level roles (what the optical roles above are built from) ------------------------------

@runtime_checkable
class Digitizer(Protocol):
    """A multi-channel digitizer taking single acquisitions on demand: configure, arm, trigger, wait, read.

    Channels are numbered as on the instrument's front panel. Ranges are full scale (the whole ADC span,
    peak to peak) and offsets the centre of that span, in volts; ``read`` returns absolute volts.
    """

    name: str

    def configure(self, *, points: int | None = None, sample_rate_hz: float | None = None) -> None:
        """Record length and sample rate of the next acquisitions (None: unchanged)."""
    def sample_rate_hz(self) -> float:
        """The sample rate the instrument actually took."""
    def configure_channel(self, channel: int, *, range_v: float | None = None, offset_v: float | None = None) -> None:
        """A channel's full-scale range and centre (None: unchanged); the instrument may round or clamp."""
    def range_v(self, channel: int) -> float:
        """The full-scale range the channel actually has."""
    def offset_v(self, channel: int) -> float:
        """The centre of the channel's range."""
    def configure_trigger(self, source: str, level_v: float, slope: str = "POS") -> None:
        """Records start at an edge on input ``source`` (e.g. ``AUX``, ``CHAN3``: where the AWG's marker is cabled)
        crossing ``level_v`` (V) with ``slope``, and only there (no auto trigger). Sent again by ``restore``."""
    def arm(self) -> None:
        """Single acquisitions from now on: nothing free-running overwrites a record before it is read."""
    def trigger(self) -> None:
        """Start one acquisition of the configured length."""
    def wait(self, timeout_s: float | None = None) -> None:
        """Until the triggered acquisition is complete (an InstrumentFault if it never completes)."""
    def read(self, channel: int) -> np.ndarray:
        """The channel's samples of the last completed acquisition, in volts."""
    def restore(self) -> None:
        """The instrument-level set-up the adapter relies on, sent again (after a reset of the instrument)."""


@runtime_checkable
class CapturingDigitizer(Digitizer, Protocol):
    """A digitizer with a one-call capture (configure, acquire and read one channel in as few messages as it can)."""

    def capture(self, channel: int, *, points: int, sample_rate_hz: float, range_v: float,
                offset_v: float = 0.0) -> np.ndarray: ...


@runtime_checkable
class RecordingDigitizer(Digitizer, Protocol):
    """A digitizer that can hand a record over as it sent it: ADC words and their map to volts
    (qslab.analysis.dsp.AdcRecord, absolute volts), so a caller need not hold millions of float64 volts."""

    def read_record(self, channel: int) -> Any: ...


@runtime_checkable
class Awg(Protocol):
    """The AWG channels lent to one role: load segments, select one, run, stop.

    ``run`` and ``stop`` act on the instrument that plays these channels (an AWG starts and stops all its
    channels together). Codes are int8 per sample; amplitudes are Vpp at the AWG output (offset 0 V).
    """

    name: str
    channels: tuple[int, ...]
    amplitude_max: Any  # the declared Limit on the amplitude (Vpp at the AWG output)

    def check_amplitude_vpp(self, amplitude_vpp: float) -> None: ...
    def amplitude_for_volts_vpp(self, volts: np.ndarray) -> float:
        """The smallest amplitude the instrument sets that plays ``volts`` (peak |V| = Vpp/2): its minimum at least."""
    def configure(self, *, rate_divider: int | None = None) -> None:
        """The sample clock's divider for the segments (the M8195A's extended-memory divider)."""
    def samples_per_symbol(self, symbol_rate_hz: float) -> int: ...
    def min_segment_samples(self) -> int:
        """The shortest segment (waveform) the instrument plays, in samples."""
    def load(self, segments: Sequence[tuple[int, Sequence[np.ndarray]]], amplitudes_vpp: Sequence[float], *,
             select: int | None = None, run: bool = False, partial: bool = True) -> None:
        """Upload ((segment id, one code array per channel), ...) at ``amplitudes_vpp``, select ``select`` (default:
        the last), outputs on; the instrument stopped first. ``run``: start playing as part of the load.
        ``partial=False``: send every segment whole (no comparison with the last upload: all its samples change)."""
    def select(self, segment_id: int) -> None:
        """Play segment ``segment_id`` on every channel of the role."""
    def play_segment(self, segment_id: int, *others: Awg) -> None:
        """Stop, select ``segment_id`` on this role's channels and on ``others``' (roles whose channels play the same
        segment id, e.g. a gate beside the layer), then run this role's instrument again."""
    def switch(self, changes: Sequence[tuple[int, int | None, bool | None]]) -> None:
        """Per channel: (channel, segment to select or None, output on/off or None)."""
    def run(self) -> None: ...
    def stop(self) -> None: ...
    def run_sent(self) -> Any:
        """``run`` sent, its reply read by the returned object's ``replies()`` (``together`` starts several
        instruments in one round trip; an instrument that cannot defer its reply runs at once: Answered)."""
    def stop_sent(self) -> Any:
        """``stop`` as ``run_sent``."""
    def play_segment_sent(self, segment_id: int, *others: Awg) -> Any:
        """``play_segment`` as ``run_sent``."""
    def outputs_off(self) -> None: ...
    def stop_and_outputs_off(self) -> None: ...
    def stop_and_rate(self, symbol_rate_hz: float, outputs_off: Sequence[int] = ()) -> int:
        """Stop, switch ``outputs_off`` off, and return the samples per symbol (as few messages as the AWG allows)."""
    def subset(self, channels: Sequence[int]) -> Awg:
        """The same AWG's ``channels`` (a subset of these) as a role of their own, with the same limit."""


@runtime_checkable
class BiasController(Protocol):
    """One modulator bias loop: a set point (locked by the loop or held manually) and its lock state.

    Points: "null", "peak", "quadrature+", "quadrature-" (a dither lock) or a manual voltage. A dither lock
    takes time and needs light at the loop's photodiode: ``lock`` starts it with the light on, ``wait_locked``
    waits for it. One loop per controller: an IQ modulator has three bias electrodes (two children, the
    parent phase); this station drives both children from one loop and sets the parent by hand
    (docs/DECISIONS.md R).
    """

    name: str

    def lock(self, point: str) -> None:
        """Start locking at ``point`` (returns at once: ``wait_locked`` waits for the loop)."""
    def wait_locked(self, timeout_s: float) -> None:
        """Until the loop reports locked at its point; TimeoutError after ``timeout_s``."""
    def set_point_v(self, bias_v: float) -> None:
        """The manual bias voltage (applied while in manual mode: ``hold``)."""
    def hold(self) -> None:
        """Manual mode: apply the manual bias voltage, no loop."""
    def bias_v(self) -> float:
        """The bias voltage the controller applies now."""


@runtime_checkable
class SettingsWatch(Protocol):
    """What an instrument reads back against what the stack last set (the evidence of a reset), and the upkeep
    of its connection after a fault."""

    name: str

    def power_cycled(self) -> bool:
        """IEEE 488.2 *ESR? power-on bit (reading clears it); False for an instrument without the register."""
    def changed_settings(self) -> Mapping[str, tuple[Any, Any]]:
        """{setting: (last set or read, read now)} for every setting whose read-back differs."""
    def evidence(self) -> tuple[bool, Mapping[str, tuple[Any, Any]]]:
        """(power_cycled(), changed_settings()) read in that order, in as few messages as the instrument allows."""
    def reconnects_by_itself(self) -> bool:
        """Whether the driver retries and reconnects inside its own queries."""
    def reconnect(self) -> None:
        """A fresh connection, dropping whatever is on the line."""


# What each DriverSpec category's adapter builds (tests/station/test_role_contracts.py checks every adapter).
ROLE_OF_CATEGORY: dict[str, type] = {
    "laser": Laser, "attenuator": Attenuator, "power_meter": PowerMeter, "amplifier": OpticalAmplifier,
    "awg": Awg, "bias_controller": BiasController, "digitizer": Digitizer,
}
