"""Keysight Infiniium oscilloscope/digitizer emulator, enough for the unchanged qcodes ``KeysightInfiniium``.

What that driver sends (qcodes/instrument_drivers/Keysight/Infiniium.py, docs/INSTRUMENTS.md 7.1):
``*IDN?``; ``:SYSTem:HEADer OFF``; ``:WAVEFORM:FORMAT WORD``, ``:BYTEORDER LSBFirst``,
``:STREAMING ON``; ``:ACQ:BAND:TESTLIMITS?``, ``:ACQ:POIN:TESTLIMITS?``, ``:ACQ:SRAT:TESTLIMITS?``
(``1,<numeric>min:max``), ``:ACQ:BAND?``/``AUTO``; per trace ``:WAV:SOUR CHAN<n>``, ``:WAV:PRE?``
(24 comma-separated fields: [2] points, [4] x increment, [5] x origin, [7] y increment, [8] y
origin, [21] y unit), ``:DIGITIZE;*OPC?``, ``:WAV:DATA?`` answered ``#0`` + int16 + LF when
streaming (a definite block otherwise); channel ``DISP``, ``RANG``, ``OFFS``, ``INP``; trigger,
timebase, averaging and run-state settings, and the ``:MEAS`` voltage measurements.

The waveforms are the bench's: channel 1 the client receiver, channel 2 the server verification
receiver (``<receiver>.digitizer_channel``), rendered by ``receivers.acquire``; 10-bit ADC codes
sent left-aligned in 16-bit words (volts = word x y-increment + y-origin). The sample rate snaps
to a whole number of samples per symbol (a real scope also offers a discrete set of rates).
The trigger (docs/INSTRUMENTS.md 7.1): a record starts at the rising edge of the AWG marker cabled to the
input ``[bench.trigger]`` names, which rises at every start of the segment that AWG plays. Only an edge
trigger (``:TRIG:MODE EDGE``) on that input (``:TRIG:EDGE:SOUR``), rising (``:TRIG:EDGE:SLOP POS``), at a level
(``:TRIG:LEV <input>,<V>``) strictly between the marker's levels, in triggered sweep (``:TRIG:SWE TRIG``),
with that AWG running, finds that edge. Otherwise the record starts at a random point of the stream: every
channel's samples are rotated by the same number of samples, drawn from the emulator's own seeded Generator
(``<name>.trigger``, so a triggered bench draws exactly what it drew before); what an auto-triggered or
mis-triggered scope shows of a periodic stream. (A real scope in triggered sweep without trigger waits; the
bench starts at a random point instead, so a stopped AWG costs nothing but the alignment.)

A session acquisition the settings make impossible (receivers.SessionError: averaging on, a
client segment that is not a whole number of rows) records nothing: every channel reads 0 V and
``:SYST:ERR?`` reports -221 "Settings conflict;<why>".
"""

from __future__ import annotations

import dataclasses
import datetime
import sys

import numpy as np

from qslab.instruments.sim.emulators.base import ScpiEmulator, check_suffix
from qslab.instruments.sim.link.receivers import (WORD_BITS, CaptureRecord, ChannelSetup, SessionError, acquire,
                                                  failed_capture)
from qslab.instruments.sim.scpi.engine import Call, CommandTree
from qslab.instruments.sim.scpi.parsing import Raw, ScpiError, mnemonic_forms, nr3

CHANNELS = 4
FUNCTIONS = 16
RANGE_LIMITS_V = (8e-3, 8.0)
OFFSET_LIMITS_V = (-4.0, 4.0)
FORMATS = {"ASCii": 0, "BYTE": 1, "WORD": 2}
INPUTS = ("DC", "DC50", "DCFifty", "AC", "LFR1", "LFR2")
ACQ_MODES = ("ETIMe", "RTIMe", "PDETect", "HRESolution", "SEGMented", "SEGPdetect", "SEGHres")
INTERPOLATIONS = ("INT1", "INT2", "INT4", "INT8", "INT16", "INT32", "ON", "OFF", "1", "0")
NOT_AVAILABLE = 9.99999e37  # the Infiniium's "measurement not available"


