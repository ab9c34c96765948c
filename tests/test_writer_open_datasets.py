"""SessionWriter keeps its datasets open for its life (analysis/recording/writer.py, _Datasets): no dataset is opened or
closed per batch, a batch's arrays still reach the file before its /batches row, and the file holds exactly what
h5py's high-level calls (the writer's route before) store."""

import signal
import subprocess
import sys
import zlib

import h5py
import numpy as np
from qslab.analysis.recording import SessionFile, SessionWriter, validate
from qslab.analysis.recording.schema import SCHEMA_VERSION, verification_columns
from test_recording import (
    ENDLESS_WRITER,
    LAYERS,
    META,
    RESULTS,
    ROOT,
    batch_data,
    data_sent,
    long_batch_data,
    weights_sent,
)

COLUMNS = verification_columns(SCHEMA_VERSION)  # verification dataset -> (dtype, its offset kind)

EXTENDABLE = {"/batches", "/results/results_json", *(f"/images/{name}" for name in ("index", "label", "pixels",
                                                                                     "prediction")),
              *(f"/layers/{k}/client_quadratures_snu" for k in range(len(LAYERS))),
              *(f"/layers/{k}/verification/{name}" for k in range(len(LAYERS)) for name in COLUMNS)}


def open_datasets(path) -> dict[str, int]:
    """Every dataset of ``path`` open in this process: its name -> its HDF5 identifier. A resumed file keeps the name
    HDF5 opened it under, its copy's (writer.py, _prepared_copy)."""
    names = {str(path).encode(), str(path.with_name(f".{path.name}.recovering")).encode()}
    found = {}
    for handle in h5py.h5f.get_obj_ids(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_DATASET):
        if h5py.h5f.get_name(handle) in names:
            found[h5py.h5i.get_name(handle).decode()] = handle.id
    return found


def test_the_writer_opens_its_datasets_once_and_closes_them_before_the_file(tmp_path):
    """The same HDF5 identifiers before and after batches: append_batch opens and closes no dataset (each reopen
    looked the path up and each close flushed the chunk cache, most of a batch's CPU). Resumed likewise."""
    path = tmp_path / "session.h5"
    writer = SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123")
    opened = open_datasets(path)
    assert set(opened) == EXTENDABLE
    for batch in range(2):
        images, layers = batch_data(batch)
        writer.append_batch(**images, layers=layers)
        assert open_datasets(path) == opened
        with SessionFile.open(path, check_values=False) as session:  # a live session reads its file back so
            assert session.batches_written == batch + 1
        assert open_datasets(path) == opened  # closing the reader closed none of the writer's datasets
    writer.close()
    assert open_datasets(path) == {}
    with SessionWriter.resume(path) as writer:
        opened = open_datasets(path)
        assert set(opened) == EXTENDABLE
        images, layers = batch_data(2)
        writer.append_batch(**images, layers=layers)
        assert open_datasets(path) == opened
        writer.finish(RESULTS)
    assert open_datasets(path) == {}
    with SessionFile.open(path) as session:
        assert session.status == "complete" and session.batches_written == 3


