"""`qslab instruments [--config FILE] [--json]` on the bench: every instrument listed with its roles, driver,
address and identity, JSON on the last stdout line; bad config and a dead instrument get one line each."""

from __future__ import annotations

import json

from station_fixtures import BENCH_CONFIG, bench_data

from qslab.sequences import cli


def _write(tmp_path, data) -> str:
    lines = []

    def emit(table, prefix):
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {json.dumps(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                emit(value, f"{prefix}.{key}" if prefix else key)

    emit(data, "")
    path = tmp_path / "lab_config.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_lists_every_instrument_on_the_bench(capsys):
    assert cli.main(["instruments", "--config", str(BENCH_CONFIG), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    payload = json.loads(out[-1])
    assert payload["station"] == "qslab virtual bench" and payload["safe_state"]["safe"] is True
    listed = {entry["name"]: entry for entry in payload["instruments"]}
    assert list(listed) == ["laser", "awg", "client_awg", "bias_carver", "bias_iq", "attenuator", "power_meter",
                            "amplifier", "digitizer"]
    assert listed["laser"]["identity"]["model"] == "N7714A" and listed["laser"]["roles"] == ["server_laser"]
    assert listed["digitizer"]["roles"] == ["client_receiver", "server_receiver"]
    assert listed["bias_iq"]["driver"] == "thorlabs_mbx" and listed["bias_iq"]["address"].startswith("socket://")
    assert all(entry["address"].startswith(("TCPIP::127.0.0.1::", "socket://127.0.0.1:")) for entry in listed.values())
    assert "Connected to" not in "\n".join(out)  # qcodes' connect messages go to the log, not stdout
    assert out[0].split()[:2] == ["instrument", "roles"] and "9 instruments identified; closed safe" in out[-2]


def test_a_bad_config_is_one_line(tmp_path, capsys):
    data = bench_data()
    data["instruments"]["laser"]["limits"]["power_max_dbn"] = 10.0
    assert cli.main(["instruments", "--config", _write(tmp_path, data)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown key instruments.laser.limits.power_max_dbn" in err


def test_a_dead_instrument_is_one_line(tmp_path, capsys, fake_instrument):
    silent = fake_instrument(None)
    data = bench_data()
    data["instruments"]["power_meter"].update(address=silent.visa_address, init={"timeout_s": 0.2})
    assert cli.main(["instruments", "--config", _write(tmp_path, data), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"qslab instruments: error: power_meter at {silent.visa_address}: "
                                    "did not answer within 0.2 s (*IDN?)")
    assert captured.out == ""
