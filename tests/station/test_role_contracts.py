"""The roles are the contract: every registered adapter satisfies its Protocol (by name, and by each
method's parameters), and the modulator procedures run against small fakes that implement the Protocols
and nothing else (what a second instrument family would have to provide)."""

from __future__ import annotations

import inspect
import math
from unittest import mock

import numpy as np
import pytest

from qslab.analysis.modulator_transfer import mzm_power
from qslab.calibration import modulators as procedures
from qslab.instruments.optical import AwgAmplitudeModulator, Limit, ModulatorCalibration
from qslab.instruments.optical.bias_controller import (LOCK_POLL_FRACTION, LOCK_POLL_MIN_S, LOCK_POLL_S,
                                                      MbxBiasController)
from qslab.instruments.optical.faults import DriverSettings
from qslab.instruments.optical.homodyne_receiver import DetectorSpec, DigitizerHomodyneReceiver, ReceiverDigitizer
from qslab.instruments.optical.roles import (ROLE_OF_CATEGORY, Answered, Awg, BiasController, Digitizer, Laser,
                                             PowerMeter, SettingsWatch)
from qslab.sequences.config import DRIVERS
from qslab.sequences.station import adapter_class

LIMIT = Limit(1.0, "Vpp", "instruments.awg.limits.amplitude_max_vpp")
OPTIONS = {  # what the station passes each category's adapter besides the driver and its unit
    "laser": {"power_max": Limit(13.0, "dBm", "k")},
    "attenuator": {"attenuation_min": Limit(0.0, "dB", "k")},
    "power_meter": {},
    "amplifier": {"gain_max": Limit(20.0, "dB", "k")},
    "awg": {"amplitude_max": LIMIT, "name": "awg"},
    "bias_controller": {},
    "digitizer": {},
}
UNITS = {"awg": [1, 2]}


def _protocol_members(protocol: type) -> dict[str, inspect.Signature | None]:
    """The Protocol's methods (with their signatures) and data attributes (None), its bases' included."""
    members: dict[str, inspect.Signature | None] = {}
    for cls in reversed(protocol.__mro__):
        if cls is object or cls.__module__ == "typing":
            continue
        for name in getattr(cls, "__annotations__", {}):
            members.setdefault(name, None)
        for name, value in vars(cls).items():
            if callable(value) and not name.startswith("_"):
                members[name] = inspect.signature(value)
    return members


def _check_structure(adapter: object, protocol: type) -> list[str]:
    """Every method the Protocol names exists on ``adapter`` and accepts the Protocol's parameters by name."""
    problems = []
    for name, wanted in _protocol_members(protocol).items():
        if not hasattr(adapter, name):
            problems.append(f"no {name}")
            continue
        if wanted is None:
            continue
        have = inspect.signature(getattr(adapter, name)).parameters
        for parameter in list(wanted.parameters.values())[1:]:  # not self
            if parameter.name not in have and not any(p.kind == p.VAR_KEYWORD for p in have.values()):
                problems.append(f"{name}() lacks parameter {parameter.name!r}")
    return problems


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_every_registered_adapter_satisfies_its_role(driver):
    spec = DRIVERS[driver]
    protocol = ROLE_OF_CATEGORY[spec.category]
    adapter = adapter_class(spec).from_driver(mock.MagicMock(name=driver), UNITS.get(spec.category, 1),
                                              **OPTIONS[spec.category])
    assert isinstance(adapter, protocol), f"{spec.adapter} is no {protocol.__name__}"
    assert not _check_structure(adapter, protocol), _check_structure(adapter, protocol)


def test_the_structure_check_fails_on_a_missing_verb():
    class NoWait:
        name = "half"

        def configure(self, *, points=None, sample_rate_hz=None): ...

    assert "no wait" in _check_structure(NoWait(), Digitizer)
    assert not isinstance(NoWait(), Digitizer)


def test_driver_settings_are_a_settings_watch():
    assert isinstance(DriverSettings(mock.MagicMock(name="laser"), name="laser"), SettingsWatch)


# --- fakes implementing only the Protocols ----------------------------------------------------------------

class FakeLaser:
    """roles.Laser, nothing more."""

    power_max_dbm = 13.0

    def __init__(self):
        self.lit = True

    def set_power_dbm(self, power_dbm): ...
    def power_dbm(self): return 13.0
    def set_wavelength_m(self, wavelength_m): ...
    def on(self): self.lit = True
    def off(self): self.lit = False
    def is_on(self): return self.lit


