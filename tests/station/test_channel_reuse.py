"""Channel records are reused across sessions while valid (issue 17; docs/DECISIONS.md Z): two sessions on the same
bench write one record; another station, an expired record, disagreeing pilots or the opt-out write a new one and
say why; a tampered record is refused; the reusing session's replay agrees with its own result."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from qslab.analysis import recording
from qslab.analysis.estimate import Estimate
from qslab.analysis.measured_values import server_detector
from qslab.analysis.replay import replay
from qslab.calibration.channel import channel_result, pilots_agree
from qslab.calibration.records import CorruptRecord, RecordStore
from qslab.calibration.result import CalibrationResult
from qslab.sequences.channel_reuse import IDENTITY_KEY
from qslab.sequences.cli import main
from qslab.sequences.config import ConfigError, load_config, loads_config
from qslab.sequences.session import SessionSettings, run_session

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=1, mu=6.0, gain=1.3, seed=3, batch_images=1, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=20)
ONE_DB = 10 ** -0.1


def store_without_channel_records(calibrated_store_at, directory: Path) -> RecordStore:
    """A writable copy of the bench's records without any channel record (as after `qslab calibrate` of the rest)."""
    calibrated_store_at(directory)
    for path in directory.glob("channel-*.h5"):
        path.unlink()
    return RecordStore(directory)


def channel_records(store: RecordStore) -> list:
    return store.records("channel", "link")


def channel_choice(result: dict) -> dict:
    with recording.SessionFile.open(result["file"]) as session:
        return session.calibrations["channel"]


def session(store, out_dir, config=None, **options) -> dict:
    return run_session(config or load_config(CONFIG), SETTINGS, out_dir=out_dir, store=store, progress=False,
                       **options)


@pytest.fixture(scope="module")
def two(calibrated_store_at, tmp_path_factory):
    """(store, the first session, the second): two sessions, one directory, the same bench."""
    store = store_without_channel_records(calibrated_store_at, tmp_path_factory.mktemp("records"))
    out = tmp_path_factory.mktemp("sessions")
    first = session(store, out)
    second = session(store, out)
    return store, first, second


def test_two_sessions_on_the_same_bench_write_one_channel_record(two):
    store, first, second = two
    (record,) = channel_records(store)
    assert channel_choice(first) == {**channel_choice(first), "record": record.id, "reused": False}
    choice = channel_choice(second)
    assert choice["record"] == record.id and choice["reused"] is True and choice["agreement"]["agrees"] is True
    with recording.SessionFile.open(second["file"]) as file:  # the record it used is the one it names
        assert f"channel/link/{record.id}" in file.calibrations["records"]
        measured = file.calibrations["measured"]
    assert measured["transmittance"]["value"] == record.estimate("channel.transmittance").value
    # its own pilots are kept in the file, next to the record's values they agreed with
    assert choice["fresh_pilots"]["samples"] == record.conditions["samples"]


def test_the_reusing_sessions_replay_agrees_with_its_own_result(two):
    _, _, second = two
    replayed = replay(second["file"])
    assert replayed["changes"] == {}
    for key in ("accuracy", "verified", "weight_leakage_bits_per_mode", "verification",
                "data_leakage_bound_bits_per_query"):
        assert replayed[key] == second[key], key


def test_another_bench_seed_writes_a_new_record_and_says_why(two, tmp_path, capsys):
    store, first, _ = two
    text = CONFIG.read_text().replace("seed = 20240805", "seed = 20240806")
    result = session(store, tmp_path, loads_config(text, str(CONFIG)))
    choice = channel_choice(result)
    assert choice["reused"] is False and choice["record"] != channel_choice(first)["record"]
    assert "another station" in choice["reason"] and "bench.seed: 20240805 -> 20240806" in choice["reason"]
    lines = [line for line in capsys.readouterr().out.splitlines() if "channel: wrote" in line]
    assert len(lines) == 1 and "bench.seed" in lines[0]


def test_one_db_more_loss_writes_a_new_record_and_its_pilots_disagree_with_the_old_one(two, tmp_path):
    store, first, _ = two
    old = store.get(channel_choice(first)["record"])
    text = CONFIG.read_text().replace("return_transmittance = 0.9\n", f"return_transmittance = {0.9 * ONE_DB!r}\n")
    result = session(store, tmp_path, loads_config(text, str(CONFIG)))
    choice = channel_choice(result)
    assert choice["reused"] is False and "bench.channel.return_transmittance" in choice["reason"]
    lossier = store.get(choice["record"])
    assert lossier.estimate("channel.transmittance").value == pytest.approx(
        ONE_DB * old.estimate("channel.transmittance").value, rel=0.02)
    # the pilots' own test also tells the two apart, by far: it is not only the config that changed
    agreement = pilots_agree(_as_result(lossier), old)
    assert not agreement.agrees and abs(agreement.z_amplitude) > 20 * agreement.z_limit


def _as_result(record, **changes) -> CalibrationResult:
    """A record's content as a result to write again (the store gives it a new id)."""
    return dataclasses.replace(CalibrationResult(record.kind, record.instrument, dict(record.parameters),
                                                 dict(record.raw), dict(record.conditions)), **changes)


