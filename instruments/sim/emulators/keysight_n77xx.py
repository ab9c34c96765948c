"""Keysight N77xx lightwave emulators: N7714A laser, N7762A attenuator, N7744A power meter.

Command set: docs/INSTRUMENTS.md 2.2 (SOURce), 4.1 (INPut/OUTPut), 3.2 (SENSe/READ/FETCh), conventions
1.2: replies in Keysight NR3 (``+1.55000000E-006``), booleans ``0|1``, units ``+0|+1``, the
empty error queue ``+0,"No error"``, a 30-deep queue that ``*RST`` also empties. Each is wired to
the bench: the laser port ``server_laser.port`` feeds the modulators, attenuator slot
``server_attenuator.slot`` sits in the server path, meter channel ``server_power_meter.channel`` is
on the monitor tap and ``server_power_meter.output_channel`` on the VOA output (before the fixed
attenuators); the other ports and channels exist but see no light.

Units as the instruments read them (N774xC Programming Guide p. 13, Table 2: DBM/MDBM, PW/NW/UW/MW/Watt): a
suffixed power is taken in its suffix's unit, an unsuffixed one in the current power unit, and every power
reply is in the current unit; ``front_panel_power_unit`` is someone changing that unit at the front panel.
Time: switching a laser on, a power change, an attenuation change (at its transition speed) and a meter
reading (its averaging time) take the instrument time the constants below say, on the bench clock.
"""

from __future__ import annotations

import math

from qslab.analysis.units import SPEED_OF_LIGHT_M_S, dbm_to_w
from qslab.instruments.sim.bench import ATTENUATION_RANGE_DB, AttenuatorState, LaserPortState
from qslab.instruments.sim.emulators.base import (ScpiEmulator, check_suffix, in_unit, power_argument,
                                            power_unit_argument, power_unit_reply)
from qslab.instruments.sim.scpi.engine import Call, CommandTree
from qslab.instruments.sim.scpi.parsing import ScpiError, nr3, number_keyword

N77XX_DRIVERS = "qslab.instruments.drivers.keysight_n77xx"

# Time the instruments take (bench clock, instruments/sim/clock.py), spent before the command's reply or the
# next message is processed. The laser's figures are the bench's assumptions, not datasheet values (the
# N7711A/N7714A data sheets give stability, not a settling time); the attenuator moves its filter at its
# transition speed (INP:ATT:SPE, dB/s) and a meter reading lasts its averaging time (SENS:POW:ATIM).
LASER_SWITCH_ON_S = 0.5        # output off -> on, until the power is within its stability
LASER_POWER_SETTLING_S = 0.1   # after a power change


class _N77xx(ScpiEmulator):
    error_zero = "+0"
    rst_clears_errors = True
    self_test_reply = "+0"
    model = ""
    serial = "DE00000001"

    @property
    def idn(self) -> str:  # type: ignore[override]
        return f"Keysight Technologies,{self.model},{self.serial},V1.0"

    def front_panel_power_unit(self, index: int, unit: str) -> None:
        """Someone at the front panel sets port/slot/channel ``index``'s power unit to ``"dBm"`` or ``"W"``."""
        if unit not in ("dBm", "W"):
            raise ValueError(f"unit: expected 'dBm' or 'W', got {unit!r}")
        with self.engine.lock:
            self.power_units[self._unit_key(index)] = unit

    def _unit_key(self, index: int) -> int:
        return index


def _bool_reply(value: bool) -> str:
    return "1" if value else "0"


def _limit_query(call: Call, value: float, low: float, high: float, default: float | None = None) -> str:
    """``<query>`` or ``<query> MIN|MAX|DEF`` in NR3."""
    call.count(0, 1)
    if call.args:
        keyword = number_keyword(call.text())
        if keyword is None:
            raise ScpiError(-224)
        value = {"MIN": low, "MAX": high, "DEF": low if default is None else default}[keyword]
    return nr3(value)


# --- N7714A laser (docs/INSTRUMENTS.md 2.2) ----------------------------------------------------------

