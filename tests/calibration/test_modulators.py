"""Modulator calibration: the robust MZM fit on synthetic data, then every procedure on a virtual bench
whose true Vpi, bias phase, extinction ratio and IQ imbalance differ from the defaults (estimates within
3 sigma of the truth, Vpi to about 1 %), and bad data (laser off, noise only, a clipped capture) giving
one CalibrationError with the instruments left safe.

The truth is read from the bench (``BenchState.truth``) in these tests only; the procedures see roles.
"""

from __future__ import annotations

import json
import math
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from qcodes.instrument import Instrument
from scipy.optimize import OptimizeWarning, curve_fit

from qslab.calibration import modulator_fits as fits
from qslab.calibration import modulators as m
from qslab.calibration.result import CalibrationError, CalibrationResult, Estimate
from qslab.instruments.optical import ModulatorCalibration
from qslab.sequences.station import LabStation

ROOT = Path(__file__).resolve().parents[2]
Z = 3.0  # estimates must lie within Z of their stated uncertainties

# non-default truths (bench_defaults.toml: iq vpi 3.5, bias_vpi 6, phase 1.1, ER 25, g 0.03, delta 0.02;
# carver vpi 3, bias_vpi 5, phase 0.4, ER 30)
TRUTH = {
    "server_iq": {"vpi_v": 3.8, "bias_vpi_v": 5.5, "bias_phase_rad": -0.6, "extinction_ratio_db": 22.0,
                  "iq_gain_imbalance": 0.05, "iq_phase_error_rad": -0.03},
    "server_carver": {"vpi_v": 2.7, "bias_vpi_v": 4.5, "bias_phase_rad": 1.3, "extinction_ratio_db": 27.0},
}
IQ_DRIVER_GAIN, CARVER_DRIVER_GAIN = 7.0, 6.0  # the RF drivers' datasheet gains (V/V)


def within(estimate, truth: float, k: float = Z) -> bool:
    return abs(estimate.value - truth) <= k * estimate.uncertainty


# --- the fit on synthetic data (docs/PHYSICS.md 15 self-test) ----------------------------------------

SELF_TEST = {"power_scale_w": 1e-3, "vpi_v": 3.5, "phase_rad": 0.7, "extinction_ratio_db": 25.0}


def _self_test_curve(seed: int = 1):
    volts = np.linspace(-8.0, 8.0, 401)
    clean = fits.mzm_power_w(volts, *SELF_TEST.values())
    return volts, clean * (1.0 + 0.002 * np.random.default_rng(seed).standard_normal(volts.size))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_self_test_values_are_recovered_within_three_sigma(seed):
    fit = fits.fit_mzm_transfer(*_self_test_curve(seed))
    values = [fit.power_scale_w, fit.vpi_v, fit.phase_rad, fit.extinction_ratio_db]
    for value, sigma, (name, truth) in zip(values, fit.sigmas, SELF_TEST.items()):
        assert abs(value - truth) <= Z * sigma, (name, value, sigma)
    assert fit.sigmas[1] / fit.vpi_v < 1e-3
    # the derived bias points of the note: V_null = 2.7202 V, V_quad (theta = +pi/2) = 0.9702 V
    assert fit.bias_point_v("null").value == pytest.approx(2.7202, abs=1e-3)
    assert fit.bias_point_v("quadrature-").value == pytest.approx(0.9702, abs=1e-3)


def test_the_vpi_grid_avoids_the_local_minimum_a_naive_fit_falls_into():
    volts, power = _self_test_curve()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        naive, _ = curve_fit(fits.mzm_power_w, volts, power, p0=[1e-3, 2.0, 0.0, 20.0], maxfev=20000)
    assert abs(naive[1] - 3.5) > 0.3  # the trap is real: a default start lands in a wrong valley
    fit = fits.fit_mzm_transfer(volts, power)
    assert abs(fit.vpi_v - 3.5) <= Z * fit.sigmas[1]


def test_noise_where_a_signal_should_be_is_one_clear_error():
    volts = np.linspace(-8, 8, 201)
    noise = 1e-6 * (1 + 0.01 * np.random.default_rng(4).standard_normal(volts.size))
    with pytest.raises(CalibrationError, match="noise where a signal should be") as error:
        fits.fit_mzm_transfer(volts, noise, "server_iq bias transfer")
    assert error.value.calibration == "server_iq bias transfer"


