"""Thorlabs PM100D console emulator, enough for the unchanged qcodes_contrib ``Thorlab_PM100D``.

That driver (qcodes_contrib_drivers/drivers/Thorlabs/PM100D.py) sends, at connect,
``STAT:OPER:PTR 512``, ``STAT:OPER:NTR 0``, ``STAT:OPER?``, ``AVER`` (its set_cmd has no value
field: a bare header, answered -109 into a queue it never reads), ``CONF:POW``,
``ABOR;:STAT:OPER?``, ``INIT``, ``*IDN?``; and per power reading ``CONF:POW``,
``ABOR;:STAT:OPER?``, ``INIT``, ``MEAS:POW`` then ``FETC?``. The tree follows docs/INSTRUMENTS.md 3.1
(``[SENSe:]`` optional, ``SYST:ERR?`` -> ``+0,"No error"``). The head sits on the server's
monitor tap, like the N7744A channel it replaces; readings are W (or dBm), with the head's dark
offset and noise, scaled by the attenuation correction ``CORR``. A measurement takes its averaging time
(``SAMPLE_TIME_S`` per averaged sample) on the bench clock.
"""

from __future__ import annotations

import math

from qslab.instruments.sim.emulators.base import ScpiEmulator, in_unit
from qslab.instruments.sim.scpi.engine import Call, CommandTree
from qslab.instruments.sim.scpi.parsing import ScpiError, nr3, number_keyword

WAVELENGTH_LIMITS_NM = (800.0, 1700.0)   # an InGaAs photodiode head (S155C class)
CORRECTION_LIMITS_DB = (-60.0, 60.0)
RANGE_LIMITS_W = (1e-9, 20e-3)
RESPONSIVITY_A_PER_W = 1.0
REFERENCE_AVERAGES = 300                 # pm100d_noise_w is the rms at this averaging count
OPERATION_MEASURING = 512                # STAT:OPER bit the driver's transition filter watches
# A measurement lasts SENS:AVER:COUN samples of about 3 ms each (Thorlabs' PM100 SCPI reference, "1 sample
# takes approx. 3 ms"): the upstream driver's 300 averages are a reading of ~0.9 s, inside its 20 s timeout.
SAMPLE_TIME_S = 3e-3


