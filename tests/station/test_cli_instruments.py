"""`qslab instruments [--config FILE] [--json]`: every instrument listed with its roles, driver, address and
identity, or why it has none (*IDN? only, nothing else sent); JSON on the last stdout line; a partial station
(no [roles]) is enough; a bad config is one line; each unreachable instrument is a row and one stderr line."""

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
    assert payload["station"] == "qslab virtual bench" and payload["partial"] is False
    assert (payload["identified"], payload["total"]) == (9, 9)
    listed = {entry["name"]: entry for entry in payload["instruments"]}
    assert list(listed) == ["laser", "awg", "client_awg", "bias_carver", "bias_iq", "attenuator", "power_meter",
                            "amplifier", "digitizer"]
    assert listed["laser"]["identity"]["model"] == "N7714A" and listed["laser"]["roles"] == ["server_laser"]
    assert listed["digitizer"]["roles"] == ["client_receiver", "server_receiver"]
    assert listed["bias_iq"]["driver"] == "thorlabs_mbx" and listed["bias_iq"]["address"].startswith("socket://")
    assert all(entry["address"].startswith(("TCPIP::127.0.0.1::", "socket://127.0.0.1:")) for entry in listed.values())
    assert all(entry["reachable"] and entry["problem"] is None for entry in listed.values())
    assert "Connected to" not in "\n".join(out)  # no driver is connected
    assert out[0].split()[:2] == ["instrument", "roles"] and "9 of 9 instruments identified; nothing else sent" in out[-2]


