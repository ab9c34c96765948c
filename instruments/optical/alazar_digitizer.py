"""The Digitizer role over an AlazarTech ATS9373 PCIe card (qcodes' maintained ``AlazarTechATS9373``, unchanged).

Why an adapter: the sequences need configure, configure_trigger, arm, trigger, wait, read; the card is set through
qcodes' TraceParameters synced in one go (``sync_settings_to_card``) and acquires through ``acquire()`` with an
acquisition controller that receives the DMA buffers. One NPT record of both channels per acquisition: channel A is
channel 1, channel B channel 2 (the receivers' channels). The card has one input range, +-400 mV (full scale
0.8 V, centred on 0 V), and a table of sample rates; ``configure_channel`` keeps them and says so in the log (the
role's contract: the instrument may round or clamp; ``range_v``/``sample_rate_hz`` tell). Records are multiples of
128 samples of at least 256: a shorter or unaligned request is taken longer and cut back.

The card is not a LAN instrument: it is opened by system and board number, address ``ATS::<system>::<board>``
(``connect_driver``, the station's hook for drivers a vendor API reaches). On the embedded bench the address is
the bench's in-process board (instruments/sim/emulators/alazar_ats.py), reached through ``SimulatedAtsApi``
(alazar_api.py).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import numpy as np
from qcodes.instrument_drivers.AlazarTech.ATS import AcquisitionController

from qslab.instruments.drivers._scpi import InstrumentFault

log = logging.getLogger(__name__)
ADDRESS = re.compile(r"^ATS::(\d+)::(\d+)$")
ATS_LIBRARY = r"C:\WINDOWS\System32\ATSApi.dll" if sys.platform == "win32" else "libATSApi.so"  # the ATS-SDK
RANGE_V = 0.8                      # full scale (peak to peak) of the ATS9373's +-400 mV input
BITS = 12
CODE_MID = 0.5 * (2 ** BITS - 1)
WORD_SHIFT = 16 - BITS
RECORD_STEP, RECORD_MIN = 128, 256
EXTERNAL_RANGE_V = 2.5             # ETR_2V5
TRIGGER_SOURCES = {"AUX": "EXTERNAL"}
SLOPES = {"POS": "TRIG_SLOPE_POSITIVE", "NEG": "TRIG_SLOPE_NEGATIVE"}


def record_length(points: int) -> int:
    """The card's record length for ``points`` samples: a multiple of RECORD_STEP, at least RECORD_MIN."""
    return max(RECORD_MIN, -(-int(points) // RECORD_STEP) * RECORD_STEP)


def words_to_volts(words: np.ndarray) -> np.ndarray:
    """12-bit codes left-aligned in 16-bit words -> volts (0 at -400 mV, 4095 at +400 mV)."""
    codes = (np.asarray(words, dtype=np.uint16) >> WORD_SHIFT).astype(np.float64)
    return (codes / CODE_MID - 1.0) * 0.5 * RANGE_V


class _RecordController(AcquisitionController[dict[int, np.ndarray]]):
    """Keeps the one buffer of an NPT acquisition of channels A and B as words per channel."""

    def __init__(self, name: str, alazar_name: str, points: int):
        super().__init__(name, alazar_name)
        self.points, self.words = points, {}

    def pre_start_capture(self) -> None:
        self.words = {}

    def pre_acquire(self) -> None:
        return None

    def handle_buffer(self, buffer: np.ndarray, buffer_number: int | None = None) -> None:
        self.words = {1: np.array(buffer[:self.points]), 2: np.array(buffer[self.points:2 * self.points])}

    def post_acquire(self) -> dict[int, np.ndarray]:
        return self.words


class AlazarDigitizer:
    """``driver``: a qcodes AlazarTechATS9373 (its TraceParameters, ``sync_settings_to_card`` and ``acquire``)."""

    def __init__(self, driver: Any, *, name: str | None = None):
        self.driver, self.name = driver, name or driver.name
        self._points = RECORD_MIN
        self._trigger: tuple[str, float, str] | None = None
        self._outcome: BaseException | None = None
        self._pending = False
        self._records: dict[int, np.ndarray] = {}
        driver.sample_rate(1_000_000_000)
        driver.timeout_ticks(0)            # no auto trigger: a record starts at a trigger edge only
        driver.trigger_source1("DISABLE")  # until configure_trigger cables one in
        driver.sync_settings_to_card()

    # -- the registry's hooks (sequences/config.py DriverSpec.adapter) ----------------------------------
    @classmethod
    def from_driver(cls, driver: Any, unit: int | None = None, **_: Any) -> AlazarDigitizer:
        return cls(driver)

    @staticmethod
    def connect_driver(driver_class: type, name: str, address: str, *, timeout_s: float) -> tuple[Any, dict[str, str]]:
        """Open the card at ``address`` (``ATS::<system>::<board>``, or the bench's in-process board) and return it
        with its identity (vendor, model, serial, firmware)."""
        from qslab.instruments.sim.emulators.alazar_api import SimulatedAtsApi, board_at

        if board_at(address) is not None:
            driver = driver_class(name, api=SimulatedAtsApi(address))
        else:
            match = ADDRESS.match(address)
            if match is None:
                raise ValueError(f"{address!r}: expected ATS::<system id>::<board id>")
            driver = driver_class(name, dll_path=ATS_LIBRARY, system_id=int(match.group(1)),
                                  board_id=int(match.group(2)))
        idn = driver.get_idn()
        return driver, {key: str(idn[key]) for key in ("vendor", "model", "serial", "firmware")}

    @staticmethod
    def identify_card(address: str, *, timeout_s: float) -> dict[str, str]:
        """Vendor, model, serial and firmware of the card at ``address``, read through the ATS-SDK's board queries
        alone (AlazarGetBoardBySystemID, AlazarGetBoardKind, AlazarQueryCapability, the firmware register): no
        driver is built and nothing is set, which is what ``qslab instruments`` may do. OSError when the library
        cannot be loaded or the board is not there. (``timeout_s``: the probes' common signature; the queries do
        not wait.)"""
        from qcodes.instrument_drivers.AlazarTech.ats_api import AlazarATSAPI
        from qcodes.instrument_drivers.AlazarTech.helpers import CapabilityHelper

        from qslab.instruments.sim.emulators.alazar_api import SimulatedAtsApi, board_at

        if board_at(address) is not None:
            api, system_id, board_id = SimulatedAtsApi(address), 1, 1
        else:
            match = ADDRESS.match(address)
            if match is None:
                raise OSError(f"{address!r}: expected ATS::<system id>::<board id>")
            api, system_id, board_id = AlazarATSAPI(ATS_LIBRARY), int(match.group(1)), int(match.group(2))
        handle = api.get_board_by_system_id(system_id, board_id)
        if not handle:
            raise OSError(f"no board {board_id} in system {system_id} (AlazarGetBoardBySystemID)")
        capability = CapabilityHelper(api, handle)
        return {"vendor": "AlazarTech", "model": api.get_board_model(handle), "serial": capability.query_serial(),
                "firmware": capability.query_firmware_version()}

    # -- Digitizer ----------------------------------------------------------------------------------------
    def configure(self, *, points: int | None = None, sample_rate_hz: float | None = None) -> None:
        """Record length and the card's nearest sample rate (``sample_rate_hz`` tells which it took)."""
        if points is not None:
            self._points = int(points)
        if sample_rate_hz is not None:
            rates = [r for r in self.driver.sample_rate.val_mapping if isinstance(r, int)]
            nearest = min(rates, key=lambda r: abs(r - float(sample_rate_hz)))
            if nearest != sample_rate_hz:
                log.info("%s: sample rate %g S/s taken as %g S/s (the card's table)", self.name, sample_rate_hz, nearest)
            self.driver.sample_rate(nearest)
            self.driver.sync_settings_to_card()

    def sample_rate_hz(self) -> float:
        return float(self.driver.get_sample_rate())

    def configure_channel(self, channel: int, *, range_v: float | None = None, offset_v: float | None = None) -> None:
        """The card keeps its one range (0.8 V full scale) and a 0 V centre; a request for another is logged."""
        self._check_channel(channel)
        if (range_v is not None and range_v != RANGE_V) or (offset_v is not None and offset_v != 0.0):
            log.debug("%s: channel %d keeps %g V full scale centred on 0 V (asked %s V, %s V)", self.name, channel,
                      RANGE_V, range_v, offset_v)

    def range_v(self, channel: int) -> float:
        self._check_channel(channel)
        return 2.0 * float(self.driver.parameters[f"channel_range{int(channel)}"]())

    def offset_v(self, channel: int) -> float:
        self._check_channel(channel)
        return 0.0

    def configure_trigger(self, source: str, level_v: float, slope: str = "POS") -> None:
        """Engine J on the external trigger input (``AUX``: the card's TRIG IN), ``level_v`` as the card's level code
        (128 + 127 level / 2.5 V), no trigger time-out (no auto trigger); synced, then read back from the driver."""
        source, slope = source.strip().upper(), slope.strip().upper()
        if source not in TRIGGER_SOURCES or slope not in SLOPES or not abs(level_v) <= EXTERNAL_RANGE_V:
            raise ValueError(f"{self.name}: trigger on {source} at {level_v:g} V, slope {slope}: the card triggers on "
                             f"AUX (its TRIG IN) within +-{EXTERNAL_RANGE_V:g} V, slope POS or NEG")
        d = self.driver
        code = int(round(128 + 127 * float(level_v) / EXTERNAL_RANGE_V))
        with d.syncing():
            d.trigger_operation("TRIG_ENGINE_OP_J")
            d.trigger_engine1("TRIG_ENGINE_J")
            d.trigger_source1(TRIGGER_SOURCES[source])
            d.trigger_slope1(SLOPES[slope])
            d.trigger_level1(code)
            d.external_trigger_coupling("DC")
            d.external_trigger_range("ETR_2V5")
            d.timeout_ticks(0)
        self._trigger = (source, float(level_v), slope)

    def arm(self) -> None:
        """Single acquisitions on demand are how the card works; the settings are synced to it."""
        self.driver.sync_settings_to_card()

    def trigger(self) -> None:
        """One NPT acquisition of both channels. The driver's ``acquire`` starts the capture and waits for the DMA
        buffer in one call, so it runs here; ``wait`` reports what it gave."""
        points = record_length(self._points)
        controller = _RecordController(f"{self.name}_records", self.driver.name, points)
        try:
            self._records = self.driver.acquire(
                mode="NPT", samples_per_record=points, records_per_buffer=1, buffers_per_acquisition=1,
                channel_selection="AB", allocated_buffers=1, buffer_timeout=int(1000 * 10),
                acquisition_controller=controller)
            self._outcome = None
        except RuntimeError as error:
            self._records, self._outcome = {}, error
        finally:
            controller.close()
        self._pending = True

    def wait(self, timeout_s: float | None = None) -> None:
        if not self._pending:
            raise RuntimeError(f"{self.name}: wait() without a trigger()")
        self._pending = False
        if self._outcome is not None:
            raise InstrumentFault(self.name, self.address, "acquire", f"no record ({self._outcome})", 1) from self._outcome

    def read(self, channel: int) -> np.ndarray:
        self._check_channel(channel)
        if channel not in self._records:
            raise InstrumentFault(self.name, self.address, f"channel {channel} record", "no completed acquisition", 1)
        return words_to_volts(self._records[channel])[: self._points]

    def restore(self) -> None:
        self.driver.sync_settings_to_card()
        if self._trigger is not None:
            self.configure_trigger(*self._trigger)

    def _check_channel(self, channel: int) -> None:
        if int(channel) not in (1, 2):
            raise ValueError(f"{self.name}: channel {channel}: the card has channels 1 (A) and 2 (B)")

    @property
    def address(self) -> str:
        return f"ATS board of {self.driver.name}"
