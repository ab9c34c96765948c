"""SentBlocks: each batch's sent quadratures decoded from the file once, later reads filled from its repeated block.

The reference is the plain read of the dataset (SessionFile.verification_chunks without blocks): every slice must
equal it bit for bit, a batch that does not repeat (or is too short to keep) is read from the file each time.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_verified_samples import random_session_batch

from qslab.analysis import recording
from qslab.analysis.recording.sent_blocks import MIN_IMAGES_KEPT, SentBlocks

META = {"config_toml": "", "station_snapshot_json": {}, "settings_json": {"exact_leakage_images": 5},
        "provenance_json": {}, "seeds_json": {}, "calibrations_json": {}}


def _record(path, rng, batches: int, repeat: list[bool], images: list[int] | None = None) -> list[list[np.ndarray]]:
    """A file of `batches` random batches (`images` of each, else 20-89) whose sent samples repeat one image's block
    where `repeat` says so (as a session's do), else differ per image; batch 0 repeats but for a signed zero (equal as
    numbers, not as bits). Returns the sent samples handed to the writer, per batch and layer."""
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
    return handed


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("values", [7, 997, 16 * 40, 1 << 18])
def test_reads_through_the_blocks_equal_the_files_values_bit_for_bit(tmp_path, values):
    rng = np.random.default_rng(3)
    path = tmp_path / "s.h5"
    _record(path, rng, 5, [False, True, True, False, True])
    blocks = SentBlocks()
    with recording.SessionFile.open(path) as session:
        for _ in range(2):  # the second time from the blocks kept
            for layer in range(2):
                plain = list(session.verification_chunks(layer, values))
                through = list(session.verification_chunks(layer, values, blocks))
                assert len(plain) == len(through)
                for (sent, returned), (sent_b, returned_b) in zip(plain, through):
                    assert _same_bits(sent, sent_b)
                    np.testing.assert_array_equal(returned, returned_b)
    kept = {key: block is not None for key, (_, _, block) in blocks._blocks.items()}
    assert [kept[(0, batch)] for batch in range(5)] == [False, True, True, False, True]  # -0.0 is not 0.0


def test_short_batches_are_read_from_the_file_every_time(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "s.h5"
    _record(path, rng, 2, [True, True], images=[MIN_IMAGES_KEPT - 1, MIN_IMAGES_KEPT])
    blocks = SentBlocks()
    with recording.SessionFile.open(path) as session:
        plain = np.concatenate([sent for sent, _ in session.verification_chunks(0, 333)])
        through = np.concatenate([sent for sent, _ in session.verification_chunks(0, 333, blocks)])
    assert _same_bits(plain, through)
    assert [blocks._blocks[(0, batch)][2] is not None for batch in range(2)] == [False, True]


def test_blocks_kept_as_handed_to_the_writer_read_as_the_file_and_decode_nothing(tmp_path, monkeypatch):
    """A live session keeps each batch's block as it hands the batch over (SentBlocks.keep): reads then give the file's
    values bit for bit, and the file's sent quadratures are decoded only for the batches that do not repeat."""
    rng = np.random.default_rng(5)
    path = tmp_path / "s.h5"
    handed = _record(path, rng, 5, [False, True, True, False, True])
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
        for batch in (1, 2, 4):
            start, stop = table["sample_start"][batch, layer], table["sample_stop"][batch, layer]
            assert part.stop <= start or part.start >= stop, (layer, batch, part)
    assert decoded  # the batches without a block were read
    assert [blocks._blocks[(0, batch)][2] is not None for batch in range(5)] == [False, True, True, False, True]