def test_a_bad_config_is_one_line(tmp_path, capsys):
    data = bench_data()
    data["instruments"]["laser"]["limits"]["power_max_dbn"] = 10.0
    assert cli.main(["instruments", "--config", _write(tmp_path, data)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown key instruments.laser.limits.power_max_dbn" in err


def test_every_instrument_gets_a_row_reachable_or_not(tmp_path, capsys, fake_instrument):
    silent, other = fake_instrument(None), fake_instrument("ACME,SPECTRUM-9000,1,1")
    data = bench_data()
    data["instruments"]["power_meter"].update(address=silent.visa_address, init={"timeout_s": 0.2})
    data["instruments"]["amplifier"].update(address=other.visa_address, init={"timeout_s": 0.5})
    assert cli.main(["instruments", "--config", _write(tmp_path, data), "--json"]) == 1
    captured = capsys.readouterr()
    payload = json.loads(captured.out.strip().splitlines()[-1])
    listed = {entry["name"]: entry for entry in payload["instruments"]}
    assert (payload["identified"], payload["total"]) == (7, 9)  # the rest of the station was still identified
    assert listed["power_meter"]["problem"] == "did not answer within 0.2 s (*IDN?)"
    assert listed["power_meter"]["reachable"] is False and listed["power_meter"]["identity"] is None
    assert listed["amplifier"]["problem"].startswith("identifies as 'ACME,SPECTRUM-9000,1,1': expected a model matching")
    assert listed["laser"]["identity"]["model"] == "N7714A"
    assert captured.err.strip().splitlines() == [
        f"qslab instruments: power_meter at {silent.visa_address}: did not answer within 0.2 s (*IDN?)",
        f"qslab instruments: amplifier at {other.visa_address}: {listed['amplifier']['problem']}"]
    assert "NOT REACHED: did not answer within 0.2 s" in captured.out


def test_a_partial_station_without_roles_is_identified(tmp_path, capsys):
    from tests.drivers.expected_protocol import ProtocolServer

    meter = ProtocolServer([(b"*IDN?\n", b"Keysight Technologies,N7744C,MY123,1.0\n")])  # exactly this, nothing else
    data = {"station": {"name": "first instruments"},
            "calibration": bench_data()["calibration"],
            "instruments": {"power_meter": {"driver": "keysight_n7744a", "address": meter.address_visa},
                            "laser": {"driver": "keysight_n7714a", "address": "bench-uncabled",
                                      "limits": {"power_max_dbm": 10.0}}},
            "bench": {"seed": 1, "instruments": {"laser": "keysight_n7714a"}}}
    try:
        assert cli.main(["instruments", "--config", _write(tmp_path, data), "--json"]) == 0
    finally:
        meter.close()
    meter.check()
    out = capsys.readouterr().out.strip().splitlines()
    payload = json.loads(out[-1])
    assert payload["partial"] is True and (payload["identified"], payload["total"]) == (2, 2)
    listed = {entry["name"]: entry for entry in payload["instruments"]}
    assert listed["power_meter"]["identity"]["model"] == "N7744C" and listed["power_meter"]["roles"] == []
    assert listed["laser"]["identity"]["model"] == "N7714A"
    assert "partial station: no [roles], identification only" in out[-2]


def test_no_visa_library_is_said_plainly(tmp_path, capsys):
    data = {"station": {"visa_library": str(tmp_path / "no-such-libvisa.so")},
            "calibration": bench_data()["calibration"],
            "instruments": {"power_meter": {"driver": "keysight_n7744a", "address": "TCPIP::192.0.2.1::5025::SOCKET"}}}
    assert cli.main(["instruments", "--config", _write(tmp_path, data), "--json"]) == 1
    captured = capsys.readouterr()
    problem = json.loads(captured.out.strip().splitlines()[-1])["instruments"][0]["problem"]
    assert problem.startswith("no VISA library: [station] visa_library = ") and "cannot be loaded" in problem
    assert "install NI-VISA or Keysight IO Libraries Suite, or use '@py'" in problem


def test_a_missing_gpib_backend_names_the_extra(tmp_path, capsys):
    from pyvisa_py.highlevel import PyVisaLibrary

    data = {"calibration": bench_data()["calibration"],
            "instruments": {"power_meter": {"driver": "keysight_n7744a", "address": "GPIB0::22::INSTR",
                                            "init": {"timeout_s": 0.2}}}}
    assert cli.main(["instruments", "--config", _write(tmp_path, data), "--json"]) == 1
    problem = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["instruments"][0]["problem"]
    info = PyVisaLibrary.get_debug_info()
    if any(isinstance(info.get(key), list) for key in ("GPIB INSTR", "GPIB INTFC")):  # this host: no GPIB library
        assert problem.startswith("no GPIB backend in pyvisa-py (") and "pip install 'qslab[gpib]'" in problem
    else:  # a GPIB library is installed: the instrument is looked for, and is not there
        assert "(*IDN?)" in problem


def test_a_pcie_card_is_one_row_identified_through_its_vendor_library(tmp_path, capsys):
    """The ATS9373 is no message port: its row says how it is reached (in process on the bench) and its identity
    comes from the ATS-SDK's board queries; on a hardware address without the library, why it cannot be opened."""
    example = BENCH_CONFIG.parent / "sequences" / "examples" / "lab_config.alazar.toml"
    assert cli.main(["instruments", "--config", str(example), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    card = {entry["name"]: entry for entry in json.loads(out[-1])["instruments"]}["digitizer"]
    assert card["reached"] == "PCIe card through its vendor's library, in process on the bench"
    assert card["identity"]["vendor"] == "AlazarTech" and card["identity"]["model"] == "ATS9373"
    assert card["address"].startswith("ATS::bench-") and card["problem"] is None
    assert [line for line in out if line.startswith("digitizer")][0].count("[PCIe card through its vendor's library") == 1
    assert all(entry["reached"] is None for name, entry in
               {e["name"]: e for e in json.loads(out[-1])["instruments"]}.items() if name != "digitizer")

    data = bench_data()
    data["instruments"]["digitizer"].update(driver="alazar_ats9373", address="ATS::1::1")
    assert cli.main(["instruments", "--config", _write(tmp_path, data), "--json"]) == 1
    captured = capsys.readouterr()
    card = {e["name"]: e for e in json.loads(captured.out.strip().splitlines()[-1])["instruments"]}["digitizer"]
    assert card["reached"] == "PCIe card through its vendor's library" and card["identity"] is None
    assert card["problem"].startswith("PCIe card through its vendor's library: cannot be opened (")
    assert f"qslab instruments: digitizer at ATS::1::1: {card['problem']}" in captured.err.splitlines()
