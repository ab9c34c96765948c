"""The session recording (analysis/recording/, docs/RECORDING.md): schema, SWMR, crashes, bad files."""

import json
import platform
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byte_damage import damaged
from qslab.analysis.recording import (PIXELS_PER_IMAGE, SCHEMA, SCHEMA_VERSION, LayerBatch, LayerShape, RecordingError,
                                SessionFile, SessionWriter, schema, validate)

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [LayerShape(rows=6, modes=4), LayerShape(rows=3, modes=4)]
META = {"config_toml": "[station]\nname = 'bench'\n# ünïcode survives\n",
        "station_snapshot_json": {"station": {"instruments": {"laser": {"power_w": 0.001}}}},
        "settings_json": {"images": 12, "mu": 3.0, "gain": 1.5, "seed": 7, "batch_size": 4, "verify_fraction": 0.3,
                          "failure_probability": 1e-10},
        "provenance_json": {"python": "3.11", "numpy": np.__version__, "host": "bench-pc", "git_revision": "abc123"},
        "seeds_json": {"session": 7, "bench": 8},
        "calibrations_json": {"photons": {"id": "photons-server-20250101T000000.000000Z-0123456789",
                                          "parameters": {"server.photons_per_symbol": [3.0, 0.02, ""]}}}}
RESULTS = {"accuracy": 0.75, "leakage_bits": {"weights": 1.2, "data": [0.1, 0.2]}, "bound": float("inf")}
VERIFIED = [[2, 0, 1], [2, 1, 0]]  # verified rows per (layer, batch): layer 1 batch 1 verifies none


def batch_data(batch: int) -> tuple[dict, list[LayerBatch]]:
    """Batch ``batch`` of a 3-batch session, the same every time it is asked for (sizes 4, 3, 5)."""
    rng = np.random.default_rng(100 + batch)
    count = (4, 3, 5)[batch]
    first = (0, 4, 7)[batch]
    images = {"image_index": np.arange(first, first + count) * 7, "label": rng.integers(0, 10, count),
              "pixels": rng.integers(0, 256, (count, PIXELS_PER_IMAGE), dtype=np.uint8),
              "prediction": rng.integers(0, 10, count)}
    layers = []
    for k, shape in enumerate(LAYERS):
        verified = VERIFIED[k][batch]
        layers.append(LayerBatch(
            client_quadratures_snu=rng.normal(size=(count, shape.rows)).astype(np.float32),
            verified_rows=rng.choice(shape.rows, verified, replace=False),
            measure_p=rng.random((count, verified)) < 0.5,
            sent_snu=rng.normal(0, 2.5, (count, verified, shape.modes)).astype(np.float32),
            returned_snu=rng.normal(0, 2.0, (count, verified, shape.modes)).astype(np.float32)))
    return images, layers


def weights_sent(batch: int) -> tuple[int, int]:
    """Per layer, the images its weights were sent to up to ``batch``: the images recorded, plus set-up passes and
    batches taken again (a few more per batch)."""
    images = sum((4, 3, 5)[:batch + 1])
    return images + 2 + batch, images + 5 + batch


def data_sent(batch: int) -> tuple[int, int]:
    """Per layer, the images whose data it carried up to ``batch``: the images recorded, batch 1 taken twice."""
    images = sum((4, 3, 5)[:batch + 1])
    return (images + 3 * (batch >= 1),) * 2


def append(writer: SessionWriter, batch: int, counted: bool = True) -> None:
    images, layers = batch_data(batch)
    writer.append_batch(**images, layers=layers, weight_images_sent=weights_sent(batch) if counted else None,
                        data_images_sent=data_sent(batch) if counted else None)


def write_session(path: Path, batches: int = 3, finish: bool = True) -> Path:
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        for batch in range(batches):
            append(writer, batch)
            validate(path)
        if finish:
            writer.finish(RESULTS)
    validate(path)
    return path