class KeysightN7714AEmulator(_N77xx):
    """Four tunable-laser ports ``SOUR<n>``; ``[:CHANnel1]`` may follow the port (docs/INSTRUMENTS.md 2.2)."""

    driver = f"{N77XX_DRIVERS}.KeysightN7714A"
    model = "N7714A"
    ports = 4
    power_limits_dbm = (6.0, 15.0)
    wavelength_limits_m = (1527.6e-9, 1565.5e-9)
    default_power_dbm = 10.0
    default_wavelength_m = 1550e-9

    def reset(self) -> None:
        self.power_units = dict.fromkeys(range(1, self.ports + 1), "dBm")
        self.auto_mode = dict.fromkeys(range(1, self.ports + 1), True)
        for n in range(1, self.ports + 1):
            port = self.bench.laser_ports[n]
            port.enabled = False
            port.power_w = float(dbm_to_w(self.default_power_dbm))
            port.wavelength_m = self.default_wavelength_m

    def _port(self, call: Call) -> tuple[int, LaserPortState]:
        n = check_suffix(call.suffixes[0], 1, self.ports)
        if len(call.suffixes) > 1:
            check_suffix(call.suffixes[1], 1, 1)
        return n, self.bench.laser_ports[n]

    def register(self, tree: CommandTree) -> None:
        src = "SOURce#[:CHANnel#]"

        def set_state(call: Call) -> None:
            call.count(1)
            _, port = self._port(call)
            on = call.boolean()
            with self.bench.lock:
                switching_on, port.enabled = on and not port.enabled, on
            if switching_on:
                self.bench.clock.spend(LASER_SWITCH_ON_S)

        def get_state(call: Call) -> str:
            call.count(0)
            return _bool_reply(self._port(call)[1].enabled)

        def set_unit(call: Call) -> None:
            call.count(1)
            n, _ = self._port(call)
            self.power_units[n] = power_unit_argument(call)

        def get_unit(call: Call) -> str:
            call.count(0)
            return power_unit_reply(self.power_units[self._port(call)[0]])

        def set_power(call: Call) -> None:
            call.count(1)
            n, port = self._port(call)
            value_w = power_argument(call, self.power_units[n], self.power_limits_dbm, self.default_power_dbm)
            with self.bench.lock:
                changed, port.power_w = value_w != port.power_w, value_w
            if changed and port.enabled:
                self.bench.clock.spend(LASER_POWER_SETTLING_S)

        def get_power(call: Call) -> str:
            n, port = self._port(call)
            unit = self.power_units[n]
            low, high = (in_unit(float(dbm_to_w(v)), unit) for v in self.power_limits_dbm)
            default = in_unit(float(dbm_to_w(self.default_power_dbm)), unit)
            return _limit_query(call, in_unit(port.power_w, unit), low, high, default)

        def set_wavelength(call: Call) -> None:
            call.count(1)
            n, port = self._port(call)
            if not self.auto_mode[n]:
                raise ScpiError(-221, "Not allowed while frequency auto mode is off")
            low, high = self.wavelength_limits_m
            value = call.number(units=("M",), minimum=low, maximum=high, default=self.default_wavelength_m)
            with self.bench.lock:
                port.wavelength_m = value

        def get_wavelength(call: Call) -> str:
            _, port = self._port(call)
            return _limit_query(call, port.wavelength_m, *self.wavelength_limits_m, self.default_wavelength_m)

        def set_frequency(call: Call) -> None:
            call.count(1)
            n, port = self._port(call)
            if not self.auto_mode[n]:
                raise ScpiError(-221, "Not allowed while frequency auto mode is off")
            low, high = (SPEED_OF_LIGHT_M_S / w for w in reversed(self.wavelength_limits_m))
            value = call.number(units=("HZ",), minimum=low, maximum=high,
                                default=SPEED_OF_LIGHT_M_S / self.default_wavelength_m)
            with self.bench.lock:
                port.wavelength_m = SPEED_OF_LIGHT_M_S / value

        def get_frequency(call: Call) -> str:
            _, port = self._port(call)
            low, high = (SPEED_OF_LIGHT_M_S / w for w in reversed(self.wavelength_limits_m))
            return _limit_query(call, SPEED_OF_LIGHT_M_S / port.wavelength_m, low, high)

        def set_auto(call: Call) -> None:
            call.count(1)
            n, port = self._port(call)
            if port.enabled:
                raise ScpiError(-221, "Not allowed while laser is on")
            self.auto_mode[n] = call.boolean()

        def get_auto(call: Call) -> str:
            call.count(0)
            return _bool_reply(self.auto_mode[self._port(call)[0]])

        tree.add(f"{src}:POWer:STATe", set=set_state, query=get_state)
        tree.add("OUTPut#[:CHANnel#][:STATe]", set=set_state, query=get_state)
        tree.add(f"{src}:POWer:UNIT", set=set_unit, query=get_unit)
        tree.add(f"{src}:POWer[:LEVel][:IMMediate][:AMPLitude]", set=set_power, query=get_power)
        tree.add(f"{src}:WAVelength:AUTO", set=set_auto, query=get_auto)
        tree.add(f"{src}:FREQuency:AUTO", set=set_auto, query=get_auto)
        tree.add(f"{src}:WAVelength[:CW][:FIXed]", set=set_wavelength, query=get_wavelength)
        tree.add(f"{src}:FREQuency[:CW][:FIXed]", set=set_frequency, query=get_frequency)


