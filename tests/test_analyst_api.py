"""The analyst's API (qslab.open_session, open_calibration, replay) on a bench session, old files, and the example.

Every number the API gives is checked against a second route: plain h5py on the file, the recorded
results, `qslab replay --json`, and xarray opening the file directly (engine h5netcdf).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from qslab.analysis.recording import RecordingError, SessionFile
from qslab.analysis.recording.schema import DIMENSION_SCALE_NAME
from test_recording import as_version_4
from qslab.calibration.records import RecordStore
from qslab.sequences import session as session_module
from qslab.sequences.cli import main
from qslab.sequences.config import load_config
from qslab.sequences.session import SessionSettings, run_session

import qslab

ROOT = Path(__file__).resolve().parents[1]
OLD_FILE = ROOT / "tests" / "data" / "session_v1.h5"  # written by the writer of commit a1bcbe5 (schema version 1)
SETTINGS = SessionSettings(images=20, mu=6.0, gain=1.3, seed=5, batch_images=5, verify_fraction=0.02,
                           failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=20)


@pytest.fixture(scope="module")
def bench(tmp_path_factory, calibrated_store_at):
    """A 20-image bench session in 4 batches, and its calibration records (the bench's, tests/conftest.py)."""
    directory = tmp_path_factory.mktemp("api")
    store = RecordStore(calibrated_store_at(directory / "calibration"))
    results = run_session(load_config(ROOT / "lab_config.toml"), SETTINGS, out_dir=directory / "sessions",
                          store=store, progress=False)
    return Path(results["file"]), store, results


def test_the_session_dataset_holds_what_plain_h5py_reads(bench):
    path, _, results = bench
    ds = qslab.open_session(path)
    assert dict(ds.sizes) == {"image": 20, "pixel": 784, "batch": 4, "layer": 2}
    with h5py.File(path, "r") as f:
        table = f["batches"][()]
        np.testing.assert_array_equal(ds.label, f["images/label"][()])
        np.testing.assert_array_equal(ds.prediction, f["images/prediction"][()])
        np.testing.assert_array_equal(ds.pixels, f["images/pixels"][()])
        assert ds.attrs["run_id"] == f.attrs["run_id"].decode()
    for batch in table:  # the batch of each image, from the batches table's offsets
        first, count = int(batch["first_image"]), int(batch["image_count"])
        assert set(ds.image_batch.values[first:first + count]) == {batch["batch"]}
    np.testing.assert_array_equal(ds.verified_rows, table["row_stop"] - table["row_start"])
    assert float(ds.correct.mean()) == results["accuracy"] == ds.attrs["results.accuracy"]
    assert ds.attrs["settings.mu"] == 6.0 and ds.attrs["results.verified"] == int(results["verified"])
    assert json.loads(ds.attrs["results_json"])["weight_leakage_bits_per_mode"] == results["weight_leakage_bits_per_mode"]
    assert ds.pixels.attrs["units"] == "1" and ds.time_unix_s.attrs["units"] == "s"


def test_a_layer_dataset_names_samples_by_image_row_and_quadrature(bench):
    path, _, _ = bench
    layer = qslab.open_session(path, layer=0)
    with SessionFile.open(path) as session:
        for b in range(session.batches_written):
            stored = session.layer_batch(b, 0)
            chosen = layer.sel(sample=layer.sample_batch == b)
            count, verified = stored.measure_p.shape
            np.testing.assert_array_equal(chosen.sent_snu.values.reshape(count, verified, -1), stored.sent_snu)
            np.testing.assert_array_equal(chosen.returned_snu.values.reshape(count, verified, -1), stored.returned_snu)
            np.testing.assert_array_equal(chosen.sample_row.values.reshape(count, verified),
                                          np.broadcast_to(stored.verified_rows, (count, verified)))
            np.testing.assert_array_equal(chosen.measured_quadrature.values.reshape(count, verified) == "P",
                                          stored.measure_p)
        np.testing.assert_array_equal(layer.client_quadratures_snu, session.client_quadratures_snu(0))
    assert layer.sent_snu.attrs["units"] == layer.client_quadratures_snu.attrs["units"] == "SNU"
    assert layer.sizes["mode"] == 392 and qslab.open_session(path, 1).sizes["row"] == 10
    with pytest.raises(RecordingError, match="no layer 2"):
        qslab.open_session(path, 2)


def test_xarray_opens_a_new_file_directly_with_named_dimensions_and_units(bench):
    path, _, _ = bench
    layer = qslab.open_session(path, layer=0)
    for group, dims in {"images": {"image", "pixel"}, "layers/0": {"image", "row"},
                        "layers/0/verification": {"sample", "sample_mode", "verified_row", "sent_value"},
                        "layers/1": {"image", "row"}, "results": {"byte"}, None: {"batch", "layer"}}.items():
        direct = xr.open_dataset(path, engine="h5netcdf", group=group, phony_dims="access")
        assert set(direct.sizes) == dims, group
    direct = xr.open_dataset(path, engine="h5netcdf", group="layers/0")
    assert direct.client_quadratures_snu.attrs["units"] == "SNU"
    np.testing.assert_array_equal(direct.client_quadratures_snu, layer.client_quadratures_snu)
    samples = xr.open_dataset(path, engine="h5netcdf", group="layers/0/verification")
    np.testing.assert_array_equal(samples.returned_snu.values, layer.returned_snu.values.ravel())
    assert samples.sizes["sample"] == layer.sizes["sample"]
    with SessionFile.open(path) as session:  # the sent quadratures as stored: each batch's block once
        table, modes = session.batch_table, session.layers[0].modes
    stored = table["sent_stop"][:, 0] - table["sent_start"][:, 0]
    assert samples.sizes["sent_value"] == stored.sum() == table["row_stop"][-1, 0] * modes
    first, images = samples.sent_snu.values[:stored[0]], int(table["image_count"][0])
    per_image = layer.sent_snu.values.ravel()[:images * first.size].reshape(images, first.size)
    np.testing.assert_array_equal(per_image, np.broadcast_to(first, per_image.shape))


def downgraded(path: Path, target: Path) -> Path:
    """``path`` as schema version 1 wrote it: no dimension scales, no long_name/units (a second route to an old
    file beside the fixture written by the old code)."""
    with h5py.File(path, "r") as source, h5py.File(target, "w", libver="latest") as copy:
        copy.attrs.update({name: source.attrs[name] for name in list(source.attrs)})  # by name (DECISIONS AL)
        copy.attrs["schema_version"] = np.int64(1)
        for name in source:
            source.copy(source[name], copy, name, without_attrs=True)
        as_version_4(copy)  # each batch's sent quadratures per image, no sent offsets
        table = copy["batches"][()]  # without version 3's CRC-32 fields and version 4's weights' count
        fields = [name for name in table.dtype.names
                  if not name.endswith("_crc32") and name not in ("weight_images_sent", "data_images_sent")]
        rows = np.zeros(len(table), [(name, table.dtype[name]) for name in fields])
        for name in fields:
            rows[name] = table[name]
        del copy["batches"]
        copy.create_dataset("batches", data=rows, maxshape=(None,), chunks=True)
        del copy["weight_images_sent"], copy["data_images_sent"]  # version 4's

        def attributes(name, node):
            for key in node.attrs:
                if key not in ("DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME", "units", "long_name"):
                    copy[name].attrs.create(key, node.attrs[key], dtype=node.attrs.get_id(key).dtype)

        source.visititems(attributes)
        scales = []
        copy.visititems(lambda name, node: scales.append(name) if isinstance(node, h5py.Dataset) and node.shape and
                        name.rsplit("/", 1)[-1] in ("image", "batch", "pixel", "byte", "row", "sample",
                                                     "sample_mode", "verified_row", "layer") else None)
        for name in scales:
            del copy[name]
    return target


def test_old_files_load_through_the_api_the_same(bench, tmp_path):
    path, _, _ = bench
    old = downgraded(path, tmp_path / "old.h5")
    unnamed = xr.open_dataset(old, engine="h5netcdf", group="images", phony_dims="access")
    assert all(name.startswith("phony_dim_") for name in unnamed.sizes)  # what the version-2 scales are for
    for layer in (None, 0, 1):
        new_view, old_view = qslab.open_session(path, layer), qslab.open_session(old, layer)
        if layer is None:  # version 4's counts, which an older file does not hold
            assert (new_view.weight_images_sent.values >= np.cumsum(new_view.image_count.values)[:, None]).all()
            assert (new_view.data_images_sent.values >= np.cumsum(new_view.image_count.values)[:, None]).all()
            new_view = new_view.drop_vars(["weight_images_sent", "data_images_sent"])
        assert old_view.attrs.pop("schema_version") == 1 and new_view.attrs.pop("schema_version") == 5
        old_view.attrs["file"] = new_view.attrs["file"]
        xr.testing.assert_identical(new_view, old_view)
    assert qslab.replay(old).as_json()["accuracy"] == qslab.replay(path).accuracy


def test_the_fixture_written_by_the_old_code_loads(tmp_path):
    with h5py.File(OLD_FILE, "r") as f:
        assert f.attrs["schema_version"] == 1 and "image" not in f and "DIMENSION_LIST" not in f["images/label"].attrs
    ds = qslab.open_session(OLD_FILE)
    assert dict(ds.sizes) == {"image": 12, "pixel": 784, "batch": 3, "layer": 2}
    np.testing.assert_array_equal(ds.image_batch, [0] * 4 + [1] * 3 + [2] * 5)
    assert ds.attrs["results.accuracy"] == 0.75 and ds.attrs["settings.seed"] == 7
    layer = qslab.open_session(OLD_FILE, layer=1)
    assert dict(layer.sizes) == {"image": 12, "row": 3, "sample": 4 * 2 + 5 * 0 + 3 * 1, "mode": 4}
    ds.to_netcdf(tmp_path / "copy.nc", engine="h5netcdf")  # the attributes are netCDF types
    assert xr.open_dataset(tmp_path / "copy.nc", engine="h5netcdf").label.equals(ds.label)


def test_a_resumed_file_keeps_its_dimension_scales(bench, tmp_path, monkeypatch):
    _, store, _ = bench
    original, settings = session_module.run_batch, replace(SETTINGS, images=10)

    def interrupted(link, layers, pixels, seed, batch, **kwargs):
        if batch == 1:
            raise KeyboardInterrupt  # Ctrl-C after the first batch
        return original(link, layers, pixels, seed, batch, **kwargs)

    monkeypatch.setattr(session_module, "run_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_session(load_config(ROOT / "lab_config.toml"), settings, out_dir=tmp_path, store=store, progress=False)
    monkeypatch.setattr(session_module, "run_batch", original)
    cut = next(tmp_path.glob("session-*.h5"))
    assert qslab.open_session(cut).sizes["image"] == 5
    results = run_session(load_config(ROOT / "lab_config.toml"), settings, out_dir=tmp_path, store=store, resume=cut,
                          progress=False)
    direct = xr.open_dataset(cut, engine="h5netcdf", group="layers/0")
    assert direct.sizes["image"] == 10 and direct.client_quadratures_snu.attrs["units"] == "SNU"
    assert qslab.open_session(cut).attrs["results.accuracy"] == results["accuracy"]


def test_calibration_records_open_with_units_and_uncertainties(bench):
    _, store, _ = bench
    record = store.latest("photons")
    ds = qslab.open_calibration(record.path)
    estimate = record.estimate("server.photons_per_symbol")
    assert float(ds["server.photons_per_symbol"]) == estimate.value
    assert ds["server.photons_per_symbol"].attrs["uncertainty"] == estimate.uncertainty
    assert ds["server.photons_per_symbol"].attrs["units"] == (estimate.unit or "1")
    np.testing.assert_array_equal(ds["raw.monitor_w"], record.raw["monitor_w"])
    assert ds["raw.monitor_w"].dims == ("sample",) and ds["raw.monitor_w"].attrs["units"] == "W"
    assert ds.attrs["kind"] == "photons" and ds.attrs["id"] == record.id
    for other in store.records():  # every kind opens
        assert qslab.open_calibration(other.path).attrs["instrument"] == other.instrument


def test_replay_is_typed_and_prints_the_same_numbers_as_the_cli(bench, capsys):
    path, store, results = bench
    typed = qslab.replay(path)
    assert isinstance(typed, qslab.ReplayResult) and typed.changes == {}
    assert main(["replay", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert typed.as_json() == printed
    assert typed.accuracy == printed["accuracy"] == results["accuracy"]
    assert typed.weight_leakage_bits_per_mode == results["weight_leakage_bits_per_mode"]
    assert typed.accuracy_ci95 == tuple(results["accuracy_ci95"]) and typed.verified is results["verified"]
    looser = qslab.replay(path, failure_probability=1e-6)
    assert main(["replay", str(path), "--failure-probability", "1e-6", "--json"]) == 0
    assert looser.as_json() == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert looser.weight_leakage_bits_per_mode < typed.weight_leakage_bits_per_mode
    assert looser.changes["weight_leakage_bits_per_mode"] == qslab.Change(typed.weight_leakage_bits_per_mode,
                                                                           looser.weight_leakage_bits_per_mode)
    photons = store.latest("photons")
    with_record = qslab.replay(path, records=[photons])
    assert main(["replay", str(path), "--calibration", photons.id, "--calibration-dir", str(store.directory),
                 "--json"]) == 0
    assert with_record.as_json() == json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_importing_qslab_loads_neither_xarray_nor_the_analysis():
    code = ("import sys, qslab, qslab.sequences.cli; "
            "print(sorted(m for m in ('xarray', 'h5netcdf', 'h5py', 'qslab.analysis.replay') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert loaded.stdout.strip() == "[]"
    with pytest.raises(AttributeError, match="no attribute 'open_sessions'"):
        qslab.open_sessions  # noqa: B018


def test_the_analysis_example_runs_on_a_bench_session(bench, tmp_path):
    path, _, results = bench
    run = subprocess.run([sys.executable, str(ROOT / "docs" / "analysis_example.py"), str(path), str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env={"MPLBACKEND": "Agg", "PATH": ""})
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    with h5py.File(path, "r") as f:  # accuracy per batch by hand from the batches table
        table, correct = f["batches"][()], f["images/prediction"][()] == f["images/label"][()]
    by_hand = [float(correct[b["first_image"]:b["first_image"] + b["image_count"]].mean()) for b in table]
    assert summary["accuracy_per_batch"] == pytest.approx(by_hand) and len(by_hand) == 4
    assert summary["replayed_changes"] == []
    assert summary["weight_leakage_bits_per_mode"] == results["weight_leakage_bits_per_mode"]
    assert summary["looser_weight_leakage_bits_per_mode"] < summary["weight_leakage_bits_per_mode"]
    assert Path(summary["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dimension_scales_are_netcdf_dimensions_not_variables(bench):
    path, _, _ = bench
    with h5py.File(path, "r") as f:
        for name in ("image", "batch", "images/pixel", "layers/0/row", "layers/0/verification/sample"):
            assert h5py.h5ds.is_scale(f[name].id)
            assert f[name].attrs["NAME"].decode().startswith(DIMENSION_SCALE_NAME)
        assert f["layers/0/row"].shape == (784,) and f["image"].shape == (0,)  # growing: its length is the data's