def _fresh_store_holding(calibrated_store_at, directory: Path, record, **write) -> RecordStore:
    """A store without channel records but a copy of ``record`` (its station identity kept), written with ``write``."""
    store = store_without_channel_records(calibrated_store_at, directory)
    changes = write.pop("changes", {})
    store.write(_as_result(record, **changes), instruments=record.instruments, **write)
    return store


def test_an_expired_record_is_not_reused(two, calibrated_store_at, tmp_path):
    store, first, _ = two
    record = store.get(channel_choice(first)["record"])
    created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=record.validity_s + 1.0)
    expired = _fresh_store_holding(calibrated_store_at, tmp_path / "records", record, created=created,
                                   validity_s=record.validity_s)
    (old,) = channel_records(expired)
    assert not old.is_valid() and old.conditions[IDENTITY_KEY] == record.conditions[IDENTITY_KEY]
    choice = channel_choice(session(expired, tmp_path / "out"))
    assert choice["reused"] is False and choice["record"] != old.id and "expired" in choice["reason"]
    assert len(channel_records(expired)) == 2


def test_pilots_that_disagree_with_a_valid_record_of_the_same_station_write_a_new_one(two, calibrated_store_at,
                                                                                       tmp_path):
    """A record of this very station identity whose channel had 1 dB more loss (a connector degraded since, with
    nothing in the config to say so): today's pilots disagree with it, so it is not reused."""
    store, first, _ = two
    record = store.get(channel_choice(first)["record"])
    parameters = dict(record.parameters)
    for key, factor in (("channel.amplitude_transmittance", math.sqrt(ONE_DB)), ("channel.transmittance", ONE_DB)):
        estimate = parameters[key]
        parameters[key] = Estimate(estimate.value * factor, estimate.uncertainty * factor, estimate.unit)
    lossier = _fresh_store_holding(calibrated_store_at, tmp_path / "records", record,
                                   changes={"parameters": parameters})
    choice = channel_choice(session(lossier, tmp_path / "out"))
    assert choice["reused"] is False and "disagree" in choice["reason"]
    assert choice["agreement"]["agrees"] is False and choice["agreement"]["z_amplitude"] > 20


def test_the_opt_out_writes_a_new_record_from_the_config_and_from_the_command_line(two, tmp_path, capsys):
    store, first, _ = two
    text = CONFIG.read_text().replace("reuse_channel_record = true", "reuse_channel_record = false")
    choice = channel_choice(session(store, tmp_path / "config", loads_config(text, str(CONFIG))))
    assert choice["reused"] is False and choice["reason"] == "reuse is off ([session] reuse_channel_record = false)"
    before = {r.id for r in channel_records(store)}
    code = main(["session", "--config", str(CONFIG), "--calibration-dir", str(store.directory), "--out",
                 str(tmp_path / "cli"), "--images", "1", "--batch-images", "1", "--seed", "3", "--fresh-channel",
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    choice = channel_choice(result)
    assert choice["reused"] is False and choice["reason"] == "reuse is off (--fresh-channel)"
    assert choice["record"] not in before and choice["record"] in {r.id for r in channel_records(store)}


def test_a_tampered_channel_record_is_refused_as_before(two, calibrated_store_at, tmp_path):
    store, first, _ = two
    record = store.get(channel_choice(first)["record"])
    copy = _fresh_store_holding(calibrated_store_at, tmp_path / "records", record)
    (target,) = channel_records(copy)
    os.chmod(target.path, stat.S_IRUSR | stat.S_IWUSR)
    with h5py.File(target.path, "r+") as f:
        f["parameters/channel.transmittance"].attrs["value"] = 0.7
    os.chmod(target.path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    with pytest.raises(CorruptRecord, match=target.id):
        session(RecordStore(copy.directory), tmp_path / "out")


def test_the_config_key_is_a_boolean(tmp_path):
    text = CONFIG.read_text().replace("reuse_channel_record = true", "reuse_channel_record = 1")
    with pytest.raises(ConfigError, match=r"session.reuse_channel_record = 1: expected true or false"):
        loads_config(text, "lab_config.toml")


def test_the_agreement_tests_statistical_sigmas_hold_on_simulated_pilots():
    """Independent route: two pilot sets of one Gaussian channel, 300 times; the z-scores of both statistics have unit
    spread (their sigmas are right), so the false-alarm probability stated is the one obtained."""
    rng = np.random.default_rng(17)
    detector = server_detector(Estimate(0.8, 0.01), Estimate(0.01, 0.001), 1.0)
    amplitude, noise = 0.74, 1.04
    z = []
    for _ in range(300):
        a, b = (channel_result(q, amplitude * q + math.sqrt(noise) * rng.standard_normal(q.size), detector,
                               conditions={})
                for q in (2.0 * rng.standard_normal(4000) for _ in range(2)))
        agreement = pilots_agree(a, b)
        z.append((agreement.z_amplitude, agreement.z_residual_variance))
    spread = np.std(np.array(z), axis=0)
    assert np.all(np.abs(spread - 1.0) < 0.15), spread  # 300 pairs: the spread's own sigma is about 0.04