# --- N7762A attenuator (docs/INSTRUMENTS.md 4.1) -----------------------------------------------------

class KeysightN7762AEmulator(_N77xx):
    """Two attenuators addressed by either slot of their pair (1-2, 3-4)."""

    driver = f"{N77XX_DRIVERS}.KeysightN7762A"
    model = "N7762A"
    slots = 4
    wavelength_limits_m = (1260e-9, 1640e-9)
    offset_limits_db = (-200.0, 200.0)
    speed_limits_db_s = (0.1, 1000.0)
    setpoint_limits_dbm = (-80.0, 10.0)

    def reset(self) -> None:
        self.power_units = {k: "dBm" for k in self.bench.attenuators}
        self.speeds = {k: 10.0 for k in self.bench.attenuators}
        for state in self.bench.attenuators.values():
            state.attenuation_db, state.offset_db, state.shutter_open = 0.0, 0.0, False
            state.wavelength_m, state.power_control = 1550e-9, False
            state.power_setpoint_w = float(dbm_to_w(-10.0))

    def _attenuator(self, call: Call) -> tuple[int, AttenuatorState]:
        slot = check_suffix(call.suffixes[0], 1, self.slots)
        if len(call.suffixes) > 1:
            check_suffix(call.suffixes[1], 1, 1)
        k = (slot + 1) // 2
        return k, self.bench.attenuators[k]

    def _unit_key(self, index: int) -> int:
        return (index + 1) // 2  # a slot of the pair -> its attenuator

    def _is_server_path(self, k: int) -> bool:
        return k == (self.bench.params.server_attenuator.slot + 1) // 2

    def _displayed_db(self, k: int, state: AttenuatorState) -> float:
        """What INP:ATT? shows: in power-control mode, the attenuation the loop has set."""
        if state.power_control and self._is_server_path(k):
            filter_db = self.bench.attenuator_filter_db(state, self.bench.attenuator_input_power_w())
            return filter_db + state.offset_db
        return state.attenuation_db

    def _output_power_w(self, k: int, state: AttenuatorState) -> float:
        if self._is_server_path(k):
            return self.bench.attenuator_output_power_w()
        return 0.0

    def register(self, tree: CommandTree) -> None:
        inp, outp = "INPut#[:CHANnel#]", "OUTPut#[:CHANnel#]"

        def att_range(state: AttenuatorState) -> tuple[float, float]:
            return ATTENUATION_RANGE_DB[0] + state.offset_db, ATTENUATION_RANGE_DB[1] + state.offset_db

        def set_att(call: Call) -> None:
            call.count(1)
            k, state = self._attenuator(call)
            low, high = att_range(state)
            value = call.number(units=("DB",), minimum=low, maximum=high, default=low)
            with self.bench.lock:
                travel_db, state.attenuation_db = abs(value - state.attenuation_db), value
            self.bench.clock.spend(travel_db / self.speeds[k])  # the filter moves at its transition speed

        def get_att(call: Call) -> str:
            k, state = self._attenuator(call)
            with self.bench.lock:
                return _limit_query(call, self._displayed_db(k, state), *att_range(state))

        def set_offset(call: Call) -> None:
            call.count(1)
            _, state = self._attenuator(call)
            value = call.number(units=("DB",), minimum=self.offset_limits_db[0], maximum=self.offset_limits_db[1],
                                default=0.0)
            with self.bench.lock:  # the filter stays put; the displayed attenuation moves with the offset
                state.attenuation_db += value - state.offset_db
                state.offset_db = value

        def get_offset(call: Call) -> str:
            return _limit_query(call, self._attenuator(call)[1].offset_db, *self.offset_limits_db, 0.0)

        def set_wavelength(call: Call) -> None:
            call.count(1)
            _, state = self._attenuator(call)
            value = call.number(units=("M",), minimum=self.wavelength_limits_m[0],
                                maximum=self.wavelength_limits_m[1], default=1550e-9)
            with self.bench.lock:
                state.wavelength_m = value

        def get_wavelength(call: Call) -> str:
            return _limit_query(call, self._attenuator(call)[1].wavelength_m, *self.wavelength_limits_m, 1550e-9)

        def set_speed(call: Call) -> None:
            call.count(1)
            k, _ = self._attenuator(call)
            self.speeds[k] = call.number(minimum=self.speed_limits_db_s[0], maximum=self.speed_limits_db_s[1],
                                         default=10.0)

        def get_speed(call: Call) -> str:
            k, _ = self._attenuator(call)
            return _limit_query(call, self.speeds[k], *self.speed_limits_db_s, 10.0)

        def set_shutter(call: Call) -> None:
            call.count(1)
            _, state = self._attenuator(call)
            with self.bench.lock:
                state.shutter_open = call.boolean()

        def get_shutter(call: Call) -> str:
            call.count(0)
            return _bool_reply(self._attenuator(call)[1].shutter_open)

        def set_control(call: Call) -> None:
            call.count(1)
            _, state = self._attenuator(call)
            with self.bench.lock:
                state.power_control = call.boolean()

        def get_control(call: Call) -> str:
            call.count(0)
            return _bool_reply(self._attenuator(call)[1].power_control)

        def set_unit(call: Call) -> None:
            call.count(1)
            k, _ = self._attenuator(call)
            self.power_units[k] = power_unit_argument(call)

        def get_unit(call: Call) -> str:
            call.count(0)
            return power_unit_reply(self.power_units[self._attenuator(call)[0]])

        def set_setpoint(call: Call) -> None:
            call.count(1)
            k, state = self._attenuator(call)
            value = power_argument(call, self.power_units[k], self.setpoint_limits_dbm)
            with self.bench.lock:
                state.power_setpoint_w = value

        def get_setpoint(call: Call) -> str:
            k, state = self._attenuator(call)
            unit = self.power_units[k]
            low, high = (in_unit(float(dbm_to_w(v)), unit) for v in self.setpoint_limits_dbm)
            return _limit_query(call, in_unit(state.power_setpoint_w, unit), low, high)

        def monitor(call: Call) -> str:
            call.count(0)
            k, state = self._attenuator(call)
            with self.bench.lock:
                return nr3(in_unit(self._output_power_w(k, state), self.power_units[k]))

        tree.add(f"{inp}:ATTenuation:SPEed", set=set_speed, query=get_speed)
        tree.add(f"{inp}:ATTenuation", set=set_att, query=get_att)
        tree.add(f"{inp}:OFFSet", set=set_offset, query=get_offset)
        tree.add(f"{inp}:WAVelength", set=set_wavelength, query=get_wavelength)
        tree.add(f"{outp}:POWer:CONTRol", set=set_control, query=get_control)
        tree.add(f"{outp}:POWer:UNit", set=set_unit, query=get_unit)
        tree.add(f"{outp}:POWer", set=set_setpoint, query=get_setpoint)
        tree.add(f"{outp}[:STATe]", set=set_shutter, query=get_shutter)
        tree.add("FETCh#[:CHANnel#][:SCALar]:POWer[:DC]", query=monitor)
        tree.add("READ#[:CHANnel#][:SCALar]:POWer[:DC]", query=monitor)


