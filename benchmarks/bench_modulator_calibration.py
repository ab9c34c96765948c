"""Instrument round trips and wall time of each modulator calibration on the virtual bench.

A round trip here is one message sent to an instrument, as the bench's instrument servers count them
(``Bench.message_counts``): every VISA message (``write``, ``query`` and the binary transfers; a compound SCPI
message ``a;b;c?;:SYST:ERR?`` is one) and every MBX serial exchange (each MBX command is answered). Setup
commands of the benchmark itself (laser on, attenuator, amplifier) are not counted; everything a procedure sends is.
Goal (the issue): <= 10 per procedure.

- RF transfer: 6 (was 36/32 at 7ac3bd1): laser state, AWG stop+rate, AWG load+run (one message with the
  block), digitizer settings+acquire+preamble, trace block, AWG stop+outputs off.
- DC bias transfer: cannot reach 10 on a real station. The bias port is set only by the MBX, over serial,
  one voltage per exchange (no list or ramp mode), and the N7744A reads the *average* power, so each
  bias point costs one MBX exchange and one meter message: 2 per point + ~4. What is cut: the readings per
  point go in one compound meter message (``READ1:POW?;READ1:POW?;...``), so 21 points x 7 readings carry
  the information of the old 121 single readings (Cramer-Rao bounds at or below 31 x 4's,
  calibration/fisher_floors.py) at a fifth of the round trips (46 instead of 250; the fit's noise model comes
  from each point's readings' spread, so its uncertainties stay honest with 21 points:
  tests/calibration/test_modulators.py, test_fisher_floors.py). Not done: the N7744A logging function (``sens<n>:func:par:logg`` while the MBX
  steps) would save the meter messages (-> ~35) but pairs samples with bias steps by host timing over a
  serial line with unknown latency, and the bench's meter emulates no logging; the RF ramp at a few bias
  settings measures the RF port, not the bias port's V_pi and ER.
- IQ imbalance: 22 (was 137): 9 drive settings x (one AWG message + one meter message of 5 readings) + 4.
- Lock + verify: 3 messages of its own (mode, voltage, one reading) plus the lock's polls (``MZM:SETPOINT?``
  until the MBX's sweep, 0.5 instrument s, reports locked). The polls are counted in the row (they are messages
  the station sends), but their number follows the bench's time_scale and the host's speed, so the row has no
  baseline and its round trips are not held to the goal; its instrument seconds (the sweep) are.
- RF transfer without a homodyne record: 8 (the capture re-centred once on the detector's DC level).
- Client processor (beam splitter and phase modulator, one fit): the whole procedure ~510, of which ~440
  are the pilots' set-up it shares with every session (light, LO phases, leakage nulling) and ~70 its own
  designed acquisition (segment uploads on both AWGs, gate, one capture of two traces), still on the
  per-command upload path the session uses.

The baseline sweep (121 points x 1 reading) runs next to the new one; for the RF and IQ procedures, whose
old per-command path is gone, the counts measured at 7ac3bd1 are printed as the baseline.

    python benchmarks/bench_modulator_calibration.py [--points 21] [--readings 7] [--no-baseline]
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Callable

from qslab.calibration import modulators as m
from qslab.instruments.optical import ModulatorCalibration
from qslab.sequences.station import LabStation

GOAL_ROUND_TRIPS = 10


class RoundTripCounter:
    """Messages per instrument a procedure sends: the difference of the station's benches' counts around it.

    Exact because every procedure ends answered (the drivers follow each set by its error query), so the
    servers have framed every message by the time the procedure returns.
    """

    def __init__(self, station: LabStation):
        self.benches = list(station.benches)
        self.charged: dict[str, float] = {}   # label -> instrument seconds of its last measurement

    def instrument_s(self) -> float:
        """Instrument seconds the benches' emulators charged so far (BenchClock.charged_s)."""
        return sum(bench.charged_s() for bench in self.benches)

    def counts(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for bench in self.benches:
            total.update(bench.message_counts())
        return total

    def measure(self, label: str, procedure: Callable[[], object]) -> tuple[object, dict[str, int], float]:
        before, charged = self.counts(), self.instrument_s()
        start = time.perf_counter()
        result = procedure()
        seconds = time.perf_counter() - start
        sent = self.counts() - before  # instruments that received nothing drop out
        self.charged[label] = self.instrument_s() - charged
        return result, dict(sent), seconds


# round trips measured at 7ac3bd1 (the per-command driver path), for the procedures whose old path is gone
RECORDED_BASELINE = {("server_iq", "RF transfer"): 36, ("server_iq", "IQ imbalance"): 137,
                     ("server_carver", "RF transfer"): 32}
BASELINE_SWEEP = {"points": 121, "readings_per_point": 1}
PART_OF_ABOVE = "its own part"  # a row that details the row above it (not added to the totals)


def _processor_rows(station, counter: RoundTripCounter) -> list:
    """The client processor's modulators (beam splitter and phase modulator, one fit): the whole procedure, and
    its own part (the total less the pilots' set-up it shares with the session, counted on its own)."""
    import tempfile
    from pathlib import Path

    from qslab.calibration.records import RecordStore
    from qslab.sequences import calibrations

    with tempfile.TemporaryDirectory() as directory:
        store = RecordStore(directory)
        options = calibrations.CalibrationOptions.from_config(station.config)
        calibrations.ensure(station, store, options, Path(directory),  # the records it needs (not counted)
                            calibrations.kind("processor").requires)
        _, total, seconds = counter.measure("processor", lambda: calibrations._processor(station, store,
                                                                                          Path(directory)))
        _, pilots, pilot_seconds = counter.measure("pilots", lambda: calibrations._lit_pilots(
            station, store, "processor", processor=False))
    own = {name: total.get(name, 0) - pilots.get(name, 0) for name in total}
    return [("client_processor", "whole procedure (pilots + 1 acq.)", total, seconds, None),
            ("client_processor", f"{PART_OF_ABOVE} (designed acquisition)", own, seconds - pilot_seconds, None)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=m.DEFAULT_POINTS, help="bias sweep points")
    parser.add_argument("--readings", type=int, default=m.DEFAULT_READINGS_PER_POINT, help="meter readings per point")
    parser.add_argument("--no-baseline", action="store_true", help="skip the 121-point baseline sweep")
    args = parser.parse_args(argv)
    rows = []   # (modulator, procedure, counts, seconds, baseline round trips or None)
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
            baseline = None
            if not args.no_baseline:
                _, counts, seconds = counter.measure("baseline", lambda: m.calibrate_bias_transfer(
                    modulator, meter, laser, key=key, other_modulator=other, **BASELINE_SWEEP))
                baseline = sum(counts.values())
                rows.append((key, "bias transfer 121x1 (baseline)", counts, seconds, None))
            transfer, counts, seconds = counter.measure("bias transfer", lambda: m.calibrate_bias_transfer(
                modulator, meter, laser, key=key, other_modulator=other, points=args.points,
                readings_per_point=args.readings))
            rows.append((key, f"bias transfer {args.points}x{args.readings}", counts, seconds, baseline))
            _, counts, seconds = counter.measure("lock", lambda: m.lock_and_verify(
                modulator, meter, laser, transfer, key=key, point="null"))
            rows.append((key, f"lock+verify +polls, {counter.charged['lock']:.2f} instr.s", counts, seconds, None))
            if key == "server_carver":  # the IQ's loop sees the light the carver passes: carver to peak first
                modulator.lock_bias("peak")
            other.lock_bias("peak")
            if key == "server_iq":
                iq.lock_bias()
            rf, counts, seconds = counter.measure("rf", lambda: m.calibrate_rf_transfer(
                modulator, receiver, laser, key=key, driver_gain=gain))
            rows.append((key, "RF transfer", counts, seconds, RECORDED_BASELINE[(key, "RF transfer")]))
            if key == "server_iq":
                _, counts, seconds = counter.measure("iq", lambda: m.calibrate_iq_imbalance(
                    iq, meter, laser, vpi_at_awg=rf.parameters["server_iq.vpi_at_awg_v"],
                    extinction_ratio_db=transfer.parameters["server_iq.extinction_ratio_db"]))
                rows.append((key, "IQ imbalance", counts, seconds, RECORDED_BASELINE[(key, "IQ imbalance")]))
    with LabStation("lab_config.toml") as station:  # a fresh bench: the processor's prerequisites run as a session's
        rows += _processor_rows(station, RoundTripCounter(station))
    print(f"{'modulator':14} {'procedure':32} {'round trips':>11} {'before':>6} {'ratio':>6} {'goal':>5} "
          f"{'wall s':>7}  per instrument")
    for key, label, counts, seconds, before in rows:
        total = sum(counts.values())
        flag = "ok" if total <= GOAL_ROUND_TRIPS else "OVER"
        ratio = f"{before / total:.1f}x" if before else ""
        print(f"{key:14} {label:32} {total:11d} {before or '':>6} {ratio:>6} {flag:>5} {seconds:7.3f}  "
              f"{dict(sorted(counts.items()))}")
    for key in dict.fromkeys(row[0] for row in rows):
        mine = [row for row in rows if row[0] == key and not row[1].startswith(PART_OF_ABOVE)
                and "(baseline)" not in row[1]]
        total, seconds = sum(sum(r[2].values()) for r in mine), sum(r[3] for r in mine)
        before = sum(r[4] for r in mine) if all(r[4] for r in mine) else None
        ratio = f"{before / total:.1f}x" if before else ""
        print(f"{key:14} {'all of the above':32} {total:11d} {before or '':>6} {ratio:>6} "
              f"{'ok' if total <= GOAL_ROUND_TRIPS * len(mine) else 'OVER':>5} {seconds:7.3f}  "
              f"(goal {GOAL_ROUND_TRIPS} x {len(mine)} procedures)")


if __name__ == "__main__":
    main()
