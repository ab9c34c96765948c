"""Tektronix AWG70000-series AWG emulator (an AWG70002A: two channels, two markers each), docs/INSTRUMENTS.md 6.3.

Enough for qcodes' unchanged ``TektronixAWG70002A`` and the Awg role over it (instruments/optical/awg70000.py). The
command set is the AWG70000 Series Programmer Manual's (Tektronix 077-1334-xx), as qcodes' driver and the
role use it:

* the waveform list (``WLISt:WAVeform:NEW "<name>",<size>``, ``:DATA "<name>",<start>,<size>,<block of little-endian
  IEEE floats>``, ``:MARKer:DATA "<name>",<start>,<size>,<block of bytes>``, ``:DELete "<name>"|ALL``,
  ``:LENGth? "<name>"``, ``:LMINimum?``, ``WLISt:LIST?``, ``WLISt:SIZE?``): waveform values are normalised, -1..+1
  of the channel's amplitude; a marker byte carries marker 1 in bit 6 and marker 2 in bit 7. A name that exists
  already, or does not exist, a value outside -1..+1, a block longer than the waveform, or a waveform shorter than
  the instrument's minimum (WAVEFORM_MIN_SAMPLES) is refused with an error in the queue, nothing changed;
* the sequence list holds nothing here (``SLISt:SIZE?`` reads 0; a channel plays one waveform);
* per channel: ``SOURce<n>:CASSet:WAVeform "<name>"`` (the asset it plays), ``SOURce<n>:CASSet?``,
  ``SOURce<n>:CASSet:CLEar``, ``SOURce<n>:VOLTage[:LEVel][:IMMediate][:AMPLitude]`` (0.25..0.5 Vpp on the direct
  path), ``...:OFFSet``, ``SOURce<n>:DAC:RESolution 8|9|10`` (markers need 8 bits for two, 9 for one, none at 10),
  ``SOURce<n>:MARKer<m>:VOLTage:HIGH|LOW``, ``OUTPut<n>[:STATe]`` and ``OUTPut:OFF`` (all outputs off, an override);
* the clock: ``CLOCk:SRATe`` (up to SAMPLE_RATE_MAX_HZ, option 216: 16 GSa/s; ``CLOCk:SRATe? MAX``),
  ``CLOCk:SOURce``;
* run control: ``AWGControl:RUN[:IMMediate]``, ``AWGControl:STOP[:IMMediate]``, ``AWGControl:RSTate?``
  (0 stopped, 2 running); starting with an assigned waveform shorter than the minimum is refused;
* ``MMEMory:CDIRectory`` (what qcodes sets in its constructor) and the IEEE 488.2 common commands and
  ``SYSTem:ERRor[:NEXT]?`` / ``:COUNt?`` / ``:ALL?`` of every emulator.

What plays goes into the bench's AwgState (bench.awg_state(name), the same state the M8195A emulator plays into),
so the optical chain does not care which AWG drives it: the values of the assigned waveform become the state's
int8 codes (value x 127, the DAC's 8-bit resolution) under segment ``index`` (the waveform's place in the list),
the amplitude, offset and output relay the channel's. Only channels 1 and 2 exist; the state's others stay off.
The marker waveforms are kept (``marker_edges``) for the trigger path: marker 1 of channel 1 rises where its bits go
from 0 to 1.
"""

from __future__ import annotations

import numpy as np

from qslab.instruments.sim.emulators.base import LoadsAwgSamples, ScpiEmulator, check_suffix
from qslab.instruments.sim.scpi.engine import Call, CommandTree
from qslab.instruments.sim.scpi.parsing import ScpiError, number_keyword, unquote

