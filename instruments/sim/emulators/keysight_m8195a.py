"""Keysight M8195A AWG emulator (its Soft Front Panel's SCPI, docs/INSTRUMENTS.md 6.1).

Segments are int8 arrays per channel, defined with ``:TRAC<ch>:DEF`` and filled by
``:TRAC<ch>:DATA <id>,<offset>,<block>|<csv>`` in granularity-aligned pieces (-223 past the
segment end); ``:INIT:IMM``/``:ABOR`` run and stop; defining or deleting segments while running is
a settings conflict (-221).

The memory model of the M8195A user's guide (Revision 2): the memory mode is per channel (p. 26;
``:TRAC<ch>:MMOD EXT|INT``, the bench powers on with every channel on INTernal and a mode change empties
the channel's segments); internal memory holds one waveform per channel, segment 1 (p. 110: no sequencing
from internal memory); without option -SEQ (``*OPT?``) extended memory holds one segment too (p. 110);
the channels sourced from extended memory share ONE sequence table (p. 110), so ``:TRAC<ch>:SEL`` selects the
segment for all of them, and one program message selecting two different segments on them is refused
with -221 "Settings conflict"; deleting a segment on one extended-memory channel deletes it on all
(p. 254), likewise ``:DEL:ALL``. A segment id outside what the memory holds is -222 "Data out of range".
``:TRAC<ch>:NAME <id>,"<name>"`` names a segment (at most 32 characters); defining it anew, deleting it, a memory
mode change or a reset drops the name with the segment; ``:TRAC<ch>:CAT?`` lists id,length pairs ("0,0": none).

What plays (selected segment, amplitude, offset, output relay, ARB
mode) is the bench's AWG state, which the modulators read: the client's AWG state for the
instrument named ``client_processor.awg`` (its time-bin processor), the server's for any other.
"""

from __future__ import annotations

import numpy as np

from qslab.instruments.sim.bench import AWG_CHANNELS, AwgChannelState
from qslab.instruments.sim.emulators.base import LoadsAwgSamples, ScpiEmulator, check_suffix
from qslab.instruments.sim.scpi.engine import Call, CommandTree
from qslab.instruments.sim.scpi.parsing import ScpiError, number_keyword, unquote

SAMPLE_RATE_LIMITS_HZ = (53.76e9, 65e9)
DEFAULT_SAMPLE_RATE_HZ = 64e9
AMPLITUDE_LIMITS_VPP = (0.075, 2.0)
OFFSET_LIMITS_V = (0.0, 1.0)
MIN_SEGMENT_SAMPLES = 1280
GRANULARITY_AT_DIV1 = 256
MAX_SEGMENT_SAMPLES = 1 << 29   # the emulator's memory per segment (the instrument has up to 16 GSa)
SEGMENT_NAME_CHARS = 32         # :TRAC<ch>:NAME keeps at most this many characters
DIVIDERS = {"DIV1": 1, "DIV2": 2, "DIV4": 4}
MEMORY_MODES = ("EXTended", "INTernal")
# *OPT? of the bench's M8195A: four channels, 16 GSa extended memory, sequencing (a test may set the engine's
# options_reply to another list, e.g. without SEQ)
OPTIONS = "004,16G,SEQ"
DAC_MODES = ("SINGle", "DUAL", "FOUR", "MARKer", "DCMarker", "DCDuplicate")
FUNCTION_MODES = {"ARBitrary": "ARB", "STSequence": "STS", "STSCenario": "STSC"}


def _short(choice: str) -> str:
    return "".join(c for c in choice if c.isupper()) or choice.upper()


