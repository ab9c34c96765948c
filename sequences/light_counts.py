"""What the light of a session file has carried (DECISIONS AI): per layer, the images its weights were sent to and the
images whose data it carried, over every process that wrote the file.

The weights' count is every capture of a layer (SecureLink.images_played: the set-up's leakage nulling, batches taken
again and ranges widened included); the data's is the captures of the batches' takes only (the nulling plays no client
data). Both start from the file's counts, or from what a writer killed after its last batch noted in its writer lock
before that light, where that is more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from qslab.analysis import recording

if TYPE_CHECKING:
    from qslab.sequences.protocol import SecureLink

T = TypeVar("T")


@dataclass
class LightCounts:
    """The counts of one session run on `link`, from the file's counts before it (None: the file does not count)."""

    link: SecureLink                               # whose captures count (weight_images_played)
    weights_before: tuple[int, ...] | None
    data_before: tuple[int, ...] | None
    data_played: Counter = field(default_factory=Counter)  # layer index -> images of data this run's takes sent
    _take_start: tuple[int, ...] | None = None     # the link's counts when the take under way began

    @classmethod
    def resuming(cls, link, writer: recording.SessionWriter) -> LightCounts:
        """Counts that start from `writer`'s (its file's, or a crashed writer's note where more)."""
        return cls(link, writer.weight_images_sent, writer.data_images_sent)

    def weights(self, more: int = 0) -> tuple[int, ...] | None:
        """Per layer, every image its weights were sent to in this file, plus `more` (one more take of `more` images)."""
        if self.weights_before is None:
            return None
        return tuple(b + n + more for b, n in zip(self.weights_before, self.link.weight_images_played()))

    def data(self) -> tuple[int, ...] | None:
        """Per layer, every image whose data its light carried in this file, the take under way included."""
        if self.data_before is None:
            return None
        taking = self._taking() or (0,) * len(self.data_before)
        return tuple(b + self.data_played[k] + taking[k] for k, b in enumerate(self.data_before))

    def take(self, run: Callable[[], T]) -> T:
        """One take of a batch (`run`): every capture in it carries the batch's data."""
        self._take_start = self.link.weight_images_played()
        try:
            return run()
        finally:
            for k, n in enumerate(self._taking()):
                self.data_played[k] += n
            self._take_start = None

    def note_in(self, lock: recording.WriterLock | None) -> None:
        """Before a capture's light: the counts with it, in the writer lock, where a kill -9 cannot lose them."""
        counts = {recording.WEIGHT_IMAGES_SENT: self.weights(), recording.DATA_IMAGES_SENT: self.data()}
        if lock is not None and None not in counts.values():
            lock.note_sent(counts)

    def _taking(self) -> tuple[int, ...] | None:
        if self._take_start is None:
            return None
        return tuple(end - start for start, end in zip(self._take_start, self.link.weight_images_played()))
