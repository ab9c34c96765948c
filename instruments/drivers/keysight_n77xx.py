"""Keysight N77xx lightwave family: N7711A/N7714A lasers, N7762A/N7764A attenuators, N7744A/N7745A meters.

Command set: Keysight N77xx Series Programming Guide, as summarised in docs/INSTRUMENTS.md 2.2 (SOURce
subtree, lasers), 4.1 (INPut/OUTput subtrees, attenuators) and 3.2 (SENSe/READ/FETCh, meters);
conventions in 1.2. Every set is followed by ``SYST:ERR?`` in the same message and a non-zero entry raises
:class:`InstrumentError` with the code and text. Terminations are LF both ways, which is what
the LAN socket (port 5025) speaks; GPIB/USB replies end in CR LF (docs/INSTRUMENTS.md 1.2), and the
CR left on those replies is stripped by the parsers.

Units (issue 15, item 7): an N77xx reads an unsuffixed power in its CURRENT unit, which the front panel can
change between two of our commands, turning 0.01 W into 0.01 dBm. So every power is sent with the ``DBM`` suffix
(the N77xx guides' unit table: ``DBM``/``MDBM`` for dBm, e.g. N774xC Programming Guide p. 13, Table 2; the Watt
mnemonic is spelt ``Watt`` there, ``W`` elsewhere, so we avoid it), and every power is read with its unit set
in the same message as the query (``SOUR1:POW:UNIT 0;:SOUR1:POW?``, ``SENS1:POW:UNIT 1;:READ1:POW?``): the
reply is in the unit we asked for whatever the display showed (READ<n>:POW? answers "in dBm, W or dB" per the
current unit, N774xC Programming Guide p. 69). The display unit follows our last read.

Time (item 5): a meter reading takes its averaging time, ``count`` readings in one message ``count`` times it,
an attenuation change ``|change| / speed``; the VISA timeout is lengthened by that work for the exchange
(``timeout_for_work``), so a 10 s averaging meets no 5 s timeout.

Identification (item 8): the station matches the *IDN? model against the registry's pattern
(sequences/config.py DRIVERS): the meters accept the current N7744C/N7745C with the A models (same SENSe,
READ and FETCh commands, N774xC Programming Guide chapter 4).

Limits: laser wavelength and power, attenuator attenuation and wavelength are read from the
instrument at connect with the ``<query> MIN|MAX`` form (docs/INSTRUMENTS.md 1.2; 4.1 recommends
``INP1:ATT? MAX``), because they depend on the model option (C or L band) and on the attenuation
offset; docs/INSTRUMENTS.md gives no numbers for them. The meter's limits are
fixed class attributes (see :class:`N774xAPowerMeterChannel`).
"""

from __future__ import annotations

import math
from typing import Any

from qcodes.instrument import ChannelTuple, InstrumentChannel
from qcodes.validators import Bool, Multiples, Numbers

from qslab.analysis.units import dbm_to_w, w_to_dbm
from qslab.instruments.drivers._scpi import (InstrumentError, RetriedGets, ScpiErrorCheckingInstrument, parse_bool,
                                             parse_float, parse_int)

__all__ = [
    "InstrumentError",
    "KeysightN7711A",
    "KeysightN7714A",
    "KeysightN7744A",
    "KeysightN7745A",
    "KeysightN7762A",
    "KeysightN7764A",
]

# 0 = dBm, 1 = W for SOUR:POW:UNIT, OUTP:POW:UN and SENS:POW:UNIT (docs/INSTRUMENTS.md 2.2, 3.2, 4.1).
_POWER_UNITS = {"dBm": 0, "W": 1}


def _to_dbm(value: float, unit: str) -> float:
    if unit == "dBm":
        return value
    return float(w_to_dbm(value)) if value > 0 else -math.inf


def _to_w(value: float, unit: str) -> float:
    return value if unit == "W" else float(dbm_to_w(value))


SCPI_NOT_A_NUMBER = 9.91e37


def _reading_w(reply: str, unit: str, instrument: str, command: str) -> float:
    """One power reading in W. SCPI's not-a-number (+9.91E37: the meter has no valid reading, e.g. over
    range) is refused with one error naming it: as a number it would be a power of 1e37 W. A reply that parses
    as NaN or infinity is no SCPI number: junk on the line, refused by parse_float as an unreadable reply and asked
    again once the line is cleared (as a setting's read-back), never returned."""
    value = parse_float(reply)
    if abs(value) >= 0.99 * SCPI_NOT_A_NUMBER:
        raise InstrumentError(instrument, command, [(None, f"no valid reading ({reply.strip()} is SCPI's "
                                                           "not-a-number: over range?)")])
    return _to_w(value, unit)


