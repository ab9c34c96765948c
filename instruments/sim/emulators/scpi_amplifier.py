"""The client's optical amplifier, speaking the GENERIC PROFILE of
``instruments/drivers/scpi_optical_amplifier.py`` (OUTPut, SOURce:MODE|GAIN|POWer|CURRent,
MEASure:POWer:INPut|OUTPut): no vendor's amplifier speaks this tree; it is the profile the driver documents.
Its settings are the bench's amplifier state, so they set the link model's gain G (and the client coupler's
(1 - 1/G) split); output off means G = 1. Switching the output on takes ``SWITCH_ON_S`` of bench-clock time
(the pump ramps and the gain loop settles) before the next message is answered.
"""

from __future__ import annotations

from qslab.analysis.units import w_to_dbm
from qslab.instruments.sim.emulators.base import ScpiEmulator
from qslab.instruments.sim.scpi.engine import Call, CommandTree

GAIN_LIMITS_DB = (0.0, 30.0)
POWER_LIMITS_DBM = (-10.0, 20.0)
CURRENT_LIMITS_A = (0.0, 1.0)
MODES = {"GAIN": "GAIN", "POWer": "POW", "CURRent": "CURR"}
FLOOR_DBM = -100.0  # the monitor photodiodes' floor
SWITCH_ON_S = 1.0   # output off -> on until the gain has settled (the profile's figure: ScpiOpticalAmplifier.switch_on_s)


class ScpiAmplifierEmulator(ScpiEmulator):
    driver = "qslab.instruments.drivers.scpi_optical_amplifier.ScpiOpticalAmplifier"
    idn = "qslab,SCPI optical amplifier (simulated),0001,1.0"

    def reset(self) -> None:
        amp = self.bench.amplifier
        with self.bench.lock:
            amp.enabled, amp.mode, amp.gain_db = False, "GAIN", 1.1394
            amp.power_setpoint_dbm, amp.current_a = 0.0, 0.1

    def register(self, tree: CommandTree) -> None:
        bench, amp = self.bench, self.bench.amplifier

        def set_output(call: Call) -> None:
            call.count(1)
            on = call.boolean()
            with bench.lock:
                switching_on, amp.enabled = on and not amp.enabled, on
            if switching_on:
                bench.clock.spend(SWITCH_ON_S)

        def set_mode(call: Call) -> None:
            call.count(1)
            with bench.lock:
                amp.mode = MODES[call.choice(tuple(MODES))]

        def number(attribute: str, units: tuple[str, ...], limits: tuple[float, float], fmt: str):
            def put(call: Call) -> None:
                call.count(1)
                value = call.number(units=units, minimum=limits[0], maximum=limits[1], default=limits[0])
                with bench.lock:
                    setattr(amp, attribute, value)

            def get(call: Call) -> str:
                call.count(0)
                return format(getattr(amp, attribute), fmt)

            return put, get

        def dbm(power_w: float) -> str:
            value = float(w_to_dbm(power_w)) if power_w > 0 else FLOOR_DBM
            return f"{max(value, FLOOR_DBM):.8E}"

        def input_power(call: Call) -> str:
            call.count(0)
            return dbm(bench.amplifier_input_power_w())

        def output_power(call: Call) -> str:
            call.count(0)
            with bench.lock:
                return dbm(bench.amplifier_input_power_w() * bench.amplifier_gain())

        def get_output(call: Call) -> str:
            call.count(0)
            return "1" if amp.enabled else "0"

        def get_mode(call: Call) -> str:
            call.count(0)
            return amp.mode

        tree.add("OUTPut[:STATe]", set=set_output, query=get_output)
        tree.add("SOURce:MODE", set=set_mode, query=get_mode)
        for pattern, args in (("SOURce:GAIN", ("gain_db", ("DB",), GAIN_LIMITS_DB, ".4f")),
                              ("SOURce:POWer", ("power_setpoint_dbm", ("DBM",), POWER_LIMITS_DBM, ".4f")),
                              ("SOURce:CURRent", ("current_a", ("A",), CURRENT_LIMITS_A, ".6f"))):
            put, get = number(*args)
            tree.add(pattern, set=put, query=get)
        tree.add("MEASure:POWer:INPut", query=input_power)
        tree.add("MEASure:POWer:OUTPut", query=output_power)
