"""AWG channels lent to one role (modulator or time-bin processor), with the declared drive limit.

Volts to int8 codes: the M8195A plays V = offset + (Vpp/2) code/127 (docs/INSTRUMENTS.md 6.1), so with
the offset at 0 V a peak of |V| needs Vpp = 2 |V|. ``load`` checks the amplitude against the
declared ``amplitude_max_vpp``, the segment lengths and the AWG's run state before the first
command; what it cannot send, it does not start sending.

Memory (M8195A user's guide, Revision 2): ``load`` puts its channels on extended memory (``:TRAC<n>:MMOD EXT``
in the same message, where the driver does not know them there already: p. 26) and checks every segment id
against what that memory holds (segment 1 only without option -SEQ, p. 110). The extended-memory channels
share one sequence table (p. 110): one segment plays on all of them, so ``switch`` refuses to select different
segments on two channels at once (the instrument answers -221), before anything is sent.

Uploads send what changed (why: a session loads the verification gate, a segment of megabytes, every batch, and
only a few rows of it change). When the driver knows what it last sent to a segment of the same length and little
of it differs, ``load`` first asks the instrument, in one message, for each such channel's segment catalogue
(``:TRAC<ch>:CAT?``) and the segment's name (``:TRAC<ch>:NAME? <id>``). Only when the instrument holds the segment
at that length under the name the driver's last upload gave it (a definition, deletion, memory-mode change or
reset drops both) does it write just the granules that changed (``:TRAC<ch>:DATA`` at their offsets); otherwise it
defines and uploads the segment whole, as always. Every upload names the segment anew.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qslab.instruments.drivers._scpi import SentBatch
from qslab.instruments.drivers.keysight_m8195a import (AMPLITUDE_LIMITS_VPP, MIN_SEGMENT_SAMPLES, as_int8_samples,
                                                       parse_catalog, parse_name)
from qslab.instruments.optical.limits import Limit, LimitError
from qslab.instruments.optical.roles import Answered

CODE_FULL_SCALE = 127  # code that plays +Vpp/2 (and -127 plays -Vpp/2)
# an upload of changed pieces is worth its extra round trip (the catalogue check) below this share of the segment
PIECES_MAX_SHARE = 0.25
# changed granules closer than this are sent as one piece (fewer units; a granule is 256/divider samples)
PIECE_GAP_GRANULES = 16
# a segment shorter than this is sent whole: its bytes cost less than the round trip that confirms a partial reload
PARTIAL_MIN_SAMPLES = 16384


def amplitude_for_volts_vpp(volts, minimum_vpp: float = AMPLITUDE_LIMITS_VPP[0]) -> float:
    """The smallest settable amplitude that plays ``volts`` (peak |V| = Vpp/2), at least the AWG's minimum
    (``minimum_vpp``, the M8195A's unless given; the roles' ``amplitude_for_volts_vpp`` pass their family's)."""
    peak = float(np.max(np.abs(volts))) if np.size(volts) else 0.0
    return max(2.0 * peak, minimum_vpp)


def volts_to_codes(volts, amplitude_vpp: float) -> np.ndarray:
    """int8 codes round(V / (Vpp/2) x 127); refuses volts beyond +-Vpp/2 (they would clip)."""
    volts = np.asarray(volts, dtype=float)
    half = 0.5 * amplitude_vpp
    if volts.size and float(np.max(np.abs(volts))) > half * (1 + 1e-12):
        raise ValueError(f"volts up to {np.max(np.abs(volts)):.6g} V do not fit in +-{half:.6g} V (amplitude {amplitude_vpp:g} Vpp)")
    return np.clip(np.rint(volts / half * CODE_FULL_SCALE), -CODE_FULL_SCALE, CODE_FULL_SCALE).astype(np.int8)


def changed_pieces(before: np.ndarray, after: np.ndarray, granularity: int, gap_granules: int = PIECE_GAP_GRANULES,
                   max_samples: int | None = None) -> list[tuple[int, np.ndarray]] | None:
    """(offset, samples of ``after``) for the runs of ``granularity``-sample granules where ``after`` differs from
    ``before`` (same length, a multiple of the granularity), runs closer than ``gap_granules`` joined; None when
    the pieces would hold more than ``max_samples`` samples (a segment mostly changed: not listed piece by piece)."""
    differs = _differing_granules(before, after, granularity)
    if not differs.size:
        return []
    if max_samples is not None and differs.size * granularity > max_samples:  # (the pieces hold at least these)
        return None
    breaks = np.flatnonzero(np.diff(differs) > gap_granules)
    starts = np.concatenate([differs[:1], differs[breaks + 1]])
    ends = np.concatenate([differs[breaks], differs[-1:]]) + 1
    if max_samples is not None and int(np.sum(ends - starts)) * granularity > max_samples:
        return None
    return [(int(a) * granularity, after[a * granularity:b * granularity]) for a, b in zip(starts, ends)]


def _differing_granules(before: np.ndarray, after: np.ndarray, granularity: int) -> np.ndarray:
    """Indices of the ``granularity``-sample granules where ``after`` differs from ``before`` (int8 samples, same
    length). Compared eight samples to a word where the granule is whole words (the M8195A's are 16 to 256 samples):
    a granule differs exactly when one of its words does, and numpy's row-wise any() over short rows costs more
    than the comparison."""
    word = 8 // before.itemsize if before.itemsize in (1, 2, 4, 8) else 0
    if word and granularity % word == 0 and before.size % word == 0 and before.dtype == after.dtype \
            and before.flags.c_contiguous and after.flags.c_contiguous:
        granules = np.flatnonzero(before.view(np.uint64) != after.view(np.uint64)) // (granularity // word)
        if granules.size < 2:
            return granules
        first = np.empty(granules.size, dtype=bool)  # ascending (flatnonzero's order): each granule's first word
        first[0] = True
        np.not_equal(granules[1:], granules[:-1], out=first[1:])
        return granules[first]  # np.unique's result without its sort (a gate segment has ~10^4 changed words)
    return np.flatnonzero((before != after).reshape(-1, granularity).any(axis=1))


def codes_to_volts(codes, amplitude_vpp: float) -> np.ndarray:
    """What the AWG plays for ``codes`` at ``amplitude_vpp`` and 0 V offset."""
    return 0.5 * amplitude_vpp * np.asarray(codes, dtype=float) / CODE_FULL_SCALE


def play_segment_in_steps(role: Any, segment_id: int, others: Sequence[Any]) -> None:
    """Awg.play_segment a message per step: ``role`` stopped, every role's selection, ``role`` run."""
    role.stop()
    for each in (role, *others):
        each.select(segment_id)
    role.run()


class AwgChannels:
    """The Awg role (roles.Awg) over a KeysightM8195A: ``channels``, its channel numbers this role drives, in
    the role's order. ``run`` and ``stop`` act on the whole instrument (its channels share one sequencer)."""

    def __init__(self, awg: Any, channels: Sequence[int], *, amplitude_max: Limit, name: str):
        self.awg, self.channels, self.name = awg, tuple(channels), name
        self.amplitude_max = amplitude_max

    # -- the registry's hooks (sequences/config.py DriverSpec.adapter) ----------------------------------
    @classmethod
    def from_driver(cls, driver: Any, unit: Sequence[int], *, amplitude_max: Limit, name: str) -> AwgChannels:
        return cls(driver, unit, amplitude_max=amplitude_max, name=name)

    @staticmethod
    def safe_state(driver: Any) -> dict[str, Any]:
        """Stopped, every output off (the modulators see 0 V); what reads back."""
        driver.safe_state()
        return AwgChannels.read_safe_state(driver)

    @staticmethod
    def read_safe_state(driver: Any) -> dict[str, Any]:
        """The sequencer and every output as they read back (nothing is sent but queries)."""
        readback = {"is_running": bool(driver.is_running())}
        readback.update({f"{ch.short_name}.output_enabled": bool(ch.output_enabled()) for ch in driver.channels})
        return readback

    def subset(self, channels: Sequence[int]) -> AwgChannels:
        if not set(channels) <= set(self.channels):
            raise ValueError(f"{self.name}: channels {tuple(channels)} are not all among {self.channels}")
        return AwgChannels(self.awg, channels, amplitude_max=self.amplitude_max, name=self.name)

    # -- the verbs -------------------------------------------------------------------------------------
    def configure(self, *, rate_divider: int | None = None) -> None:
        """The extended-memory sample-rate divider (1, 2 or 4): it sets the samples per symbol and the
        segment granularity of every channel."""
        if rate_divider is not None:
            self.awg.memory_divider(rate_divider)

    def run(self) -> None:
        """``:INIT:IMM`` and its error check: ONE message."""
        self.run_sent().replies()

    def stop(self) -> None:
        """``:ABOR`` and its error check: ONE message."""
        self.stop_sent().replies()

    def run_sent(self) -> SentBatch:
        """``run``'s message sent, its reply read by ``replies()`` (``roles.together``: several instruments started
        in one round trip)."""
        return self.awg.send_batch([":INIT:IMM"])

    def stop_sent(self) -> SentBatch:
        """``stop``'s message sent, its reply read by ``replies()`` (as run_sent)."""
        return self.awg.send_batch([":ABOR"])

    def is_running(self) -> bool:
        return bool(self.awg.is_running())

    def select(self, segment_id: int) -> None:
        """Play ``segment_id`` on every channel of the role: ONE message with its error check."""
        self.awg.write_batch(self._select_units(segment_id))

    def play_segment(self, segment_id: int, *others: Any) -> None:
        """Stop, select ``segment_id`` here and on ``others``, run: ONE message with its error check when every role is
        on this AWG (the check after every batch plays layer 1 with its gate so), else one message per step."""
        self.play_segment_sent(segment_id, *others).replies()

    def play_segment_sent(self, segment_id: int, *others: Any) -> SentBatch | Answered:
        """``play_segment`` with its one message's reply left to ``replies()`` (as run_sent); in steps, done here."""
        if all(isinstance(role, AwgChannels) and role.awg is self.awg for role in others):
            selections = [unit for role in (self, *others) for unit in role._select_units(segment_id)]
            return self.awg.send_batch([":ABOR", *selections, ":INIT:IMM"])
        play_segment_in_steps(self, segment_id, others)
        return Answered()

    def _select_units(self, segment_id: int) -> list[str]:
        if int(segment_id) != segment_id or segment_id < 1:
            raise ValueError(f"{self.name}: segment id must be an integer >= 1, got {segment_id!r}")
        return [f":TRAC{number}:SEL {int(segment_id)}" for number in self.channels]

    def channel(self, number: int) -> Any:
        return getattr(self.awg, f"ch{number}")

    def check_amplitude_vpp(self, amplitude_vpp: float) -> None:
        self.amplitude_max.check_at_most(self.name, "drive amplitude", amplitude_vpp)

    def samples_per_symbol(self, symbol_rate_hz: float) -> int:
        """AWG samples per symbol at the current sample rate and divider (must be a whole number)."""
        return self._samples_per_symbol(float(self.awg.sample_rate_hz()), self.awg.memory_divider(), symbol_rate_hz)

    def min_segment_samples(self) -> int:
        """The shortest segment the M8195A takes (its user's guide: 1280 samples)."""
        return MIN_SEGMENT_SAMPLES

    def _samples_per_symbol(self, sample_rate_hz: float, divider: int, symbol_rate_hz: float) -> int:
        rate_hz = sample_rate_hz / divider
        ratio = rate_hz / symbol_rate_hz
        if abs(ratio - round(ratio)) > 1e-6 * ratio or round(ratio) < 1:
            raise ValueError(f"{self.name}: {rate_hz:g} Sa/s is not a whole number of samples per symbol at "
                             f"{symbol_rate_hz:g} Bd")
        return int(round(ratio))

    def outputs_off(self) -> None:
        for number in self.channels:
            self.channel(number).output_enabled(False)

    # -- one message per step (AWG round trips of the calibrations) ---------------------------------
    # Why: the set-per-command path costs two round trips per setting (the set and its SYST:ERR?), ~30 for a
    # segment upload; these send each step as one compound message with one error check (write_batch).

    def stop_and_rate(self, symbol_rate_hz: float, outputs_off: Sequence[int] = ()) -> int:
        """Stop the AWG, switch ``outputs_off`` (channel numbers) off, and read the sample rate and divider: ONE
        message; returns the AWG samples per symbol (a whole number, as ``samples_per_symbol``)."""
        rate_reply, divider_reply = self.awg.write_batch(
            [":ABOR"] + [f":OUTP{n} 0" for n in outputs_off] + [":FREQ:RAST?", ":INST:MEM:EXT:RDIV?"])
        rate_hz, divider = float(rate_reply), int(divider_reply.strip().upper().removeprefix("DIV"))
        self.awg.sample_rate_hz.cache.set(rate_hz)
        self.awg.memory_divider.cache.set(divider)
        for number in outputs_off:
            self.channel(number).output_enabled.cache.set(False)
        return self._samples_per_symbol(rate_hz, divider, symbol_rate_hz)

    def amplitude_for_volts_vpp(self, volts) -> float:
        """The smallest amplitude this AWG sets that plays ``volts`` (the M8195A's minimum is 0.075 Vpp)."""
        return amplitude_for_volts_vpp(volts, AMPLITUDE_LIMITS_VPP[0])

    def load(self, segments: Sequence[tuple[int, Sequence[np.ndarray]]], amplitudes_vpp: Sequence[float], *,
             select: int | None = None, run: bool = False, partial: bool = True) -> None:
        """Stop the AWG, upload ``segments`` ((segment id, one code array per channel), ...) at ``amplitudes_vpp``
        (offset 0 V), select segment ``select`` (default: the last), switch the outputs on and, with ``run``, start
        the AWG: ONE message (a running M8195A refuses segment changes: its :ABOR comes first, and any refusal
        comes back from the error check, naming the batch). ``partial=False``: every segment sent whole, without
        comparing it with the last upload (a caller whose samples all change: a new batch's images)."""
        if len(amplitudes_vpp) != len(self.channels) or any(len(c) != len(self.channels) for _, c in segments):
            raise ValueError(f"{self.name}: expected {len(self.channels)} waveforms and amplitudes per segment")
        for amplitude in amplitudes_vpp:
            self.check_amplitude_vpp(amplitude)
            if amplitude < AMPLITUDE_LIMITS_VPP[0]:
                raise LimitError(self.name, f"drive amplitude {amplitude:g} Vpp is below the AWG's "
                                            f"{AMPLITUDE_LIMITS_VPP[0]:g} Vpp minimum")
        select = segments[-1][0] if select is None else select
        data = {(number, segment_id): as_int8_samples(codes[index])
                for segment_id, codes in segments for index, number in enumerate(self.channels)}
        pieces = self._confirmed_pieces(data) if partial else {}
        units: list[str | bytes] = [":ABOR"]
        loaded = []
        for number, amplitude in zip(self.channels, amplitudes_vpp):
            channel = self.channel(number)
            channel.amplitude_vpp.validate(amplitude)
            if channel.memory_mode.get_latest() != "EXT":
                units.append(f":TRAC{number}:MMOD EXT")
            units += [f":VOLT{number} {amplitude:.6f}", f":VOLT{number}:OFFS {0.0:.6f}"]
            for segment_id, _ in segments:
                samples = data[(number, segment_id)]
                changed = pieces.get((number, segment_id))
                # named before its samples are written: an upload cut short leaves a name the driver never noted
                token = channel.upload_token()
                if changed is None:
                    definition, *blocks = channel.segment_units(segment_id, samples, memory_mode="EXT")
                    units += [definition, channel.name_unit(segment_id, token), *blocks]
                else:
                    units += [channel.name_unit(segment_id, token), *channel.piece_units(segment_id, changed)]
                loaded.append((number, segment_id, samples, token, amplitude))
            units += [f":TRAC{number}:SEL {select}", f":OUTP{number} 1"]
        if run:
            units.append(":INIT:IMM")
        try:
            self.awg.write_batch(units)
        except Exception:
            for number, segment_id, *_ in loaded:  # what the segments hold now is unknown: the next load sends whole
                self.channel(number).forget_upload(segment_id)
            raise
        for number in self.channels:
            self.channel(number).note_memory_mode("EXT")
        for number, segment_id, samples, token, amplitude in loaded:
            changed = pieces.get((number, segment_id))
            if changed is None:
                kept = samples.copy()  # the driver's own copy: the caller may reuse its array
            else:
                kept = self.channel(number).loaded_samples(segment_id)[0]
                for offset, piece in changed:
                    kept[offset:offset + piece.size] = piece
            self.channel(number).note_batch_settings(segment_id, samples.size, amplitude, 0.0, (kept, token))

    def _confirmed_pieces(self, data: dict[tuple[int, int], np.ndarray]) -> dict[tuple[int, int], list]:
        """{(channel, segment): changed pieces} for the segments whose changes alone may be sent: the driver's last
        upload there has their length and differs in few granules, and the instrument confirms, in ONE message,
        that it holds that upload (module docstring). {} when no segment qualifies (no message is sent)."""
        candidates = {}
        for (number, segment_id), samples in data.items():
            channel = self.channel(number)
            known = channel.loaded_samples(segment_id)
            if (samples.size < PARTIAL_MIN_SAMPLES or known is None or known[0].size != samples.size
                    or channel.memory_mode.get_latest() != "EXT"):
                continue
            changed = changed_pieces(known[0], samples, self.awg.granularity_samples(),
                                     max_samples=int(PIECES_MAX_SHARE * samples.size))
            if changed is not None:
                candidates[(number, segment_id)] = (changed, known[1])
        if not candidates:
            return {}
        numbers = sorted({number for number, _ in candidates})
        queries = [f":TRAC{number}:CAT?" for number in numbers] + [
            f":TRAC{number}:NAME? {segment_id}" for number, segment_id in candidates]
        replies = self.awg.write_batch(queries)
        catalogs = {number: parse_catalog(reply) for number, reply in zip(numbers, replies)}
        names = [parse_name(reply) for reply in replies[len(numbers):]]
        return {(number, segment_id): changed
                for ((number, segment_id), (changed, token)), name in zip(candidates.items(), names)
                if catalogs[number].get(segment_id) == data[(number, segment_id)].size and name == token}

    def switch(self, changes: Sequence[tuple[int, int | None, bool | None]]) -> None:
        """(channel number, segment to select or None, output on/off or None) for each change: ONE message
        (nothing is sent when there is no change). Every segment selected must be the same one: the channels share
        one sequence table (module docstring)."""
        selected = {segment_id for _, segment_id, _ in changes if segment_id is not None}
        if len(selected) > 1:
            raise ValueError(f"{self.name}: segments {sorted(selected)} selected at once: the M8195A's extended-memory "
                             "channels play one segment of one sequence table (user's guide p. 110); load the "
                             "combinations as segments of their own")
        units = []
        for number, segment_id, enabled in changes:
            if number not in self.channels:
                raise ValueError(f"{self.name}: channel {number} is not one of {self.channels}")
            if segment_id is not None:
                units.append(f":TRAC{number}:SEL {int(segment_id)}")
            if enabled is not None:
                units.append(f":OUTP{number} {int(bool(enabled))}")
        if units:
            self.awg.write_batch(units)
            for number, _, enabled in changes:
                if enabled is not None:
                    self.channel(number).output_enabled.cache.set(bool(enabled))

    def stop_and_outputs_off(self) -> None:
        """Stop the AWG and switch this role's outputs off: ONE message."""
        self.awg.write_batch([":ABOR"] + [f":OUTP{n} 0" for n in self.channels])
        for number in self.channels:
            self.channel(number).output_enabled.cache.set(False)