def _from_dbm(value_dbm: float, unit: str) -> float:
    return value_dbm if unit == "dBm" else _to_w(value_dbm, "dBm")


class _N77xxBase(ScpiErrorCheckingInstrument):
    """Common start-up: clear stale errors, then build channels (subclasses), then greet.

    Every set carries its ``SYST:ERR?`` in the same message (``INP1:ATT 20.0000;:SYST:ERR?``, one round trip): the
    N77xx parses a message once its LF arrives (N774xC Programming Guide p. 10, "How the Input Queue Works")."""

    error_query_with_set = True
    error_query = ":SYST:ERR?"  # rooted, as it follows a set's units; asked alone the same (a leading ":" is optional)

    def __init__(self, name: str, address: str | None = None, **kwargs: Any):
        super().__init__(name, address, **kwargs)
        self.clear_errors()

    def query_limits(self, query: str) -> tuple[float, float]:
        """(min, max) from ``<query> MIN`` and ``<query> MAX``; refuses an empty interval."""
        low, high = self.ask_parsed(f"{query} MIN", float), self.ask_parsed(f"{query} MAX", float)
        if not low < high:
            raise ValueError(f"{self.name}: '{query} MIN|MAX' gave an empty range [{low}, {high}]")
        return low, high


class _PowerInUnit:
    """A power exposed as power_dbm and power_w, sent and read in an explicit unit (module docstring, Units).

    Sets carry the ``DBM`` suffix; reads send ``<unit command> 0;:<query>`` so the reply is in dBm whatever
    the instrument's unit was (the unit parameter's cache follows). Why two parameters: names carry their
    unit (house rule)."""

    def __init__(self, channel: InstrumentChannel, name: str, command: str, unit_param: Any, unit_header: str,
                 limits_dbm: tuple[float, float], label: str):
        self._channel, self._command, self._unit, self._unit_header = channel, command, unit_param, unit_header
        self._query = in_dbm(unit_header, f"{command}?")
        lo_dbm, hi_dbm = limits_dbm
        self.dbm = channel.add_parameter(
            f"{name}_dbm", label=label, unit="dBm",
            get_cmd=lambda: self._get("dBm"), set_cmd=lambda v: self._set(v, "dBm"),
            vals=Numbers(lo_dbm, hi_dbm))
        self.w = channel.add_parameter(
            f"{name}_w", label=label, unit="W",
            get_cmd=lambda: self._get("W"), set_cmd=lambda v: self._set(v, "W"),
            vals=Numbers(_to_w(lo_dbm, "dBm"), _to_w(hi_dbm, "dBm")))
        # the settings read-back (_scpi.settings_evidence) asks the power in dBm with the others in one message (after
        # the unit's own query, which comes first in the channel's parameters), and not again in W: the same setting
        channel.__dict__.setdefault("query_of_parameter", {})[self.dbm.name] = self._query
        channel.__dict__.setdefault("views_of_settings", {})[self.w.name] = self.dbm.name

    def _get(self, unit: str) -> float:
        value_dbm = float(self._channel.root_instrument.reply_read_together(self._query, self._channel.ask))
        self._unit.cache.set("dBm")
        self._update_twin_cache(unit, value_dbm)
        return _from_dbm(value_dbm, unit)

    def _set(self, value: float, unit: str) -> None:
        value_dbm = _to_dbm(value, unit)
        self._channel.write(f"{self._command} {value_dbm:.8E}DBM")
        self._update_twin_cache(unit, value_dbm)

    def _update_twin_cache(self, unit: str, value_dbm: float) -> None:
        """Keep the other-unit parameter's cache (and so the snapshot) consistent."""
        if unit == "dBm":
            self.w.cache.set(_from_dbm(value_dbm, "W"))
        else:
            self.dbm.cache.set(value_dbm)


def in_dbm(unit_header: str, query: str) -> str:
    """``query`` with the power unit forced to dBm in the same message (``<unit header> 0;:<query>``)."""
    return f"{unit_header} {_POWER_UNITS['dBm']};:{query}"


def in_w(unit_header: str, query: str) -> str:
    """``query`` with the power unit forced to W in the same message."""
    return f"{unit_header} {_POWER_UNITS['W']};:{query}"