CHANNELS = 2
MARKERS = 2
AMPLITUDE_LIMITS_VPP = (0.25, 0.5)   # direct output path of the AWG70002A
OFFSET_LIMITS_V = (-2.0, 2.0)
MARKER_LIMITS_V = (-1.4, 1.4)
SAMPLE_RATE_MIN_HZ = 1.49e3
SAMPLE_RATE_MAX_HZ = 16e9            # option 216
DEFAULT_SAMPLE_RATE_HZ = 16e9
WAVEFORM_MIN_SAMPLES = 2400          # WLISt:WAVeform:LMINimum?
WAVEFORM_MAX_SAMPLES = 1 << 28       # the emulator's memory per waveform (the instrument has 2 GSa)
RESOLUTIONS = {8: 2, 9: 1, 10: 0}    # DAC bits -> markers available
CODE_FULL_SCALE = 127
MARKER_BITS = {1: 6, 2: 7}           # marker m lives in bit MARKER_BITS[m] of a marker byte
CLOCK_SOURCES = ("INTernal", "EFIXed", "EVARiable", "EXTernal")
OPTIONS = "216,150"


class Waveform:
    """One entry of the waveform list: normalised values and marker bytes."""

    def __init__(self, size: int):
        self.values = np.zeros(size, dtype=np.float32)
        self.markers = np.zeros(size, dtype=np.uint8)


