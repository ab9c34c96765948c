"""The one make-safe wrapper of the calibration procedures (calibration/safety.py)."""

import pytest

from qslab.calibration.result import CalibrationError
from qslab.calibration.safety import guarded, make_safe


def _steps(log, failing=()):
    def step(name):
        def action():
            log.append(name)
            if name in failing:
                raise OSError(f"{name} timed out")
        return action, name
    return [step("laser off"), step("shutter closed"), step("amplifier off")]


def test_every_step_runs_and_failures_are_named():
    log = []
    assert make_safe(_steps(log, failing={"laser off"})) == ["laser off: laser off timed out"]
    assert log == ["laser off", "shutter closed", "amplifier off"]


def test_success_makes_safe_afterwards_unless_told_not_to():
    log = []
    assert guarded("photons", lambda: 42, _steps(log)) == 42
    assert log == ["laser off", "shutter closed", "amplifier off"]
    log.clear()
    assert guarded("modulators", lambda: 7, _steps(log), after_success=False) == 7
    assert log == []


def test_an_instrument_error_becomes_one_calibration_error_naming_what_stayed_unsafe():
    log = []

    def body():
        raise TimeoutError("VI_ERROR_TMO")

    with pytest.raises(CalibrationError, match=r"'amplifier' failed: TimeoutError: VI_ERROR_TMO; making safe "
                                               r"also failed: \['shutter closed: shutter closed timed out'\]") as info:
        guarded("amplifier", body, _steps(log, failing={"shutter closed"}), after_success=False)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert log == ["laser off", "shutter closed", "amplifier off"]


def test_a_calibration_error_passes_through_and_an_interrupt_still_makes_safe():
    failure = CalibrationError("homodyne", "clipped")
    log = []

    def fails():
        raise failure

    with pytest.raises(CalibrationError) as info:
        guarded("homodyne", fails, _steps(log))
    assert info.value is failure and len(log) == 3

    def interrupted():
        raise KeyboardInterrupt

    log.clear()
    with pytest.raises(KeyboardInterrupt):
        guarded("homodyne", interrupted, _steps(log))
    assert log == ["laser off", "shutter closed", "amplifier off"]