# --- lasers (docs/INSTRUMENTS.md 2.2) ------------------------------------------------------------


class N771xALaserPort(RetriedGets, InstrumentChannel):
    """One laser port ``SOUR<n>``: output, wavelength (Auto mode), power in dBm or W."""

    def __init__(self, parent: _N77xxBase, name: str, port: int):
        super().__init__(parent, name)
        self.port = port
        src = f"SOUR{port}"
        self.output_enabled = self.add_parameter(
            "output_enabled", label="laser output", get_cmd=f"{src}:POW:STAT?",
            set_cmd=f"{src}:POW:STAT {{}}", get_parser=parse_bool, set_parser=int, vals=Bool())
        wl_min_m, wl_max_m = parent.query_limits(f"{src}:WAV?")
        self.wavelength_m = self.add_parameter(
            "wavelength_m", label="wavelength", unit="m", get_cmd=f"{src}:WAV?",
            set_cmd=f"{src}:WAV {{:.8E}}", get_parser=parse_float, vals=Numbers(wl_min_m, wl_max_m),
            docstring="Settable in Auto mode only; Grid mode answers -221 (docs/INSTRUMENTS.md 2.2).")
        self.power_unit = self.add_parameter(
            "power_unit", label="display power unit", get_cmd=f"{src}:POW:UNIT?",
            set_cmd=f"{src}:POW:UNIT {{}}", get_parser=parse_int, val_mapping=_POWER_UNITS,
            docstring="What the display shows; powers are sent and read in explicit units whatever it is.")
        low, high = parent.query_limits(in_dbm(f"{src}:POW:UNIT", f"{src}:POW?"))
        power = _PowerInUnit(self, "power", f"{src}:POW", self.power_unit, f"{src}:POW:UNIT", (low, high),
                             "output power")
        self.power_dbm, self.power_w = power.dbm, power.w


class _N771xA(_N77xxBase):
    num_ports = 1

    def __init__(self, name: str, address: str | None = None, **kwargs: Any):
        super().__init__(name, address, **kwargs)
        ports = [self.add_submodule(f"port{n}", N771xALaserPort(self, f"port{n}", n))
                 for n in range(1, self.num_ports + 1)]
        self.ports = self.add_submodule(
            "ports", ChannelTuple(self, "ports", N771xALaserPort, ports, snapshotable=False))
        self.connect_message()

    def all_outputs_off(self) -> None:
        """Safe state: every laser port off."""
        for port in self.ports:
            port.output_enabled(False)


class KeysightN7711A(_N771xA):
    """Keysight N7711A single-port tunable laser."""

    num_ports = 1


class KeysightN7714A(_N771xA):
    """Keysight N7714A four-port tunable laser."""

    num_ports = 4


# --- attenuators (docs/INSTRUMENTS.md 4.1) --------------------------------------------------------