def test_a_fit_that_does_not_converge_is_one_clear_error(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: Number of calls to function has reached maxfev")

    monkeypatch.setattr(fits, "curve_fit", fail)
    with pytest.raises(CalibrationError, match="did not converge") as error:
        fits.fit_mzm_transfer(*_self_test_curve(), "server_carver bias transfer")
    assert error.value.calibration == "server_carver bias transfer"


def test_a_sweep_shorter_than_two_vpi_is_refused():
    volts = np.linspace(-2, 2, 201)
    with pytest.raises(CalibrationError, match="widen"):
        fits.fit_mzm_transfer(volts, fits.mzm_power_w(volts, 1e-3, 3.5, 0.7, 25.0))


def test_the_field_fit_recovers_vpi_from_half_a_period():
    rng = np.random.default_rng(5)
    volts = np.linspace(-0.5, 0.5, 128)
    sigma = np.full(volts.size, 2e-4)
    y = fits.field_quadrature_v(volts, 1e-3, 0.02, 0.54, 0.1) + sigma * rng.standard_normal(volts.size)
    fit = fits.fit_field_transfer(volts, y, sigma)
    assert abs(fit.vpi_v - 0.54) <= Z * fit.sigmas[2] and fit.sigmas[2] / fit.vpi_v < 0.01


def test_arcsine_predistortion_table_inverts_the_null_biased_field():
    table = fits.predistortion_table(ModulatorCalibration(vpi_v=3.5, driver_gain=7.0), levels=5)
    np.testing.assert_allclose(table["field"], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(table["modulator_v"][3], 1.166667, atol=1e-6)  # docs/PHYSICS.md 15
    np.testing.assert_allclose(table["modulator_v"][4], 3.5)
    np.testing.assert_allclose(table["field_check"], table["field"], atol=1e-12)


# --- on the bench, with non-default truths ------------------------------------------------------------

def write_config(path: Path, bench_changes: dict) -> Path:
    """lab_config.toml with [bench] tables changed, written as TOML (tests only)."""
    data = tomllib.loads((ROOT / "lab_config.toml").read_text())
    for table, values in bench_changes.items():
        data["bench"].setdefault(table, {}).update(values)
    lines: list[str] = []

    def emit(table: dict, prefix: str) -> None:
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict))
        for key, value in table.items():
            if isinstance(value, dict):
                emit(value, f"{prefix}.{key}" if prefix else key)

    emit(data, "")
    path.write_text("\n".join(lines) + "\n")
    return path


class Roles:
    """The roles the procedures take, from a station on the changed bench."""

    def __init__(self, station: LabStation):
        self.station, self.state = station, station.bench.state
        self.laser, self.power_meter = station.laser(), station.power_meter()
        self.iq = station.iq_modulator(ModulatorCalibration(3.5, IQ_DRIVER_GAIN))
        self.carver = station.pulse_carver(ModulatorCalibration(3.0, CARVER_DRIVER_GAIN))
        self.attenuator, self.amplifier = station.attenuator(), station.amplifier()
        self.receiver = station.receiver("client_receiver")

    def light_on(self, homodyne: bool = False) -> None:
        self.laser.set_power_dbm(13.0)
        self.laser.on()
        self.power_meter.set_averaging_time_s(1e-3)
        if homodyne:  # the client receiver sees the X quadrature only through the amplifier (G > 1)
            self.attenuator.set_attenuation_db(m.RF_ATTENUATION_DB)
            self.attenuator.open_shutter()
            self.amplifier.set_gain_db(10 * math.log10(1.3))
            self.amplifier.on()

    def is_safe(self) -> bool:
        awg = self.station.driver("awg")  # the test reads the instrument itself
        return (not self.laser.is_on() and not awg.is_running()
                and not any(getattr(awg, f"ch{n}").output_enabled() for n in (1, 2, 3)))


@pytest.fixture(scope="module")
def bench_roles(tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("bench") / "lab_config.toml", TRUTH)
    with LabStation(config) as station:
        yield Roles(station)
    Instrument.close_all()


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    return tmp_path_factory.mktemp("figures")


def _check_truths(result: CalibrationResult, state, keys) -> None:
    for key in keys:
        estimate = result.parameters[key]
        assert within(estimate, state.truth(key)), (key, estimate, state.truth(key))


