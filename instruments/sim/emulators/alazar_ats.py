"""AlazarTech ATS9373 digitizer card on the bench: a PCIe card, reached through the ATS-SDK's C API, not a LAN port.

Why in process: the card is programmed by function calls into the vendor's library (ATSApi), which qcodes wraps as
``AlazarATSAPI`` (a ctypes ``WrappedDll``). The simplest honest simulation is another implementation of that API:
``SimulatedAtsApi`` subclasses ``AlazarATSAPI`` (as the qcodes driver allows: ``AlazarTechATS(..., api=...)``) and
answers each ATS-SDK function the driver calls (``_sync_dll_call``, the wrapper's one entry point for DLL calls) from
an ``AlazarBoardEmulator`` that lives on the embedded bench, in the same process. There is no socket, so a bench run
by ``qslab bench serve`` in another process cannot offer it; docs/INSTRUMENTS.md 7.2. ``SimulatedAtsApi`` lives in
alazar_api.py, the driver's side: the bench itself never imports qcodes (half a second of a served bench's start).

What the board does with the calls (ATS-SDK programmer's guide, the functions of the same names):
``AlazarSetCaptureClock`` (internal clock, a sample-rate code of the ATS9373 table), ``AlazarInputControlEx``
(DC, +-400 mV, 50 ohm: the card's only range), ``AlazarSetTriggerOperation`` (engine J on EXTERNAL, slope, level code
0..255, 128 = 0 V), ``AlazarSetExternalTrigger`` (DC, ETR_2V5: +-2.5 V), ``AlazarSetTriggerTimeOut`` (0: wait for the
trigger; anything else auto-triggers), ``AlazarSetRecordSize``, ``AlazarBeforeAsyncRead`` (NPT, channels A, B or AB),
``AlazarPostAsyncBuffer``, ``AlazarStartCapture``, ``AlazarWaitAsyncBufferComplete``, ``AlazarAbortAsyncRead``. A
record is rendered by the bench's receivers (``receivers.acquire``, the same rendering as the Infiniium's records)
at the card's range and rate, then written as the ATS9373 writes it: 12-bit unsigned codes, 0 at -400 mV, 4095 at
+400 mV, left-aligned in 16-bit words, channel A's record before channel B's (NPT). The trigger is the Infiniium
emulator's rule for the cable of ``[bench.trigger]`` (whose ``digitizer_input`` must be AUX, the card's TRIG IN):
external source, rising slope, a level between the marker's levels, no trigger time-out and the AWG running, else
the record starts at a random point of the stream (its own seeded Generator ``<name>.trigger``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import threading
import weakref
from typing import Any

import numpy as np

from qslab.instruments.sim.emulators.base import Emulator
from qslab.instruments.sim.link.receivers import ChannelSetup, SessionError, acquire, failed_capture

IN_PROCESS_FRAMING = "in-process"   # no transport: the driver calls the emulator (emulators/base.py framings)
ADDRESS_PREFIX = "ATS::bench-"      # what the bench hands out: ATS::bench-<board key>::1
BOARD_MODEL = "ATS9373"
BITS_PER_SAMPLE = 12
CODE_MAX = 2 ** BITS_PER_SAMPLE - 1
WORD_SHIFT = 16 - BITS_PER_SAMPLE
INPUT_RANGE_V = 0.4                 # +-400 mV, the ATS9373's one input range (range code 7)
RANGE_CODES = {7: INPUT_RANGE_V}
EXTERNAL_TRIGGER_RANGES_V = {2: 5.0, 3: 2.5}   # ETR_TTL (taken as 5 V), ETR_2V5
SOURCE_EXTERNAL, SLOPE_POSITIVE, ENGINE_OP_J, ENGINE_J = 2, 1, 0, 0
NPT = 0x200
SAMPLE_RATE_CODES = {1: 1e3, 2: 2e3, 4: 5e3, 8: 1e4, 10: 2e4, 12: 5e4, 14: 1e5, 16: 2e5, 18: 5e5, 20: 1e6,
                     24: 2e6, 26: 5e6, 28: 1e7, 30: 2e7, 33: 2.5e7, 34: 5e7, 36: 1e8, 37: 1.25e8, 38: 1.6e8,
                     39: 1.8e8, 40: 2e8, 43: 2.5e8, 48: 5e8, 50: 8e8, 53: 1e9, 55: 1.2e9, 58: 1.5e9, 61: 1.8e9,
                     63: 2e9, 106: 2.4e9, 117: 3e9, 123: 3.6e9, 128: 4e9}
DUAL_CHANNEL_MAX_RATE_HZ = 2e9      # both channels: 2 GS/s each (4 GS/s is one channel only)
CHANNEL_MASKS = {1: (1,), 2: (2,), 3: (1, 2)}
API_SUCCESS = 512                   # ApiSuccess (qcodes AlazarTech constants.ReturnCode)
API_FAILED = 513                    # ApiFailed
API_INVALID_HANDLE = 533            # ApiInvalidHandle
API_WAIT_TIMEOUT = 579              # ApiWaitTimeout
_boards: weakref.WeakValueDictionary[str, AlazarBoardEmulator] = weakref.WeakValueDictionary()
_keys = itertools.count(1)
_boards_lock = threading.Lock()


class AlazarApiError(RuntimeError):
    """An ATS-SDK call the card refuses: the function, the return code, and why."""

    def __init__(self, function: str, code: int, why: str):
        self.function, self.code = function, code
        super().__init__(f"{function} returned {code}: {why}")


class AlazarBoardEmulator(Emulator):
    """The card's state on the bench; SimulatedAtsApi calls ``call(function, *raw arguments)``."""

    framing = IN_PROCESS_FRAMING
    driver = "qslab.instruments.drivers.alazar_ats9373.AlazarATS9373"
    handle = 0x9373

    def __init__(self, bench, name: str):
        super().__init__(bench, name)
        self.rng = bench.rng(name)
        self.trigger_rng = bench.rng(f"{name}.trigger")
        with _boards_lock:
            self.key = f"{next(_keys)}"
            _boards[self.key] = self
        self.calls = 0
        self.reset()

    @property
    def address(self) -> str:
        return f"{ADDRESS_PREFIX}{self.key}::1"

    def reset(self) -> None:
        self.sample_rate_hz: float | None = None
        self.ranges = {1: INPUT_RANGE_V, 2: INPUT_RANGE_V}
        self.trigger = {"operation": ENGINE_OP_J, "engine": ENGINE_J, "source": SOURCE_EXTERNAL,
                        "slope": SLOPE_POSITIVE, "level": 128}
        self.external_range_v = 2.5
        self.timeout_ticks = 0
        self.points = 0
        self.channels: tuple[int, ...] = (1, 2)
        self.records = 0
        self.posted: dict[int, tuple[int, int]] = {}   # address -> (bytes, element size)
        self.capturing = False

    def power_cycle(self) -> None:
        self.reset()

    # -- the ATS-SDK functions ----------------------------------------------------------------
    def call(self, function: str, *args: Any) -> int:
        self.calls += 1
        method = getattr(self, f"_{function}", None)
        if method is None:
            return API_SUCCESS  # a setting the bench does not model (LEDs, AUX I/O, bandwidth limit)
        return method(*args) or API_SUCCESS

    def _check_handle(self, function: str, handle: Any) -> None:
        if handle != self.handle:
            raise AlazarApiError(function, API_INVALID_HANDLE, f"no board with handle {handle!r}")

    def _AlazarSetCaptureClock(self, handle, source, rate, edge, decimation) -> None:
        self._check_handle("AlazarSetCaptureClock", handle)
        if source != 1 or rate not in SAMPLE_RATE_CODES or decimation not in (0, 1):
            raise AlazarApiError("AlazarSetCaptureClock", API_FAILED, f"internal clock with a rate code of the "
                                 f"ATS9373 and no decimation expected (source {source}, rate {rate}, decimation "
                                 f"{decimation})")
        self.sample_rate_hz = SAMPLE_RATE_CODES[rate]

    def _AlazarInputControlEx(self, handle, channel, coupling, range_code, impedance) -> None:
        self._check_handle("AlazarInputControlEx", handle)
        if channel not in (1, 2) or coupling != 2 or range_code not in RANGE_CODES or impedance != 2:
            raise AlazarApiError("AlazarInputControlEx", API_FAILED, "DC, +-400 mV, 50 ohm on channel A or B expected")
        self.ranges[channel] = RANGE_CODES[range_code]

    def _AlazarSetTriggerOperation(self, handle, operation, engine1, source1, slope1, level1, *_engine2) -> None:
        self._check_handle("AlazarSetTriggerOperation", handle)
        if not 0 <= level1 <= 255:
            raise AlazarApiError("AlazarSetTriggerOperation", API_FAILED, f"trigger level code {level1} not 0..255")
        self.trigger = {"operation": operation, "engine": engine1, "source": source1, "slope": slope1, "level": level1}

    def _AlazarSetExternalTrigger(self, handle, coupling, trigger_range) -> None:
        self._check_handle("AlazarSetExternalTrigger", handle)
        if trigger_range not in EXTERNAL_TRIGGER_RANGES_V:
            raise AlazarApiError("AlazarSetExternalTrigger", API_FAILED, f"external range code {trigger_range}")
        self.external_range_v = EXTERNAL_TRIGGER_RANGES_V[trigger_range]

    def _AlazarSetTriggerTimeOut(self, handle, ticks) -> None:
        self._check_handle("AlazarSetTriggerTimeOut", handle)
        self.timeout_ticks = int(ticks)

    def _AlazarSetRecordSize(self, handle, pre_trigger, post_trigger) -> None:
        self._check_handle("AlazarSetRecordSize", handle)
        if pre_trigger != 0 or post_trigger < 256 or post_trigger % 128:
            raise AlazarApiError("AlazarSetRecordSize", API_FAILED, "no pre-trigger samples and a record of >= 256 "
                                 f"samples in steps of 128 expected ({pre_trigger}, {post_trigger})")
        self.points = int(post_trigger)

    def _AlazarBeforeAsyncRead(self, handle, channels, offset, samples, records_per_buffer, records, flags) -> None:
        self._check_handle("AlazarBeforeAsyncRead", handle)
        if channels not in CHANNEL_MASKS or offset != 0 or samples != self.points or not flags & NPT:
            raise AlazarApiError("AlazarBeforeAsyncRead", API_FAILED, "an NPT acquisition of the record size set, "
                                 "channels A, B or AB, no transfer offset expected")
        if len(CHANNEL_MASKS[channels]) == 2 and (self.sample_rate_hz or 0) > DUAL_CHANNEL_MAX_RATE_HZ:
            raise AlazarApiError("AlazarBeforeAsyncRead", API_FAILED, f"two channels at {self.sample_rate_hz:g} S/s: "
                                 f"the ATS9373 takes both channels up to {DUAL_CHANNEL_MAX_RATE_HZ:g} S/s")
        self.channels, self.records = CHANNEL_MASKS[channels], int(records)

    def _AlazarPostAsyncBuffer(self, handle, address, size_bytes) -> None:
        self._check_handle("AlazarPostAsyncBuffer", handle)
        self.posted[int(address)] = (int(size_bytes), 2)

    def _AlazarStartCapture(self, handle) -> None:
        self._check_handle("AlazarStartCapture", handle)
        if self.sample_rate_hz is None or not self.points:
            raise AlazarApiError("AlazarStartCapture", API_FAILED, "no clock or record size set")
        self.capturing = True

    def _AlazarWaitAsyncBufferComplete(self, handle, address, timeout_ms) -> None:
        self._check_handle("AlazarWaitAsyncBufferComplete", handle)
        if not self.capturing or int(address) not in self.posted:
            raise AlazarApiError("AlazarWaitAsyncBufferComplete", API_WAIT_TIMEOUT, "no capture running into this buffer")
        size_bytes, _ = self.posted[int(address)]
        words = (ctypes.c_uint16 * (size_bytes // 2)).from_address(int(address))
        target = np.ctypeslib.as_array(words)
        record = self.capture()
        needed = self.points * len(self.channels)
        if target.size < needed:
            raise AlazarApiError("AlazarWaitAsyncBufferComplete", API_FAILED, f"buffer of {target.size} samples for "
                                 f"{needed}")
        for index, channel in enumerate(self.channels):
            target[index * self.points:(index + 1) * self.points] = self.encode(record.channels[channel].volts)

    def _AlazarAbortAsyncRead(self, handle) -> None:
        self._check_handle("AlazarAbortAsyncRead", handle)
        self.capturing = False
        self.posted.clear()

    # -- records -------------------------------------------------------------------------------
    def encode(self, volts: np.ndarray) -> np.ndarray:
        """Volts as the card's words: 12-bit codes (0 at -range, 4095 at +range) shifted left by 4."""
        codes = np.clip(np.rint((np.asarray(volts) / INPUT_RANGE_V + 1.0) * 0.5 * CODE_MAX), 0, CODE_MAX)
        return (codes.astype(np.uint16) << WORD_SHIFT)

    def capture(self):
        setups = {n: ChannelSetup(2.0 * self.ranges[n], 0.0) for n in (1, 2)}
        bandwidth_hz = self.bench.params.digitizer.max_bandwidth_hz
        try:
            record = acquire(self.bench, points=self.points, sample_rate_hz=self.sample_rate_hz,
                             scope_bandwidth_hz=bandwidth_hz, channels=setups, rng=self.rng)
        except SessionError:
            record = failed_capture(self.points, self.sample_rate_hz, self.bench.params.server.symbol_rate_hz, setups,
                                    self.bench.params.digitizer.adc_bits, "settings conflict")
        if not self.triggered_by_marker():
            shift = int(self.trigger_rng.integers(0, max(1, record.points)))
            record = dataclasses.replace(record, channels={
                n: dataclasses.replace(c, words=np.roll(c.words, -shift)) for n, c in record.channels.items()})
        with self.bench.lock:
            self.bench.last_capture = record
        return record

    def trigger_level_v(self) -> float:
        return (self.trigger["level"] - 128) / 127.0 * self.external_range_v

    def triggered_by_marker(self) -> bool:
        cable = self.bench.params.trigger
        t = self.trigger
        with self.bench.lock:
            running = self.bench.awg_state(cable.awg).running
        return (cable.digitizer_input == "AUX" and t["operation"] == ENGINE_OP_J and t["engine"] == ENGINE_J
                and t["source"] == SOURCE_EXTERNAL and t["slope"] == SLOPE_POSITIVE and self.timeout_ticks == 0
                and cable.marker_low_v < self.trigger_level_v() < cable.marker_high_v and running)


def board_at(address: str) -> AlazarBoardEmulator | None:
    """The bench's board an address the bench handed out names (None for any other address)."""
    if not address.startswith(ADDRESS_PREFIX):
        return None
    with _boards_lock:
        return _boards.get(address[len(ADDRESS_PREFIX):].partition("::")[0])
