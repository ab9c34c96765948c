"""Instrument round trips and wall time of each modulator calibration on the virtual bench.

A round trip here is one command sent to an instrument: every VISA message (``write_raw`` of the
pyvisa resource, which ``write``, ``query`` and the binary transfers all go through) and every MBX
serial exchange (each MBX command is answered). Setup commands of the benchmark itself (laser on,
attenuator, amplifier) are not counted; everything a procedure sends is. Goal: <= 10 per modulator
calibration (the issue); the DC bias sweep is point by point by nature (one bias set + one meter
reading per point), the RF transfer is one AWG staircase and one capture.

    python benchmarks/bench_modulator_calibration.py [--points 121]
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Callable
from contextlib import contextmanager

import pyvisa.resources

from calibration import modulators as m
from instruments.drivers.thorlabs_mbx import ThorlabsMBX
from instruments.optical import ModulatorCalibration
from sequences.station import LabStation

GOAL_ROUND_TRIPS = 10


class RoundTripCounter:
    """Counts commands per instrument by wrapping the pyvisa resource's write_raw and the MBX's exchange."""

    def __init__(self, station: LabStation):
        # the station records "TCPIP::host::port::SOCKET", pyvisa names it "TCPIP0::...": key by the tail
        self.by_address = {c.address.split("::", 1)[-1]: name for name, c in station.connections.items()}
        self.counts: collections.Counter[str] = collections.Counter()

    @contextmanager
    def installed(self):
        visa_write, mbx_exchange = pyvisa.resources.MessageBasedResource.write_raw, ThorlabsMBX._exchange
        counter = self

        def write_raw(resource, message):
            name = resource.resource_name
            counter.counts[counter.by_address.get(name.split("::", 1)[-1], name)] += 1
            return visa_write(resource, message)

        def exchange(driver, cmd):
            counter.counts[driver.name] += 1
            return mbx_exchange(driver, cmd)

        pyvisa.resources.MessageBasedResource.write_raw = write_raw
        ThorlabsMBX._exchange = exchange
        try:
            yield self
        finally:
            pyvisa.resources.MessageBasedResource.write_raw = visa_write
            ThorlabsMBX._exchange = mbx_exchange

    def measure(self, label: str, procedure: Callable[[], object]) -> tuple[object, dict[str, int], float]:
        self.counts.clear()
        start = time.perf_counter()
        with self.installed():
            result = procedure()
        return result, dict(self.counts), time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=m.DEFAULT_POINTS, help="bias sweep points")
    args = parser.parse_args(argv)
    rows = []
    with LabStation("lab_config.toml") as station:
        laser, meter = station.laser(), station.power_meter()
        iq = station.iq_modulator(ModulatorCalibration(3.5, 7.0))
        carver = station.pulse_carver(ModulatorCalibration(3.0, 6.0))
        attenuator, amplifier, receiver = station.attenuator(), station.amplifier(), station.receiver("client_receiver")
        laser.set_power_dbm(13.0)
        laser.on()
        meter.set_averaging_time_s(1e-3)
        m.homodyne_light_on(attenuator, amplifier, station.config.protocol.gain)  # as calibrate_station does
        counter = RoundTripCounter(station)
        for key, modulator, other, gain in (("server_iq", iq, carver, 7.0), ("server_carver", carver, iq, 6.0)):
            transfer, counts, seconds = counter.measure("bias transfer", lambda: m.calibrate_bias_transfer(
                modulator, meter, laser, key=key, other_modulator=other, points=args.points))
            rows.append((key, "bias transfer (DC sweep)", counts, seconds))
            _, counts, seconds = counter.measure("lock", lambda: m.lock_and_verify(
                modulator, meter, laser, transfer, key=key, point="null"))
            rows.append((key, "lock null + verify", counts, seconds))
            other.bias_controller.mzm.bias_mode("peak")
            if key == "server_iq":
                iq.lock_bias()
            rf, counts, seconds = counter.measure("rf", lambda: m.calibrate_rf_transfer(
                modulator, receiver, laser, key=key, driver_gain=gain))
            rows.append((key, "RF transfer (1 ramp + 1 capture)", counts, seconds))
            if key == "server_iq":
                _, counts, seconds = counter.measure("iq", lambda: m.calibrate_iq_imbalance(
                    iq, meter, laser, vpi_at_awg=rf.parameters["server_iq.vpi_at_awg_v"],
                    extinction_ratio_db=transfer.parameters["server_iq.extinction_ratio_db"]))
                rows.append((key, "IQ imbalance (9 static drives)", counts, seconds))
    print(f"{'modulator':14} {'procedure':34} {'round trips':>11} {'goal':>5} {'wall s':>8}  per instrument")
    for key, label, counts, seconds in rows:
        total = sum(counts.values())
        flag = "ok" if total <= GOAL_ROUND_TRIPS else "OVER"
        print(f"{key:14} {label:34} {total:11d} {flag:>5} {seconds:8.3f}  {dict(sorted(counts.items()))}")
    for key in dict.fromkeys(row[0] for row in rows):
        total = sum(sum(c.values()) for k, _, c, _ in rows if k == key)
        seconds = sum(t for k, _, _, t in rows if k == key)
        print(f"{key:14} {'all of the above':34} {total:11d} {'':>5} {seconds:8.3f}")


if __name__ == "__main__":
    main()