@pytest.mark.parametrize("key", ["server_iq", "server_carver"])
def test_bias_transfer_on_the_bench(bench_roles, figures, key, figures_drawn):
    r = bench_roles
    r.light_on()
    modulator, other = (r.iq, r.carver) if key == "server_iq" else (r.carver, r.iq)
    result = m.calibrate_bias_transfer(modulator, r.power_meter, r.laser, key=key, other_modulator=other,
                                       figure_dir=figures)
    assert result.kind == "modulators" and result.instrument == key
    _check_truths(result, r.state, [f"{key}.bias_vpi_v", f"{key}.bias_phase_rad", f"{key}.extinction_ratio_db"])
    vpi = result.parameters[f"{key}.bias_vpi_v"]
    assert vpi.uncertainty / vpi.value < 0.01
    assert Path(result.figure_png).stat().st_size > 10_000
    assert result.raw["power_w"].size == m.DEFAULT_POINTS


@pytest.mark.parametrize("point", ["null", "quadrature+"])
def test_the_lock_lands_on_the_fitted_bias_point(bench_roles, point, figures_drawn):
    r = bench_roles
    r.light_on()
    transfer = m.calibrate_bias_transfer(r.iq, r.power_meter, r.laser, key="server_iq", other_modulator=r.carver)
    locked = m.lock_and_verify(r.iq, r.power_meter, r.laser, transfer, key="server_iq", point=point)
    assert Path(locked.figure_png).exists()
    assert locked.parameters["bias_iq.bias_v"].value == pytest.approx(r.state.truth("bias_iq.bias_v"), abs=1e-3)
    expected = transfer.parameters[f"server_iq.{point.replace('+', '_plus')}_bias_v"].value
    vpi = transfer.parameters["server_iq.bias_vpi_v"].value
    assert abs((r.state.truth("bias_iq.bias_v") - expected + vpi) % (2 * vpi) - vpi) < 0.05 * vpi / math.pi


@pytest.mark.parametrize("key", ["server_iq", "server_carver"])
def test_rf_vpi_from_one_ramp_and_one_capture(bench_roles, figures, key):
    r = bench_roles
    r.light_on(homodyne=True)
    r.carver.lock_bias("peak")
    if key == "server_iq":
        r.iq.lock_bias()   # children at null: the I child's field is real, in the X quadrature
        result = m.calibrate_rf_transfer(r.iq, r.receiver, r.laser, key=key, driver_gain=IQ_DRIVER_GAIN,
                                         figure_dir=figures)
    else:
        r.iq.lock_bias("peak")
        result = m.calibrate_rf_transfer(r.carver, r.receiver, r.laser, key=key, driver_gain=CARVER_DRIVER_GAIN,
                                         figure_dir=figures)
    vpi = result.parameters[f"{key}.vpi_v"]
    assert within(vpi, r.state.truth(f"{key}.vpi_v")), (vpi, r.state.truth(f"{key}.vpi_v"))
    at_awg = result.parameters[f"{key}.vpi_at_awg_v"]   # what is measured; vpi_v adds the datasheet gain's tolerance
    assert within(at_awg, r.state.truth(f"{key}.vpi_v") / r.state.truth(f"{key}.driver_gain"))
    assert at_awg.uncertainty / at_awg.value <= 0.012 < vpi.uncertainty / vpi.value
    assert 0.5 < result.conditions["reduced_chi2"] < 2.0
    assert not r.iq.awg.is_running()  # left stopped, outputs off
    calibration = fits.modulator_calibration(vpi, IQ_DRIVER_GAIN if key == "server_iq" else CARVER_DRIVER_GAIN)
    table = fits.predistortion_table(calibration)
    assert table["modulator_v"][-1] == pytest.approx(vpi.value)