class KeysightM8195AEmulator(LoadsAwgSamples, ScpiEmulator):
    driver = "qslab.instruments.drivers.keysight_m8195a.KeysightM8195A"
    idn = "Keysight Technologies,M8195A,MY00000001,4.1.0.0"

    def __init__(self, bench, name: str):
        self.awg = bench.awg_state(name)  # the AWG state this instrument plays into
        super().__init__(bench, name)
        self.engine.options_reply = OPTIONS
        self._selected_in_message: tuple[int, int] | None = None  # (channel, segment) of this message's first SEL

    def handle(self, message: bytes) -> bytes:
        self._selected_in_message = None  # "at once" = within one program message
        return super().handle(message)

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
                channel.selected_segment = 1
            awg.version += 1
        self.dac_mode = "FOUR"
        self.memory_mode = dict.fromkeys(self.awg.channels, "INT")
        self.continuous = True
        self.gated = False
        self.names: dict[tuple[int, int], str] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _channel(self, call: Call) -> tuple[int, AwgChannelState]:
        n = check_suffix(call.suffixes[0], 1, AWG_CHANNELS)
        return n, self.awg.channels[n]

    def _changed(self) -> None:
        self.awg.version += 1

    def _granularity(self) -> int:
        return GRANULARITY_AT_DIV1 // self.awg.divider

    def _segment(self, state: AwgChannelState, call: Call, index: int = 0) -> tuple[int, np.ndarray]:
        segment_id = call.integer(index, minimum=1)
        data = state.segments.get(segment_id)
        if data is None:
            raise ScpiError(-224, "Illegal parameter value;segment not defined")
        return segment_id, data

    def _has_sequencing(self) -> bool:
        return "SEQ" in [option.strip().upper() for option in self.engine.options_reply.split(",")]

    def _extended_channels(self) -> list[int]:
        return [n for n, mode in self.memory_mode.items() if mode == "EXT"]

    def _check_segment_id(self, n: int, segment_id: int) -> None:
        """Internal memory, and extended memory without -SEQ, hold segment 1 only (guide p. 110)."""
        if segment_id == 1:
            return
        if self.memory_mode[n] == "INT":
            raise ScpiError(-222, f"Data out of range;channel {n} is sourced from internal memory: segment 1 only")
        if not self._has_sequencing():
            raise ScpiError(-222, "Data out of range;without option SEQ extended memory holds segment 1 only")

    def _not_running(self) -> None:
        if self.awg.running:
            raise ScpiError(-221, "Settings conflict;not allowed while running")

    def register(self, tree: CommandTree) -> None:
        bench, awg = self.bench, self.awg

        # sample clock, memory divider, DAC mode
        def set_rate(call: Call) -> None:
            call.count(1)
            value = call.number(units=("HZ",), minimum=SAMPLE_RATE_LIMITS_HZ[0], maximum=SAMPLE_RATE_LIMITS_HZ[1],
                                default=DEFAULT_SAMPLE_RATE_HZ)
            with bench.lock:
                awg.sample_rate_hz = value
                self._changed()

        def get_rate(call: Call) -> str:
            call.count(0, 1)
            value = awg.sample_rate_hz
            if call.args:
                keyword = number_keyword(call.text())
                if keyword is None:
                    raise ScpiError(-224)
                value = {"MIN": SAMPLE_RATE_LIMITS_HZ[0], "MAX": SAMPLE_RATE_LIMITS_HZ[1],
                         "DEF": DEFAULT_SAMPLE_RATE_HZ}[keyword]
            return f"{value:.8E}"

        def set_divider(call: Call) -> None:
            call.count(1)
            divider = DIVIDERS[call.choice(tuple(DIVIDERS))]
            with bench.lock:
                self._not_running()
                awg.divider = divider
                self._changed()

        def get_divider(call: Call) -> str:
            call.count(0)
            return f"DIV{awg.divider}"

        def set_dac_mode(call: Call) -> None:
            call.count(1)
            self.dac_mode = _short(call.choice(DAC_MODES))

        def get_dac_mode(call: Call) -> str:
            call.count(0)
            return self.dac_mode

        tree.add("[:SOURce]:FREQuency:RASTer", set=set_rate, query=get_rate)
        tree.add(":INSTrument:MEMory:EXTended:RDIVider", set=set_divider, query=get_divider)
        tree.add(":INSTrument:DACMode", set=set_dac_mode, query=get_dac_mode)

        # run control and trigger mode (the channels share one sequencer: the suffix selects nothing)
        def flag_setting(attribute: str):
            def put(call: Call) -> None:
                call.count(1)
                check_suffix(call.suffix, 1, AWG_CHANNELS)
                setattr(self, attribute, call.boolean())

            def get(call: Call) -> str:
                call.count(0)
                check_suffix(call.suffix, 1, AWG_CHANNELS)
                return "1" if getattr(self, attribute) else "0"

            return put, get

        put, get = flag_setting("continuous")
        tree.add(":INITiate:CONTinuous#[:STATe]", set=put, query=get)
        put, get = flag_setting("gated")
        tree.add(":INITiate:GATE#[:STATe]", set=put, query=get)

        def run(call: Call) -> None:
            call.count(0)
            with bench.lock:
                awg.running = True
                self._changed()

        def stop(call: Call) -> None:
            call.count(0)
            with bench.lock:
                awg.running = False
                self._changed()

        def trigger(call: Call) -> None:
            call.count(0)

        def running(call: Call) -> str:
            call.count(0)
            return "1" if awg.running else "0"

        tree.add(":INITiate[:IMMediate]", set=run)
        tree.add(":ABORt", set=stop)
        tree.add(":TRIGger[:SEQuence][:STARt]:BEGin[:IMMediate]", set=trigger)
        tree.add(":STATus:OPERation:RUN:CONDition", query=running)

        # per-channel output
        def number_setting(attribute: str, limits: tuple[float, float], default: float):
            def put(call: Call) -> None:
                call.count(1)
                _, state = self._channel(call)
                value = call.number(units=("V",), minimum=limits[0], maximum=limits[1], default=default)
                with bench.lock:
                    setattr(state, attribute, value)
                    self._changed()

            def get(call: Call) -> str:
                call.count(0, 1)
                _, state = self._channel(call)
                value = getattr(state, attribute)
                if call.args:
                    keyword = number_keyword(call.text())
                    if keyword is None:
                        raise ScpiError(-224)
                    value = {"MIN": limits[0], "MAX": limits[1], "DEF": default}[keyword]
                return f"{value:.6f}"

            return put, get

        put, get = number_setting("offset_v", OFFSET_LIMITS_V, 0.0)
        tree.add("[:SOURce]:VOLTage#[:LEVel][:IMMediate]:OFFSet", set=put, query=get)
        put, get = number_setting("amplitude_vpp", AMPLITUDE_LIMITS_VPP, 0.5)
        tree.add("[:SOURce]:VOLTage#[:LEVel][:IMMediate][:AMPLitude]", set=put, query=get)

        def set_output(call: Call) -> None:
            call.count(1)
            _, state = self._channel(call)
            with bench.lock:
                state.output_enabled = call.boolean()
                self._changed()

        def get_output(call: Call) -> str:
            call.count(0)
            return "1" if self._channel(call)[1].output_enabled else "0"

        def set_function(call: Call) -> None:
            call.count(1)
            _, state = self._channel(call)
            with bench.lock:
                state.function_mode = FUNCTION_MODES[call.choice(tuple(FUNCTION_MODES))]
                self._changed()

        def get_function(call: Call) -> str:
            call.count(0)
            return self._channel(call)[1].function_mode

        tree.add(":OUTPut#[:NORMal][:STATe]", set=set_output, query=get_output)
        tree.add("[:SOURce]:FUNCtion#:MODE", set=set_function, query=get_function)

        # segments
        def define(call: Call, new: bool = False) -> int:
            _, state = self._channel(call)
            n = self._channel(call)[0]
            if new:
                call.count(1, 2)
                segment_id = max(state.segments, default=0) + 1
                length_index = 0
            else:
                call.count(2, 3)
                segment_id = call.integer(0, minimum=1)
                length_index = 1
            self._check_segment_id(n, segment_id)
            length = call.integer(length_index, minimum=1)
            granularity = self._granularity()
            if length < MIN_SEGMENT_SAMPLES or length % granularity:
                raise ScpiError(-222, f"Data out of range;segment length must be >= {MIN_SEGMENT_SAMPLES} "
                                      f"and a multiple of {granularity}")
            if length > MAX_SEGMENT_SAMPLES:
                raise ScpiError(-225)
            init = call.integer(length_index + 1, minimum=-128, maximum=127) if len(call.args) > length_index + 1 else 0
            with bench.lock:
                self._not_running()
                state.segments[segment_id] = np.full(length, init, dtype=np.int8)
                awg.segment_written(state, segment_id)
                self.names.pop((n, segment_id), None)  # a new segment: no name yet
            return segment_id

        def define_new(call: Call) -> str:
            return str(define(call, new=True))

        def write_data(call: Call) -> None:
            if len(call.args) < 3:
                raise ScpiError(-109)
            _, state = self._channel(call)
            segment_id, data = self._segment(state, call)
            offset = call.integer(1, minimum=0)
            if offset % self._granularity():
                raise ScpiError(-222, f"Data out of range;offset must be a multiple of {self._granularity()}")
            if len(call.args) == 3 and not isinstance(call.args[2], str):
                samples = np.frombuffer(call.block(2), dtype=np.int8)
            else:
                try:
                    values = np.array([int(arg) for arg in call.args[2:]])
                except (TypeError, ValueError):
                    raise ScpiError(-104) from None
                if values.size and (values.min() < -128 or values.max() > 127):
                    raise ScpiError(-222)
                samples = values.astype(np.int8)
            if offset + samples.size > data.size:
                raise ScpiError(-223)
            with bench.lock:
                data[offset:offset + samples.size] = samples
                awg.segment_written(state, segment_id)

        def read_data(call: Call) -> bytes:
            call.count(3)
            _, state = self._channel(call)
            _, data = self._segment(state, call)
            offset = call.integer(1, minimum=0)
            length = call.integer(2, minimum=1)
            if offset + length > data.size:
                raise ScpiError(-222)
            return data[offset:offset + length].tobytes()

        def select(call: Call) -> None:
            call.count(1)
            n, state = self._channel(call)
            segment_id, _ = self._segment(state, call)
            extended = self._extended_channels()
            if n in extended:
                first = self._selected_in_message
                if first is not None and first[0] in extended and first[1] != segment_id:
                    raise ScpiError(-221, f"Settings conflict;extended-memory channels share one sequence table: "
                                          f"segment {first[1]} was selected on channel {first[0]}")
            with bench.lock:
                for number in (extended if n in extended else [n]):
                    self.awg.channels[number].selected_segment = segment_id
                self._changed()
            if self._selected_in_message is None:
                self._selected_in_message = (n, segment_id)

        def selected(call: Call) -> str:
            call.count(0)
            return str(self._channel(call)[1].selected_segment)

        def sharing(n: int) -> list[int]:
            """The channels a deletion on channel n applies to: every extended-memory channel (guide p. 254)."""
            extended = self._extended_channels()
            return extended if n in extended else [n]

        def delete(call: Call) -> None:
            call.count(1)
            n, state = self._channel(call)
            segment_id, _ = self._segment(state, call)
            with bench.lock:
                self._not_running()
                for number in sharing(n):
                    channel_state = awg.channels[number]
                    if segment_id in channel_state.segments:
                        del channel_state.segments[segment_id]
                        awg.segment_written(channel_state, segment_id)
                    self.names.pop((number, segment_id), None)

        def delete_all(call: Call) -> None:
            call.count(0)
            n, _ = self._channel(call)
            with bench.lock:
                self._not_running()
                for number in sharing(n):
                    channel_state = awg.channels[number]
                    for segment_id in list(channel_state.segments):
                        awg.segment_written(channel_state, segment_id)
                    channel_state.segments.clear()
                    self.names = {key: value for key, value in self.names.items() if key[0] != number}

        def set_memory_mode(call: Call) -> None:
            call.count(1)
            n, state = self._channel(call)
            mode = _short(call.choice(MEMORY_MODES))
            with bench.lock:
                if mode == self.memory_mode[n]:
                    return
                self._not_running()
                for segment_id in list(state.segments):  # the waveforms live in the other memory
                    awg.segment_written(state, segment_id)
                    self.names.pop((n, segment_id), None)
                state.segments.clear()
                self.memory_mode[n] = mode
                self._changed()

        def get_memory_mode(call: Call) -> str:
            call.count(0)
            return self.memory_mode[self._channel(call)[0]]

        def catalog(call: Call) -> str:
            call.count(0)
            _, state = self._channel(call)
            if not state.segments:
                return "0,0"
            return ",".join(f"{sid},{data.size}" for sid, data in sorted(state.segments.items()))

        def set_name(call: Call) -> None:
            call.count(2)
            n, state = self._channel(call)
            segment_id, _ = self._segment(state, call)
            name = unquote(call.text(1))
            if len(name) > SEGMENT_NAME_CHARS:
                raise ScpiError(-223, f"Too much data;a segment name holds at most {SEGMENT_NAME_CHARS} characters")
            self.names[(n, segment_id)] = name

        def get_name(call: Call) -> str:
            call.count(1)
            n, state = self._channel(call)
            segment_id, _ = self._segment(state, call)
            return f'"{self.names.get((n, segment_id), "")}"'

        tree.add(":TRACe#:DEFine:NEW", query=define_new)
        tree.add(":TRACe#:DEFine", set=define)
        tree.add(":TRACe#:SELect", set=select, query=selected)
        tree.add(":TRACe#:DELete:ALL", set=delete_all)
        tree.add(":TRACe#:DELete", set=delete)
        tree.add(":TRACe#:CATalog", query=catalog)
        tree.add(":TRACe#:MMODe", set=set_memory_mode, query=get_memory_mode)
        tree.add(":TRACe#:NAME", set=set_name, query=get_name)
        tree.add(":TRACe#[:DATA]", set=write_data, query=read_data)