class TektronixAWG70000Emulator(LoadsAwgSamples, ScpiEmulator):
    driver = "qcodes.instrument_drivers.tektronix.TektronixAWG70002A"
    idn = "TEKTRONIX,AWG70002A,B020000,FV:7.1.0170.0"

    def __init__(self, bench, name: str):
        self.awg = bench.awg_state(name)  # the AWG state this instrument plays into
        super().__init__(bench, name)
        self.engine.options_reply = OPTIONS

    def reset(self) -> None:
        awg = self.awg
        with self.bench.lock:
            awg.sample_rate_hz, awg.divider, awg.running = DEFAULT_SAMPLE_RATE_HZ, 1, False
            for channel in awg.channels.values():
                channel.amplitude_vpp, channel.offset_v, channel.output_enabled = 0.5, 0.0, False
                channel.function_mode = "ARB"
                for segment_id in list(channel.segments):
                    awg.segment_written(channel, segment_id)
                channel.segments.clear()
                channel.selected_segment = 0
            awg.version += 1
        self.waveforms: dict[str, Waveform] = {}
        self.assets: dict[int, str | None] = dict.fromkeys(range(1, CHANNELS + 1), None)
        self.resolution = dict.fromkeys(range(1, CHANNELS + 1), 8)
        self.marker_v = {(n, m): [1.0, 0.0] for n in range(1, CHANNELS + 1) for m in range(1, MARKERS + 1)}
        self.all_outputs_off = False
        self.enabled = dict.fromkeys(range(1, CHANNELS + 1), False)
        self.clock_source = "INT"
        self.directory = "C:"

    # -- what plays ----------------------------------------------------------------------------
    def _play(self, n: int) -> None:
        """Put channel ``n``'s assigned waveform, relay and levels into the bench's AWG state (under the lock)."""
        state = self.awg.channels[n]
        for segment_id in list(state.segments):
            self.awg.segment_written(state, segment_id)
        state.segments.clear()
        name = self.assets[n]
        if name is not None:
            index = list(self.waveforms).index(name) + 1
            codes = np.rint(self.waveforms[name].values * CODE_FULL_SCALE).astype(np.int8)
            state.segments[index] = codes
            state.selected_segment = index
            self.awg.segment_written(state, index)
        else:
            state.selected_segment = 0
        state.output_enabled = self.enabled[n] and not self.all_outputs_off
        self.awg.version += 1

    def marker_edges(self, channel: int = 1, marker: int = 1) -> np.ndarray:
        """Sample indices where marker ``marker`` of ``channel`` rises (its bit goes 0 -> 1, cyclically), while that
        marker exists at the channel's DAC resolution; empty otherwise."""
        name = self.assets.get(channel)
        if name is None or RESOLUTIONS[self.resolution[channel]] < marker:
            return np.zeros(0, dtype=int)
        bits = (self.waveforms[name].markers >> MARKER_BITS[marker]) & 1
        return np.flatnonzero((bits == 1) & (np.roll(bits, 1) == 0))

    def _waveform(self, call: Call, index: int = 0) -> tuple[str, Waveform]:
        name = unquote(call.text(index))
        if name not in self.waveforms:
            raise ScpiError(-224, f'Illegal parameter value;no waveform "{name}" in the waveform list')
        return name, self.waveforms[name]

    def _span(self, call: Call, size: int) -> tuple[int, int | None]:
        """(start, size or None) of a DATA command's optional <StartIndex>,<Size> (the block is the last argument)."""
        numbers = call.args[1:-1]
        if len(numbers) > 2:
            raise ScpiError(-108)
        start = call.integer(1, minimum=0) if len(numbers) >= 1 else 0
        count = call.integer(2, minimum=1) if len(numbers) == 2 else None
        if start >= size:
            raise ScpiError(-222, "Data out of range;start index beyond the waveform")
        return start, count

    def _channel(self, call: Call, position: int = 0) -> int:
        return check_suffix(call.suffixes[position], 1, CHANNELS)

    def register(self, tree: CommandTree) -> None:
        bench, awg = self.bench, self.awg

        # waveform list
        def new(call: Call) -> None:
            call.count(2, 3)
            name = unquote(call.text(0))
            if not name:
                raise ScpiError(-224, "Illegal parameter value;empty waveform name")
            if name in self.waveforms:
                raise ScpiError(-224, f'Illegal parameter value;waveform "{name}" already exists')
            size = call.integer(1, minimum=WAVEFORM_MIN_SAMPLES, maximum=WAVEFORM_MAX_SAMPLES)
            if len(call.args) == 3 and call.text(2).strip().upper() not in ("REAL", "INT"):
                raise ScpiError(-224)
            self.waveforms[name] = Waveform(size)

        def write_values(call: Call) -> None:
            if len(call.args) < 2:
                raise ScpiError(-109)
            name, waveform = self._waveform(call)
            start, count = self._span(call, waveform.values.size)
            block = call.block(len(call.args) - 1)
            if len(block) % 4:
                raise ScpiError(-223, "Too much data;block is not a whole number of 4-byte floats")
            values = np.frombuffer(block, dtype="<f4")
            if count is not None and count != values.size:
                raise ScpiError(-223, f"Too much data;size {count} but {values.size} values sent")
            if start + values.size > waveform.values.size:
                raise ScpiError(-223, "Too much data;beyond the waveform's end")
            if values.size and (not np.all(np.isfinite(values)) or float(np.max(np.abs(values))) > 1.0):
                raise ScpiError(-222, "Data out of range;waveform values are normalised to -1..+1")
            with bench.lock:
                waveform.values[start:start + values.size] = values
                for n, asset in self.assets.items():
                    if asset == name:
                        self._play(n)

        def read_values(call: Call) -> bytes:
            call.count(1, 3)
            _, waveform = self._waveform(call)
            start = call.integer(1, minimum=0) if len(call.args) > 1 else 0
            count = call.integer(2, minimum=1) if len(call.args) > 2 else waveform.values.size - start
            if start + count > waveform.values.size:
                raise ScpiError(-222)
            return waveform.values[start:start + count].astype("<f4").tobytes()

        def write_markers(call: Call) -> None:
            if len(call.args) < 2:
                raise ScpiError(-109)
            _, waveform = self._waveform(call)
            start, count = self._span(call, waveform.markers.size)
            data = np.frombuffer(call.block(len(call.args) - 1), dtype=np.uint8)
            if count is not None and count != data.size:
                raise ScpiError(-223, f"Too much data;size {count} but {data.size} marker bytes sent")
            if start + data.size > waveform.markers.size:
                raise ScpiError(-223, "Too much data;beyond the waveform's end")
            waveform.markers[start:start + data.size] = data

        def read_markers(call: Call) -> bytes:
            call.count(1, 3)
            _, waveform = self._waveform(call)
            start = call.integer(1, minimum=0) if len(call.args) > 1 else 0
            count = call.integer(2, minimum=1) if len(call.args) > 2 else waveform.markers.size - start
            if start + count > waveform.markers.size:
                raise ScpiError(-222)
            return waveform.markers[start:start + count].tobytes()

        def delete(call: Call) -> None:
            call.count(1)
            word = call.text().strip()
            names = list(self.waveforms) if word.upper() == "ALL" else [self._waveform(call)[0]]
            with bench.lock:
                if awg.running and any(asset in names for asset in self.assets.values()):
                    raise ScpiError(-221, "Settings conflict;a waveform being played cannot be deleted")
                for name in names:
                    del self.waveforms[name]
                for n, asset in self.assets.items():
                    if asset in names:
                        self.assets[n] = None
                for n in self.assets:  # list positions (segment ids) may have moved
                    self._play(n)

        def length(call: Call) -> str:
            call.count(1)
            return str(self._waveform(call)[1].values.size)

        def waveform_list(call: Call) -> str:
            call.count(0)
            return ",".join(f'"{name}"' for name in self.waveforms) if self.waveforms else '""'

        tree.add("WLISt:WAVeform:NEW", set=new)
        tree.add("WLISt:WAVeform:DATA", set=write_values, query=read_values)
        tree.add("WLISt:WAVeform:MARKer:DATA", set=write_markers, query=read_markers)
        tree.add("WLISt:WAVeform:DELete", set=delete)
        tree.add("WLISt:WAVeform:LENGth", query=length)
        tree.add("WLISt:WAVeform:LMINimum", query=lambda call: str(WAVEFORM_MIN_SAMPLES))
        tree.add("WLISt:WAVeform:LMAXimum", query=lambda call: str(WAVEFORM_MAX_SAMPLES))
        tree.add("WLISt:LIST", query=waveform_list)
        tree.add("WLISt:SIZE", query=lambda call: str(len(self.waveforms)))
        tree.add("SLISt:SIZE", query=lambda call: "0")

        # channel assets, levels, DAC resolution, markers, outputs
        def assign(call: Call) -> None:
            call.count(1)
            n = self._channel(call)
            name, _ = self._waveform(call)
            with bench.lock:
                self.assets[n] = name
                self._play(n)

        def asset(call: Call) -> str:
            call.count(0)
            name = self.assets[self._channel(call)]
            return f'"{name}"' if name else '""'

        def clear(call: Call) -> None:
            call.count(0)
            n = self._channel(call)
            with bench.lock:
                self.assets[n] = None
                self._play(n)

        def level(attribute: str, limits: tuple[float, float], default: float):
            def put(call: Call) -> None:
                call.count(1)
                n = self._channel(call)
                value = call.number(units=("V",), minimum=limits[0], maximum=limits[1], default=default)
                with bench.lock:
                    setattr(awg.channels[n], attribute, value)
                    awg.version += 1

            def get(call: Call) -> str:
                call.count(0, 1)
                n = self._channel(call)
                value = getattr(awg.channels[n], attribute)
                if call.args:
                    keyword = number_keyword(call.text())
                    if keyword is None:
                        raise ScpiError(-224)
                    value = {"MIN": limits[0], "MAX": limits[1], "DEF": default}[keyword]
                return f"{value:.6g}"
            return put, get

        def set_resolution(call: Call) -> None:
            call.count(1)
            n = self._channel(call)
            bits = call.integer()
            if bits not in RESOLUTIONS:
                raise ScpiError(-222, "Data out of range;DAC resolution is 8, 9 or 10 bits")
            self.resolution[n] = bits

        def marker_level(which: int):
            def put(call: Call) -> None:
                call.count(1)
                n, m = self._channel(call), check_suffix(call.suffixes[1], 1, MARKERS)
                self.marker_v[(n, m)][which] = call.number(units=("V",), minimum=MARKER_LIMITS_V[0],
                                                           maximum=MARKER_LIMITS_V[1])

            def get(call: Call) -> str:
                call.count(0)
                n, m = self._channel(call), check_suffix(call.suffixes[1], 1, MARKERS)
                return f"{self.marker_v[(n, m)][which]:.6g}"
            return put, get

        def set_output(call: Call) -> None:
            call.count(1)
            n = self._channel(call)
            with bench.lock:
                self.enabled[n] = call.boolean()
                self._play(n)

        def get_output(call: Call) -> str:
            call.count(0)
            return "1" if self.enabled[self._channel(call)] else "0"

        def set_all_off(call: Call) -> None:
            call.count(1)
            with bench.lock:
                self.all_outputs_off = call.boolean()
                for n in self.assets:
                    self._play(n)

        tree.add("SOURce#:CASSet:WAVeform", set=assign)
        tree.add("SOURce#:CASSet", query=asset)
        tree.add("SOURce#:CASSet:CLEar", set=clear)
        put, get = level("amplitude_vpp", AMPLITUDE_LIMITS_VPP, 0.5)
        tree.add("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]", set=put, query=get)
        put, get = level("offset_v", OFFSET_LIMITS_V, 0.0)
        tree.add("SOURce#:VOLTage[:LEVel][:IMMediate]:OFFSet", set=put, query=get)
        tree.add("SOURce#:DAC:RESolution", set=set_resolution,
                 query=lambda call: str(self.resolution[self._channel(call)]))
        put, get = marker_level(0)
        tree.add("SOURce#:MARKer#:VOLTage[:LEVel][:IMMediate]:HIGH", set=put, query=get)
        put, get = marker_level(1)
        tree.add("SOURce#:MARKer#:VOLTage[:LEVel][:IMMediate]:LOW", set=put, query=get)
        tree.add("OUTPut#[:STATe]", set=set_output, query=get_output)
        tree.add("OUTPut:OFF", set=set_all_off, query=lambda call: "1" if self.all_outputs_off else "0")

        # clock
        def set_rate(call: Call) -> None:
            call.count(1)
            value = call.number(units=("HZ",), minimum=SAMPLE_RATE_MIN_HZ, maximum=SAMPLE_RATE_MAX_HZ,
                                default=DEFAULT_SAMPLE_RATE_HZ)
            with bench.lock:
                awg.sample_rate_hz = value
                awg.version += 1

        def get_rate(call: Call) -> str:
            call.count(0, 1)
            value = awg.sample_rate_hz
            if call.args:
                keyword = number_keyword(call.text())
                if keyword is None:
                    raise ScpiError(-224)
                value = {"MIN": SAMPLE_RATE_MIN_HZ, "MAX": SAMPLE_RATE_MAX_HZ, "DEF": DEFAULT_SAMPLE_RATE_HZ}[keyword]
            return f"{value:.10E}"

        def set_clock_source(call: Call) -> None:
            call.count(1)
            self.clock_source = "".join(c for c in call.choice(CLOCK_SOURCES) if c.isupper())

        tree.add("CLOCk:SRATe", set=set_rate, query=get_rate)
        tree.add("CLOCk:SOURce", set=set_clock_source, query=lambda call: self.clock_source)

        # run control
        def run(call: Call) -> None:
            call.count(0)
            with bench.lock:
                short = [n for n, name in self.assets.items()
                         if name is not None and self.waveforms[name].values.size < WAVEFORM_MIN_SAMPLES]
                if short:
                    raise ScpiError(-221, f"Settings conflict;channel {short[0]} waveform is shorter than "
                                          f"{WAVEFORM_MIN_SAMPLES} samples")
                awg.running = True
                awg.version += 1

        def stop(call: Call) -> None:
            call.count(0)
            with bench.lock:
                awg.running = False
                awg.version += 1

        tree.add("AWGControl:RUN[:IMMediate]", set=run)
        tree.add("AWGControl:STOP[:IMMediate]", set=stop)
        tree.add("AWGControl:RSTate", query=lambda call: "2" if awg.running else "0")

        # file system (qcodes sets the directory in its constructor)
        def set_directory(call: Call) -> None:
            call.count(1)
            self.directory = unquote(call.text())

        tree.add("MMEMory:CDIRectory", set=set_directory, query=lambda call: f'"{self.directory}"')