class FakeAwg:
    """roles.Awg, nothing more: records what the procedure asked of it."""

    name, channels, amplitude_max = "fake_awg", (1,), LIMIT

    def __init__(self):
        self.calls: list[str] = []

    def check_amplitude_vpp(self, amplitude_vpp): LIMIT.check_at_most(self.name, "drive amplitude", amplitude_vpp)
    def configure(self, *, rate_divider=None): self.calls.append("configure")
    def samples_per_symbol(self, symbol_rate_hz): return 16
    def min_segment_samples(self): return 1280
    def amplitude_for_volts_vpp(self, volts): return max(2.0 * float(np.max(np.abs(volts))), 0.075)
    def load(self, segments, amplitudes_vpp, *, select=None, run=False, partial=True): self.calls.append("load")
    def select(self, segment_id): self.calls.append("select")
    def play_segment(self, segment_id, *others): self.calls.append("play_segment")
    def switch(self, changes): self.calls.append("switch")
    def run(self): self.calls.append("run")
    def stop(self): self.calls.append("stop")
    def run_sent(self): return self._done("run")
    def stop_sent(self): return self._done("stop")
    def play_segment_sent(self, segment_id, *others): return self._done("play_segment")
    def outputs_off(self): self.calls.append("outputs_off")
    def stop_and_outputs_off(self): self.calls.append("stop_and_outputs_off")
    def stop_and_rate(self, symbol_rate_hz, outputs_off=()): return 16
    def subset(self, channels): return self

    def _done(self, verb):
        self.calls.append(verb)
        return Answered()


class FakeMzm:
    """One MZM's truth (analysis.modulator_transfer) behind a one-loop bias controller and a meter."""

    def __init__(self, vpi_v=5.0, phase_rad=0.8, er_db=24.0, power_w=1e-3, noise=1e-3, seed=3):
        self.vpi_v, self.phase_rad, self.er_db, self.power_w = vpi_v, phase_rad, er_db, power_w
        self.noise, self.rng, self.bias_v = noise, np.random.default_rng(seed), 0.0

    def light_w(self) -> float:
        clean = self.power_w * mzm_power(math.pi * self.bias_v / self.vpi_v + self.phase_rad, self.er_db)
        return float(clean * (1.0 + self.noise * self.rng.standard_normal()))


class FakeBias:
    """roles.BiasController, nothing more: a lock puts the truth's arm phase at the point (mod 2 pi)."""

    name = "fake_bias"
    TARGETS = {"peak": 0.0, "null": math.pi, "quadrature+": -0.5 * math.pi, "quadrature-": 0.5 * math.pi}

    def __init__(self, mzm: FakeMzm):
        self.mzm, self.manual_v, self.mode = mzm, 0.0, "manual"

    def lock(self, point):
        offset = (self.TARGETS[point] - self.mzm.phase_rad + math.pi) % (2 * math.pi) - math.pi
        self.mode, self.mzm.bias_v = point, round(offset * self.mzm.vpi_v / math.pi, 3)
    def wait_locked(self, timeout_s): ...
    def set_point_v(self, bias_v):
        self.manual_v = bias_v
        if self.mode == "manual":
            self.mzm.bias_v = bias_v
    def hold(self):
        self.mode, self.mzm.bias_v = "manual", self.manual_v
    def bias_v(self): return self.mzm.bias_v


class FakeMeter:
    """roles.PowerMeter, nothing more."""

    def __init__(self, mzm: FakeMzm):
        self.mzm = mzm

    def read_power_w(self): return self.mzm.light_w()
    def read_powers_w(self, count): return [self.mzm.light_w() for _ in range(count)]
    def set_wavelength_m(self, wavelength_m): ...


def test_bias_transfer_and_lock_run_against_protocol_fakes(tmp_path):
    truth = FakeMzm()
    laser, awg, bias, meter = FakeLaser(), FakeAwg(), FakeBias(truth), FakeMeter(truth)
    for fake, protocol in ((laser, Laser), (awg, Awg), (bias, BiasController), (meter, PowerMeter)):
        assert isinstance(fake, protocol) and not _check_structure(fake, protocol)
    carver = AwgAmplitudeModulator(awg, ModulatorCalibration(3.0), bias, name="carver")
    transfer = procedures.calibrate_bias_transfer(carver, meter, laser, key="fake", figure_dir=tmp_path)
    vpi = transfer.parameters["fake.bias_vpi_v"]
    assert abs(vpi.value - truth.vpi_v) <= 3 * vpi.uncertainty and vpi.uncertainty < 0.01 * truth.vpi_v
    er = transfer.parameters["fake.extinction_ratio_db"]
    assert abs(er.value - truth.er_db) <= 3 * er.uncertainty
    assert awg.calls[0] == "stop_and_outputs_off" and bias.mode == "manual"
    locked = procedures.lock_and_verify(carver, meter, laser, transfer, key="fake", point="null", figure_dir=tmp_path)
    assert bias.mode == "null" and locked.parameters["fake_bias.bias_v"].value == truth.bias_v


