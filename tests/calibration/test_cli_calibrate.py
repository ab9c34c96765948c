"""`qslab calibrate` on the virtual bench: records and figures written, JSON on the last line, a kind without its
prerequisite records refused in one line, a failed calibration writes no record and leaves the station safe.

A signal (SIGINT, SIGTERM, SIGHUP) stops `all` before the next kind with the station read back safe."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from qcodes.instrument import Instrument

from qslab.calibration.records import RecordStore
from qslab.calibration.result import CalibrationError
from qslab.sequences import cli

CONFIG = str(Path(__file__).resolve().parents[2] / "lab_config.toml")


@pytest.fixture(autouse=True)
def _close_all() -> Iterator[None]:
    yield
    Instrument.close_all()


def test_photons_writes_a_record_and_prints_the_json_line(tmp_path, capsys, figures_drawn):
    code = cli.main(["calibrate", "photons", "--config", CONFIG, "--calibration-dir", str(tmp_path), "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    payload = json.loads(out[-1])
    entry = payload["parameters"]["server.photons_per_symbol"]
    assert set(entry) >= {"value", "uncertainty", "record"}
    assert entry["value"] == pytest.approx(6.0, rel=0.05) and 0 < entry["uncertainty"] < 0.012 * entry["value"]
    record = RecordStore(tmp_path).get(entry["record"])
    assert record.kind == "photons" and record.instruments["laser"].startswith("Keysight Technologies,N7714A")
    assert Path(record.figure_png).is_file()
    assert any("server.photons_per_symbol" in line for line in out[:-1])  # the summary table
    assert RecordStore(tmp_path).require("photons").id == record.id


def test_channel_without_its_prerequisite_records_is_refused_naming_the_missing_one(tmp_path, capsys):
    code = cli.main(["calibrate", "channel", "--config", CONFIG, "--calibration-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[0].startswith("qslab calibrate: error: calibration 'channel' cannot run: no 'homodyne' calibration")
    assert "qslab calibrate homodyne" in err[0]
    assert RecordStore(tmp_path).records() == []


def test_a_failed_calibration_writes_no_record_and_the_station_closes_safe(tmp_path, capsys, monkeypatch):
    import qslab.calibration.photons

    def broken(*args, **kwargs):
        raise CalibrationError("photons", "no light on the monitor tap")

    monkeypatch.setattr(qslab.calibration.photons, "calibrate_photons", broken)
    code = cli.main(["calibrate", "photons", "--config", CONFIG, "--calibration-dir", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "calibration 'photons' failed: no light on the monitor tap" in captured.err
    assert "station did not read back safe" not in captured.err
    assert not list(tmp_path.glob("*.h5"))
    assert json.loads(captured.out.strip().splitlines()[-1])["parameters"] == {}


def _photons_record(store: RecordStore, value=6.0, sigma=0.05, **kwargs):
    from qslab.calibration.result import CalibrationResult, Estimate

    return store.write(CalibrationResult("photons", "server_output",
                                         {"server.photons_per_symbol": Estimate(value, sigma, "photons")}), **kwargs)


# the limits of `qslab leakage --from-calibration` share its failure probability 1e-10 by a union bound over seven
# one-sided limits (mu, T, technical noise, G, and for the data-leakage bound the noise figure, the processor loss
# and the data's second moments): each at Phi^-1(1 - 1e-10/7) sigma
K_LIMIT = float(__import__("scipy.stats", fromlist=["norm"]).norm.isf(1e-10 / 7))


def test_leakage_from_calibration_uses_the_upper_limit_of_mu(tmp_path, capsys):
    store = RecordStore(tmp_path)
    old = _photons_record(store, 5.0, 0.1)
    latest = _photons_record(store, 6.0, 0.05)
    code = cli.main(["leakage", "--from-calibration", "--gain", "1.3", "--calibration-dir", str(tmp_path), "--json"])
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert K_LIMIT == pytest.approx(6.65, abs=0.01)
    assert payload["inputs"]["mu"] == pytest.approx(6.0 + K_LIMIT * 0.05)
    assert payload["calibration"]["records"] == {"photons": latest.id}
    code = cli.main(["leakage", "--from-calibration", old.id, "--gain", "1.3", "--calibration-dir", str(tmp_path),
                     "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["inputs"]["mu"] == pytest.approx(5.0 + K_LIMIT * 0.1)


def test_leakage_from_calibration_takes_the_upper_limit_of_the_gain(tmp_path, capsys):
    from qslab.calibration.result import CalibrationResult, Estimate

    store = RecordStore(tmp_path)
    _photons_record(store, 6.0, 0.05)
    assert cli.main(["leakage", "--from-calibration", "--calibration-dir", str(tmp_path)]) == 2
    assert "--gain is required" in capsys.readouterr().err
    amplifier = store.write(CalibrationResult("amplifier", "client_amplifier",
                                              {"client_amplifier.gain": Estimate(1.30, 0.01)}))
    code = cli.main(["leakage", "--from-calibration", "--calibration-dir", str(tmp_path), "--json"])
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and payload["inputs"]["gain"] == pytest.approx(1.30 + K_LIMIT * 0.01)
    assert payload["calibration"]["records"]["amplifier"] == amplifier.id
    # A gain given on the command line wins over the record.
    cli.main(["leakage", "--from-calibration", "--gain", "1.2", "--calibration-dir", str(tmp_path), "--json"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["inputs"]["gain"] == 1.2


def test_leakage_from_calibration_takes_the_data_leakage_bound_at_the_records_limits(tmp_path, capsys):
    """G and the noise figure at their upper limits, the processor's loss per pass at its lower limit, each at
    K_LIMIT sigma: N = (NF - 1/G)/2 t, computed here by hand."""
    from qslab.calibration.result import CalibrationResult, Estimate

    store = RecordStore(tmp_path)
    _photons_record(store, 6.0, 0.05)
    store.write(CalibrationResult("amplifier", "client_amplifier", {
        "client_amplifier.gain": Estimate(1.30, 0.01), "client_amplifier.noise_figure_db": Estimate(3.8, 0.05, "dB")}))
    store.write(CalibrationResult("processor", "client_processor", {
        "client_processor.loss_per_pass_db": Estimate(0.5, 0.02, "dB")}))
    code = cli.main(["leakage", "--from-calibration", "--calibration-dir", str(tmp_path), "--json"])
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and set(payload["calibration"]["records"]) >= {"amplifier", "processor"}
    gain, nf_db, loss_db = 1.30 + K_LIMIT * 0.01, 3.8 + K_LIMIT * 0.05, 0.5 - K_LIMIT * 0.02
    photons = 0.5 * (10 ** (nf_db / 10) - 1 / gain) * 10 ** (-loss_db / 10)
    assert payload["data_leakage_bound"]["photons_upper"] == pytest.approx(photons, rel=1e-12)


def test_leakage_from_calibration_refuses_missing_and_stale_records(tmp_path, capsys):
    import datetime as dt

    code = cli.main(["leakage", "--from-calibration", "latest", "--gain", "1.3", "--calibration-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no 'photons' calibration record" in err and "`qslab calibrate photons`" in err
    stale = _photons_record(RecordStore(tmp_path), validity_s=1,
                            created=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    code = cli.main(["leakage", "--from-calibration", "--gain", "1.3", "--calibration-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and stale.id in err and "`qslab calibrate photons`" in err and err.count("\n") == 1
    code = cli.main(["leakage", "--gain", "1.3"])
    assert code == 2 and "--mu is required" in capsys.readouterr().err


def test_amplifier_needs_a_valid_homodyne_record_and_says_how_to_get_one(tmp_path, capsys):
    code = cli.main(["calibrate", "amplifier", "--config", CONFIG, "--calibration-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "calibration 'amplifier' cannot run: no 'homodyne' calibration of client_receiver with " in err
    assert "`qslab calibrate homodyne`" in err and not list(tmp_path.glob("*.h5"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_all_before_the_next_kind_with_the_station_read_back_safe(tmp_path, capsys, monkeypatch, signum):
    """The signal arrives while the first kind runs: that kind's records are kept, no later kind starts, the
    lasers and drives are read back off, the previous handler is restored, and the exit status is 128 + signal."""
    from qslab.sequences import calibrations

    ran, record_kind, handler_before = [], calibrations.record_kind, signal.getsignal(signum)

    def first_then_signal(kind, *args, **kwargs):
        ran.append(kind)
        records = record_kind(kind, *args, **kwargs)
        os.kill(os.getpid(), signum)  # delivered to this (main) thread before the call returns
        return records

    monkeypatch.setattr(calibrations, "record_kind", first_then_signal)  # the command imports it when it runs
    code = cli.main(["calibrate", "all", "--config", CONFIG, "--calibration-dir", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 128 + signum and ran == ["homodyne"]
    assert signal.Signals(signum).name in captured.err and "read back safe" in captured.err
    payload = json.loads(captured.out.strip().splitlines()[-1])
    assert payload["signal"] == signal.Signals(signum).name and payload["safe_state"]["safe"] is True
    laser = payload["safe_state"]["instruments"]["laser"]
    assert laser and not any(laser.values())
    kinds = {record.kind for record in RecordStore(tmp_path).records()}
    assert kinds == {"homodyne"}
    assert signal.getsignal(signum) == handler_before
