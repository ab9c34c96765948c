"""lab_config.toml: both example files load; any bad key, type, range or missing piece is ONE ConfigError
naming the key path (hypothesis mutates the valid config), never a traceback of another kind."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qslab.sequences.config import (DRIVERS, ConfigError, Number, ProtocolConfig, Roles, StationSettings, load_config,
                              loads_config, parse_config)
from station_fixtures import BENCH_CONFIG, HARDWARE_CONFIG, bench_config, bench_data

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_both_example_files_load_the_same_station():
    bench, hardware = load_config(BENCH_CONFIG), load_config(HARDWARE_CONFIG)
    assert bench.uses_bench and not hardware.uses_bench and hardware.bench_table is None
    assert list(bench.instruments) == list(hardware.instruments)
    for name, instrument in bench.instruments.items():
        other = hardware.instruments[name]
        assert (instrument.driver, dict(instrument.limits)) == (other.driver, dict(other.limits))
        assert instrument.address in ("bench", "bench-uncabled")
    assert bench.roles == hardware.roles
    assert bench.protocol == hardware.protocol
    assert hardware.instruments["awg"].address.endswith("::hislip0::INSTR")
    assert hardware.instruments["laser"].address.endswith("::5025::SOCKET")
    assert hardware.instruments["bias_carver"].address == "/dev/ttyUSB0"
    assert bench.roles_of("awg") == ["pulse_carver", "server_iq_modulator", "server_receiver"]
    assert bench.roles_of("digitizer") == ["client_receiver", "server_receiver"]


def test_the_bench_table_is_the_bench_loaders(tmp_path):
    """[bench] is validated by qslab.instruments.sim (Bench.from_table), and its copy builds the same bench."""
    from qslab.instruments.sim.bench_parameters import defaults_table, from_mapping

    config = load_config(BENCH_CONFIG)
    # the same bench, only faster: lab_config.toml scales the bench clock (time_scale), the defaults run in real time
    assert from_mapping(config.bench_table) == from_mapping({**defaults_table(), "time_scale": 0.01})
    config.bench_table["seed"] = -1  # a copy: the config itself cannot be changed through it
    assert config.bench_table["seed"] == 20240805


def test_every_documented_key_is_in_the_file():
    """Every key of the schema appears in lab_config.toml (the file documents the whole schema)."""
    text = BENCH_CONFIG.read_text()
    names = {f.name for cls in (StationSettings, ProtocolConfig) for f in dataclasses.fields(cls)}
    names |= {key for category in ("laser", "awg", "attenuator", "amplifier", "bias_controller")
              for key in DRIVERS[next(d for d, s in DRIVERS.items() if s.category == category)].limits}
    names |= {"timeout_s", "baudrate", "lo_power_max_w", "lo_fraction", "adc_bits", "nep_w_per_rthz"}
    missing = sorted(name for name in names if f"{name} =" not in text)
    assert not missing, missing


@pytest.mark.parametrize(("changes", "key", "fragment"), [
    ({"protocol.mu_photons": -1.0}, "protocol.mu_photons", ">= 0"),
    ({"protocol.modes": 392.5}, "protocol.modes", "an integer"),
    ({"instruments.laser.limits.power_max_dbm": 30.0}, "instruments.laser.limits.power_max_dbm", "<= 20"),
    ({"instruments.laser.limits.power_max_dbn": 10.0}, "instruments.laser.limits.power_max_dbn", "power_max_dbm"),
    ({"instruments.laser.driver": "keysight_n9999a"}, "instruments.laser.driver", "keysight_n7714a"),
    ({"instruments.laser.address": "192.168.1.20"}, "instruments.laser.address", "VISA resource"),
    ({"instruments.bias_iq.address": "TCPIP::1.2.3.4::5025::SOCKET"}, "instruments.bias_iq.address", "serial port"),
    ({"roles.server_laser.instrument": "attenuator"}, "roles.server_laser.instrument", "laser driver"),
    ({"roles.server_laser.port": 5}, "roles.server_laser.port", "port 1..4"),
    ({"roles.server_laser.port": 2}, "roles.server_laser.port", "bench.server_laser.port"),
    ({"roles.server_attenuator.slot": 2}, "roles.server_attenuator.slot", "odd slot"),
    ({"roles.client_processor.awg": "awg", "roles.client_processor.awg_channel_beam_splitter": 4,
      "roles.client_processor.awg_channel_phase": 1}, "roles.client_processor.awg_channel_phase", "no other role"),
    ({"roles.server_receiver.channel": 1}, "roles.server_receiver.channel", "no other role"),
    ({"protocol.symbol_rate_hz": 2e9}, "protocol.symbol_rate_hz", "bench.server.symbol_rate_hz"),
    ({"bench.server_iq.vpi_v": -3.5}, "bench.server_iq.vpi_v", "> 0"),
    ({"bench.server_iq.vpi": 3.5}, "bench.server_iq.vpi", "unknown key"),
    ({"bench.instruments.laser": "keysight_n7711a"}, "bench.instruments.laser", "expected one of"),
    ({"instruments.laser.driver": "keysight_n7711a"}, "instruments.laser.address", "no emulator"),
    ({"instruments.extra": {"driver": "keysight_n7744a", "address": "bench"}}, "instruments.extra.address",
     "[bench.instruments]"),
    ({"instruments.awg.limits": {}}, "instruments.awg.limits.amplitude_max_vpp", "missing"),
])
def test_named_errors(changes, key, fragment):
    with pytest.raises(ConfigError) as error:
        bench_config(**changes)
    assert error.value.key == key
    assert fragment in str(error.value) and key in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_role_instrument_and_bench():
    data = bench_data()
    del data["roles"]["client_processor"]
    with pytest.raises(ConfigError, match="missing roles.client_processor: expected a table") as error:
        parse_config(data)
    assert error.value.key == "roles.client_processor"
    data = bench_data()
    del data["instruments"]["amplifier"]
    with pytest.raises(ConfigError, match="roles.client_amplifier.instrument = 'amplifier': expected the name of an "
                                          r"\[instruments\] table with an amplifier driver \(none is configured\)"):
        parse_config(data)
    data = bench_data()
    del data["bench"]
    with pytest.raises(ConfigError, match=r"missing bench: expected a \[bench\] table") as error:
        parse_config(data)


def test_toml_errors_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        loads_config("[protocol]\nmu_photons = 1\nmu_photons = 2\n", "dup.toml")  # duplicate keys refused
    with pytest.raises(ConfigError, match="cannot read the station config"):
        load_config(tmp_path / "absent.toml")
    (tmp_path / "latin1.toml").write_bytes(b"[station]\nname = \"caf\xe9\"\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(tmp_path / "latin1.toml")


def test_a_file_is_read_as_written_a_bare_carriage_return_is_refused_as_toml_refuses_it(tmp_path):
    """The file's bytes are the TOML text: reading it in text mode once turned a bare CR (found by the CLI fuzz
    test in place of a newline) into LF, so the file loaded while its text did not."""
    text = BENCH_CONFIG.read_text(encoding="utf-8")
    bare_cr = text.replace("\n[protocol]", "\r[protocol]", 1)
    with pytest.raises(ConfigError, match="not valid TOML"):
        loads_config(bare_cr)
    (tmp_path / "cr.toml").write_bytes(bare_cr.encode())
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "cr.toml")
    (tmp_path / "crlf.toml").write_bytes(text.replace("\n", "\r\n").encode())  # CRLF newlines are TOML's too
    assert load_config(tmp_path / "crlf.toml").protocol == load_config(BENCH_CONFIG).protocol


def test_errors_name_the_file():
    with pytest.raises(ConfigError, match=r"^lab_config.toml \(test\): protocol.gain = 0.5: expected a number >= 1"):
        bench_config(**{"protocol.gain": 0.5})


# --- mutations (hypothesis) -------------------------------------------------------------------

def _walk(node, prefix=""):
    """(path, value) of every table and leaf."""
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        yield path, value
        if isinstance(value, dict):
            yield from _walk(value, path)


VALID = bench_data()
TABLES = [p for p, v in _walk(VALID) if isinstance(v, dict) and p not in ("bench.ports", "bench.instruments")]
LEAVES = [p for p, v in _walk(VALID) if not isinstance(v, dict)]
EVERYTHING = [p for p, _ in _walk(VALID)]


def _get(data, path):
    for part in path.split("."):
        data = data[part]
    return data


def _set(data, path, value):
    *parents, leaf = path.split(".")
    for part in parents:
        data = data[part]
    data[leaf] = value


def _delete(data, path):
    *parents, leaf = path.split(".")
    for part in parents:
        data = data[part]
    del data[leaf]


def _numeric_specs():
    """(path, Number) of every ranged number of our schema present in the valid config."""
    specs = {}
    for cls, prefix in ((StationSettings, "station"), (ProtocolConfig, "protocol")):
        for f in dataclasses.fields(cls):
            if isinstance(f.metadata["spec"], Number):
                specs[f"{prefix}.{f.name}"] = f.metadata["spec"]
    for name, table in VALID["instruments"].items():
        spec = DRIVERS[table["driver"]]
        for key, (number, _) in spec.limits.items():
            specs[f"instruments.{name}.limits.{key}"] = number
        for key, number in spec.init.items():
            specs[f"instruments.{name}.init.{key}"] = number

    def role_fields(cls, prefix):
        for f in dataclasses.fields(cls):
            if "table" in f.metadata:
                yield from role_fields(f.metadata["table"], f"{prefix}.{f.name}")
            elif isinstance(f.metadata["spec"], Number):
                yield f"{prefix}.{f.name}", f.metadata["spec"]

    for f in dataclasses.fields(Roles):
        specs.update(role_fields(f.metadata["table"], f"roles.{f.name}"))
    return sorted((path, spec) for path, spec in specs.items() if path in LEAVES or path.rpartition(".")[0] in TABLES)


NUMERIC = _numeric_specs()


@st.composite
def out_of_range(draw):
    path, spec = draw(st.sampled_from([(p, s) for p, s in NUMERIC if s.minimum is not None or s.maximum is not None]))
    sides = [s for s in ("low", "high") if getattr(spec, "minimum" if s == "low" else "maximum") is not None]
    side = draw(st.sampled_from(sides))
    bound = spec.minimum if side == "low" else spec.maximum
    open_ = spec.min_open if side == "low" else spec.max_open
    step = draw(st.floats(0.0 if open_ else 1e-6, 1e6))
    value = bound - step if side == "low" else bound + step
    if side == "low" and not open_ and value == bound:
        value = math.nextafter(bound, -math.inf)
    if spec.integer:
        value = math.floor(value) if side == "low" else math.ceil(value)
        value = value - 1 if (side == "low" and value >= bound) else value
        value = value + 1 if (side == "high" and value <= bound) else value
        if open_:
            value = int(bound) if value != bound and draw(st.booleans()) else value
    return path, draw(st.sampled_from([value, math.nan, math.inf, -math.inf]))


WRONG_TYPES = st.one_of(st.text(max_size=5).map(lambda s: "x" + s), st.lists(st.integers(), max_size=2),
                        st.booleans(), st.dictionaries(st.just("k"), st.integers(), max_size=1))


def _wrong_type_for(value):
    if isinstance(value, bool):
        return st.one_of(st.text(min_size=1), st.integers())
    if isinstance(value, (int, float)):
        return WRONG_TYPES
    if isinstance(value, str):
        return st.one_of(st.integers(), st.lists(st.integers(), max_size=2), st.booleans())
    return st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2))  # a table


def _load_expecting(data, key):
    with pytest.raises(ConfigError) as error:
        parse_config(data, "lab_config.toml")
    assert error.value.key == key, str(error.value)
    assert key in str(error.value) and "\n" not in str(error.value)
    return error.value


@SETTINGS
@given(path=st.sampled_from(TABLES), name=st.from_regex(r"[a-z]{3,8}_zz", fullmatch=True))
def test_an_unknown_key_is_named(path, name):
    data = bench_data()
    _get(data, path)[name] = 1
    _load_expecting(data, f"{path}.{name}")


@settings(max_examples=15, deadline=None)
@given(name=st.from_regex(r"[a-z]{3,8}_zz", fullmatch=True))
def test_an_unknown_top_level_table_is_named(name):
    data = bench_data()
    data[name] = {"x": 1}
    _load_expecting(data, name)


@SETTINGS
@given(data=st.data(), path=st.sampled_from(EVERYTHING))
def test_a_wrong_type_is_named(data, path):
    config = bench_data()
    _set(config, path, data.draw(_wrong_type_for(_get(config, path))))
    _load_expecting(config, path)


@SETTINGS
@given(mutation=out_of_range())
def test_an_out_of_range_value_is_named(mutation):
    path, value = mutation
    data = bench_data()
    _set(data, path, value)
    _load_expecting(data, path)


@SETTINGS
@given(path=st.sampled_from(EVERYTHING))
def test_a_missing_key_loads_or_is_named(path):
    data = bench_data()
    _delete(data, path)
    try:
        parse_config(data)
    except ConfigError as error:
        referring = path.startswith("instruments.") and path.count(".") == 1  # a role names the deleted instrument
        served = path.startswith("bench.instruments.")  # the instrument whose address is "bench" names it
        assert (error.key.startswith(path) or (referring and error.key.startswith("roles."))
                or (served and error.key == f"instruments.{path.rpartition('.')[2]}.address")), (path, str(error))
        assert "\n" not in str(error)


TOML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(EVERYTHING), value=TOML_VALUES)
def test_any_garbage_loads_or_is_one_config_error(path, value):
    data = bench_data()
    _set(data, path, value)
    try:
        parse_config(data)
    except ConfigError as error:
        assert "\n" not in str(error) and error.key