def assert_batches_equal(session: SessionFile, batches: int) -> None:
    """The file's committed data is exactly batches 0 .. batches-1 of ``batch_data``."""
    assert session.batches_written == batches
    expected_images = [batch_data(b)[0] for b in range(batches)]
    assert session.images_written == sum(len(e["label"]) for e in expected_images)
    images = session.images
    for name, key in (("index", "image_index"), ("label", "label"), ("pixels", "pixels"), ("prediction", "prediction")):
        want = np.concatenate([e[key] for e in expected_images]) if batches else np.zeros(0)
        np.testing.assert_array_equal(getattr(images, name), want)
    for batch in range(batches):
        for k, want in enumerate(batch_data(batch)[1]):
            got = session.layer_batch(batch, k)
            for field in ("client_quadratures_snu", "verified_rows", "measure_p", "sent_snu", "returned_snu"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
            assert got.measure_p.dtype == bool and got.sent_snu.dtype == np.float32


# --- round trip ------------------------------------------------------------------------------------

def test_round_trip_through_session_file(tmp_path):
    path = write_session(tmp_path / "session.h5")
    with SessionFile.open(path) as session:
        assert (session.status, session.detail, session.results) == ("complete", "", RESULTS)
        assert session.layers == tuple(LAYERS)
        assert session.schema_version == SCHEMA_VERSION
        assert (session.qslab_version, session.git_revision) == ("0.1.0", "abc123")
        assert session.config_toml == META["config_toml"]
        assert (session.settings, session.seeds, session.calibrations) == (
            META["settings_json"], META["seeds_json"], META["calibrations_json"])
        assert session.station_snapshot == META["station_snapshot_json"]
        assert_batches_equal(session, 3)
        verification = session.verification(1)
        assert [len(rows) for rows in verification.rows] == VERIFIED[1]
        assert len(verification.sent_snu) == sum(c * v * 4 for c, v in zip((4, 3, 5), VERIFIED[1]))
        assert session.client_quadratures_snu(0).shape == (12, 6)


def test_round_trip_with_plain_h5py(tmp_path):
    """The reading recipe of docs/RECORDING.md, without qslab."""
    path = write_session(tmp_path / "session.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["schema"].decode() == SCHEMA and f.attrs["schema_version"] == SCHEMA_VERSION
        assert f["meta/config_toml"].asstr()[()] == META["config_toml"]
        assert json.loads(f["meta/settings_json"][()]) == META["settings_json"]
        assert f["status"][()].decode() == "complete"
        assert json.loads(f["results/results_json"][()].tobytes().decode("utf-8")) == RESULTS
        table = f["batches"][()]
        table = table[:np.argmin(np.append(table["batch"] == np.arange(len(table)), False))]
        assert len(table) == 3
        for row in table:
            count = row["image_count"]
            images, layers = batch_data(int(row["batch"]))
            first = row["first_image"]
            np.testing.assert_array_equal(f["images/pixels"][first:first + count], images["pixels"])
            np.testing.assert_array_equal(f["images/index"][first:first + count], images["image_index"])
            for k, want in enumerate(layers):
                v = f[f"layers/{k}/verification"]
                modes = f[f"layers/{k}"].attrs["modes"]
                rows = v["rows"][row["row_start"][k]:row["row_stop"][k]]
                sent = v["sent_snu"][row["sample_start"][k]:row["sample_stop"][k]].reshape(count, len(rows), modes)
                measure_p = v["measure_p"][row["measure_p_start"][k]:row["measure_p_stop"][k]].reshape(count, -1)
                np.testing.assert_array_equal(rows, want.verified_rows)
                np.testing.assert_array_equal(sent, want.sent_snu)
                np.testing.assert_array_equal(measure_p.astype(bool), want.measure_p)
                np.testing.assert_array_equal(f[f"layers/{k}/client_quadratures_snu"][first:first + count],
                                              want.client_quadratures_snu)


def test_datasets_are_chunked_compressed_and_checksummed(tmp_path):
    """Every extendable dataset chunked; gzip + fletcher32 where the data compress, no filter on the noisy quadratures
    (checked per batch by the CRC-32 in /batches instead: see the torn-chunk test)."""
    path = write_session(tmp_path / "session.h5")
    with h5py.File(path, "r") as f:
        quadratures = f["layers/0/client_quadratures_snu"]
        assert quadratures.dtype == np.float32 and quadratures.maxshape == (None, 6)
        assert f["status_detail"].dtype.itemsize == 512
        noise = {f"layers/{k}/{name}" for k in range(len(LAYERS))
                 for name in ("client_quadratures_snu", "verification/returned_snu", "verification/sent_snu")}
        extendable = list(schema._dataset_paths(LAYERS))
        assert noise < set(extendable) and "layers/0/verification/sent_snu" in extendable
        for name in extendable:
            dataset = f[name]
            assert dataset.chunks is not None and dataset.fletcher32 == (name not in noise), name
            assert dataset.compression == (None if name in noise else "gzip"), name
            assert dataset.shuffle == (dataset.compression is not None), name


# --- SWMR ------------------------------------------------------------------------------------------

READER = """
import sys
import threading
from qslab.analysis.recording import SessionFile
with SessionFile.open(sys.argv[1]) as session:
    print(session.swmr, session.status, session.batches_written, session.images_written, flush=True)
    for line in sys.stdin:
        session.refresh()
        print(session.status, session.batches_written, session.images_written, session.results, flush=True)
"""


def test_swmr_reader_in_another_process_follows_the_writer(tmp_path):
    path = tmp_path / "live.h5"
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        append(writer, 0)
        reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], cwd=ROOT, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert reader.stdout.readline().split() == ["True", "running", "1", "4"]
            append(writer, 1)
            reader.stdin.write("refresh\n")
            reader.stdin.flush()
            assert reader.stdout.readline().split() == ["running", "2", "7", "None"]
            writer.finish(RESULTS)
            reader.stdin.write("refresh\n")
            reader.stdin.flush()
            line = reader.stdout.readline()
            assert line.startswith("complete 2 7 {'accuracy': 0.75"), line
            reader.stdin.close()
            assert reader.wait(timeout=30) == 0, reader.stderr.read()
        finally:
            reader.kill()


def test_swmr_reader_handle_in_the_same_process(tmp_path):
    path = tmp_path / "live.h5"
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        append(writer, 0)
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            assert f["batches"].shape[0] == 1
            append(writer, 1)
            f["batches"].refresh()
            f["status"].refresh()
            assert f["batches"].shape[0] == 2 and f["status"][()] == b"running"


# --- incomplete sessions ---------------------------------------------------------------------------

CRASHER = """
import os, sys
sys.path.insert(0, sys.argv[2])
from test_recording import LAYERS, META, append
from qslab.analysis.recording import SessionWriter
writer = SessionWriter.create(sys.argv[1], LAYERS, META, qslab_version="0.1.0", git_revision="abc123")
append(writer, 0)
append(writer, 1)
writer.lock.note_sent({"weight_images_sent": [30, 31], "data_images_sent": [12, 12]})  # a third batch's light
os._exit(3)
"""


@pytest.mark.parametrize("lock", ["left by the crashed writer", "missing"])
def test_a_crashed_writer_leaves_its_batches_and_resumes_after_crash(tmp_path, lock):
    """The writer lock the crashed process left (its flock gone with it) says it crashed, with the counts it noted
    before light it never recorded; without a lock (a writer before locks) HDF5's open flag cannot tell a crash from
    a live writer: after_crash=True is needed."""
    path = tmp_path / "crashed.h5"
    done = subprocess.run([sys.executable, "-c", CRASHER, str(path), str(ROOT / "tests")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    with SessionFile.open(path) as session:
        assert session.swmr and session.status == "running"
        assert_batches_equal(session, 2)
        assert session.batch_table["weight_images_sent"][-1].tolist() == [10, 13]
        # a reader before any resume: the file's counts, or what the crashed writer noted in its lock where more
        assert (session.weight_images_sent, session.data_images_sent) == ((30, 31), (12, 12))
    left = tmp_path / ".crashed.h5.writer"
    assert json.loads(left.read_text())["host"] == platform.node()  # padded with spaces to one size: still JSON
    after_crash = lock == "missing"
    if after_crash:
        left.unlink()
        with pytest.raises(RecordingError, match="after_crash=True") as error:
            SessionWriter.resume(path)
        assert str(path) in str(error.value)
    with SessionWriter.resume(path, after_crash=after_crash) as writer:
        assert (writer.lock.crashed is None) == after_crash
        if not after_crash:  # the writer starts from the note where it is more than the file's counts
            assert writer.lock.crashed.sent == {"weight_images_sent": [30, 31], "data_images_sent": [12, 12]}
            assert (writer.weight_images_sent, writer.data_images_sent) == ((30, 31), (12, 12))
        else:
            assert (writer.weight_images_sent, writer.data_images_sent) == (weights_sent(1), data_sent(1))
        assert (writer.batches_written, writer.images_written) == (2, 7)
        if after_crash:
            append(writer, 2)
        else:  # a count below the light the crashed writer noted is refused
            with pytest.raises(RecordingError, match=r"weight_images_sent \[16, 19\]: expected per layer at least "
                                                     r"\[30, 31\]"):
                append(writer, 2)
            images, layers = batch_data(2)
            writer.append_batch(**images, layers=layers, weight_images_sent=(35, 36), data_images_sent=(17, 17))
        writer.finish(RESULTS)
    validate(path)
    with SessionFile.open(path) as session:
        assert not session.swmr and session.status == "complete" and session.results == RESULTS
        assert_batches_equal(session, 3)


@pytest.mark.parametrize("ending", ["close", "abort", "exception"])
def test_an_interrupted_session_is_readable_and_resumes(tmp_path, ending):
    path = tmp_path / "interrupted.h5"
    with pytest.raises(ZeroDivisionError) if ending == "exception" else _nothing():
        with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
            append(writer, 0)
            append(writer, 1)
            if ending == "abort":
                writer.abort("laser interlock opened " + "x" * 600)
            elif ending == "exception":
                1 / 0
    validate(path)
    with SessionFile.open(path) as session:
        assert session.status == ("running" if ending == "close" else "aborted")
        assert session.results is None
        if ending == "abort":
            assert session.detail.startswith("laser interlock opened") and len(session.detail.encode()) == 512
        if ending == "exception":
            assert session.detail == "ZeroDivisionError: division by zero"
        assert_batches_equal(session, 2)
    with SessionWriter.resume(path) as writer:
        append(writer, 2)
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert (session.status, session.detail, session.results) == ("complete", "", RESULTS)
        assert_batches_equal(session, 3)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_batch_cut_short_is_ignored_then_truncated_on_resume(tmp_path, monkeypatch):
    path = tmp_path / "partial.h5"

    def crash(*args):
        raise OSError("power cut")

    with pytest.raises(RecordingError, match="writing batch 2 failed.*2 committed batches are intact"):
        with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
            append(writer, 0)
            append(writer, 1)
            monkeypatch.setattr(SessionWriter, "_commit", crash)
            append(writer, 2)  # every array of batch 2 is written, its /batches row is not
    monkeypatch.undo()
    with h5py.File(path, "r") as f:
        assert f["images/label"].shape[0] == 12 and f["batches"].shape[0] == 2  # the tail is really there
    with SessionFile.open(path) as session:
        assert session.status == "aborted" and "power cut" in session.detail
        assert_batches_equal(session, 2)
    with SessionWriter.resume(path) as writer:
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            assert f["images/label"].shape[0] == 7  # batches 0 and 1: 4 + 3 images
            assert f["layers/0/verification/sent_snu"].shape[0] == 4 * 2 * 4 + 3 * 0 * 4  # images x rows x modes
        append(writer, 2)
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert_batches_equal(session, 3)


def test_a_failed_append_can_be_retried_in_place(tmp_path, monkeypatch):
    path = tmp_path / "retry.h5"
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        append(writer, 0)
        with monkeypatch.context() as patch:
            patch.setattr(SessionWriter, "_commit", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
            with pytest.raises(RecordingError, match="disk full"):
                append(writer, 1)
        assert writer.batches_written == 1
        append(writer, 1)
        append(writer, 2)
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert_batches_equal(session, 3)


def test_resume_refuses_while_another_process_reads_the_file(tmp_path):
    path = write_session(tmp_path / "busy.h5", batches=2, finish=False)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert reader.stdout.readline().split() == ["False", "running", "2", "7"]
        for after_crash in (False, True):
            with pytest.raises(RecordingError, match="is open in another process.*close its readers") as error:
                SessionWriter.resume(path, after_crash=after_crash)
            assert str(path) in str(error.value)
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
    with SessionWriter.resume(path) as writer:
        append(writer, 2)
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert_batches_equal(session, 3)


def test_resume_refuses_a_complete_session(tmp_path):
    path = write_session(tmp_path / "done.h5")
    with pytest.raises(RecordingError, match="is a complete session") as error:
        SessionWriter.resume(path)
    assert str(path) in str(error.value)


def test_create_never_overwrites(tmp_path):
    path = write_session(tmp_path / "done.h5")
    with pytest.raises(RecordingError, match="already exists"):
        SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123")
    validate(path)


def test_an_empty_session_is_valid(tmp_path):
    path = tmp_path / "empty.h5"
    SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123").close()
    with SessionFile.open(path) as session:
        assert (session.status, session.batches_written, session.images_written) == ("running", 0, 0)
        assert session.images.pixels.shape == (0, PIXELS_PER_IMAGE)
        assert session.verification(0).rows == []


# --- bad input to the writer -----------------------------------------------------------------------

def test_bad_meta_is_refused_before_a_file_exists(tmp_path):
    path = tmp_path / "never.h5"
    with pytest.raises(RecordingError, match=r"missing \['seeds_json'\], unknown \['seed'\]"):
        SessionWriter.create(path, LAYERS, {**{k: v for k, v in META.items() if k != "seeds_json"}, "seed": 1},
                             qslab_version="0", git_revision="x")
    with pytest.raises(RecordingError, match="settings_json.*not valid JSON"):
        SessionWriter.create(path, LAYERS, {**META, "settings_json": "{mu: 3"}, qslab_version="0", git_revision="x")
    with pytest.raises(RecordingError, match="config_toml.*not valid TOML"):
        SessionWriter.create(path, LAYERS, {**META, "config_toml": "[station"}, qslab_version="0", git_revision="x")
    assert not path.exists()


@pytest.mark.parametrize("field, value, message", [
    ("pixels", np.zeros((4, 783), np.uint8), r"pixels has shape \(4, 783\), expected \(4, 784\)"),
    ("label", np.full(4, 300), r"label must lie in \[0, 255\]"),
    ("pixels", np.zeros((4, 784)), "pixels must be integers"),
    ("sent_snu", np.zeros((4, 2, 5)), r"layer 0 sent_snu has shape \(4, 2, 5\), expected \(4, 2, 4\)"),
    ("verified_rows", np.array([2, 2]), "layer 0 verified_rows repeats a row"),
    ("verified_rows", np.array([6, 0]), r"layer 0 verified_rows must lie in \[0, 5\]"),
    ("client_quadratures_snu", np.full((4, 6), np.nan), "layer 0 client_quadratures_snu holds 24 non-finite"),
    ("returned_snu", np.full((4, 2, 4), 1e39), r"layer 0 returned_snu holds 32 non-finite values \(as float32\)"),
    ("measure_p", np.zeros((4, 3), bool), r"layer 0 measure_p has shape \(4, 3\), expected \(4, 2\)"),
])
def test_bad_batches_are_refused_and_nothing_is_written(tmp_path, field, value, message):
    path = tmp_path / "s.h5"
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        append(writer, 0)
        images, layers = batch_data(1)
        images = {**images, "image_index": np.arange(4), "label": np.zeros(4, int), "prediction": np.zeros(4, int),
                  "pixels": np.zeros((4, 784), np.uint8)}
        rng = np.random.default_rng(0)
        layer = {"client_quadratures_snu": rng.normal(size=(4, 6)), "verified_rows": np.array([0, 3]),
                 "measure_p": np.zeros((4, 2), bool), "sent_snu": np.zeros((4, 2, 4)),
                 "returned_snu": np.zeros((4, 2, 4))}
        if field in images:
            images[field] = value
        else:
            layer[field] = value
        second = LayerBatch(np.zeros((4, 3)), np.zeros(0, int), np.zeros((4, 0), bool), np.zeros((4, 0, 4)),
                            np.zeros((4, 0, 4)))
        with pytest.raises(RecordingError, match=message) as error:
            writer.append_batch(**images, layers=[LayerBatch(**layer), second])
        assert str(path) in str(error.value)
        assert writer.batches_written == 1
    with SessionFile.open(path) as session:
        assert_batches_equal(session, 1)


def test_a_closed_writer_says_so(tmp_path):
    writer = SessionWriter.resume(write_session(tmp_path / "s.h5", batches=1, finish=False))
    writer.abort("stop")
    with pytest.raises(RecordingError, match="closed SessionWriter"):
        append(writer, 1)


# --- bad files -------------------------------------------------------------------------------------

def _foreign(path: Path, tmp_path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = "qslab.calibration/1"
        f.create_group("parameters")


def _calibration_record(path: Path, tmp_path: Path) -> Path:
    from qslab.calibration.records import CodeVersion, RecordStore
    from qslab.calibration.result import CalibrationResult, Estimate

    record = RecordStore(tmp_path / "store").write(
        CalibrationResult("photons", "server_output", {"server.photons_per_symbol": Estimate(3.0, 0.02, "")}),
        code_version=CodeVersion("0.1.0", "abc123"))
    return record.path


def _edit(path: Path, change) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def _replace(name: str, data) -> callable:
    def change(f):
        attrs = dict(f[name].attrs)
        del f[name]
        f.create_dataset(name, data=data, maxshape=(None, *np.shape(data)[1:]), chunks=True)
        f[name].attrs.update(attrs)
    return change


def _older_table(f, version: int) -> None:
    """/batches as an earlier version wrote it: the same rows without the fields added since (CRC-32: 3, the weights'
    count: 4, the sent quadratures' offsets and CRC-32: 5), each layer's sent quadratures per image (as_version_4)."""
    as_version_4(f)
    _table_without(f, ({"weight_images_sent", "data_images_sent"} if version < 4 else set())
                   | ({"client_quadratures_crc32", "returned_snu_crc32"} if version < 3 else set()))


def _table_without(f, fields: set[str]) -> None:
    """/batches rewritten without ``fields`` (every row kept)."""
    table = f["batches"][()]
    kept = np.dtype([(name, table.dtype[name]) for name in table.dtype.names if name not in fields])
    rows = np.zeros(len(table), kept)
    for name in kept.names:
        rows[name] = table[name]
    del f["batches"]
    f.create_dataset("batches", data=rows, maxshape=(None,), chunks=True)


SENT_FIELDS = {"sent_start", "sent_stop", "sent_snu_crc32"}  # /batches fields of version 5


def as_version_4(f) -> None:
    """A version-5 file as version 4 wrote it: every layer's sent quadratures per image (a batch stored once
    expanded), on the sample axis, and /batches without the sent offsets and CRC-32."""
    table = f["batches"][()]
    for k in range(len(f["layers"])):
        group = f[f"layers/{k}/verification"]
        stored = group["sent_snu"][()]
        parts = []
        for row in table:
            values = stored[row["sent_start"][k]:row["sent_stop"][k]]
            expanded = int(row["sample_stop"][k] - row["sample_start"][k])
            parts.append(np.tile(values, expanded // max(values.size, 1)) if values.size < expanded else values)
        named = h5py.h5ds.is_attached(group["sent_snu"].id, group["sent_value"].id, 0)  # a version-1 copy has no scales
        if named:
            group["sent_snu"].dims[0].detach_scale(group["sent_value"])
        del group["sent_snu"], group["sent_value"]
        group.create_dataset("sent_snu", data=np.concatenate(parts) if parts else np.zeros(0, "<f4"),
                             maxshape=(None,), chunks=(16384,), compression="gzip", fletcher32=True)
        if named:
            group["sent_snu"].dims[0].attach_scale(group["sample_mode"])
    _table_without(f, SENT_FIELDS)
    f.attrs["schema_version"] = np.int64(min(4, int(f.attrs["schema_version"])))


def _without_sent_offsets(f) -> None:
    """/batches without version 5's sent offsets and CRC-32, the file still saying version 5."""
    _table_without(f, SENT_FIELDS)


def _shortened_last_sent(f) -> None:
    """The last batch's sent values one fewer than any stored form of them."""
    table = f["batches"][()]
    table["sent_stop"][-1, 0] -= 1
    f["batches"][...] = table


def _table_edit(field: str, value, row: int = 1) -> callable:
    def change(f):
        table = f["batches"][()]
        table[field][row] = value
        f["batches"][...] = table
    return change


BAD_FILES = {
    "missing": (lambda p, t: p.unlink(), "no such file"),
    "directory": (lambda p, t: (p.unlink(), p.mkdir()), "is not a regular file"),
    "not hdf5": (lambda p, t: p.write_text("time,power_w\n0,0.001\n"), "is not an HDF5 file"),
    "empty hdf5": (lambda p, t: h5py.File(p, "w").close(), "has no 'schema' attribute"),
    "other schema": (_foreign, "its schema attribute is 'qslab.calibration/1'"),
    "newer version": (lambda p, t: _edit(p, lambda f: f.attrs.__setitem__("schema_version", 6)),
                      r"schema_version 6; this qslab reads schema_version 1, 2, 3, 4 and 5 \(update qslab"),
    "older version": (lambda p, t: _edit(p, lambda f: f.attrs.__setitem__("schema_version", 0)),
                      r"schema_version 0; this qslab reads schema_version 1, 2, 3, 4 and 5 \(it predates"),
    "text version": (lambda p, t: _edit(p, lambda f: f.attrs.__setitem__("schema_version", "1")),
                     "schema_version attribute is '1', expected the integer 5"),
    "version 5 without checksums": (lambda p, t: _edit(p, lambda f: f["meta"].attrs.__delitem__("sha256_json")),
                                    "no sha256_json attribute, which schema_version 2 and later require"),
    "version 4 without batch CRCs": (lambda p, t: _edit(p, lambda f: _older_table(f, 2)),
                                     "/batches has dtype .*, expected .*client_quadratures_crc32"),
    "version 4 without the weights' count": (lambda p, t: _edit(p, lambda f: _older_table(f, 3)),
                                             "/batches has dtype .*, expected .*weight_images_sent"),
    "version 5 without the sent offsets": (lambda p, t: _edit(p, _without_sent_offsets),
                                           "/batches has dtype .*, expected .*sent_start"),
    "sent offsets of neither length": (lambda p, t: _edit(p, _shortened_last_sent),
                                       "sent offsets are neither image_count x verified rows x modes nor"),
    "a weights' count that decreases": (lambda p, t: _edit(p, _table_edit("weight_images_sent", [8, 8])),
                                        "weight_images_sent is inconsistent"),
    "a weights' count below the images": (lambda p, t: _edit(p, _table_edit("weight_images_sent", [6, 20])),
                                          "weight_images_sent is inconsistent"),
    "a weights' count at the end of another shape": (
        lambda p, t: _edit(p, lambda f: (f.__delitem__("weight_images_sent"),
                                         f.create_dataset("weight_images_sent", data=np.zeros(3, np.int64)))),
        r"/weight_images_sent must be an int64 dataset of shape \(2,\)"),
    "a weights' count after a batch not counted": (
        lambda p, t: _edit(p, _table_edit("weight_images_sent", [-1, -1], row=0)), "weight_images_sent is inconsistent"),
    "truncated": (lambda p, t: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) * 2 // 3]), "is truncated"),
    "cut to the superblock": (lambda p, t: p.write_bytes(p.read_bytes()[:200]), "is truncated"),
    "missing dataset": (lambda p, t: _edit(p, lambda f: f.__delitem__("layers/1/verification/rows")),
                        "is missing: /layers/1/verification/rows"),
    "missing meta": (lambda p, t: _edit(p, lambda f: f.__delitem__("meta/seeds_json")), "is missing: /meta/seeds_json"),
    "missing status": (lambda p, t: _edit(p, lambda f: f.__delitem__("status")), "is missing: /status"),
    "layer gap": (lambda p, t: _edit(p, lambda f: f.move("layers/1", "layers/2")),
                  r"/layers holds \['0', '2'\], expected groups named 0 .. 1"),
    "short labels": (lambda p, t: _edit(p, lambda f: f["images/label"].resize((5,))),
                     "/images/label has 5 rows but the batches table commits 12"),
    "label dtype": (lambda p, t: _edit(p, _replace("images/label", np.zeros(12, np.int64))),
                    "/images/label has dtype int64, expected uint8"),
    "quadrature width": (lambda p, t: _edit(p, _replace("layers/0/client_quadratures_snu", np.zeros((12, 5), "f4"))),
                         r"/layers/0/client_quadratures_snu has shape \(12, 5\), expected \(n, 6\)"),
    "fixed size": (lambda p, t: _edit(p, lambda f: (f.__delitem__("images/index"),
                                                    f.create_dataset("images/index", data=np.zeros(12, "<i4")))),
                   "/images/index is not extendable"),
    "image offsets": (lambda p, t: _edit(p, _table_edit("first_image", 3)), "first_image/image_count are inconsistent"),
    "sample offsets": (lambda p, t: _edit(p, _table_edit("sample_stop", [40, 40])),
                       "sample_start/sample_stop are not contiguous|sample offsets disagree"),
    "bad status": (lambda p, t: _edit(p, lambda f: f["status"].__setitem__((), b"paused")),
                   r"/status is 'paused', expected one of \['running', 'complete', 'aborted'\]"),
    "bad settings json": (lambda p, t: _edit(p, lambda f: (f.__delitem__("meta/settings_json"),
                                                           f.create_dataset("meta/settings_json", data=b"{mu"))),
                          "/meta/settings_json is not valid UTF-8 JSON"),
    "complete without results": (lambda p, t: _edit(p, lambda f: f["results/results_json"].resize((0,))),
                                 "says it is complete but /results/results_json is empty"),
    "bad verified row": (lambda p, t: _edit(p, lambda f: f["layers/1/verification/rows"].__setitem__(0, 9)),
                         r"/layers/1/verification/rows of batch 0 are not distinct rows in \[0, 3\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_give_one_recording_error_naming_file_and_problem(tmp_path, case):
    spoil, message = BAD_FILES[case]
    path = write_session(tmp_path / "session.h5")
    spoil(path, tmp_path)
    with pytest.raises(RecordingError, match=message) as error:
        validate(path)
    assert str(path) in str(error.value)
    with pytest.raises(RecordingError):
        SessionWriter.resume(path)


def test_a_real_calibration_record_is_not_a_session(tmp_path):
    path = _calibration_record(tmp_path / "unused", tmp_path)
    with pytest.raises(RecordingError, match=r"schema attribute is 'qslab.calibration/1' \(expected 'qslab.session'\)"):
        SessionFile.open(path)


def test_a_corrupt_chunk_is_detected(tmp_path):
    """fletcher32: a flipped byte inside compressed data is an error, not a silently different value."""
    path = write_session(tmp_path / "session.h5")
    with h5py.File(path, "r") as f:
        offset = f["images/pixels"].id.get_chunk_info(0).byte_offset + 100
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="unreadable data in /images/pixels") as error:
        validate(path)
    assert str(path) in str(error.value)


def _chunk_offset(path: Path, name: str, row: int) -> int:
    """The file offset of row ``row`` of the unfiltered dataset ``name`` (its bytes are stored as they are)."""
    with h5py.File(path, "r") as f:
        dataset = f[name]
        chunk_rows = dataset.chunks[0]
        info = dataset.id.get_chunk_info_by_coord((row // chunk_rows * chunk_rows, *[0] * (dataset.ndim - 1)))
        assert info.filter_mask == 0 and not dataset.compression and not dataset.fletcher32
        return info.byte_offset + (row % chunk_rows) * dataset.dtype.itemsize * int(np.prod(dataset.shape[1:]))


@pytest.mark.parametrize("name, batch, row", [("layers/0/client_quadratures_snu", 1, 5),
                                              ("layers/1/verification/returned_snu", 1, 4 * 2 * 4 + 5),
                                              ("layers/1/verification/sent_snu", 1, 4 * 2 * 4 + 5)])
def test_a_flipped_byte_in_a_committed_noise_value_is_reported_by_its_batch_crc(tmp_path, name, batch, row):
    """The noise datasets carry no HDF5 checksum: the CRC-32 in each /batches row catches a changed value, named by
    dataset and batch (row: the flat row inside the dataset, here in ``batch``)."""
    path = write_session(tmp_path / "session.h5")
    offset = _chunk_offset(path, name, row)
    data = bytearray(path.read_bytes())
    data[offset + 1] ^= 0x10  # a mantissa bit: still a finite number, only the CRC can tell
    path.write_bytes(bytes(data))
    with h5py.File(path, "r") as f:
        assert np.isfinite(f[name][()]).all()
    with pytest.raises(RecordingError, match=f"/{name} of batch {batch} does not match the CRC-32") as error:
        validate(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(RecordingError, match="does not match the CRC-32"):
        SessionWriter.resume(path)


def test_the_weights_count_is_each_batchs_as_given_and_a_resume_adds_to_the_last(tmp_path):
    """weight_images_sent (version 4): each committed row holds the counts its batch was given; the writer and the
    reader name the last; a resumed writer starts from it (zeros before the first batch)."""
    path = tmp_path / "session.h5"
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        assert writer.weight_images_sent == (0, 0)
        append(writer, 0)
        assert writer.weight_images_sent == weights_sent(0)
        append(writer, 1)
    with SessionFile.open(path) as session:
        assert session.weight_images_sent == weights_sent(1) and session.data_images_sent == data_sent(1)
        assert session.batch_table["weight_images_sent"].tolist() == [list(weights_sent(b)) for b in range(2)]
        assert session.batch_table["data_images_sent"].tolist() == [list(data_sent(b)) for b in range(2)]
    with SessionWriter.resume(path) as writer:
        assert writer.weight_images_sent == weights_sent(1) and writer.data_images_sent == data_sent(1)
        images, layers = batch_data(2)
        with pytest.raises(RecordingError, match=r"data_images_sent \[11, 15\]: expected per layer at least \[12, 12\]"):
            writer.append_batch(**images, layers=layers, weight_images_sent=weights_sent(2), data_images_sent=(11, 15))
        append(writer, 2)
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert session.weight_images_sent == weights_sent(2)
        assert_batches_equal(session, 3)


def test_the_count_at_a_writers_end_holds_light_sent_after_its_last_batch(tmp_path):
    """A writer that ends (aborted, or finished) stores the count then, which may exceed its last batch's (a batch that
    failed, or that the cap stopped from being taken again, sent its light): the reader and the next resume start
    from it; a later batch's larger count takes over."""
    path = tmp_path / "session.h5"
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        append(writer, 0)
        writer.abort("batch 2 failed", weight_images_sent=(20, 21))
    with SessionFile.open(path) as session:
        assert weights_sent(0) == (6, 9) and session.weight_images_sent == (20, 21)
    with SessionWriter.resume(path) as writer:
        assert writer.weight_images_sent == (20, 21)
        images, layers = batch_data(1)
        with pytest.raises(RecordingError, match=r"at least \[20, 21\]"):
            writer.append_batch(**images, layers=layers, weight_images_sent=(19, 30))
        writer.append_batch(**images, layers=layers, weight_images_sent=(30, 30))
        with pytest.raises(RecordingError, match=r"at least \[30, 30\]"):
            writer.finish(RESULTS, weight_images_sent=(29, 40))
        writer.finish(RESULTS, weight_images_sent=(30, 40))
    with SessionFile.open(path) as session:
        assert session.status == "complete" and session.weight_images_sent == (30, 40)
        assert session.batch_table["weight_images_sent"].tolist() == [[6, 9], [30, 30]]
    validate(path)


@pytest.mark.parametrize("given, message", [
    ((3, 9), r"\[3, 9\]: expected per layer at least \[7, 9\]"),    # below the images recorded with the batch
    ((7, 8), r"\[7, 8\]: expected per layer at least \[7, 9\]"),    # below the last batch's count
    ((7, 9, 1), r"has shape \(3,\), expected \(2,\)"),
    ((7.0, 9.0), "must be integers"),
])
def test_a_weights_count_that_cannot_be_a_total_is_refused_and_nothing_is_written(tmp_path, given, message):
    path = tmp_path / "session.h5"
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        append(writer, 0)  # (6, 9) after 4 images
        images, layers = batch_data(1)  # 3 more
        with pytest.raises(RecordingError, match=message):
            writer.append_batch(**images, layers=layers, weight_images_sent=given)
        assert writer.batches_written == 1 and writer.weight_images_sent == weights_sent(0)
    validate(path)


def test_a_batch_not_counted_ends_the_count_for_the_file(tmp_path):
    """A writer not given the count stores -1 (not counted); a count after it is refused, since it could not hold
    the passes before it, and the reader reports the file as not counted."""
    path = tmp_path / "session.h5"
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        append(writer, 0, counted=False)
        assert writer.weight_images_sent is None
        with pytest.raises(RecordingError, match="holds no count to add it to"):
            append(writer, 1)
        append(writer, 1, counted=False)
    with SessionFile.open(path) as session:
        assert session.weight_images_sent is None
        assert (session.batch_table["weight_images_sent"] == -1).all()


def test_the_batch_crcs_are_the_crc32_of_each_batchs_bytes(tmp_path):
    """An independent route to the /batches CRC fields: zlib.crc32 of the arrays the test gave append_batch."""
    path = write_session(tmp_path / "session.h5")
    with h5py.File(path, "r") as f:
        table = f["batches"][()]
    for batch in range(3):
        for k, want in enumerate(batch_data(batch)[1]):
            assert table["client_quadratures_crc32"][batch, k] == zlib.crc32(want.client_quadratures_snu.tobytes())
            assert table["returned_snu_crc32"][batch, k] == zlib.crc32(want.returned_snu.astype("<f4").tobytes())
    assert table["returned_snu_crc32"][2, 1] == 0  # layer 1 batch 2 verifies no row: the CRC of no bytes


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_the_batch_crcs_are_checked_across_any_read_slices(tmp_path, step):
    """validate reads in slices of VALUES_PER_READ that need not end at batch boundaries: each batch's CRC is carried
    across slices (here of ``step`` values), empty batches included, and a changed value names its own batch."""
    from qslab.analysis.recording.reader import _BatchCrcs

    path = write_session(tmp_path / "session.h5")
    with SessionFile.open(path) as session:
        table = session.batch_table
        for k in range(len(LAYERS)):
            returned = session.verification(k).returned_snu
            stops = table["sample_stop"][:, k]
            for values, bad_batch in ((returned, None), (returned.copy(), int(np.argmax(stops > 5)))):
                if bad_batch is not None:
                    values[5] = np.nextafter(values[5], np.float32(np.inf))
                crcs = _BatchCrcs(session, table, k, "verification/returned_snu", stops)
                if bad_batch is None:
                    for start in range(0, len(values), step):
                        crcs.feed(values[start:start + step])
                    crcs.finish()
                    assert crcs.batch == 3
                else:
                    with pytest.raises(RecordingError, match=f"returned_snu of batch {bad_batch} does not match"):
                        for start in range(0, len(values), step):
                            crcs.feed(values[start:start + step])


def test_a_torn_rewrite_of_the_chunk_a_batch_shares_with_the_next_keeps_the_committed_rows(tmp_path):
    """The mechanism behind the unfiltered noise datasets. Appending batch k+1 rewrites, in place, the chunk it
    shares with batch k; a kill can cut that write between pages. Here the writer is stopped with batch 2's arrays
    written and its row not, and the shared chunk's bytes beyond the committed rows are overwritten with garbage as
    a torn write leaves them: the committed rows read exactly (no chunk checksum to fail), validate passes, and a
    resume drops the tail and continues."""
    path = tmp_path / "torn.h5"
    with SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        append(writer, 0)
        append(writer, 1)
    with h5py.File(path, "r+", libver="latest") as f:  # batch 2's arrays, no /batches row: an interrupted append
        images, layers = batch_data(2)
        for k, batch in enumerate(layers):
            for name, values in (("client_quadratures_snu", batch.client_quadratures_snu),
                                 ("verification/returned_snu", batch.returned_snu.ravel())):
                dataset = f[f"layers/{k}/{name}"]
                dataset.resize(len(dataset) + len(values), axis=0)
                if len(values):
                    dataset[-len(values):] = values
    with SessionFile.open(path) as session:
        images, table = session.images_written, session.batch_table
    data = bytearray(path.read_bytes())
    for k in range(len(LAYERS)):
        for name, committed, garbage in (("client_quadratures_snu", images, np.random.default_rng(k).bytes),
                                         ("verification/returned_snu", int(table["sample_stop"][-1, k]),
                                          lambda size: b"\xff" * size)):  # NaN, were it committed
            with h5py.File(path, "r") as f:
                dataset = f[f"layers/{k}/{name}"]
                size = (dataset.shape[0] - committed) * 4 * int(np.prod(dataset.shape[1:]))
            start = _chunk_offset(path, f"layers/{k}/{name}", committed)
            data[start:start + size] = garbage(size)
    path.write_bytes(bytes(data))
    validate(path)
    with SessionFile.open(path) as session:
        assert_batches_equal(session, 2)
    with SessionWriter.resume(path) as writer:
        assert writer.batches_written == 2
        append(writer, 2)
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert_batches_equal(session, 3)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory) -> tuple[Path, bytes]:
    directory = tmp_path_factory.mktemp("fuzz")
    return directory, write_session(directory / "valid.h5").read_bytes()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.floats(0, 1, exclude_max=True), kind=st.sampled_from(["truncate", "flip", "zero"]),
       span=st.integers(1, 64), xor=st.integers(1, 255))
def test_mutated_files_only_ever_raise_recording_error(valid_file, position, kind, span, xor):
    directory, valid = valid_file
    data = damaged(valid, position, kind, span, xor)
    path = directory / "mutated.h5"
    path.write_bytes(bytes(data))
    try:
        with SessionFile.open(path) as session:
            session.results  # noqa: B018
            for batch in range(session.batches_written):
                for k in range(len(session.layers)):
                    session.layer_batch(batch, k)
    except RecordingError as error:
        assert str(path) in str(error)


LIVE_WRITER = """
import sys
import threading
sys.path.insert(0, sys.argv[2])
from test_recording import LAYERS, META, append
from qslab.analysis.recording import SessionWriter
with SessionWriter.create(sys.argv[1], LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
    append(writer, 0)
    print("written", flush=True)
    sys.stdin.read()
"""


def test_resume_refuses_a_live_writer_naming_its_pid_and_host(tmp_path):
    path = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(path), str(ROOT / "tests")], cwd=ROOT,
                              text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline().strip() == "written"
        with pytest.raises(RecordingError, match=f"being written by pid {writer.pid} on {platform.node()}"):
            SessionWriter.resume(path)
        with pytest.raises(RecordingError, match=f"being written by pid {writer.pid}"):
            SessionWriter.resume(path, after_crash=True)  # even when told it crashed: the lock says it runs
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)
    assert not (tmp_path / ".live.h5.writer").exists()  # released on close
    with SessionWriter.resume(path) as resumed:
        assert resumed.lock.crashed is None and resumed.batches_written == 1


def test_a_resume_killed_before_its_copy_was_moved_leaves_the_file_as_it_was(tmp_path):
    """A resume only reads the file and prepares a copy (.NAME.recovering) that it moves in place at the end: a kill
    at any point before the move leaves the file untouched, readable by plain h5py, and a stale copy, which the
    next resume removes (under the writer lock: it is nobody else's)."""
    path = write_session(tmp_path / "resumed.h5", batches=2, finish=False)
    before = path.read_bytes()
    stale = tmp_path / ".resumed.h5.recovering"
    stale.write_bytes(before[: len(before) // 2])  # what a kill during the copy leaves
    with h5py.File(path, "r") as plain:
        assert plain["batches"].shape == (2,)
    with SessionWriter.resume(path, record={"resumed": 1}) as writer:
        assert not stale.exists()
        append(writer, 2)
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert session.batches_written == 3 and session.resumes == [{"resumed": 1}]


@pytest.mark.parametrize("name", sorted(META))
def test_a_metadata_text_changed_after_writing_is_refused_naming_it(tmp_path, name):
    """Each /meta text has its SHA-256 in /meta's sha256_json: an edit that keeps the text valid (one character of
    the same width) is refused, not read."""
    path = write_session(tmp_path / "session.h5", batches=1)
    with h5py.File(path, "r+") as f:
        data = bytearray(bytes(f[f"meta/{name}"][()]))
        at = next(i for i, byte in enumerate(data) if chr(byte).isalnum())
        data[at] = ord("x") if chr(data[at]) != "x" else ord("y")
        f[f"meta/{name}"][()] = bytes(data)
    with pytest.raises(RecordingError, match=f"/meta/{name} does not match its SHA-256"):
        SessionFile.open(path)


@pytest.mark.parametrize("version, checksums", [(1, True), (1, False), (2, True), (3, True)],
                         ids=["version 1 with sha256_json", "version 1 before it", "version 2", "version 3"])
def test_every_version_the_reader_claims_is_read(tmp_path, version, checksums):
    """schema_version 1 files (written before the checksums, and after them with sha256_json and resumes_json as
    optional attributes), 2 (no batch CRCs) and 3 (no weights' count) read as they always did, their weights' count
    as not counted; an edited text in one that carries checksums is still refused."""
    from qslab.analysis.recording.reader import READABLE_VERSIONS

    assert READABLE_VERSIONS == (1, 2, 3, 4, 5) and SCHEMA_VERSION == 5
    path = write_session(tmp_path / "old.h5", batches=2, finish=False)

    def as_older_version(f):
        f.attrs["schema_version"] = np.int64(version)
        _older_table(f, version)
        del f["weight_images_sent"], f["data_images_sent"], f["layer"]  # version 4's counts at the end and their scale
        if not checksums:
            del f["meta"].attrs["sha256_json"]
    _edit(path, as_older_version)
    with SessionFile.open(path) as session:
        assert session.schema_version == version and session.batches_written == 2 and session.resumes == []
        assert_batches_equal(session, 2)
        assert session.weight_images_sent is None
    if version >= 2:  # resumed, it stays a file of its version: rows without the fields added since
        with SessionWriter.resume(path) as writer:
            assert writer.weight_images_sent is None
            with pytest.raises(RecordingError, match="holds no count to add it to"):
                append(writer, 2)
            append(writer, 2, counted=False)
        with SessionFile.open(path) as session:
            assert session.schema_version == version and "weight_images_sent" not in session.batch_table.dtype.names
            assert ("returned_snu_crc32" in session.batch_table.dtype.names) == (version == 3)
            assert_batches_equal(session, 3)
    if checksums:
        def edit_seed(f):
            data = bytearray(bytes(f["meta/seeds_json"][()]))
            at = next(i for i, byte in enumerate(data) if chr(byte).isdigit())
            data[at] = ord("7") if chr(data[at]) != "7" else ord("8")
            f["meta/seeds_json"][()] = bytes(data)
        _edit(path, edit_seed)
        with pytest.raises(RecordingError, match="does not match its SHA-256"):
            SessionFile.open(path)


# --- kill -9 while writing ---------------------------------------------------------------------------

def long_batch_data(batch: int) -> tuple[dict, list[LayerBatch]]:
    """Batch ``batch`` of an open-ended session of 50-image batches, the same every time it is asked for."""
    rng = np.random.default_rng(1000 + batch)
    count = 50
    images = {"image_index": np.arange(batch * count, (batch + 1) * count), "label": rng.integers(0, 10, count),
              "pixels": rng.integers(0, 256, (count, PIXELS_PER_IMAGE), dtype=np.uint8),
              "prediction": rng.integers(0, 10, count)}
    layers = []
    for shape in LAYERS:
        rows = np.sort(rng.choice(shape.rows, 2, replace=False))
        layers.append(LayerBatch(
            client_quadratures_snu=rng.normal(size=(count, shape.rows)).astype(np.float32), verified_rows=rows,
            measure_p=rng.random((count, rows.size)) < 0.5,
            sent_snu=rng.normal(0, 2.5, (count, rows.size, shape.modes)).astype(np.float32),
            returned_snu=rng.normal(0, 2.0, (count, rows.size, shape.modes)).astype(np.float32)))
    return images, layers


def assert_long_batches(session: SessionFile, batches: int) -> None:
    """The file commits exactly batches 0 .. batches-1 of ``long_batch_data``, every array as written."""
    assert session.batches_written == batches and session.images_written == 50 * batches
    for batch in range(batches):
        images, layers = long_batch_data(batch)
        np.testing.assert_array_equal(session.images.label[50 * batch:50 * (batch + 1)], images["label"])
        np.testing.assert_array_equal(session.images.pixels[50 * batch:50 * (batch + 1)], images["pixels"])
        for k, want in enumerate(layers):
            got = session.layer_batch(batch, k)
            for field in ("client_quadratures_snu", "verified_rows", "measure_p", "sent_snu", "returned_snu"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


ENDLESS_WRITER = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from test_recording import LAYERS, META, long_batch_data
from qslab.analysis.recording import SessionWriter

class KilledBeforeCommit(SessionWriter):
    def _commit(self, *args):
        if self.batches_written == 3:  # batch 3's arrays written and flushed, its row not
            os.kill(os.getpid(), signal.SIGKILL)
        super()._commit(*args)

kind = KilledBeforeCommit if sys.argv[3] == "before-commit" else SessionWriter
writer = kind.create(sys.argv[1], LAYERS, META, qslab_version="0.1.0", git_revision="abc123")
batch = 0
while True:
    images, layers = long_batch_data(batch)
    writer.append_batch(**images, layers=layers)
    batch += 1
    print(batch, flush=True)
"""


def kill_a_few_batches_in(child: subprocess.Popen, path: Path, delay_s: float) -> int:
    """SIGKILL ``child`` (a writer printing each committed batch's count) ``delay_s`` after its 4th commit; check that
    every batch it reported committed reads back exactly and nothing half-written counts; the batches that survived."""
    try:
        committed = 0
        while committed < 4:
            committed = int(child.stdout.readline())
        if delay_s:
            threading.Event().wait(delay_s)  # the kill lands somewhere in the next batches, whatever the speed
        child.kill()
        child.wait(timeout=60)
        committed = max([committed] + [int(line) for line in child.stdout.read().split()])
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL
    with SessionFile.open(path) as session:
        assert session.status == "running" and session.batches_written >= committed
        survived = session.batches_written
        assert_long_batches(session, survived)
    validate(path)
    return survived


@pytest.mark.parametrize("delay_s", [0.0, 0.003, 0.011, 0.029])
def test_a_writer_killed_at_any_moment_keeps_every_batch_it_committed(tmp_path, delay_s):
    """SIGKILL (no handler, no flush, no close) lands wherever the writer is, a few batches in: every batch whose
    append returned before the kill reads back exactly, nothing half-written counts, and the file resumes."""
    path = tmp_path / "killed.h5"
    child = subprocess.Popen([sys.executable, "-c", ENDLESS_WRITER, str(path), str(ROOT / "tests"), "timed"],
                             cwd=ROOT, text=True, stdout=subprocess.PIPE)
    survived = kill_a_few_batches_in(child, path, delay_s)
    with SessionWriter.resume(path) as writer:
        assert writer.lock.crashed is not None and writer.batches_written == survived
        images, layers = long_batch_data(survived)
        writer.append_batch(**images, layers=layers)
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert session.status == "complete"
        assert_long_batches(session, survived + 1)


def test_a_writer_killed_between_a_batchs_arrays_and_its_row_keeps_the_batches_before(tmp_path):
    """The commit rule under SIGKILL: batch 3's arrays are written and flushed, its /batches row is not: the file
    holds batches 0-2 exactly, the tail is not data, and a resume cuts it off and continues."""
    path = tmp_path / "killed.h5"
    done = subprocess.run([sys.executable, "-c", ENDLESS_WRITER, str(path), str(ROOT / "tests"), "before-commit"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL and done.stdout.split() == ["1", "2", "3"], done.stderr
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        assert f["images/label"].shape[0] == 200 and f["batches"].shape[0] == 3  # batch 3's arrays are there
    with SessionFile.open(path) as session:
        assert_long_batches(session, 3)
    with SessionWriter.resume(path) as writer:
        assert writer.batches_written == 3
        images, layers = long_batch_data(3)
        writer.append_batch(**images, layers=layers)
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert_long_batches(session, 4)


def test_sent_quadratures_that_repeat_for_every_image_are_stored_once_per_batch(tmp_path):
    """A session's sent quadratures repeat each batch's one-image block (a verified row sends the same values to every
    image): version 5 stores that block once, a batch whose images differ (here by the sign of one zero) in full, and
    both read back per image, bit for bit, through every reading route."""
    rng = np.random.default_rng(5)
    shapes, images, rows = [LayerShape(rows=784, modes=392)], 100, 8
    sent = []
    with SessionWriter.create(tmp_path / "s.h5", shapes, META, qslab_version="0.1.0", git_revision="abc") as writer:
        for batch in range(3):
            block = rng.normal(0, 3.0, (1, rows, 392)).astype(np.float32)
            block[0, 2, 5] = 0.0
            sent.append(np.broadcast_to(block, (images, rows, 392)).copy())
            if batch == 1:  # one image sent -0.0 where the others sent 0.0: stored in full
                sent[-1][37, 2, 5] = np.float32(-0.0)
            layer = LayerBatch(rng.normal(size=(images, 784)).astype(np.float32), np.arange(rows) * 90,
                               np.broadcast_to(rng.random(rows) < 0.5, (images, rows)), sent[-1],
                               rng.normal(size=(images, rows, 392)).astype(np.float32))
            writer.append_batch(np.arange(images * batch, images * (batch + 1)), rng.integers(0, 10, images),
                                rng.integers(0, 256, (images, PIXELS_PER_IMAGE), dtype=np.uint8),
                                rng.integers(0, 10, images), [layer])
    validate(tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["layers/0/verification/sent_snu"].shape == ((2 + images) * rows * 392,)
        stored = f["batches"]["sent_stop"][:, 0] - f["batches"]["sent_start"][:, 0]
        assert list(stored) == [rows * 392, images * rows * 392, rows * 392]
    every = np.concatenate(sent, axis=None).view(np.uint32)
    with SessionFile.open(tmp_path / "s.h5") as session:
        for batch in range(3):
            got = session.layer_batch(batch, 0).sent_snu
            np.testing.assert_array_equal(got.view(np.uint32), sent[batch].view(np.uint32))
        np.testing.assert_array_equal(session.verification(0).sent_snu.view(np.uint32), every)
        read = np.concatenate([chunk for chunk, _ in session.verification_chunks(0, values=100_003)])
        np.testing.assert_array_equal(read.view(np.uint32), every)


def test_a_version_4_file_reads_and_resumes_in_its_own_layout(tmp_path):
    """A version-4 file (sent quadratures per image, no sent offsets) reads as it did; resumed, its batches are
    written in its layout (every image's sent values) and the whole file validates, CRCs and all."""
    path = write_session(tmp_path / "v4.h5", batches=2, finish=False)
    _edit(path, as_version_4)
    with SessionFile.open(path) as session:
        assert session.schema_version == 4 and "sent_start" not in session.batch_table.dtype.names
        assert_batches_equal(session, 2)
    with SessionWriter.resume(path) as writer:
        append(writer, 2)
    validate(path)
    with SessionFile.open(path) as session:
        assert session.schema_version == 4 and "sent_snu_crc32" not in session.batch_table.dtype.names
        assert_batches_equal(session, 3)
        samples = int(session.batch_table["sample_stop"][-1, 0])
    with h5py.File(path, "r") as f:
        assert f["layers/0/verification/sent_snu"].shape == (samples,)