def test_iq_imbalance_from_static_drives_on_the_meter(bench_roles, figures, figures_drawn):
    r = bench_roles
    r.light_on(homodyne=True)
    r.carver.lock_bias("peak")
    dc = m.calibrate_bias_transfer(r.iq, r.power_meter, r.laser, key="server_iq", other_modulator=r.carver)
    r.iq.lock_bias()
    rf = m.calibrate_rf_transfer(r.iq, r.receiver, r.laser, key="server_iq", driver_gain=IQ_DRIVER_GAIN)
    result = m.calibrate_iq_imbalance(r.iq, r.power_meter, r.laser, vpi_at_awg=rf.parameters["server_iq.vpi_at_awg_v"],
                                      extinction_ratio_db=dc.parameters["server_iq.extinction_ratio_db"],
                                      figure_dir=figures)
    _check_truths(result, r.state, ["server_iq.iq_gain_imbalance", "server_iq.iq_phase_error_rad"])
    g = result.parameters["server_iq.iq_gain_imbalance"]
    assert g.uncertainty < 0.005  # useful: g = 0.05 is resolved to better than 10 %
    assert not r.iq.awg.is_running() and Path(result.figure_png).exists()
    calibration = fits.modulator_calibration(rf.parameters["server_iq.vpi_v"], IQ_DRIVER_GAIN, iq_gain_imbalance=g.value,
                                          iq_phase_error_rad=result.parameters["server_iq.iq_phase_error_rad"].value)
    assert calibration.iq_gain_imbalance == pytest.approx(0.05, abs=3 * g.uncertainty)


def test_calibrate_station_runs_every_procedure_and_leaves_the_bench_dark(bench_roles, figures, figures_drawn):
    r = bench_roles
    results = m.calibrate_station(r.station, figures)
    keys = {key for result in results for key in result.parameters}
    for name in ("server_iq.vpi_v", "server_iq.bias_vpi_v", "server_iq.bias_phase_rad", "server_iq.extinction_ratio_db",
                 "server_iq.iq_gain_imbalance", "server_iq.iq_phase_error_rad", "server_carver.vpi_v",
                 "server_carver.bias_vpi_v", "server_carver.bias_phase_rad", "server_carver.extinction_ratio_db"):
        assert name in keys
        estimate = next(res.parameters[name] for res in results if name in res.parameters)
        assert within(estimate, r.state.truth(name)), (name, estimate, r.state.truth(name))
    assert all(Path(result.figure_png).exists() for result in results)
    assert r.is_safe() and not r.state.amplifier.enabled and not r.state.server_attenuator.shutter_open


@pytest.fixture
def messages(monkeypatch):
    """Every message the procedures send, per instrument address or MBX name (as the benchmark counts them)."""
    import pyvisa.resources

    from qslab.instruments.drivers.thorlabs_mbx import ThorlabsMBX

    sent: list[tuple[str, bytes | str]] = []
    visa_write, mbx_exchange = pyvisa.resources.MessageBasedResource.write_raw, ThorlabsMBX._exchange

    def write_raw(resource, message):
        sent.append((resource.resource_name, message))
        return visa_write(resource, message)

    def exchange(driver, command):
        sent.append((driver.name, command))
        return mbx_exchange(driver, command)

    monkeypatch.setattr(pyvisa.resources.MessageBasedResource, "write_raw", write_raw)
    monkeypatch.setattr(ThorlabsMBX, "_exchange", exchange)
    return sent


def test_round_trips_per_procedure_are_counted_and_within_the_goals(bench_roles, messages):
    r = bench_roles
    r.light_on(homodyne=True)
    messages.clear()
    transfer = m.calibrate_bias_transfer(r.iq, r.power_meter, r.laser, key="server_iq", other_modulator=r.carver)
    # 21 points: one MBX exchange + one meter message of 7 readings each, + mode, AWG off, other at peak, null;
    # the polls of a bias lock (as many as its acquisition takes) are not round trips of the procedure
    waits = [message for message in messages if message[1] == "MZM:SETPOINT?"]
    assert waits and len(messages) - len(waits) == transfer.round_trips == 2 * m.DEFAULT_POINTS + 4
    compound = [text for _, text in messages if isinstance(text, bytes) and b"READ1:POW?" in text]
    assert [text.count(b"READ1:POW?") for text in compound] == [m.DEFAULT_READINGS_PER_POINT] * m.DEFAULT_POINTS
    r.carver.lock_bias("peak")
    r.iq.lock_bias()
    messages.clear()
    m.calibrate_rf_transfer(r.iq, r.receiver, r.laser, key="server_iq", driver_gain=IQ_DRIVER_GAIN)
    assert len(messages) <= 10   # the goal (6: laser, 3 AWG, 2 digitizer)
    messages.clear()
    m.calibrate_iq_imbalance(r.iq, r.power_meter, r.laser, vpi_at_awg=Estimate(0.54, 0.005, "V"),
                             extinction_ratio_db=transfer.parameters["server_iq.extinction_ratio_db"])
    assert len([message for message in messages if message[1] != "MZM:SETPOINT?"]) <= 4 + 2 * len(fits.IQ_CONFIGS)


