"""Each committed batch's sent quadratures read from the file once, for analyses that read them again and again.

Within a batch every image sends each verified row the same values (the server plays one reference per row;
sequences/protocol/acquisition.py), so a batch's sent samples are one image's block repeated. Schema version 5 stores
such a batch's block once (its /batches sent offsets span one image's values; a batch whose images differ is stored in
full at its own offsets): ``read`` expands it, the block read once per batch. In files of versions 1-4 every image's
values are stored (gzip): the first read of a batch decodes them and keeps the block when they are exactly (bit for
bit) the block repeated, and at least MIN_IMAGES_KEPT times (else the batch is read from the file every time). What an
analysis gets is what a read of the per-image values gives, whatever the version.

A live session keeps each batch's block as it hands the batch to the writer (``keep``): the very float32 values the
file stores, so its results read none of them again. Its results then check the file's returned quadratures against
what was summed (StreamedSamples), not its sent ones; a replay reads both from the file.
"""

from __future__ import annotations

import numpy as np

from qslab.analysis.recording.schema import SENT_KIND, stored_sent

MIN_IMAGES_KEPT = 16  # versions 1-4: a batch's block is kept only when it repeats this many times or more
SENT_START, SENT_STOP = f"{SENT_KIND}_start", f"{SENT_KIND}_stop"


class SentBlocks:
    """The repeated block of each committed batch's sent quadratures per layer, read once from a SessionFile (the same
    file each time: a live session's, or a replay's); ``read`` gives any slice of a layer's sent_snu."""

    def __init__(self):
        # (layer, batch) -> (sample start, sample stop, the block or None: read from the file each time)
        self._blocks: dict[tuple[int, int], tuple[int, int, np.ndarray | None]] = {}

    def keep(self, layer: int, batch: int, start: int, sent) -> None:
        """Batch ``batch``'s sent quadratures of ``layer`` as handed to the writer ([images, ...], stored as float32
        from sample ``start`` of the layer): its block when they repeat, as version 5 stores it."""
        values = np.asarray(sent, dtype=np.float32)
        stored = stored_sent(values.reshape(-1), values.shape[0])  # as version 5 stores them
        block = stored.copy() if stored.size < values.size else None
        self._blocks[(layer, batch)] = (start, start + values.size, block)

    def read(self, session, layer: int, part: slice, name: str) -> np.ndarray:
        """Values part.start:part.stop of layer ``layer``'s sent quadratures (dataset ``name``), as a read would give
        them: from the kept blocks where the batches have one, from the file elsewhere."""
        table = session._table
        starts, stops = table["sample_start"][:, layer], table["sample_stop"][:, layer]
        stored = table[SENT_START][:, layer] if SENT_START in table.dtype.names else starts  # where the file has them
        out = np.empty(part.stop - part.start, dtype=np.float32)
        batch = int(np.searchsorted(stops, part.start, side="right"))
        while batch < len(table) and starts[batch] < part.stop:
            start, stop = int(starts[batch]), int(stops[batch])
            first, last = max(start, part.start), min(stop, part.stop)
            target = out[first - part.start:last - part.start]
            block = self._block(session, layer, batch, start, stop, name)
            if block is None:
                shift = int(stored[batch]) - start
                target[:] = session._read(name, slice(first + shift, last + shift))
            else:
                _fill_repeating(target, block, (first - start) % block.size)
            batch += 1
        return out

    def _block(self, session, layer: int, batch: int, start: int, stop: int, name: str) -> np.ndarray | None:
        """The batch's block (samples start:stop of the layer), or None: read from the file each time."""
        kept = self._blocks.get((layer, batch))
        if kept is not None and kept[:2] == (start, stop):
            return kept[2]
        table = session._table
        images = int(table["image_count"][batch])
        block = None
        if SENT_START in table.dtype.names:  # version 5: one image's values when the batch's are stored once
            first, last = int(table[SENT_START][batch, layer]), int(table[SENT_STOP][batch, layer])
            if last - first < stop - start:
                block = session._read(name, slice(first, last))
        elif images >= MIN_IMAGES_KEPT and stop > start:
            block = _repeated_block(session._read(name, slice(start, stop)).reshape(images, -1))
        self._blocks[(layer, batch)] = (start, stop, block)
        return block


def _repeated_block(per_image: np.ndarray) -> np.ndarray | None:
    """One image's values of [images, K] float32, when every image's are the same bit for bit (-0.0 is not 0.0, a
    NaN's payload counts) and there are MIN_IMAGES_KEPT images or more; else None."""
    if per_image.shape[0] < MIN_IMAGES_KEPT:
        return None
    stored = stored_sent(per_image.reshape(-1), per_image.shape[0])
    return stored.copy() if stored.size < per_image.size else None


def _fill_repeating(target: np.ndarray, block: np.ndarray, offset: int) -> None:
    """``target`` = the block repeated, starting at element ``offset`` of it."""
    size, n = block.size, target.size
    head = min(n, size - offset)
    target[:head] = block[offset:offset + head]
    whole = (n - head) // size
    target[head:head + whole * size].reshape(whole, size)[:] = block
    target[head + whole * size:] = block[:n - head - whole * size]
