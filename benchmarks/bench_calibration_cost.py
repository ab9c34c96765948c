"""Calibration cost in instrument time: per kind, round trips and instrument seconds next to the uncertainty reached,
against the least instrument time that uncertainty needs.

Runs every calibration a session needs on a fresh virtual bench (as `qslab session` does from a fresh
directory) and reads each record's ``conditions["instrument_cost"]`` (calibration/instrument_cost.py): the
messages the kind sent and the instrument seconds they asked for (meter averaging, laser switch-on and
settling, attenuator moves, amplifier switch-on, bias-lock sweeps), counted by the bench.

The least time, per kind, is the sum over its measurements of the least measuring time its stated
uncertainties need (each measurement's largest over the quantities it states):
- homodyne, shot-noise variance S (the SNU): the Fisher information of Gaussian samples. A variance V is
  known from n independent samples to V sqrt(2/n) at best, so S = V_tot - V_el to u needs at least
  n = 2 (V_tot + V_el)^2 / u^2 symbols in all (calibration.instrument_cost.homodyne_least_time_s);
- photons, photons per symbol: the averaging law on the statistical part of its budget (monitor reading
  and ratio regression) next to the declared systematics (meter calibration, fixed attenuation): the
  least measuring time that keeps the total within 1 % of the stated uncertainty
  (calibration.instrument_cost.least_time_s), the measuring time being readings x averaging time;
- amplifier (gain sweep), modulators (each bias transfer, RF transfer, IQ imbalance), processor (its
  acquisition): the Cramer-Rao bound of the fitted parameter at the plan's own sampling points with the
  bench's noise model, scaled to the stated uncertainty less its declared systematics
  (calibration/fisher_floors.py, derivations in its docstring; docs/PHYSICS.md).

Goal (this benchmark's): instrument seconds <= 3 x (least time + the set-up no measurement avoids: one
switch-on of each source the kind lights, LASER_SWITCH_ON_S and the amplifier's SWITCH_ON_S where it uses the
amplifier). Bias-lock sweeps, attenuator travel and settling are not set-up: a plan that needs fewer pays
less. Round trips are printed next to the time (bench_modulator_calibration.py holds the modulators' to
their goal). Wall time is not the point here (bench_session.py times the session).

    python benchmarks/bench_calibration_cost.py [--json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import atexit  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from qslab.calibration import fisher_floors as ff  # noqa: E402
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
           "amplifier": LASER_SWITCH_ON_S + AMPLIFIER_SWITCH_ON_S,
           "modulators": LASER_SWITCH_ON_S + AMPLIFIER_SWITCH_ON_S,  # the RF captures need the client amplifier on
           "processor": LASER_SWITCH_ON_S + AMPLIFIER_SWITCH_ON_S}


def _homodyne(records, meter, symbol_rate_hz) -> list[ff.Floor]:
    floors = []
    for record in records:
        name, c = record.instrument, record.conditions
        snu = record.estimate(f"{name}.shot_noise_variance_v2")
        v_el = record.estimate(f"{name}.electronic_noise_variance_v2").value
        least = homodyne_least_time_s(snu.value, v_el, snu.uncertainty, c["samples_per_symbol"] / c["sample_rate_hz"])
        floors.append(ff.Floor(f"{name} shot noise", f"{name}.shot_noise_variance_v2", snu.uncertainty, math.nan,
                               math.nan, math.nan, least))
    return [max(floors, key=lambda f: f.least_s)]  # the receivers are measured in parallel: the longer one


def _photons(records, meter, symbol_rate_hz) -> list[ff.Floor]:
    (record,) = records
    c, mu = record.conditions, record.estimate("server.photons_per_symbol")
    measuring_s = c["readings_per_point"] * c["averaging_time_s"] * (len(record.raw["sweep_attenuation_db"]) + 1)
    stat = statistical_part(mu.uncertainty, c["uncertainty_budget_relative"], ("monitor_reading", "ratio_regression"))
    return [ff.Floor("attenuation sweep", "server.photons_per_symbol", mu.uncertainty, stat,
                     math.sqrt(max(mu.uncertainty**2 - stat**2, 0.0)), measuring_s,
                     least_time_s(measuring_s, mu.uncertainty, stat))]


def _amplifier(records, meter, symbol_rate_hz) -> list[ff.Floor]:
    return [ff.amplifier_floor(record) for record in records]


def _modulators(records, meter, symbol_rate_hz) -> list[ff.Floor]:
    floors = []
    for record in records:
        key = record.instrument
        if f"{key}.bias_vpi_v" in record.parameters:
            floors.append(ff.bias_transfer_floor(record, key, meter))
        elif f"{key}.vpi_at_awg_v" in record.parameters:
            floors.append(ff.rf_transfer_floor(record, key, symbol_rate_hz))
        elif f"{key}.iq_gain_imbalance" in record.parameters:
            floors.append(ff.iq_imbalance_floor(record, key, meter))
    return floors   # the locks' verifications state no statistical quantity: no floor of their own


def _processor(records, meter, symbol_rate_hz) -> list[ff.Floor]:
    return [ff.processor_floor(record, symbol_rate_hz) for record in records]


FLOORS = {"homodyne": _homodyne, "photons": _photons, "amplifier": _amplifier, "modulators": _modulators,
          "processor": _processor}


def _finite(x: float, fmt: str, width: int) -> str:
    return f"{x:{width}{fmt}}" if x is not None and math.isfinite(x) else f"{'-':>{width}}"


# the plans before this session's cut, measured at 432eb1b with this benchmark (instrument time is the bench's ledger,
# independent of the host): modulators with nine bias-lock sweeps and 31 x 4 bias sweeps
RECORDED_BEFORE = {"modulators": {"round_trips": 233, "instrument_s": 6.295, "plan": "9 bias locks, 31 x 4 sweeps"}}


def _json_safe(row: dict) -> dict:
    """None for what a floor does not define (NaN is no JSON)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _value(records, quantity: str) -> float:
    return next(r.estimate(quantity).value for r in records if quantity in r.parameters)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON line of the rows")
    args = parser.parse_args(argv)
    config = load_config(CONFIG)
    work = Path(tempfile.mkdtemp(prefix="qslab_bench_calibration_cost_"))
    atexit.register(shutil.rmtree, work, True)  # its sessions' files: hundreds of MB a run
    store = RecordStore(work / "calibration")
    start = time.perf_counter()
    with LabStation(config) as station:
        truth = station.benches[0].state.params.server_power_meter   # the bench's meter noise model
        calibrations.ensure(station, store, calibrations.CalibrationOptions.from_config(config), work,
                            calibrations.kind("channel").requires)
    wall_s = time.perf_counter() - start
    meter = ff.MeterNoise(truth.relative_noise, truth.noise_w)
    rows = []
    for kind in calibrations.kind("channel").requires:
        records = [r for r in store.records(kind) if r.conditions.get(COST_KEY)]
        cost = records[0].conditions[COST_KEY]
        floors = FLOORS[kind](records, meter, config.protocol.symbol_rate_hz)
        least = sum(f.least_s for f in floors)
        ratio = cost["instrument_s"] / (least + SETUP_S[kind])
        rows.append({"kind": kind, "round_trips": cost["round_trips"], "instrument_s": cost["instrument_s"],
                     "least_time_s": least, "setup_s": SETUP_S[kind], "ratio": ratio,
                     "verdict": "PASS" if ratio <= GOAL_RATIO else "FAIL",
                     "measurements": [{**_json_safe(f.as_dict()), "value": _value(records, f.quantity)}
                                      for f in floors]})
    if args.json:
        print(json.dumps({"rows": rows, "wall_s": wall_s, "goal_ratio": GOAL_RATIO, "before": RECORDED_BEFORE}))
        return
    scale = (config.bench_table or {}).get("time_scale", 1.0)
    print(f"calibrations of a fresh session on the virtual bench: {wall_s:.1f} s wall (time_scale {scale}); load "
          f"average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'kind':11} {'trips':>5} {'instr. s':>9} {'least s':>9} {'set-up s':>8} {'ratio':>7}  verdict")
    for r in rows:
        print(f"{r['kind']:11} {r['round_trips']:5d} {r['instrument_s']:9.3f} {r['least_time_s']:9.3g} "
              f"{r['setup_s']:8.2f} {r['ratio']:7.2f}  {r['verdict']}")
        for m in r["measurements"]:
            print(f"  {m['measurement']:28} measuring {_finite(m['measuring_s'], '.3g', 9)} s, least "
                  f"{m['least_s']:9.3g} s for {m['quantity']} = {m['value']:.6g} +- {m['stated_u']:.3g} "
                  f"(bound at the plan {_finite(m['bound_u'], '.3g', 0)}, systematic "
                  f"{_finite(m['systematic_u'], '.3g', 0)})")
    for r in rows:
        if r["kind"] in RECORDED_BEFORE:
            before = RECORDED_BEFORE[r["kind"]]
            ratio = before["instrument_s"] / (r["least_time_s"] + r["setup_s"])
            print(f"before (432eb1b) {r['kind']}: {before['round_trips']} trips, {before['instrument_s']:.3f} instr. s, "
                  f"ratio {ratio:.2f} against this run's floor ({before['plan']}) -> now {r['round_trips']} trips, "
                  f"{r['instrument_s']:.3f} s, ratio {r['ratio']:.2f}")
    print(f"goal: instrument s <= {GOAL_RATIO:g} x (least time + set-up)")


if __name__ == "__main__":
    main()