def test_calibrate_station_sweeps_three_bias_locks_and_holds_fitted_points_between(bench_roles, figures, messages):
    # the carver at peak before the first sweep, then each at null (verified); every other bias point is a fitted
    # one held manually: the kind's lock sweeps cost 3 x acquisition_time_s of instrument time, not 9
    r = bench_roles
    clock = r.state.clock
    before_s = clock.charged_s()
    m.calibrate_station(r.station, figures)
    locks = [text for _, text in messages if isinstance(text, str) and text.startswith("MZM:MODE: ")
             and text.split()[-1] in ("1", "2")]
    assert locks == ["MZM:MODE: 1", "MZM:MODE: 2", "MZM:MODE: 2"], locks
    lock_s = r.state.params.bias_lock.acquisition_time_s
    assert clock.charged_s() - before_s < 4 * lock_s + 2.5   # 3 locks + laser and amplifier on + readings


def test_the_short_sweep_is_honest_over_repeats(bench_roles):
    # 21 points x 7 readings instead of 121 x 1: every estimate of four runs within 3 sigma, V_pi to 1 %
    r = bench_roles
    r.light_on()
    names = ["server_iq.bias_vpi_v", "server_iq.bias_phase_rad", "server_iq.extinction_ratio_db"]
    z_scores = []
    for _ in range(4):
        result = m.calibrate_bias_transfer(r.iq, r.power_meter, r.laser, key="server_iq", other_modulator=r.carver)
        _check_truths(result, r.state, names)
        z_scores += [(result.parameters[n].value - r.state.truth(n)) / result.parameters[n].uncertainty for n in names]
        assert result.parameters[names[0]].uncertainty / result.parameters[names[0]].value < 0.01
    assert float(np.sqrt(np.mean(np.square(z_scores)))) < 2.0   # the sigmas are not far too small


def test_the_meter_reads_several_readings_in_one_message(bench_roles, messages):
    r = bench_roles
    r.light_on()
    messages.clear()
    readings = r.power_meter.read_powers_w(5)
    assert len(messages) == 1 and len(readings) == 5 and len(set(readings)) == 5   # five new readings, not one
    assert np.std(readings) < 0.01 * np.mean(readings)


# --- bad data: one clear error, instruments safe -----------------------------------------------------------

def test_laser_off_fails_the_bias_transfer_and_leaves_things_safe(bench_roles):
    r = bench_roles
    r.laser.off()
    # the other modulator's loop cannot lock at its peak in the dark: the first thing that fails, by name
    with pytest.raises(CalibrationError, match=r"pulse_carver: bias_carver: the bias loop did not lock at peak.*"
                                               r"tap reads 0 W: is the light on") as error:
        m.calibrate_bias_transfer(r.iq, r.power_meter, r.laser, key="server_iq", other_modulator=r.carver)
    assert error.value.calibration == "server_iq bias transfer"
    assert r.is_safe()


def test_laser_off_fails_the_rf_transfer(bench_roles):
    r = bench_roles
    r.laser.off()
    with pytest.raises(CalibrationError, match="laser is off") as error:
        m.calibrate_rf_transfer(r.iq, r.receiver, r.laser, key="server_iq", driver_gain=IQ_DRIVER_GAIN)
    assert error.value.calibration == "server_iq RF transfer"
    assert r.is_safe()


def test_noise_only_capture_is_an_error_and_leaves_things_safe(bench_roles):
    r = bench_roles
    r.light_on(homodyne=True)
    r.attenuator.close_shutter()   # LO present, no signal: the capture is shot noise only
    with pytest.raises(CalibrationError, match="noise where a signal should be"):
        m.calibrate_rf_transfer(r.iq, r.receiver, r.laser, key="server_iq", driver_gain=IQ_DRIVER_GAIN,
                                extra_safe=(r.amplifier,))
    assert r.is_safe() and not r.state.amplifier.enabled


def test_a_clipped_capture_is_an_error(bench_roles):
    r = bench_roles
    r.light_on(homodyne=True)
    r.iq.lock_bias()
    with pytest.raises(CalibrationError, match="clipped"):
        m.calibrate_rf_transfer(r.iq, r.receiver, r.laser, key="server_iq", driver_gain=IQ_DRIVER_GAIN,
                                range_v=0.01)
    assert r.is_safe()
