"""The Awg role over a Tektronix AWG70000-series AWG (qcodes' maintained ``TektronixAWG70002A``, unchanged).

Why an adapter of its own: the role speaks in segment ids and int8 codes (roles.Awg); the AWG70000 keeps named
waveforms in a waveform list, normalised to -1..+1 of the channel's amplitude, and a channel plays the one asset
assigned to it (AWG70000 Series Programmer Manual, WLISt and SOURce:CASSet groups; docs/INSTRUMENTS.md 6.3). So
segment ``s`` of channel ``n`` is the waveform ``qslab_ch<n>_seg<s>``, its values ``code / 127`` (what the
M8195A plays for the same code at the same amplitude: V = Vpp/2 x code/127), selecting a segment assigns that
waveform. Every waveform carries marker 1 high over its first half on the role's first channel: the AWG's marker
rises at every start of the waveform it plays, the edge a digitizer's trigger input can take ([trigger]).

What qcodes' driver offers is used as it is (its channel parameters, play(), stop(), run_state); what it has no
verb for (the waveform list's NEW/DATA/MARKer:DATA, which qcodes reaches only through .wfmx files) is sent through
its public ``write`` and its VISA resource's ``write_binary_values``, and every step ends with the error queue read
(``SYSTem:ERRor:ALL?``): a refusal is an InstrumentError naming the step, never a silent miss.

``configure(rate_divider=d)`` sets the sample clock to the instrument's maximum (``CLOCk:SRATe? MAX``) over ``d``,
the nearest the AWG70000 has to the M8195A's memory divider: 16 GSa/s (option 216) / 4 = 4 samples per symbol at
1 GBd.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qslab.instruments.drivers._scpi import InstrumentError
from qslab.instruments.optical.awg_channels import amplitude_for_volts_vpp, play_segment_in_steps
from qslab.instruments.optical.limits import Limit, LimitError
from qslab.instruments.optical.roles import Answered

CODE_FULL_SCALE = 127                 # code that plays +Vpp/2 (as on the M8195A: awg_channels.py)
AMPLITUDE_LIMITS_VPP = (0.25, 0.5)    # the AWG70002A's direct output (qcodes' awg_amplitude validator)
DAC_BITS = 8                          # 8-bit resolution leaves both markers on
MARKER_1_BIT = 6                      # a marker byte: bit 6 marker 1, bit 7 marker 2
NO_ERROR = 0


def waveform_name(channel: int, segment_id: int) -> str:
    return f"qslab_ch{int(channel)}_seg{int(segment_id)}"


def marker_bytes(samples: int, with_marker: bool) -> np.ndarray:
    """Marker 1 high over the first half of the waveform (its rising edge at the waveform's start), or all low."""
    markers = np.zeros(samples, dtype=np.uint8)
    if with_marker:
        markers[: max(1, samples // 2)] = 1 << MARKER_1_BIT
    return markers


def parse_error_list(reply: str) -> list[tuple[int, str]]:
    """``SYSTem:ERRor:ALL?`` (``code,"text"[,code,"text"...]``) as [(code, text)], the empty queue's entry left out.
    A quote inside a text is doubled (IEEE 488.2 string response data)."""
    errors, rest = [], reply.strip()
    while rest:
        code_text, _, rest = rest.partition(",")
        if rest.startswith('"'):
            text, rest = _quoted(rest)
            rest = rest.lstrip(",")
        else:
            text, _, rest = rest.partition(",")
        code = int(code_text.strip())
        if code != NO_ERROR:
            errors.append((code, text))
    return errors


def _quoted(reply: str) -> tuple[str, str]:
    """(the text of the string that opens ``reply``, what follows it); ``""`` inside it is one quote."""
    index, text = 1, []
    while index < len(reply):
        if reply[index] == '"':
            if reply[index + 1:index + 2] == '"':
                text.append('"')
                index += 2
                continue
            return "".join(text), reply[index + 1:]
        text.append(reply[index])
        index += 1
    return "".join(text), ""


class Awg70000Channels:
    """The Awg role (roles.Awg) over a TektronixAWG70002A: ``channels``, its channel numbers this role drives."""

    def __init__(self, awg: Any, channels: Sequence[int], *, amplitude_max: Limit, name: str):
        self.awg, self.channels, self.name = awg, tuple(int(c) for c in channels), name
        self.amplitude_max = amplitude_max
        self._min_segment_samples: int | None = None  # the instrument's, read once

    # -- the registry's hooks (sequences/config.py DriverSpec.adapter) ----------------------------------
    @classmethod
    def from_driver(cls, driver: Any, unit: Sequence[int], *, amplitude_max: Limit, name: str) -> Awg70000Channels:
        return cls(driver, unit, amplitude_max=amplitude_max, name=name)

    @staticmethod
    def driver_options(limits: Any, visa_library: str) -> dict[str, Any]:
        return {}

    @staticmethod
    def safe_state(driver: Any) -> dict[str, Any]:
        """Stopped, every output off; what reads back."""
        driver.stop()
        for number in range(1, driver.num_channels + 1):
            getattr(driver, f"ch{number}").state(0)
        return Awg70000Channels.read_safe_state(driver)

    @staticmethod
    def read_safe_state(driver: Any) -> dict[str, Any]:
        readback = {"is_running": driver.run_state() != "Stopped"}
        readback.update({f"ch{n}.output_enabled": bool(getattr(driver, f"ch{n}").state())
                         for n in range(1, driver.num_channels + 1)})
        return readback

    def subset(self, channels: Sequence[int]) -> Awg70000Channels:
        if not set(channels) <= set(self.channels):
            raise ValueError(f"{self.name}: channels {tuple(channels)} are not all among {self.channels}")
        return Awg70000Channels(self.awg, channels, amplitude_max=self.amplitude_max, name=self.name)

    # -- errors -------------------------------------------------------------------------------------
    def _checked(self, step: str) -> None:
        """The error queue, read whole; any entry is an InstrumentError naming ``step``."""
        errors = parse_error_list(self.awg.ask("SYSTem:ERRor:ALL?"))
        if errors:
            raise InstrumentError(self.name, step, errors)

    def _send(self, step: str, commands: Sequence[str]) -> None:
        for command in commands:
            self.awg.write(command)
        self._checked(step)

    # -- the verbs -------------------------------------------------------------------------------------
    def configure(self, *, rate_divider: int | None = None) -> None:
        """The sample clock at the instrument's maximum over ``rate_divider``."""
        if rate_divider is not None:
            if int(rate_divider) < 1:
                raise ValueError(f"{self.name}: rate divider {rate_divider!r}: expected an integer >= 1")
            maximum_hz = float(self.awg.ask("CLOCk:SRATe? MAX"))
            self.awg.sample_rate(maximum_hz / int(rate_divider))
            self._checked(f"CLOCk:SRATe {maximum_hz / int(rate_divider):g}")

    def min_segment_samples(self) -> int:
        """The shortest waveform the instrument plays (``WLISt:WAVeform:LMINimum?``, read once; 2400 on the bench's)."""
        if self._min_segment_samples is None:
            self._min_segment_samples = int(float(self.awg.ask("WLISt:WAVeform:LMINimum?")))
        return self._min_segment_samples

    def samples_per_symbol(self, symbol_rate_hz: float) -> int:
        rate_hz = float(self.awg.sample_rate())
        ratio = rate_hz / symbol_rate_hz
        if abs(ratio - round(ratio)) > 1e-6 * ratio or round(ratio) < 1:
            raise ValueError(f"{self.name}: {rate_hz:g} Sa/s is not a whole number of samples per symbol at "
                             f"{symbol_rate_hz:g} Bd")
        return int(round(ratio))

    def amplitude_for_volts_vpp(self, volts) -> float:
        """The smallest amplitude this AWG sets that plays ``volts``: at least the AWG70002A's 0.25 Vpp (smaller
        drives play at 0.25 Vpp on fewer codes)."""
        return amplitude_for_volts_vpp(volts, AMPLITUDE_LIMITS_VPP[0])

    def check_amplitude_vpp(self, amplitude_vpp: float) -> None:
        self.amplitude_max.check_at_most(self.name, "drive amplitude", amplitude_vpp)

    def channel(self, number: int) -> Any:
        return getattr(self.awg, f"ch{number}")

    def run(self) -> None:
        self.awg.play(wait_for_running=False)
        self._checked("AWGControl:RUN")

    def stop(self) -> None:
        self.awg.stop()

    def is_running(self) -> bool:
        return self.awg.run_state() != "Stopped"

    def select(self, segment_id: int) -> None:
        """Assign segment ``segment_id``'s waveform to every channel of the role."""
        self._send(f"select segment {segment_id}", [f'SOURce{n}:CASSet:WAVeform "{waveform_name(n, segment_id)}"'
                                                    for n in self.channels])

    def play_segment(self, segment_id: int, *others: Any) -> None:
        """Stop, select ``segment_id`` here and on ``others``, run: one message per step."""
        play_segment_in_steps(self, segment_id, others)

    # qcodes' AWG70000 driver reads each reply as it writes: these steps are done at once, nothing left pending
    def run_sent(self) -> Answered:
        self.run()
        return Answered()

    def stop_sent(self) -> Answered:
        self.stop()
        return Answered()

    def play_segment_sent(self, segment_id: int, *others: Any) -> Answered:
        self.play_segment(segment_id, *others)
        return Answered()

    def switch(self, changes: Sequence[tuple[int, int | None, bool | None]]) -> None:
        """(channel, segment or None, output on/off or None) per change; channels play their own assets, so different
        segments on two channels are allowed (unlike the M8195A's shared sequence table)."""
        commands = []
        for number, segment_id, enabled in changes:
            if number not in self.channels:
                raise ValueError(f"{self.name}: channel {number} is not one of {self.channels}")
            if segment_id is not None:
                commands.append(f'SOURce{number}:CASSet:WAVeform "{waveform_name(number, segment_id)}"')
            if enabled is not None:
                commands.append(f"OUTPut{number}:STATe {int(bool(enabled))}")
        if commands:
            self._send("switch", commands)
            for number, _, enabled in changes:
                if enabled is not None:
                    self.channel(number).state.cache.set(int(bool(enabled)))

    def outputs_off(self) -> None:
        for number in self.channels:
            self.channel(number).state(0)

    def stop_and_outputs_off(self) -> None:
        self.stop()
        self.outputs_off()

    def stop_and_rate(self, symbol_rate_hz: float, outputs_off: Sequence[int] = ()) -> int:
        self.stop()
        for number in outputs_off:
            self.channel(number).state(0)
        return self.samples_per_symbol(symbol_rate_hz)

    def load(self, segments: Sequence[tuple[int, Sequence[np.ndarray]]], amplitudes_vpp: Sequence[float], *,
             select: int | None = None, run: bool = False, partial: bool = True) -> None:
        """Upload each segment as one named waveform per channel (replacing one of the same name), set the
        amplitudes, the 8-bit DAC (both markers on), assign ``select`` (default: the last), outputs on and, with
        ``run``, start. Everything is checked before the first command; the AWG is stopped first. (``partial``: the
        role's signature; this family's waveforms are always sent whole.)"""
        if len(amplitudes_vpp) != len(self.channels) or any(len(c) != len(self.channels) for _, c in segments):
            raise ValueError(f"{self.name}: expected {len(self.channels)} waveforms and amplitudes per segment")
        for amplitude in amplitudes_vpp:
            self.check_amplitude_vpp(amplitude)
            if not AMPLITUDE_LIMITS_VPP[0] <= amplitude <= AMPLITUDE_LIMITS_VPP[1]:
                raise LimitError(self.name, f"drive amplitude {amplitude:g} Vpp is outside the AWG70000's "
                                            f"{AMPLITUDE_LIMITS_VPP[0]:g}..{AMPLITUDE_LIMITS_VPP[1]:g} Vpp")
        uploads = [(number, segment_id, np.asarray(codes[index]))
                   for index, number in enumerate(self.channels) for segment_id, codes in segments]
        for number, segment_id, codes in uploads:
            if codes.ndim != 1 or codes.dtype.kind not in "iu" or (codes.size and np.max(np.abs(codes)) > CODE_FULL_SCALE):
                raise ValueError(f"{self.name}: segment {segment_id} of channel {number}: expected 1-d integer codes "
                                 f"within +-{CODE_FULL_SCALE}")
        shortest = min(codes.size for _, _, codes in uploads) if uploads else 0
        if uploads and shortest < (minimum := self.min_segment_samples()):
            raise LimitError(self.name, f"a segment of {shortest} samples is shorter than the {minimum} samples the AWG "
                                        "plays at least (WLISt:WAVeform:LMINimum?)")
        select = segments[-1][0] if select is None else select
        self.stop()
        existing = set(self.awg.waveformList)
        handle = self.awg.visa_handle
        for number, segment_id, codes in uploads:
            name = waveform_name(number, segment_id)
            if name in existing:
                self.awg.write(f'WLISt:WAVeform:DELete "{name}"')
            self.awg.write(f'WLISt:WAVeform:NEW "{name}",{codes.size}')
            handle.write_binary_values(f'WLISt:WAVeform:DATA "{name}",0,{codes.size},',
                                       (codes.astype(np.float32) / CODE_FULL_SCALE), datatype="f", is_big_endian=False)
            handle.write_binary_values(f'WLISt:WAVeform:MARKer:DATA "{name}",0,{codes.size},',
                                       marker_bytes(codes.size, number == self.channels[0]), datatype="B")
            self._checked(f"waveform {name}")
        commands = []
        for number, amplitude in zip(self.channels, amplitudes_vpp):
            commands += [f"SOURce{number}:DAC:RESolution {DAC_BITS}", f"SOURce{number}:VOLTage {amplitude:.6f}",
                         f'SOURce{number}:CASSet:WAVeform "{waveform_name(number, select)}"', f"OUTPut{number}:STATe 1"]
        self._send("load", commands)
        for number, amplitude in zip(self.channels, amplitudes_vpp):
            self.channel(number).awg_amplitude.cache.set(float(amplitude))
            self.channel(number).resolution.cache.set(DAC_BITS)
            self.channel(number).state.cache.set(1)
        if run:
            self.run()

    def set_marker_levels(self, low_v: float, high_v: float, marker: int = 1) -> None:
        """The first channel's marker levels at its output (V), set and read back (qcodes' marker parameters)."""
        channel = self.channel(self.channels[0])
        getattr(channel, f"marker{marker}_high")(high_v)
        getattr(channel, f"marker{marker}_low")(low_v)
        self._checked(f"marker {marker} levels")