# --- N7744A power meter (docs/INSTRUMENTS.md 3.2) ----------------------------------------------------

class KeysightN7744AEmulator(_N77xx):
    """Four meter channels; readings in the display unit (dBm or W) with dark offset and noise."""

    driver = f"{N77XX_DRIVERS}.KeysightN7744A"
    model = "N7744A"
    channels = 4
    wavelength_limits_m = (1250e-9, 1625e-9)
    averaging_limits_s = (1e-6, 10.0)
    range_limits_dbm = (-110.0, 30.0)

    def reset(self) -> None:
        n = range(1, self.channels + 1)
        self.power_units = dict.fromkeys(n, "W")
        self.wavelengths_m = dict.fromkeys(n, 1550e-9)
        self.auto_range = dict.fromkeys(n, True)
        self.range_dbm = dict.fromkeys(n, 0.0)
        self.averaging_s = dict.fromkeys(n, 0.1)
        self.continuous = dict.fromkeys(n, False)
        self.zero_w = dict.fromkeys(n, 0.0)
        self.last_w: dict[int, float | None] = dict.fromkeys(n, None)

    def _channel(self, call: Call) -> int:
        n = check_suffix(call.suffixes[0], 1, self.channels)
        if len(call.suffixes) > 1:
            check_suffix(call.suffixes[1], 1, 1)
        return n

    def true_power_w(self, n: int) -> float:
        """Light on channel n: the monitor tap, the VOA output, or none."""
        truth = self.bench.params.server_power_meter
        if n == truth.channel:
            return self.bench.tap_power_w()
        if n == truth.output_channel:
            return self.bench.attenuator_output_power_w()
        return 0.0

    def measure_w(self, n: int) -> float:
        """One reading: (1 + relative noise) x power + dark offset - zero + noise / sqrt(averaging time)."""
        truth = self.bench.params.server_power_meter
        with self.bench.lock:
            power = self.true_power_w(n)
        noise = truth.noise_w / math.sqrt(self.averaging_s[n])
        reading = power * (1.0 + truth.relative_noise * self.rng.standard_normal())
        reading += truth.dark_power_w - self.zero_w[n] + noise * self.rng.standard_normal()
        self.last_w[n] = reading
        return reading

    def register(self, tree: CommandTree) -> None:
        sens = "SENSe#[:CHANnel#]:POWer"

        def reply(n: int, power_w: float) -> str:
            return nr3(in_unit(power_w, self.power_units[n]))

        def read(call: Call) -> str:
            call.count(0)
            n = self._channel(call)
            self.bench.clock.spend(self.averaging_s[n])  # a new reading: one averaging time
            return reply(n, self.measure_w(n))

        def fetch(call: Call) -> str:
            call.count(0)
            n = self._channel(call)
            if self.continuous[n] or self.last_w[n] is None:
                return reply(n, self.measure_w(n))
            return reply(n, self.last_w[n])

        def initiate(call: Call) -> None:
            call.count(0)
            n = self._channel(call)
            self.bench.clock.spend(self.averaging_s[n])
            self.measure_w(n)

        def set_continuous(call: Call) -> None:
            call.count(1)
            self.continuous[self._channel(call)] = call.boolean()

        def get_continuous(call: Call) -> str:
            call.count(0)
            return _bool_reply(self.continuous[self._channel(call)])

        def set_wavelength(call: Call) -> None:
            call.count(1)
            self.wavelengths_m[self._channel(call)] = call.number(
                units=("M",), minimum=self.wavelength_limits_m[0], maximum=self.wavelength_limits_m[1], default=1550e-9)

        def get_wavelength(call: Call) -> str:
            return _limit_query(call, self.wavelengths_m[self._channel(call)], *self.wavelength_limits_m, 1550e-9)

        def set_unit(call: Call) -> None:
            call.count(1)
            self.power_units[self._channel(call)] = power_unit_argument(call)

        def get_unit(call: Call) -> str:
            call.count(0)
            return power_unit_reply(self.power_units[self._channel(call)])

        def set_auto(call: Call) -> None:
            call.count(1)
            self.auto_range[self._channel(call)] = call.boolean()

        def get_auto(call: Call) -> str:
            call.count(0)
            return _bool_reply(self.auto_range[self._channel(call)])

        def set_range(call: Call) -> None:
            call.count(1)
            n = self._channel(call)
            value = call.number(units=("DBM",), minimum=self.range_limits_dbm[0], maximum=self.range_limits_dbm[1],
                                default=0.0)
            self.range_dbm[n] = float(10.0 * round(value / 10.0))  # 10 dB steps
            self.auto_range[n] = False

        def get_range(call: Call) -> str:
            return _limit_query(call, self.range_dbm[self._channel(call)], *self.range_limits_dbm, 0.0)

        def set_averaging(call: Call) -> None:
            call.count(1)
            self.averaging_s[self._channel(call)] = call.number(
                units=("S",), minimum=self.averaging_limits_s[0], maximum=self.averaging_limits_s[1], default=0.1)

        def get_averaging(call: Call) -> str:
            return _limit_query(call, self.averaging_s[self._channel(call)], *self.averaging_limits_s, 0.1)

        def zero(call: Call) -> None:
            call.count(0)
            n = self._channel(call)
            self.zero_w[n] = self.bench.params.server_power_meter.dark_power_w

        tree.add(f"{sens}:WAVelength", set=set_wavelength, query=get_wavelength)
        tree.add(f"{sens}:UNIT", set=set_unit, query=get_unit)
        tree.add(f"{sens}:RANGe:AUTO", set=set_auto, query=get_auto)
        tree.add(f"{sens}:RANGe[:UPPer]", set=set_range, query=get_range)
        tree.add(f"{sens}:ATIMe", set=set_averaging, query=get_averaging)
        tree.add("SENSe#[:CHANnel#]:CORRection:COLLect:ZERO", set=zero)
        tree.add("INITiate#[:CHANnel#]:CONTinuous", set=set_continuous, query=get_continuous)
        tree.add("INITiate#[:CHANnel#][:IMMediate]", set=initiate)
        tree.add("READ#[:CHANnel#][:SCALar]:POWer[:DC]", query=read)
        tree.add("FETCh#[:CHANnel#][:SCALar]:POWer[:DC]", query=fetch)
