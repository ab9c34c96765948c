"""The calibration library's one table of kinds, and who reads it: the calibrate command, the session, the
station's record loading; the session imports procedures from the library, never from the CLI layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from qslab.calibration.records import RecordStore
from qslab.calibration.result import CalibrationResult, Estimate
from qslab.sequences import calibrations, session
from qslab.sequences.calibrations import KIND_NAMES, KINDS, CalibrationOptions, CalibrationRefused
from qslab.sequences.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_every_prerequisite_runs_earlier_in_the_table():
    for index, kind in enumerate(KINDS):
        assert set(kind.requires) <= set(KIND_NAMES[:index]), kind.name
        assert kind.measures and kind.records and kind.bench_keys


def test_the_session_needs_what_the_channel_needs():
    """The session measures the channel on its own pilots: it needs exactly the channel's prerequisites."""
    assert session.CALIBRATIONS == calibrations.kind("channel").requires
    assert set(KIND_NAMES) - set(session.CALIBRATIONS) == {"channel"}


def test_the_calibrate_command_offers_the_table_in_its_order(capsys):
    from qslab.sequences import cli

    with pytest.raises(SystemExit):
        cli.main(["calibrate", "--help"])
    assert "{" + ",".join(KIND_NAMES) + ",all}" in capsys.readouterr().out


def test_a_missing_prerequisite_record_is_named_first_in_table_order(tmp_path):
    store = RecordStore(tmp_path)
    calibrations.check_prerequisites(store, "homodyne")  # nothing required
    with pytest.raises(CalibrationRefused, match="calibration 'processor' cannot run: no 'homodyne' calibration of "
                                                 "client_receiver with client_receiver.shot_noise_variance_v2"):
        calibrations.check_prerequisites(store, "processor")
    for instrument in ("client_receiver", "server_receiver"):
        store.write(CalibrationResult("homodyne", instrument, {f"{instrument}.shot_noise_variance_v2":
                                                               Estimate(1e-3, 1e-6, "V^2")}))
    calibrations.check_prerequisites(store, "amplifier")
    with pytest.raises(CalibrationRefused, match="no 'photons' calibration of server_output"):
        calibrations.check_prerequisites(store, "processor")
    assert list(calibrations.missing_records(store, KIND_NAMES)) == ["photons", "amplifier", "modulators",
                                                                      "processor", "channel"]


def test_options_come_from_the_config_unless_given():
    config = load_config(ROOT / "lab_config.toml")
    c = config.calibration
    options = CalibrationOptions.from_config(config)
    assert options == CalibrationOptions(c.fixed_attenuation_db, c.fixed_attenuation_uncertainty_db,
                                         c.output_meter_channel, calibrations.HOMODYNE_POINTS)
    given = CalibrationOptions.from_config(config, output_meter_channel=3, fixed_attenuation_db=None)
    assert given.output_meter_channel == 3 and given.fixed_attenuation_db == c.fixed_attenuation_db
    with pytest.raises(AttributeError):  # frozen: a procedure cannot change what the caller passed
        options.output_meter_channel = 1


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["session.py", "calibrations.py", "station_calibration.py",
                                    *sorted(f"protocol/{path.name}" for path in (ROOT / "sequences" / "protocol").glob("*.py"))])
def test_the_library_imports_nothing_from_the_command_layer(module):
    imported = _imported_modules(ROOT / "sequences" / module)
    assert not {name for name in imported if name.startswith("qslab.sequences.commands")}, module