class N776xAAttenuatorChannel(RetriedGets, InstrumentChannel):
    """One attenuator, addressed by the first slot of its slot pair (docs/INSTRUMENTS.md 4.1)."""

    # Power-control setpoint: no MIN/MAX form is documented. The loop regulates on the built-in
    # monitor, whose range is -80..+10 dBm (N7764A data, a secondary source), so that bounds it.
    power_setpoint_limits_dbm = (-80.0, 10.0)

    def __init__(self, parent: _N77xxBase, name: str, slot: int):
        super().__init__(parent, name)
        self.slot = slot
        inp, outp = f"INP{slot}", f"OUTP{slot}"
        self.attenuation_speed_db_s = self.add_parameter(
            "attenuation_speed_db_s", label="attenuation transition speed", unit="dB/s",
            get_cmd=f"{inp}:ATT:SPE?", set_cmd=f"{inp}:ATT:SPE {{:.4f}}", get_parser=parse_float,
            vals=Numbers(*parent.query_limits(f"{inp}:ATT:SPE?")),
            docstring="How fast the filter moves: an attenuation change takes |change| / speed.")
        self.attenuation_db = self.add_parameter(
            "attenuation_db", label="attenuation", unit="dB", get_cmd=f"{inp}:ATT?",
            set_cmd=self._set_attenuation_db, get_parser=parse_float,
            vals=Numbers(*parent.query_limits(f"{inp}:ATT?")),
            docstring="Includes the attenuation offset; limits are read at connect "
                      "(call refresh_limits() after changing the offset).")
        self.wavelength_m = self.add_parameter(
            "wavelength_m", label="wavelength", unit="m", get_cmd=f"{inp}:WAV?",
            set_cmd=f"{inp}:WAV {{:.8E}}", get_parser=parse_float,
            vals=Numbers(*parent.query_limits(f"{inp}:WAV?")))
        self.shutter_open = self.add_parameter(
            "shutter_open", label="shutter open", get_cmd=f"{outp}:STAT?",
            set_cmd=f"{outp}:STAT {{}}", get_parser=parse_bool, set_parser=int, vals=Bool())
        self.power_control = self.add_parameter(
            "power_control", label="power-control mode", get_cmd=f"{outp}:POW:CONTR?",
            set_cmd=f"{outp}:POW:CONTR {{}}", get_parser=parse_bool, set_parser=int, vals=Bool(),
            docstring="True: hold the output power at the setpoint; False: hold the attenuation.")
        self.power_unit = self.add_parameter(
            "power_unit", label="display power unit", get_cmd=f"{outp}:POW:UN?",
            set_cmd=f"{outp}:POW:UN {{}}", get_parser=parse_int, val_mapping=_POWER_UNITS,
            docstring="What the display shows; powers are sent and read in explicit units whatever it is.")
        setpoint = _PowerInUnit(self, "power_setpoint", f"{outp}:POW", self.power_unit, f"{outp}:POW:UN",
                                self.power_setpoint_limits_dbm, "output power setpoint")
        self.power_setpoint_dbm, self.power_setpoint_w = setpoint.dbm, setpoint.w
        # where the filter is and how fast it moves: an attenuation set waits |change| / speed (module docstring)
        self.attenuation_speed_db_s.get()
        self.attenuation_db.get()

    def _set_attenuation_db(self, value_db: float) -> None:
        """``INP<s>:ATT <dB>DB``, its error check waiting out the filter's move (|change| / speed)."""
        travel_db = abs(value_db - self.attenuation_db.get_latest())
        with self.root_instrument.timeout_for_work(travel_db / self.attenuation_speed_db_s.get_latest()):
            self.write(f"INP{self.slot}:ATT {value_db:.4f}")

    def refresh_limits(self) -> None:
        """Re-read the attenuation range (it moves with the attenuation offset)."""
        self.attenuation_db.vals = Numbers(*self.parent.query_limits(f"INP{self.slot}:ATT?"))


class _N776xA(_N77xxBase):
    num_attenuators = 2

    def __init__(self, name: str, address: str | None = None, **kwargs: Any):
        super().__init__(name, address, **kwargs)
        attenuators = [self.add_submodule(f"att{k}", N776xAAttenuatorChannel(self, f"att{k}", slot=2 * k - 1))
                       for k in range(1, self.num_attenuators + 1)]
        self.attenuators = self.add_submodule(
            "attenuators",
            ChannelTuple(self, "attenuators", N776xAAttenuatorChannel, attenuators, snapshotable=False))
        self.connect_message()


class KeysightN7762A(_N776xA):
    """Keysight N7762A: two attenuators in slots 1-2 and 3-4 (att1 = slot 1, att2 = slot 3)."""

    num_attenuators = 2


class KeysightN7764A(_N776xA):
    """Keysight N7764A: four attenuators in slots 1-2 ... 7-8 (att<k> = slot 2k-1)."""

    num_attenuators = 4


# --- power meters (docs/INSTRUMENTS.md 3.2) -------------------------------------------------------


