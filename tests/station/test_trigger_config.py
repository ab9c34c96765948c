"""[trigger]: the cable from the AWG's marker to the digitizer, validated with one error naming the key, checked
against the bench's cabling, and set up on the digitizer by the station (issue 15 item 1)."""

from __future__ import annotations

import pytest
from station_fixtures import bench_config, bench_data

from qslab.sequences.config import ConfigError, parse_config


def test_both_example_configs_declare_the_trigger():
    config = bench_config()
    assert (config.trigger.awg, config.trigger.digitizer, config.trigger.digitizer_input) == ("awg", "digitizer", "AUX")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("trigger.awg", "laser", "trigger.awg = 'laser': expected the name of an [instruments] table with an awg driver"),
    ("trigger.digitizer", "awg", "trigger.digitizer = 'awg': expected the name of an [instruments] table with a "
                                 "digitizer driver"),
    ("trigger.digitizer_input", "EXT", "trigger.digitizer_input = 'EXT': expected AUX or CHAN1..CHAN4"),
    ("trigger.digitizer_input", "CHAN2", "trigger.digitizer_input = 'CHAN2': expected AUX or a channel no receiver "
                                         "uses (roles.server_receiver.channel = 2)"),
    ("trigger.level_v", 0.7, "trigger.level_v = 0.7: expected a level between the marker's levels"),
    ("trigger.slope", "NEG", "trigger.slope = 'NEG': expected POS"),
    ("trigger.digitizer_input", "CHAN3", "trigger.digitizer_input = 'CHAN3': expected 'AUX', as the bench is cabled "
                                         "(bench.trigger.digitizer_input)"),
])
def test_a_bad_trigger_key_is_one_error_naming_it(key, value, message):
    with pytest.raises(ConfigError) as error:
        bench_config(**{key: value})
    assert message in str(error.value)


def test_a_station_without_the_trigger_is_refused():
    data = bench_data()
    del data["trigger"]
    with pytest.raises(ConfigError, match=r"missing trigger: expected a \[trigger\] table"):
        parse_config(data, "test")


def test_the_station_sets_the_trigger_up_when_it_builds_the_digitizer_role(station):
    station.digitizer("digitizer")
    emulator = station.bench.instruments["digitizer"].emulator
    assert (emulator.trigger_mode, emulator.edge_source, emulator.trigger_sweep, emulator.edge_slope) == (
        "EDGE", "AUX", "TRIG", "POS")
    assert emulator.trigger_levels["AUX"] == pytest.approx(0.25)