def test_a_batch_killed_before_its_row_is_in_the_file_whole(tmp_path):
    """The durability half of the commit rule with the datasets kept open: ``file.flush()`` writes every open
    dataset's chunk cache, so when the writer is SIGKILLed between batch 3's flush and its /batches row, the file
    already holds all of batch 3's values (uncommitted, beyond the committed rows), not fill values."""
    path = tmp_path / "killed.h5"
    done = subprocess.run([sys.executable, "-c", ENDLESS_WRITER, str(path), str(ROOT / "tests"), "before-commit"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL and done.stdout.split() == ["1", "2", "3"], done.stderr
    images, layers = long_batch_data(3)
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        table = f["batches"][:3]
        for name, key in (("index", "image_index"), ("label", "label"), ("pixels", "pixels"),
                          ("prediction", "prediction")):
            np.testing.assert_array_equal(f[f"images/{name}"][150:], images[key], err_msg=name)
        for k, batch in enumerate(layers):
            np.testing.assert_array_equal(f[f"layers/{k}/client_quadratures_snu"][150:], batch.client_quadratures_snu)
            for name, values in (("sent_snu", batch.sent_snu), ("returned_snu", batch.returned_snu),
                                 ("rows", batch.verified_rows), ("measure_p", batch.measure_p)):
                start = int(table[f"{COLUMNS[name][1]}_stop"][-1, k])  # the images' sent values differ: stored whole
                np.testing.assert_array_equal(f[f"layers/{k}/verification/{name}"][start:], np.ravel(values),
                                              err_msg=f"layer {k} {name}")


def write_like_h5py(path) -> None:
    """``batch_data``'s three batches appended to an empty session file with h5py's high-level calls (resize, then
    slice assignment; the writer's route before it kept its datasets open), offsets and CRC-32s computed here."""
    SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123").close()
    with h5py.File(path, "r+", libver="latest") as f:
        first = 0
        stops = {kind: np.zeros(len(LAYERS), np.int64) for _, kind in COLUMNS.values()}
        for number in range(3):
            images, layers = batch_data(number)
            count = len(images["label"])
            for name, key in (("index", "image_index"), ("label", "label"), ("pixels", "pixels"),
                              ("prediction", "prediction")):
                extend(f[f"images/{name}"], images[key])
            row = np.zeros(1, f["batches"].dtype)
            row["batch"], row["first_image"], row["image_count"] = number, first, count
            for k, batch in enumerate(layers):
                extend(f[f"layers/{k}/client_quadratures_snu"], batch.client_quadratures_snu)
                for name, values in (("sent_snu", batch.sent_snu), ("returned_snu", batch.returned_snu),
                                     ("rows", batch.verified_rows), ("measure_p", batch.measure_p)):
                    kind = COLUMNS[name][1]  # batch_data's images send different values: all stored
                    row[f"{kind}_start"][0, k] = stops[kind][k]
                    row[f"{kind}_stop"][0, k] = stops[kind][k] + extend(f[f"layers/{k}/verification/{name}"],
                                                                        np.ravel(values))
                for kind, stop in stops.items():
                    stop[k] = row[f"{kind}_stop"][0, k]
                row["client_quadratures_crc32"][0, k] = zlib.crc32(batch.client_quadratures_snu.astype("<f4").tobytes())
                row["returned_snu_crc32"][0, k] = zlib.crc32(batch.returned_snu.astype("<f4").tobytes())
                row["sent_snu_crc32"][0, k] = zlib.crc32(batch.sent_snu.astype("<f4").tobytes())
            row["weight_images_sent"][0], row["data_images_sent"][0] = weights_sent(number), data_sent(number)
            extend(f["batches"], row)
            first += count


def extend(dataset: h5py.Dataset, values: np.ndarray) -> int:
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    if len(values):
        dataset[start:] = values
    return len(values)


def stored(path) -> dict[str, dict]:
    """Every dataset of ``path`` as stored: dtype, shape, chunking, filters, fill value, attributes and values (the
    commit times aside); attributes holding object references by the names they point to."""
    found = {}
    with h5py.File(path, "r") as f:
        def visit(name, node):
            if not isinstance(node, h5py.Dataset):
                return
            attributes = {key: repr(node.attrs[key]) for key in node.attrs if key not in ("DIMENSION_LIST",
                                                                                          "REFERENCE_LIST")}
            if "DIMENSION_LIST" in node.attrs:
                attributes["DIMENSION_LIST"] = [[f[ref].name for ref in axis] for axis in node.attrs["DIMENSION_LIST"]]
            values = node[()]
            if name == "batches":
                values = values.copy()
                values["time_unix_s"] = 0
            found[name] = {"dtype": node.dtype, "shape": node.shape, "maxshape": node.maxshape, "chunks": node.chunks,
                           "filters": node.id.get_create_plist().get_nfilters(),
                           "filter_list": [node.id.get_create_plist().get_filter(i)[:3]
                                           for i in range(node.id.get_create_plist().get_nfilters())],
                           "fill": repr(node.fillvalue), "attributes": attributes,
                           "bytes": np.asarray(values).tobytes()}
        f.visititems(visit)
    return found


def test_the_file_holds_what_h5pys_high_level_calls_store(tmp_path):
    """An independent route to the same file: the writer's file and one appended with plain h5py hold the same
    datasets, byte for byte, with the same dtypes, chunking, filters, fill values and attributes."""
    written, plain = tmp_path / "written.h5", tmp_path / "plain.h5"
    with SessionWriter.create(written, LAYERS, META, qslab_version="0.1.0", git_revision="abc123") as writer:
        for number in range(3):
            images, layers = batch_data(number)
            writer.append_batch(**images, layers=layers, weight_images_sent=weights_sent(number),
                                data_images_sent=data_sent(number))
    write_like_h5py(plain)
    validate(plain)
    validate(written)
    ours, theirs = stored(written), stored(plain)
    assert set(ours) == set(theirs)
    assert [name for name in ours if ours[name] != theirs[name]] == []
    assert len(ours["images/pixels"]["bytes"]) == 12 * 784