class N774xAPowerMeterChannel(RetriedGets, InstrumentChannel):
    """One meter channel ``SENS<n>``; readings are returned in W whatever the display unit."""

    # Wavelength 1250-1625 nm and averaging time 1 us - 10 s: N7744A data (secondary source,
    # docs/INSTRUMENTS.md gives none); range -110..+30 dBm in 10 dB steps: docs/INSTRUMENTS.md 3.2.
    wavelength_limits_m = (1250e-9, 1625e-9)
    averaging_time_limits_s = (1e-6, 10.0)
    range_limits_dbm = (-110, 30)

    def __init__(self, parent: _N77xxBase, name: str, slot: int):
        super().__init__(parent, name)
        self.slot = slot
        sens = f"SENS{slot}:POW"
        self.wavelength_m = self.add_parameter(
            "wavelength_m", label="wavelength", unit="m", get_cmd=f"{sens}:WAV?",
            set_cmd=f"{sens}:WAV {{:.8E}}", get_parser=parse_float, vals=Numbers(*self.wavelength_limits_m))
        self.power_unit = self.add_parameter(
            "power_unit", label="display power unit", get_cmd=f"{sens}:UNIT?",
            set_cmd=f"{sens}:UNIT {{}}", get_parser=parse_int, val_mapping=_POWER_UNITS,
            docstring="What the display shows; readings are taken in W whatever it is (set in the read's message).")
        self.auto_range = self.add_parameter(
            "auto_range", label="auto range", get_cmd=f"{sens}:RANG:AUTO?",
            set_cmd=f"{sens}:RANG:AUTO {{}}", get_parser=parse_bool, set_parser=int, vals=Bool())
        low, high = self.range_limits_dbm
        self.range_dbm = self.add_parameter(
            "range_dbm", label="range", unit="dBm", get_cmd=f"{sens}:RANG?",
            set_cmd=f"{sens}:RANG {{:d}}DBM", get_parser=parse_int,
            vals=Multiples(10, min_value=low, max_value=high),
            docstring="Sent with an explicit DBM suffix: the range is in dBm whatever the unit.")
        self.averaging_time_s = self.add_parameter(
            "averaging_time_s", label="averaging time", unit="s", get_cmd=f"{sens}:ATIM?",
            set_cmd=f"{sens}:ATIM {{:.6E}}", get_parser=parse_float,
            vals=Numbers(*self.averaging_time_limits_s))
        self.continuous = self.add_parameter(
            "continuous", label="continuous software trigger", get_cmd=f"INIT{slot}:CONT?",
            set_cmd=f"INIT{slot}:CONT {{}}", get_parser=parse_bool, set_parser=int, vals=Bool(),
            docstring="fetch_power_w needs this on (or a preceding INIT:IMM).")
        self.read_power_w = self.add_parameter(
            "read_power_w", label="power (new reading)", unit="W",
            get_cmd=lambda: self._power_w(f"READ{slot}:POW?"), set_cmd=False)
        self.fetch_power_w = self.add_parameter(
            "fetch_power_w", label="power (last reading)", unit="W",
            get_cmd=lambda: self._power_w(f"FETC{slot}:POW?"), set_cmd=False)
        self.averaging_time_s.get()

    def read_powers_w(self, count: int) -> list[float]:
        """``count`` new readings in ONE message (``READ<n>:POW?`` repeated, replies joined by ``;``), in W.

        Why: each reading is a round trip of its own otherwise; the meter takes the readings one after
        the other either way (each one averaging time long), so they are the same readings. The timeout is
        lengthened by ``count`` averaging times."""
        if not (isinstance(count, int) and 1 <= count <= 100):
            raise ValueError(f"count must be an integer 1..100, got {count!r}")
        query = f"READ{self.slot}:POW?"

        def parse(reply: str) -> list[float]:
            values = [_reading_w(part, "W", self.full_name, query) for part in reply.split(";")]
            if len(values) != count:
                raise ValueError(f"expected {count} readings, got {len(values)}")
            return values

        message = in_w(f"SENS{self.slot}:POW:UNIT", ";:".join([query] * count))
        with self.root_instrument.timeout_for_work(count * self.averaging_time_s.get_latest()):
            values = self.root_instrument.ask_parsed(message, parse)
        self.power_unit.cache.set("W")
        return values

    def _power_w(self, query: str) -> float:
        """One reading in W (the unit set in the same message); a READ waits one averaging time."""
        work_s = self.averaging_time_s.get_latest() if query.startswith("READ") else 0.0
        with self.root_instrument.timeout_for_work(work_s):
            value = self.root_instrument.ask_parsed(
                in_w(f"SENS{self.slot}:POW:UNIT", query), lambda reply: _reading_w(reply, "W", self.full_name, query))
        self.power_unit.cache.set("W")
        return value


class _N774xA(_N77xxBase):
    num_channels = 4

    def __init__(self, name: str, address: str | None = None, **kwargs: Any):
        super().__init__(name, address, **kwargs)
        channels = [self.add_submodule(f"ch{n}", N774xAPowerMeterChannel(self, f"ch{n}", n))
                    for n in range(1, self.num_channels + 1)]
        self.channels = self.add_submodule(
            "channels", ChannelTuple(self, "channels", N774xAPowerMeterChannel, channels, snapshotable=False))
        self.connect_message()


class KeysightN7744A(_N774xA):
    """Keysight N7744A four-channel optical power meter."""

    num_channels = 4


class KeysightN7745A(_N774xA):
    """Keysight N7745A eight-channel optical power meter."""

    num_channels = 8
