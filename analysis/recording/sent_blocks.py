"""Each committed batch's sent quadratures decoded from the file once, for analyses that read them again and again.

Why: a live session's verification reads every verified sample back from its file at each checkpoint and for the
results, about three times per sample in all, and the sent quadratures are the one gzip dataset among them: their
decoding was most of the read-back's cost. Within a batch every image sends each verified row the same values (the
server plays one reference per row; sequences/protocol/acquisition.py), so a batch's sent samples are one image's
block repeated. The first read of a batch decodes it from the file and keeps that block when the file's values are
exactly (bit for bit) the block repeated; later reads fill the values from it. What the analysis gets is what the file
holds, as a read of the dataset would give it. A batch whose values do not repeat, or with fewer than
MIN_IMAGES_KEPT images (the block would be a large share of the batch), is read from the file every time.
Memory: one block per batch and layer, at most 1/MIN_IMAGES_KEPT of the sent samples.

A live session keeps each batch's block as it hands the batch to the writer (``keep``): the same float32 values the
file stores, so its results decode none of them again (about 30 us per image at a session's end). Its results then
check the file's returned quadratures against what was summed (StreamedSamples), not its sent ones; a replay reads
both from the file.
"""

from __future__ import annotations

import numpy as np

MIN_IMAGES_KEPT = 16  # a batch's block is kept only when it repeats this many times or more


class SentBlocks:
    """The repeated block of each committed batch's sent quadratures per layer, read once from a SessionFile (the same
    file each time: a live session's, or a replay's); ``read`` gives any slice of a layer's sent_snu."""

    def __init__(self):
        # (layer, batch) -> (sample start, sample stop, the block or None: read from the file each time)
        self._blocks: dict[tuple[int, int], tuple[int, int, np.ndarray | None]] = {}

    def keep(self, layer: int, batch: int, start: int, sent) -> None:
        """Batch ``batch``'s sent quadratures of ``layer`` as handed to the writer ([images, ...], stored as float32
        from sample ``start`` of the layer): its block, when they repeat as ``read`` keeps one from the file."""
        values = np.asarray(sent, dtype=np.float32)
        block = _repeated_block(values.reshape(values.shape[0], -1)) if values.size else None
        self._blocks[(layer, batch)] = (start, start + values.size, block)

    def read(self, session, layer: int, part: slice, name: str) -> np.ndarray:
        """Values part.start:part.stop of layer ``layer``'s sent quadratures (dataset ``name``), as a read would give
        them: from the kept blocks where the batches have one, from the file elsewhere."""
        table = session._table
        starts, stops = table["sample_start"][:, layer], table["sample_stop"][:, layer]
        out = np.empty(part.stop - part.start, dtype=np.float32)
        batch = int(np.searchsorted(stops, part.start, side="right"))
        while batch < len(table) and starts[batch] < part.stop:
            start, stop = int(starts[batch]), int(stops[batch])
            first, last = max(start, part.start), min(stop, part.stop)
            target = out[first - part.start:last - part.start]
            block = self._block(session, layer, batch, start, stop, name)
            if block is None:
                target[:] = session._read(name, slice(first, last))
            else:
                _fill_repeating(target, block, (first - start) % block.size)
            batch += 1
        return out

    def _block(self, session, layer: int, batch: int, start: int, stop: int, name: str) -> np.ndarray | None:
        """The batch's block (samples start:stop of the layer), or None: read from the file each time."""
        kept = self._blocks.get((layer, batch))
        if kept is not None and kept[:2] == (start, stop):
            return kept[2]
        images = int(session._table["image_count"][batch])
        block = None
        if images >= MIN_IMAGES_KEPT and stop > start:
            block = _repeated_block(session._read(name, slice(start, stop)).reshape(images, -1))
        self._blocks[(layer, batch)] = (start, stop, block)
        return block


def _repeated_block(per_image: np.ndarray) -> np.ndarray | None:
    """One image's values of [images, K] float32, when every image's are the same bit for bit (-0.0 is not 0.0, a
    NaN's payload counts) and there are MIN_IMAGES_KEPT images or more; else None."""
    if per_image.shape[0] < MIN_IMAGES_KEPT or not per_image.size:
        return None
    bits = per_image.view(np.uint32)
    return per_image[0].copy() if (bits == bits[0]).all() else None


def _fill_repeating(target: np.ndarray, block: np.ndarray, offset: int) -> None:
    """``target`` = the block repeated, starting at element ``offset`` of it."""
    size, n = block.size, target.size
    head = min(n, size - offset)
    target[:head] = block[offset:offset + head]
    whole = (n - head) // size
    target[head:head + whole * size].reshape(whole, size)[:] = block
    target[head + whole * size:] = block[:n - head - whole * size]
