"""Calibration cost in instrument time: per kind, round trips and instrument seconds next to the uncertainty reached,
against the least instrument time that uncertainty needs.

Runs every calibration a session needs on a fresh virtual bench (as `qslab session` does from a fresh
directory) and reads each record's ``conditions["instrument_cost"]`` (calibration/instrument_cost.py): the
messages the kind sent and the instrument seconds they asked for (meter averaging, laser switch-on and
settling, attenuator moves, amplifier switch-on, bias-lock sweeps), counted by the bench.

The least time, per kind, for its headline quantity (the one the session's security report uses):
- homodyne, shot-noise variance S (the SNU): the Fisher information of Gaussian samples. A variance V is
  known from n independent samples to V sqrt(2/n) at best, so S = V_tot - V_el to u needs at least
  n = 2 (V_tot + V_el)^2 / u^2 symbols in all (calibration.instrument_cost.homodyne_least_time_s);
- photons, photons per symbol: the averaging law on the statistical part of its budget (monitor reading
  and ratio regression) next to the declared systematics (meter calibration, fixed attenuation): the
  least measuring time that keeps the total within 1 % of the stated uncertainty
  (calibration.instrument_cost.least_time_s), the measuring time being readings x averaging time;
- amplifier, modulators, processor: no floor derived yet (printed as "-", no verdict).

Goal (this benchmark's): instrument seconds <= 3 x (least time + the set-up no measurement avoids: one
switch-on of each source the kind lights, LASER_SWITCH_ON_S and the amplifier's SWITCH_ON_S where it uses the
amplifier). Wall time is not the point here (bench_session.py times the session).

    python benchmarks/bench_calibration_cost.py [--json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from qslab.calibration.instrument_cost import COST_KEY, homodyne_least_time_s, least_time_s, statistical_part  # noqa: E402
from qslab.calibration.records import RecordStore  # noqa: E402
from qslab.instruments.sim.emulators.keysight_n77xx import LASER_SWITCH_ON_S  # noqa: E402
from qslab.instruments.sim.emulators.scpi_amplifier import SWITCH_ON_S as AMPLIFIER_SWITCH_ON_S  # noqa: E402
from qslab.sequences import calibrations  # noqa: E402
from qslab.sequences.config import load_config  # noqa: E402
from qslab.sequences.station import LabStation  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "lab_config.toml"
GOAL_RATIO = 3.0
SETUP_S = {"homodyne": LASER_SWITCH_ON_S, "photons": LASER_SWITCH_ON_S,
           "amplifier": LASER_SWITCH_ON_S + AMPLIFIER_SWITCH_ON_S, "modulators": LASER_SWITCH_ON_S,
           "processor": LASER_SWITCH_ON_S + AMPLIFIER_SWITCH_ON_S}


def _homodyne(records) -> tuple[str, float, float, float]:
    floors = []
    for record in records:
        name, c = record.instrument, record.conditions
        snu = record.estimate(f"{name}.shot_noise_variance_v2")
        v_el = record.estimate(f"{name}.electronic_noise_variance_v2").value
        floors.append((homodyne_least_time_s(snu.value, v_el, snu.uncertainty,
                                             c["samples_per_symbol"] / c["sample_rate_hz"]), name, snu))
    floor, name, snu = max(floors, key=lambda f: f[0])
    return f"{name}.shot_noise_variance_v2", snu.value, snu.uncertainty, floor


def _photons(records) -> tuple[str, float, float, float]:
    (record,) = records
    c, mu = record.conditions, record.estimate("server.photons_per_symbol")
    measuring_s = c["readings_per_point"] * c["averaging_time_s"] * (len(record.raw["sweep_attenuation_db"]) + 1)
    stat = statistical_part(mu.uncertainty, c["uncertainty_budget_relative"], ("monitor_reading", "ratio_regression"))
    return "server.photons_per_symbol", mu.value, mu.uncertainty, least_time_s(measuring_s, mu.uncertainty, stat)


HEADLINES = {"homodyne": _homodyne, "photons": _photons}
OTHER = {"amplifier": "client_amplifier.gain", "modulators": "server_iq.extinction_ratio_db",
         "processor": "client_processor.beam_splitter_vpi_v"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON line of the rows")
    args = parser.parse_args(argv)
    config = load_config(CONFIG)
    work = Path(tempfile.mkdtemp(prefix="qslab_bench_calibration_cost_"))
    store = RecordStore(work / "calibration")
    start = time.perf_counter()
    with LabStation(config) as station:
        calibrations.ensure(station, store, calibrations.CalibrationOptions.from_config(config), work,
                            calibrations.kind("channel").requires)
    wall_s = time.perf_counter() - start
    rows = []
    for kind in calibrations.kind("channel").requires:
        records = [r for r in store.records(kind) if r.conditions.get(COST_KEY)]
        cost = records[0].conditions[COST_KEY]
        if kind in HEADLINES:
            key, value, u, least = HEADLINES[kind](records)
            ratio = cost["instrument_s"] / (least + SETUP_S[kind])
            verdict = "PASS" if ratio <= GOAL_RATIO else "FAIL"
        else:
            record = next(r for r in records if OTHER[kind] in r.parameters)
            estimate = record.estimate(OTHER[kind])
            key, value, u, least, ratio, verdict = OTHER[kind], estimate.value, estimate.uncertainty, None, None, "-"
        rows.append({"kind": kind, "round_trips": cost["round_trips"], "instrument_s": cost["instrument_s"],
                     "quantity": key, "value": value, "uncertainty": u, "least_time_s": least,
                     "setup_s": SETUP_S[kind], "ratio": ratio, "verdict": verdict})
    if args.json:
        print(json.dumps({"rows": rows, "wall_s": wall_s, "goal_ratio": GOAL_RATIO}))
        return
    scale = (config.bench_table or {}).get("time_scale", 1.0)
    print(f"calibrations of a fresh session on the virtual bench: {wall_s:.1f} s wall (time_scale {scale}); load "
          f"average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'kind':11} {'trips':>5} {'instr. s':>9} {'least s':>9} {'set-up s':>8} {'ratio':>7}  verdict  quantity")
    for r in rows:
        least = f"{r['least_time_s']:9.3g}" if r["least_time_s"] is not None else f"{'-':>9}"
        ratio = f"{r['ratio']:7.2f}" if r["ratio"] is not None else f"{'-':>7}"
        print(f"{r['kind']:11} {r['round_trips']:5d} {r['instrument_s']:9.3f} {least} {r['setup_s']:8.2f} {ratio}  "
              f"{r['verdict']:7}  {r['quantity']} = {r['value']:.6g} +- {r['uncertainty']:.3g}")
    print(f"goal: instrument s <= {GOAL_RATIO:g} x (least time + set-up)")


if __name__ == "__main__":
    main()