class ThorlabsPM100DEmulator(ScpiEmulator):
    driver = "qcodes_contrib_drivers.drivers.Thorlabs.PM100D.Thorlab_PM100D"
    idn = "Thorlabs,PM100D,P0000001,2.8.0"
    error_zero = "+0"

    def reset(self) -> None:
        self.averages = 1
        self.wavelength_nm = 1550.0
        self.correction_db = 0.0
        self.unit = "W"
        self.auto_range = True
        self.range_w = RANGE_LIMITS_W[1]
        self.beam_diameter_mm = 9.5
        self.zero_w = 0.0
        self.configuration = "POW"
        self.last_w: float | None = None
        self.ptr, self.ntr, self.enable = 0, 0, 0
        self.operation_event = 0

    def measure_w(self) -> float:
        """One measurement: takes ``averages`` samples of the bench clock's time, then reads the tap."""
        self.bench.clock.spend(self.averages * SAMPLE_TIME_S)
        truth = self.bench.params.server_power_meter
        with self.bench.lock:
            power = self.bench.tap_power_w()
        noise = truth.pm100d_noise_w * math.sqrt(REFERENCE_AVERAGES / self.averages)
        reading = power * (1.0 + truth.relative_noise * self.rng.standard_normal())
        reading += truth.pm100d_dark_power_w - self.zero_w + noise * self.rng.standard_normal()
        self.last_w = reading * 10.0 ** (self.correction_db / 10.0)
        if self.ptr & OPERATION_MEASURING:
            self.operation_event |= OPERATION_MEASURING
        return self.last_w

    def register(self, tree: CommandTree) -> None:
        def no_args(call: Call) -> None:
            call.count(0)

        def reply(value):
            def handler(call: Call) -> str:
                no_args(call)
                return value()
            return handler

        def limited_query(value, low, high):
            def handler(call: Call) -> str:
                call.count(0, 1)
                result = value()
                if call.args:
                    keyword = number_keyword(call.text())
                    if keyword is None:
                        raise ScpiError(-224)
                    result = {"MIN": low, "MAX": high, "DEF": low}[keyword]
                return nr3(result, 6, 2)
            return handler

        def reading(value_w: float) -> str:
            return nr3(in_unit(value_w, "dBm" if self.unit == "DBM" else "W"), 6, 2)

        def set_averages(call: Call) -> None:
            call.count(1)
            self.averages = call.integer(minimum=1, maximum=1_000_000, default=1)

        def set_wavelength(call: Call) -> None:
            """In nm without a suffix (the PM100 convention); a length suffix (1.55UM) also works."""
            call.count(1)
            keyword = number_keyword(call.text())
            if keyword is not None:
                nm = {"MIN": WAVELENGTH_LIMITS_NM[0], "MAX": WAVELENGTH_LIMITS_NM[1], "DEF": 1550.0}[keyword]
            else:
                value, dimension = call.quantity(units=("M",))
                nm = value * 1e9 if dimension == "M" else value
            if not WAVELENGTH_LIMITS_NM[0] <= nm <= WAVELENGTH_LIMITS_NM[1]:
                raise ScpiError(-222)
            self.wavelength_nm = nm

        def set_correction(call: Call) -> None:
            call.count(1)
            self.correction_db = call.number(units=("DB",), minimum=CORRECTION_LIMITS_DB[0],
                                             maximum=CORRECTION_LIMITS_DB[1], default=0.0)

        def set_range(call: Call) -> None:
            call.count(1)
            self.range_w = call.number(units=("W",), minimum=RANGE_LIMITS_W[0], maximum=RANGE_LIMITS_W[1],
                                       default=RANGE_LIMITS_W[1])
            self.auto_range = False

        def set_auto(call: Call) -> None:
            call.count(1)
            self.auto_range = call.boolean()

        def set_unit(call: Call) -> None:
            call.count(1)
            self.unit = call.choice(("W", "DBM"))

        def set_beam(call: Call) -> None:
            call.count(1)
            self.beam_diameter_mm = call.number(minimum=0.0, maximum=100.0)

        def zero(call: Call) -> None:
            no_args(call)
            self.zero_w = self.bench.params.server_power_meter.pm100d_dark_power_w

        def configure(call: Call) -> None:
            no_args(call)
            self.configuration = "POW"

        def configure_current(call: Call) -> None:
            no_args(call)
            self.configuration = "CURR"

        def initiate(call: Call) -> None:
            no_args(call)
            self.measure_w()

        def fetch(call: Call) -> str:
            no_args(call)
            value = self.last_w if self.last_w is not None else self.measure_w()
            if self.configuration == "CURR":
                return nr3(value * RESPONSIVITY_A_PER_W, 6, 2)
            return reading(value)

        def measure(call: Call) -> str:
            no_args(call)
            return reading(self.measure_w())

        def measure_current(call: Call) -> str:
            no_args(call)
            return nr3(self.measure_w() * RESPONSIVITY_A_PER_W, 6, 2)

        def operation_event(call: Call) -> str:
            no_args(call)
            value, self.operation_event = self.operation_event, 0
            return str(value)

        def register_setting(attribute: str):
            def put(call: Call) -> None:
                call.count(1)
                setattr(self, attribute, call.integer(minimum=0, maximum=65535))
            return put

        sense = "[SENSe:]"
        tree.add(f"{sense}AVERage[:COUNt]", set=set_averages, query=reply(lambda: str(self.averages)))
        tree.add(f"{sense}CORRection:WAVelength", set=set_wavelength,
                 query=limited_query(lambda: self.wavelength_nm, *WAVELENGTH_LIMITS_NM))
        tree.add(f"{sense}CORRection:COLLect:ZERO:MAGNitude", query=reply(lambda: nr3(self.zero_w, 6, 2)))
        tree.add(f"{sense}CORRection:COLLect:ZERO:STATe", query=reply(lambda: "0"))
        tree.add(f"{sense}CORRection:COLLect:ZERO[:INITiate]", set=zero)
        tree.add(f"{sense}CORRection:BEAMdiameter", set=set_beam, query=reply(lambda: nr3(self.beam_diameter_mm, 6, 2)))
        tree.add(f"{sense}CORRection[:LOSS][:INPut][:MAGNitude]", set=set_correction,
                 query=limited_query(lambda: self.correction_db, *CORRECTION_LIMITS_DB))
        tree.add(f"{sense}POWer[:DC]:RANGe:AUTO", set=set_auto, query=reply(lambda: "1" if self.auto_range else "0"))
        tree.add(f"{sense}POWer[:DC]:RANGe[:UPPer]", set=set_range,
                 query=limited_query(lambda: self.range_w, *RANGE_LIMITS_W))
        tree.add(f"{sense}POWer[:DC]:UNIT", set=set_unit, query=reply(lambda: self.unit))
        tree.add(f"{sense}CURRent[:DC]:RANGe[:UPPer]",
                 query=reply(lambda: nr3(self.range_w * RESPONSIVITY_A_PER_W, 6, 2)))
        tree.add("CONFigure[:SCALar][:POWer]", set=configure, query=reply(lambda: self.configuration))
        tree.add("CONFigure[:SCALar]:CURRent[:DC]", set=configure_current)
        tree.add("MEASure[:SCALar]:POWer", set=initiate, query=measure)
        tree.add("MEASure[:SCALar]:CURRent[:DC]", query=measure_current)
        tree.add("MEASure[:SCALar]:FREQuency", query=reply(lambda: nr3(0.0, 6, 2)))
        tree.add("INITiate[:IMMediate]", set=initiate)
        tree.add("ABORt", set=no_args)
        tree.add("FETCh", query=fetch)
        tree.add("READ", query=measure)
        tree.add("STATus:OPERation:PTRansition", set=register_setting("ptr"), query=reply(lambda: str(self.ptr)))
        tree.add("STATus:OPERation:NTRansition", set=register_setting("ntr"), query=reply(lambda: str(self.ntr)))
        tree.add("STATus:OPERation:ENABle", set=register_setting("enable"), query=reply(lambda: str(self.enable)))
        tree.add("STATus:OPERation:CONDition", query=reply(lambda: "0"))
        tree.add("STATus:OPERation[:EVENt]", query=operation_event)
        tree.add("SYSTem:SENSor:IDN", query=reply(lambda: "S155C,00000001,01-Jan-2024,1,18,289"))