def test_a_failing_procedure_makes_the_fakes_safe(tmp_path):
    truth = FakeMzm(power_w=0.0)  # no light: the sweep is refused
    laser, awg = FakeLaser(), FakeAwg()
    carver = AwgAmplitudeModulator(awg, ModulatorCalibration(3.0), FakeBias(truth), name="carver")
    with pytest.raises(procedures.CalibrationError, match="fake bias transfer"):
        procedures.calibrate_bias_transfer(carver, FakeMeter(truth), laser, key="fake", figure_dir=tmp_path)
    assert not laser.is_on() and awg.calls[-2:] == ["stop", "outputs_off"]


class FakeDigitizer:
    """roles.Digitizer, nothing more: a ramp per channel, and the order of the verbs."""

    name = "fake_digitizer"

    def __init__(self):
        self.calls: list[tuple] = []
        self.points, self.ranges, self.offsets = 0, {}, {}

    def configure(self, *, points=None, sample_rate_hz=None):
        self.calls.append(("configure", points, sample_rate_hz))
        self.points = points or self.points
    def sample_rate_hz(self): return 4e9
    def configure_channel(self, channel, *, range_v=None, offset_v=None):
        self.calls.append(("configure_channel", channel, range_v, offset_v))
        if range_v is not None:
            self.ranges[channel] = range_v
        if offset_v is not None:
            self.offsets[channel] = offset_v
    def range_v(self, channel): return self.ranges[channel]
    def offset_v(self, channel): return self.offsets.get(channel, 0.0)
    def configure_trigger(self, source, level_v, slope="POS"): self.calls.append(("configure_trigger", source))
    def arm(self): self.calls.append(("arm",))
    def trigger(self): self.calls.append(("trigger",))
    def wait(self, timeout_s=None): self.calls.append(("wait",))
    def read(self, channel): return np.full(self.points, float(channel))
    def restore(self): ...


def test_receivers_read_through_any_digitizer_role():
    digitizer = FakeDigitizer()
    assert isinstance(digitizer, Digitizer) and not _check_structure(digitizer, Digitizer)
    spec = DetectorSpec("synthetic", 4e3, 1.6e9, 4e-12)
    receivers = [DigitizerHomodyneReceiver(spec, lo_power_max=Limit(0.01, "W", "k"), lo_fraction=0.1,
                                           digitizer=digitizer, channel=n, name=f"rx{n}") for n in (1, 2)]
    bank = ReceiverDigitizer(digitizer, receivers)
    assert bank.configure(points=8, sample_rate_hz=4e9, ranges_v={"rx1": 0.2, "rx2": 0.4}) == 4e9
    bank.set_offsets({"rx2": 0.05})
    records = bank.acquire()
    assert [c[0] for c in digitizer.calls] == ["configure", "configure_channel", "configure_channel", "arm",
                                               "configure_channel", "trigger", "wait"]
    assert records["rx2"].tolist() == [2.0] * 8 and receivers[1].range_v() == 0.4 and receivers[1].offset_v() == 0.05
    samples = receivers[0].capture_samples_v(16, 4e9, 0.8, 0.1)  # no one-call capture: the five verbs
    assert samples.size == 16 and digitizer.calls[-3:] == [("arm",), ("trigger",), ("wait",)]


def test_mbx_wait_locked_polls_in_proportion_to_the_wait():
    """A loop that takes 3 s (a real MBX's sweep): every wait is at most LOCK_POLL_FRACTION of the time waited so
    far (or the least wait), none longer than LOCK_POLL_S, and the lock is seen within that fraction of its time."""
    driver = mock.MagicMock(name="bias")
    now, waits = [0.0], []

    def sleep(s):
        waits.append((now[0], s))
        now[0] += s

    driver.mzm.is_locked.side_effect = lambda: now[0] >= 3.0
    MbxBiasController(driver, clock=lambda: now[0], sleep=sleep).wait_locked(10.0)
    assert all(s <= max(LOCK_POLL_MIN_S, LOCK_POLL_FRACTION * waited) + 1e-12 for waited, s in waits)
    assert max(s for _, s in waits) == pytest.approx(LOCK_POLL_S)
    assert 3.0 <= now[0] <= 3.0 + LOCK_POLL_S
    assert len(waits) < 3.0 / LOCK_POLL_S + 60  # the short first waits add a few dozen polls, not thousands


def test_mbx_wait_locked_polls_and_times_out():
    driver = mock.MagicMock(name="bias")
    driver.mzm.is_locked.side_effect = [False, False, True]
    now = [0.0]
    controller = MbxBiasController(driver, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    controller.lock("null")
    driver.mzm.bias_mode.assert_called_once_with("null")
    controller.wait_locked(1.0)
    assert now[0] == pytest.approx(2 * LOCK_POLL_MIN_S)  # a fast loop: polled within a ms or so
    driver.mzm.is_locked.side_effect = None
    driver.mzm.is_locked.return_value = False
    with pytest.raises(TimeoutError, match=r"did not lock at .* within 0\.5 s"):
        controller.wait_locked(0.5)
