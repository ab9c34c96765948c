"""What every emulator shares: a name, the bench it lives on, and how its transport frames messages."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from qslab.analysis.units import dbm_to_w, w_to_dbm
from qslab.instruments.sim.scpi.engine import Call, CommandTree, ScpiEngine
from qslab.instruments.sim.scpi.parsing import ScpiError, number_keyword, parse_number

if TYPE_CHECKING:
    from qslab.instruments.sim.bench import BenchState

# How the server frames the byte stream for an emulator.
SCPI_FRAMING = "scpi"      # LF-terminated messages with definite-length blocks (raw socket, port 5025 style)
SERIAL_FRAMING = "lines"   # CR and/or LF terminated text lines (a serial port carried over TCP)


class Emulator:
    """An instrument on the bench. ``handle(message) -> reply bytes`` is all the server needs."""

    framing = SCPI_FRAMING
    #: the real instrument's driver (import path) that the bench advertises for this emulator
    driver = ""

    def __init__(self, bench: BenchState, name: str):
        self.bench = bench
        self.name = name

    def handle(self, message: bytes) -> bytes:
        raise NotImplementedError

    def power_cycle(self) -> None:
        """Back to the power-on state, as after switching the instrument off and on (a reset fault)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be power-cycled")


class ScpiEmulator(Emulator):
    """An emulator whose commands live in a ``CommandTree`` run by a ``ScpiEngine``.

    Subclasses set ``idn`` and implement ``register(tree)`` and ``reset()``; ``error_zero`` is how
    the empty error queue reads (``+0`` on Keysight lightwave and Thorlabs meters).
    """

    idn = ""
    error_zero = "0"
    rst_clears_errors = False
    self_test_reply = "0"

    def __init__(self, bench: BenchState, name: str):
        super().__init__(bench, name)
        self.rng = bench.rng(name)
        self.reset()
        tree = CommandTree()
        self.register(tree)
        self.engine = ScpiEngine(tree, self.idn, error_zero=self.error_zero, on_reset=self._reset_locked,
                                 rst_clears_errors=self.rst_clears_errors, self_test_reply=self.self_test_reply)

    def register(self, tree: CommandTree) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Power-on / ``*RST`` settings."""

    def _reset_locked(self) -> None:
        with self.bench.lock:
            self.reset()

    def handle(self, message: bytes) -> bytes:
        return self.engine.exchange(message)

    def power_cycle(self) -> None:
        """*RST settings plus the power-on status: empty error queue, ESR bit 7 set (IEEE 488.2)."""
        with self.engine.lock:
            self._reset_locked()
            self.engine.power_on()


class LoadsAwgSamples:
    """For an AWG emulator (``self.awg``, the AwgState it plays into): once a whole message has run and changed its
    samples, the bench is told (BenchState.samples_loaded), whatever the message did besides."""

    def handle(self, message: bytes) -> bytes:
        version = self.awg.data_version
        try:
            return super().handle(message)
        finally:
            if self.awg.data_version != version:
                self.bench.samples_loaded(self.awg)


def check_suffix(value: int, low: int, high: int) -> int:
    """-114 Header suffix out of range unless low <= value <= high."""
    if not low <= value <= high:
        raise ScpiError(-114)
    return value


def power_argument(call: Call, unit: str, limits_dbm: tuple[float, float] | None, default_dbm: float | None = None,
                   index: int = 0) -> float:
    """A power parameter in W: a suffix (DBM, MW, ...) wins, else the instrument's current unit
    (``"dBm"`` or ``"W"``); MIN/MAX/DEF give the limits; -222 outside them."""
    text = call.text(index)
    keyword = number_keyword(text)
    if keyword is not None:
        if limits_dbm is None:
            raise ScpiError(-224)
        value_dbm = {"MIN": limits_dbm[0], "MAX": limits_dbm[1],
                     "DEF": default_dbm if default_dbm is not None else limits_dbm[0]}[keyword]
        return float(dbm_to_w(value_dbm))
    value, dimension = parse_number(text, units=("W", "DBM"))
    dimension = dimension or ("DBM" if unit == "dBm" else "W")
    if dimension == "DBM":
        value_w = float(dbm_to_w(value))
    else:
        if value <= 0.0:
            raise ScpiError(-222)
        value_w = value
    if limits_dbm is not None:
        value_dbm = float(w_to_dbm(value_w))
        if not limits_dbm[0] - 1e-9 <= value_dbm <= limits_dbm[1] + 1e-9:
            raise ScpiError(-222)
    return value_w


def in_unit(power_w: float, unit: str, floor_dbm: float = -200.0) -> float:
    """A power in the instrument's display unit (dBm floors at ``floor_dbm`` for no light)."""
    if unit == "W":
        return power_w
    return float(w_to_dbm(power_w)) if power_w > 0 and math.isfinite(power_w) else floor_dbm
    # (a real meter shows its noise floor; -200 dBm is far below any of them)


POWER_UNIT_CHOICES = ("DBM", "Watt", "0", "1")


def power_unit_argument(call: Call) -> str:
    """``DBM|0`` -> "dBm", ``W|Watt|1`` -> "W" (docs/INSTRUMENTS.md 2.2, 3.2, 4.1)."""
    word = call.text().strip().upper()
    if word in ("DBM", "0", "+0"):
        return "dBm"
    if word in ("W", "WATT", "1", "+1"):
        return "W"
    raise ScpiError(-224)


def power_unit_reply(unit: str) -> str:
    return "+0" if unit == "dBm" else "+1"