def _short(choice: str) -> str:
    return mnemonic_forms(choice)[0]


class KeysightInfiniiumEmulator(ScpiEmulator):
    driver = "qslab.instruments.drivers.keysight_infiniium.KeysightInfiniium"
    idn = "KEYSIGHT TECHNOLOGIES,DSOS804A,MY00000001,11.50.00000"

    def __init__(self, bench, name: str):
        super().__init__(bench, name)
        self.trigger_rng = bench.rng(f"{name}.trigger")

    def reset(self) -> None:
        d = self.bench.params.digitizer
        self.headers = False
        self.format, self.lsb_first, self.streaming, self.source = "WORD", True, False, "CHAN1"
        self.run_state = "RUN"
        self.points = 8192
        self.sample_rate_hz = self._snap_rate(8e9)
        self.bandwidth_hz = d.max_bandwidth_hz
        self.interpolate = "INT1"
        self.acq_mode = "RTIM"
        self.averaging, self.average_count = False, 16
        self.timebase_range_s: float | None = None
        self.timebase_position_s = 0.0
        self.roll = False
        self.trigger_mode, self.trigger_sweep, self.edge_source, self.edge_slope = "EDGE", "AUTO", "CHAN1", "POS"
        self.trigger_levels: dict[str, float] = {}
        self.display = {n: n <= 2 for n in range(1, CHANNELS + 1)}
        self.range_v = dict.fromkeys(range(1, CHANNELS + 1), 0.16)
        self.offset_v = dict.fromkeys(range(1, CHANNELS + 1), 0.0)
        self.inputs = dict.fromkeys(range(1, CHANNELS + 1), "DC50")
        self.functions = {n: {"display": False, "expression": "ADD CHAN1,CHAN2"} for n in range(1, FUNCTIONS + 1)}
        self.measure_source = "CHAN1"
        self.record: CaptureRecord | None = None
        self._record_key: tuple | None = None
        self._blocks: dict[int, tuple[np.ndarray, bytearray]] = {}  # channel -> (its record's words, their reply)

    # -- acquisition ---------------------------------------------------------------------------
    def _snap_rate(self, rate_hz: float) -> float:
        """Nearest rate that is a whole number of samples per symbol, within the limits."""
        d, symbol_rate = self.bench.params.digitizer, self.bench.params.server.symbol_rate_hz
        low = max(1, int(np.ceil(d.min_sample_rate_hz / symbol_rate - 1e-9)))
        high = int(np.floor(d.max_sample_rate_hz / symbol_rate + 1e-9))
        return float(np.clip(round(rate_hz / symbol_rate), low, high) * symbol_rate)

    def _settings_key(self) -> tuple:
        return (self.points, self.sample_rate_hz, self.bandwidth_hz, self.averaging and self.average_count,
                tuple(self.range_v.values()), tuple(self.offset_v.values()))

    def digitize(self) -> CaptureRecord:
        setups = {n: ChannelSetup(self.range_v[n], self.offset_v[n]) for n in range(1, CHANNELS + 1)}
        self._blocks = {}
        try:
            record = acquire(self.bench, points=self.points, sample_rate_hz=self.sample_rate_hz,
                             scope_bandwidth_hz=self.bandwidth_hz, channels=setups, rng=self.rng,
                             averages=self.average_count if self.averaging else 1, words_buffer=self._reply_words)
        except SessionError as error:
            record = failed_capture(self.points, self.sample_rate_hz, self.bench.params.server.symbol_rate_hz, setups,
                                    self.bench.params.digitizer.adc_bits, str(error))
            self.engine.push_error(-221, f"Settings conflict;{error}"[:255])
        if not self.triggered_by_marker():
            record = self._started_at_random(record)
        self.record, self._record_key = record, self._settings_key()
        with self.bench.lock:
            self.bench.last_capture = record
        return record

    def _reply_words(self, channel: int, points: int) -> np.ndarray:
        """Where channel ``channel``'s words are rendered: inside the streamed ``#0<words>LF`` reply to
        ``:WAV:DATA?`` (WORD format, LSB first), so the record goes out without another copy."""
        block = bytearray(2 * points + 3)
        block[:2], block[-1:] = b"#0", b"\n"
        words = np.frombuffer(block, dtype=np.int16, offset=2, count=points)
        self._blocks[channel] = (words, block)
        return words

    def triggered_by_marker(self) -> bool:
        """Whether the trigger set-up finds the rising edge of the cabled AWG marker (module docstring)."""
        cable = self.bench.params.trigger
        level = self.trigger_levels.get(cable.digitizer_input)
        with self.bench.lock:
            running = self.bench.awg_state(cable.awg).running
        return (self.trigger_mode == "EDGE" and self.trigger_sweep == "TRIG" and self.edge_slope == "POS"
                and self.edge_source == cable.digitizer_input and level is not None
                and cable.marker_low_v < level < cable.marker_high_v and running)

    def _started_at_random(self, record: CaptureRecord) -> CaptureRecord:
        """The record as if it had started ``shift`` samples into the stream (every channel alike)."""
        shift = int(self.trigger_rng.integers(0, max(1, record.points)))
        channels = {n: dataclasses.replace(c, words=np.roll(c.words, -shift)) for n, c in record.channels.items()}
        return dataclasses.replace(record, channels=channels)

    def _current_record(self) -> CaptureRecord:
        if self.record is None or self._record_key != self._settings_key():
            return self.digitize()
        return self.record

    def _y_increment(self, n: int) -> float:
        bits = self.bench.params.digitizer.adc_bits
        return 0.5 * self.range_v[n] / 2 ** (bits - 1) / 2 ** (WORD_BITS - bits)

    def _source_channel(self, source: str) -> int | None:
        return int(source[4:]) if source.startswith("CHAN") else None

    def _volts(self, source: str) -> np.ndarray:
        n = self._source_channel(source)
        if n is None:
            return np.zeros(self.points)
        return self._current_record().channels[n].volts

    # -- commands -------------------------------------------------------------------------------
    def register(self, tree: CommandTree) -> None:
        d = self.bench.params.digitizer

        def no_args(call: Call) -> None:
            call.count(0)

        def reply(value):
            """A query without parameters answered by ``value()``."""
            def handler(call: Call) -> str:
                no_args(call)
                return value()
            return handler

        def flag(attribute: str):
            def put(call: Call) -> None:
                call.count(1)
                setattr(self, attribute, call.boolean())

            def get(call: Call) -> str:
                no_args(call)
                return "1" if getattr(self, attribute) else "0"
            return put, get

        def choice(attribute: str, choices: tuple[str, ...]):
            def put(call: Call) -> None:
                call.count(1)
                setattr(self, attribute, _short(call.choice(choices)))

            def get(call: Call) -> str:
                no_args(call)
                return getattr(self, attribute)
            return put, get

        # system
        def system_error(call: Call) -> str:
            call.count(0, 1)
            code, text = self.engine.errors.pop()
            if call.args and call.choice(("NUMBer", "STRing")) == "STRing":
                return f'{code},"{text}"'
            return str(code)

        put, get = flag("headers")
        tree.add(":SYSTem:HEADer", set=put, query=get)
        tree.add(":SYSTem:ERRor[:NEXT]", query=system_error)

        # waveform transfer
        def set_format(call: Call) -> None:
            call.count(1)
            self.format = _short(call.choice(tuple(FORMATS)))

        def set_byteorder(call: Call) -> None:
            call.count(1)
            self.lsb_first = call.choice(("LSBFirst", "MSBFirst")) == "LSBFirst"

        def set_source(call: Call) -> None:
            call.count(1)
            word = call.text().strip().upper()
            for prefix, count in (("CHANNEL", CHANNELS), ("CHAN", CHANNELS), ("FUNCTION", FUNCTIONS),
                                  ("FUNC", FUNCTIONS), ("WMEMORY", 4), ("WMEM", 4)):
                if word.startswith(prefix) and word[len(prefix):].isdigit():
                    number = int(word[len(prefix):])
                    if not 1 <= number <= count:
                        raise ScpiError(-224)
                    self.source = f"{prefix[:4]}{number}"
                    return
            raise ScpiError(-224)

        def preamble(call: Call) -> str:
            no_args(call)
            n = self._source_channel(self.source)
            count = self.average_count if self.averaging else 1
            y_increment = self._y_increment(n) if n else self._y_increment(1)
            y_origin = self.offset_v[n] if n else 0.0
            coupling = {"AC": 0, "DC": 1, "DC50": 2}.get(self.inputs[n] if n else "DC50", 3)
            now = datetime.datetime.now()
            fields = [FORMATS[{"ASC": "ASCii"}.get(self.format, self.format)], 2 if count > 1 else 1, self.points,
                      count, f"{1.0 / self.sample_rate_hz:.10E}", f"{self.timebase_position_s:.10E}", 0,
                      f"{y_increment:.10E}", f"{y_origin:.10E}", 0, coupling,
                      f"{self.points / self.sample_rate_hz:.10E}", f"{self.timebase_position_s:.10E}",
                      f"{self.range_v.get(n, 0.16):.6E}", f"{y_origin:.6E}",
                      f'"{now:%d %b %Y}"'.upper(), f'"{now:%H:%M:%S}:00"', '"DSOS804A:MY00000001"',
                      0, 100, 2, 1, f"{d.max_bandwidth_hz:.6E}", f"{d.min_bandwidth_hz:.6E}"]
            return ",".join(str(f) for f in fields)

        def data(call: Call):
            no_args(call)
            n = self._source_channel(self.source)
            words = self._current_record().channels[n].words if n else np.zeros(self.points, dtype=np.int16)
            rendered, block = self._blocks.get(n, (None, None))
            if (words is rendered and self.format == "WORD" and self.lsb_first and self.streaming
                    and sys.byteorder == "little"):
                return Raw(block, terminated=True)  # the words were rendered into this reply
            if self.format == "ASC":
                volts = words * (self._y_increment(n) if n else 0.0) + (self.offset_v[n] if n else 0.0)
                return ",".join(f"{v:.6E}" for v in volts)
            return _word_block(words, self.format == "BYTE", self.lsb_first, self.streaming)

        put, get = flag("streaming")
        tree.add(":WAVeform:STReaming", set=put, query=get)
        tree.add(":WAVeform:FORMat", set=set_format, query=reply(lambda: self.format))
        tree.add(":WAVeform:BYTeorder", set=set_byteorder, query=reply(lambda: "LSBF" if self.lsb_first else "MSBF"))
        tree.add(":WAVeform:SOURce", set=set_source, query=reply(lambda: self.source))
        tree.add(":WAVeform:PREamble", query=preamble)
        tree.add(":WAVeform:DATA", query=data)
        tree.add(":WAVeform:POINts", query=reply(lambda: str(self.points)))
        tree.add(":WAVeform:YUNits", query=reply(lambda: "VOLT"))
        tree.add(":WAVeform:XINCrement", query=reply(lambda: f"{1.0 / self.sample_rate_hz:.10E}"))
        tree.add(":WAVeform:YINCrement",
                 query=reply(lambda: f"{self._y_increment(self._source_channel(self.source) or 1):.10E}"))

        # acquisition
        def limits(low: float, high: float, integer: bool = False) -> str:
            return f"1,<numeric>{int(low)}:{int(high)}" if integer else f"1,<numeric>{low:.5E}:{high:.5E}"

        def set_points(call: Call) -> None:
            call.count(1)
            if call.text().strip().upper() == "AUTO":
                self.points = 8192
                return
            self.points = call.integer(minimum=d.min_points, maximum=d.max_points, default=8192)

        def set_rate(call: Call) -> None:
            call.count(1)
            word = call.text().strip().upper()
            if word == "AUTO":
                self.sample_rate_hz = self._snap_rate(8e9)
                return
            value = call.number(units=("HZ",), minimum=d.min_sample_rate_hz, maximum=d.max_sample_rate_hz,
                                default=8e9)
            self.sample_rate_hz = self._snap_rate(value)

        def set_band(call: Call) -> None:
            call.count(1)
            if call.text().strip().upper() == "AUTO":
                self.bandwidth_hz = d.max_bandwidth_hz
                return
            self.bandwidth_hz = call.number(units=("HZ",), minimum=d.min_bandwidth_hz, maximum=d.max_bandwidth_hz,
                                            default=d.max_bandwidth_hz)

        def set_interpolate(call: Call) -> None:
            call.count(1)
            self.interpolate = call.choice(INTERPOLATIONS)

        def set_count(call: Call) -> None:
            call.count(1)
            self.average_count = call.integer(minimum=1, maximum=10486575)

        tree.add(":ACQuire:POINts:TESTLIMITS", query=reply(lambda: limits(d.min_points, d.max_points, True)))
        tree.add(":ACQuire:SRATe:TESTLIMITS", query=reply(
            lambda: limits(self._snap_rate(d.min_sample_rate_hz), self._snap_rate(d.max_sample_rate_hz))))
        tree.add(":ACQuire:BANDwidth:TESTLIMITS", query=reply(lambda: limits(d.min_bandwidth_hz,
                                                                                    d.max_bandwidth_hz)))
        tree.add(":ACQuire:POINts[:ANALog]", set=set_points, query=reply(lambda: str(self.points)))
        tree.add(":ACQuire:SRATe[:ANALog]", set=set_rate, query=reply(lambda: f"{self.sample_rate_hz:.10E}"))
        tree.add(":ACQuire:BANDwidth", set=set_band, query=reply(lambda: f"{self.bandwidth_hz:.10E}"))
        tree.add(":ACQuire:INTerpolate", set=set_interpolate, query=reply(lambda: self.interpolate))
        put, get = choice("acq_mode", ACQ_MODES)
        tree.add(":ACQuire:MODE", set=put, query=get)
        put, get = flag("averaging")
        tree.add(":ACQuire:AVERage[:STATe]", set=put, query=get)
        tree.add(":ACQuire:AVERage:COUNt", set=set_count, query=reply(lambda: str(self.average_count)))

        # run control
        def do_digitize(call: Call) -> None:
            self.digitize()
            self.run_state = "STOP"

        def run(call: Call) -> None:
            no_args(call)
            self.run_state = "RUN"

        def stop(call: Call) -> None:
            no_args(call)
            self.run_state = "STOP"

        def single(call: Call) -> None:
            no_args(call)
            self.digitize()
            self.run_state = "SING"

        def acquisition_state(call: Call) -> str:
            no_args(call)
            return "ADONE" if self.record is not None and self.run_state != "RUN" else "ARM"

        tree.add(":DIGitize", set=do_digitize)
        tree.add(":RUN", set=run)
        tree.add(":STOP", set=stop)
        tree.add(":SINGle", set=single)
        tree.add(":RSTate", query=reply(lambda: self.run_state))
        tree.add(":ASTate", query=acquisition_state)

        # timebase and trigger
        def set_timebase_range(call: Call) -> None:
            call.count(1)
            self.timebase_range_s = call.number(units=("S",), minimum=5e-12, maximum=20.0)

        def set_timebase_position(call: Call) -> None:
            call.count(1)
            self.timebase_position_s = call.number(units=("S",), minimum=-200.0, maximum=200.0)

        def trigger_level_set(call: Call) -> None:
            call.count(2)
            source = call.text(0).strip().upper()
            if not (source == "AUX" or (source.startswith("CHAN") and source[4:].isdigit()
                                        and 1 <= int(source[4:]) <= CHANNELS)):
                raise ScpiError(-224)
            self.trigger_levels[source] = call.number(1, units=("V",), minimum=-8.0, maximum=8.0)

        def trigger_level_get(call: Call) -> str:
            call.count(1)
            return nr3(self.trigger_levels.get(call.text().strip().upper(), 0.0), 6, 2)

        def set_edge_source(call: Call) -> None:
            call.count(1)
            word = call.text().strip().upper()
            valid = ({f"CHAN{i}" for i in range(1, CHANNELS + 1)} | {f"DIG{i}" for i in range(17)} | {"AUX", "LINE"})
            if word not in valid:
                raise ScpiError(-224)
            self.edge_source = word

        tree.add(":TIMebase:RANGe", set=set_timebase_range, query=reply(
            lambda: f"{self.timebase_range_s if self.timebase_range_s else self.points / self.sample_rate_hz:.10E}"))
        tree.add(":TIMebase:POSition", set=set_timebase_position,
                 query=reply(lambda: f"{self.timebase_position_s:.10E}"))
        put, get = flag("roll")
        tree.add(":TIMebase:ROLL:ENABle", set=put, query=get)
        put, get = choice("trigger_mode", ("EDGE", "GLITch", "PATTern", "STATe", "DELay", "TIMeout", "TV", "COMM",
                                           "RUNT", "SEQuence", "SHOLd", "TRANsition", "WINDow", "PWIDth", "ADVanced",
                                           "SBUS1", "SBUS2", "SBUS3", "SBUS4"))
        tree.add(":TRIGger:MODE", set=put, query=get)
        put, get = choice("trigger_sweep", ("AUTO", "TRIGgered", "SINGle"))
        tree.add(":TRIGger:SWEep", set=put, query=get)
        tree.add(":TRIGger:EDGE:SOURce", set=set_edge_source, query=reply(lambda: self.edge_source))
        put, get = choice("edge_slope", ("POSitive", "NEGative", "EITHer"))
        tree.add(":TRIGger:EDGE:SLOPe", set=put, query=get)
        tree.add(":TRIGger:LEVel", set=trigger_level_set, query=trigger_level_get)

        # channels and functions
        def channel(call: Call) -> int:
            return check_suffix(call.suffix, 1, CHANNELS)

        def set_display(call: Call) -> None:
            call.count(1)
            self.display[channel(call)] = call.boolean()

        def set_range(call: Call) -> None:
            call.count(1)
            self.range_v[channel(call)] = call.number(units=("V",), minimum=RANGE_LIMITS_V[0],
                                                      maximum=RANGE_LIMITS_V[1])

        def set_scale(call: Call) -> None:
            call.count(1)
            self.range_v[channel(call)] = 8.0 * call.number(units=("V",), minimum=RANGE_LIMITS_V[0] / 8,
                                                            maximum=RANGE_LIMITS_V[1] / 8)

        def set_offset(call: Call) -> None:
            call.count(1)
            self.offset_v[channel(call)] = call.number(units=("V",), minimum=OFFSET_LIMITS_V[0],
                                                       maximum=OFFSET_LIMITS_V[1])

        def set_input(call: Call) -> None:
            call.count(1)
            value = call.choice(INPUTS)
            self.inputs[channel(call)] = "DC50" if value == "DCFifty" else value

        def channel_reply(value) -> object:
            def handler(call: Call) -> str:
                no_args(call)
                return value(channel(call))
            return handler

        tree.add("CHANnel#:DISPlay", set=set_display, query=channel_reply(lambda n: "1" if self.display[n] else "0"))
        tree.add("CHANnel#:RANGe", set=set_range, query=channel_reply(lambda n: f"{self.range_v[n]:.6E}"))
        tree.add("CHANnel#:SCALe", set=set_scale, query=channel_reply(lambda n: f"{self.range_v[n] / 8:.6E}"))
        tree.add("CHANnel#:OFFSet", set=set_offset, query=channel_reply(lambda n: f"{self.offset_v[n]:.6E}"))
        tree.add("CHANnel#:INPut", set=set_input, query=channel_reply(lambda n: self.inputs[n]))
        tree.add("CHANnel#:DIFFerential", query=channel_reply(lambda n: "0"))

        def function(call: Call) -> dict:
            return self.functions[check_suffix(call.suffix, 1, FUNCTIONS)]

        def set_function_display(call: Call) -> None:
            call.count(1)
            function(call)["display"] = call.boolean()

        def function_query(call: Call) -> str:
            no_args(call)
            expression = function(call)["expression"]
            if self.headers:
                operator, operands = expression.split(" ", 1)
                return f":FUNC{call.suffix}:{operator} {operands}"
            return expression

        def function_display(call: Call) -> str:
            no_args(call)
            return "1" if function(call)["display"] else "0"

        tree.add("FUNCtion#:DISPlay", set=set_function_display, query=function_display)
        tree.add("FUNCtion#", query=function_query)

        # measurements on the last acquisition
        def measurement(kind: str):
            def handler(call: Call) -> str:
                sources = [a.strip().upper() for a in call.args if isinstance(a, str)]
                source = next((s for s in sources if s.startswith(("CHAN", "FUNC", "WMEM"))), self.measure_source)
                volts = self._volts(source)
                values = {"VPP": np.ptp(volts), "VMAX": np.max(volts), "VMIN": np.min(volts),
                          "VAV": np.mean(volts), "VAMP": np.ptp(volts),
                          "VRMS": np.std(volts) if "AC" in sources else np.sqrt(np.mean(volts**2)),
                          "VTOP": np.max(volts), "VBAS": np.min(volts)}
                return f"{float(values.get(kind, NOT_AVAILABLE)):.6E}"
            return handler

        for kind in ("VPP", "VMAX", "VMIN", "VAVerage", "VAMPlitude", "VRMS", "VTOP", "VBASe", "VLOWer",
                     "VMIDdle", "VUPPer", "VOVershoot", "RISetime", "FALLtime", "DUTYcycle", "PERiod",
                     "FREQuency", "SLEWrate"):
            tree.add(f":MEASure:{kind}", query=measurement(mnemonic_forms(kind)[0]))

        def set_measure_source(call: Call) -> None:
            call.count(1, 2)
            self.measure_source = call.text().strip().upper()

        tree.add(":MEASure:SOURce", set=set_measure_source, query=reply(lambda: self.measure_source))


def _word_block(words: np.ndarray, high_bytes: bool, lsb_first: bool, streaming: bool):
    """``:WAV:DATA?``'s reply for int16 ``words``: BYTE format sends their high bytes, WORD both in the set byte order;
    streaming sends an indefinite ``#0`` block (Raw), otherwise the engine wraps a definite block around it. Written
    once into the reply's buffer: a record is megabytes, and each copy of it costs the bench a millisecond."""
    dtype = np.dtype(np.int8) if high_bytes else np.dtype("<i2" if lsb_first else ">i2")
    header = b"#0" if streaming else b""
    block = bytearray(len(header) + words.size * dtype.itemsize)
    block[:len(header)] = header
    np.frombuffer(block, dtype=dtype, offset=len(header))[...] = (words >> 8) if high_bytes else words
    return Raw(block) if streaming else block
