"""A station with real instruments must declare what mu rests on (issue 15, "From the bench to a real lab").

The fixed attenuation and the fibre transmittances are measured by no procedure; their code defaults describe
the virtual bench. A config with any non-bench address and any of them undeclared is refused, naming the key.
"""

from __future__ import annotations

import copy
import tomllib

import pytest
from station_fixtures import HARDWARE_CONFIG, bench_data

from qslab.sequences.config import DECLARED_FOR_HARDWARE, ConfigError, load_config, parse_config

_HARDWARE = tomllib.loads(HARDWARE_CONFIG.read_text())


def test_the_hardware_example_declares_every_value():
    config = load_config(HARDWARE_CONFIG)
    assert config.calibration.fixed_attenuation_db == 20.0
    assert set(DECLARED_FOR_HARDWARE) <= set(_HARDWARE["calibration"])


@pytest.mark.parametrize("key", DECLARED_FOR_HARDWARE)
def test_a_hardware_station_missing_a_declared_value_is_refused_naming_it(key):
    data = copy.deepcopy(_HARDWARE)
    del data["calibration"][key]
    with pytest.raises(ConfigError) as refused:
        parse_config(data, "hardware (test)")
    assert refused.value.key == f"calibration.{key}"
    assert str(refused.value).startswith(f"hardware (test): missing calibration.{key}: expected a declared value")
    assert "instruments.laser.address is 'TCPIP::192.168.1.20::5025::SOCKET'" in str(refused.value)


def test_without_a_calibration_table_the_first_key_is_named():
    data = copy.deepcopy(_HARDWARE)
    del data["calibration"]
    with pytest.raises(ConfigError, match=r"missing calibration\.fixed_attenuation_db"):
        parse_config(data, "hardware (test)")


def test_one_real_instrument_on_a_bench_station_is_enough_to_require_them():
    data = bench_data()
    del data["calibration"]
    parse_config(copy.deepcopy(data), "bench (test)")  # all on the bench: the bench's own values apply
    data["instruments"]["power_meter"]["address"] = "USB0::0x2A8D::0x3F18::MY00000001::INSTR"
    with pytest.raises(ConfigError, match=r"missing calibration\.fixed_attenuation_db.*instruments\.power_meter\.address"):
        parse_config(data, "bench + one real meter (test)")
