"""SentBlocks: each batch's sent quadratures read from the file once, later reads filled from its repeated block.

The reference is what was handed to the writer, and the plain read of a version-4 file's dataset: every slice must
equal them bit for bit. A version-5 file stores a repeating batch's block once (read as it is); in a version-4 file a
batch that does not repeat (or is too short to keep) is read from the file each time.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from test_recording import as_version_4
from test_verified_samples import random_session_batch

from qslab.analysis import recording
from qslab.analysis.recording.sent_blocks import MIN_IMAGES_KEPT, SentBlocks

META = {"config_toml": "", "station_snapshot_json": {}, "settings_json": {"exact_leakage_images": 5},
        "provenance_json": {}, "seeds_json": {}, "calibrations_json": {}}


def _record(path, rng, batches: int, repeat: list[bool], images: list[int] | None = None,
            version: int = 5) -> list[list[np.ndarray]]:
    """A file of `batches` random batches (`images` of each, else 20-89) whose sent samples repeat one image's block
    where `repeat` says so (as a session's do), else differ per image; batch 0 repeats but for a signed zero (equal as
    numbers, not as bits). Version 4: the file as that version stored it. Returns the sent samples handed to the writer,
    per batch and layer."""
    shapes = [recording.LayerShape(40, 16), recording.LayerShape(10, 16)]
    handed = []
    with recording.SessionWriter.create(path, shapes, META, qslab_version="0", git_revision="x") as writer:
        for batch in range(batches):
            count, labels, pixels, captures = random_session_batch(rng, shapes)
            count = count if images is None else images[batch]
            layers = []
            for capture in captures:
                sent = capture.sent_snu[:count].copy()
                if repeat[batch] or batch == 0:
                    sent[:] = sent[0]
                if batch == 0 and not repeat[batch]:
                    sent[0, 0, 0], sent[1:, 0, 0] = 0.0, -0.0
                layers.append(recording.LayerBatch(capture.client_quadratures_snu[:count], capture.verified_rows,
                                                   capture.measure_p[:count], sent, capture.returned_snu[:count]))
            writer.append_batch(np.arange(count) + 1000 * batch, labels[:count], pixels[:count], np.zeros(count, int),
                                layers)
            handed.append([layer.sent_snu for layer in layers])
    if version == 4:
        with h5py.File(path, "r+") as f:
            as_version_4(f)
    return handed


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("values", [7, 997, 16 * 40, 1 << 18])
def test_reads_through_the_blocks_equal_the_files_values_bit_for_bit(tmp_path, values, version):
    rng = np.random.default_rng(3)
    path = tmp_path / "s.h5"
    handed = _record(path, rng, 5, [False, True, True, False, True], version=version)
    blocks = SentBlocks()
    with recording.SessionFile.open(path) as session:
        assert session.schema_version == version
        for _ in range(2):  # the second time from the blocks kept
            for layer in range(2):
                want = np.concatenate([np.ravel(batch[layer]) for batch in handed])
                plain = list(session.verification_chunks(layer, values))
                through = list(session.verification_chunks(layer, values, blocks))
                assert len(plain) == len(through)
                assert _same_bits(np.concatenate([sent for sent, _ in through]), want)
                for (sent, returned), (sent_b, returned_b) in zip(plain, through):
                    assert _same_bits(sent, sent_b)
                    np.testing.assert_array_equal(returned, returned_b)
    kept = {key: block is not None for key, (_, _, block) in blocks._blocks.items()}
    assert [kept[(0, batch)] for batch in range(5)] == [False, True, True, False, True]  # -0.0 is not 0.0


@pytest.mark.parametrize("version", [4, 5])
def test_short_batches_are_read_from_the_file_every_time_in_version_4(tmp_path, version):
    """Version 4: a block shorter than MIN_IMAGES_KEPT images is not kept (read from the file each time); version 5
    stored it once: read as it is."""
    rng = np.random.default_rng(4)
    path = tmp_path / "s.h5"
    _record(path, rng, 2, [True, True], images=[MIN_IMAGES_KEPT - 1, MIN_IMAGES_KEPT], version=version)
    blocks = SentBlocks()
    with recording.SessionFile.open(path) as session:
        plain = np.concatenate([sent for sent, _ in session.verification_chunks(0, 333)])
        through = np.concatenate([sent for sent, _ in session.verification_chunks(0, 333, blocks)])
    assert _same_bits(plain, through)
    assert [blocks._blocks[(0, batch)][2] is not None for batch in range(2)] == [version == 5, True]


@pytest.mark.parametrize("version", [4, 5])
def test_blocks_kept_as_handed_to_the_writer_read_as_the_file_and_decode_nothing(tmp_path, monkeypatch, version):
    """A live session keeps each batch's block as it hands the batch over (SentBlocks.keep): reads then give the file's
    values bit for bit, and the file's sent quadratures are read only for the batches that do not repeat."""
    rng = np.random.default_rng(5)
    path = tmp_path / "s.h5"
    handed = _record(path, rng, 5, [False, True, True, False, True], version=version)
    blocks, starts = SentBlocks(), [0, 0]
    for batch, layers in enumerate(handed):
        for layer, sent in enumerate(layers):
            blocks.keep(layer, batch, starts[layer], sent)
            starts[layer] += sent.size
    with recording.SessionFile.open(path) as session:
        plain = [np.concatenate([sent for sent, _ in session.verification_chunks(layer, 997)]) for layer in range(2)]
        original, decoded = session._read, []

        def counting_read(name, part):
            if name.endswith("sent_snu"):
                decoded.append((int(name.split("/")[1]), part))
            return original(name, part)

        monkeypatch.setattr(session, "_read", counting_read)
        for layer in range(2):
            through = np.concatenate([sent for sent, _ in session.verification_chunks(layer, 997, blocks)])
            assert _same_bits(plain[layer], through)
        table = session.batch_table
    for layer, part in decoded:  # only batches 0 and 3 (no block: -0.0, different images) are read from the file
        for batch in (1, 2, 4):  # where the file stores them (version 5: the sent offsets)
            kind = "sent" if version == 5 else "sample"
            start, stop = table[f"{kind}_start"][batch, layer], table[f"{kind}_stop"][batch, layer]
            assert part.stop <= start or part.start >= stop, (layer, batch, part)
    assert decoded  # the batches without a block were read
    assert [blocks._blocks[(0, batch)][2] is not None for batch in range(5)] == [False, True, True, False, True]
