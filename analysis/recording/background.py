"""A session's batches appended on a second thread, so the station takes the next batch while the last is written.

Why: writing a batch (its arrays checksummed and partly compressed, then the two flushes of the commit rule) costs the
station's thread about as much as reading its records; done in line, the next acquisition waits for it. What stays as
it was: one batch at a time, in order, each through ``SessionWriter.append_batch`` unchanged (arrays, flush, its
/batches row, flush). So a SIGKILL at any moment leaves every batch whose append returned and no other: a batch being
written is cut short, ignored by readers and redone by a resume, as a kill during an in-line append was.

A batch counts as recorded once its append returned on the writer thread; ``wait`` is that moment in the caller's
thread. Whatever reads the file back (the checkpoints, the results), finishes, aborts or closes it waits first. An
append's error is raised by the next ``wait`` (or ``append_batch``), in the caller's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from qslab.analysis.recording.writer import SessionWriter
from qslab.analysis.workers import yield_cpu

log = logging.getLogger(__name__)


class BackgroundAppends:
    """``writer.append_batch`` on one worker thread, at most one batch in flight. ``committed(batches_written)`` is
    called on that thread as soon as each batch is committed (e.g. a status line: off the station's thread, where it
    took ~1 ms between a batch's check and the next batch's light); what it raises is logged, the batch stays
    committed."""

    def __init__(self, writer: SessionWriter, committed: Callable[[int], None] | None = None):
        self.writer = writer
        self._committed = committed
        # the appends yield the CPU to the acquisition (analysis/workers.py): the next one waits for this one anyway
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-writer", initializer=yield_cpu)
        self._pending: Future | None = None

    def append_batch(self, *args, **kwargs) -> None:
        """Hand one batch over (SessionWriter.append_batch's arguments): the one before is committed first."""
        self.wait()
        self._pending = self._pool.submit(self._append, *args, **kwargs)

    def _append(self, *args, **kwargs) -> None:
        self.writer.append_batch(*args, **kwargs)
        if self._committed is not None:
            try:
                self._committed(self.writer.batches_written)
            except Exception as error:  # noqa: BLE001 - an observer's failure is not the batch's
                log.warning("after batch %d was committed: %s: %s", self.writer.batches_written,
                            type(error).__name__, error)

    def wait(self) -> None:
        """Until the batch handed over last is committed; its append's error is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def settle(self) -> BaseException | None:
        """``wait`` for a session that is stopping anyway: the last append's error is returned, not raised."""
        try:
            self.wait()
        except Exception as error:  # noqa: BLE001 - the caller reports the error that stopped it; this one is kept
            return error
        return None

    def close(self) -> BaseException | None:
        """Settle and end the worker thread (idempotent)."""
        error = self.settle()
        self._pool.shutdown(wait=True)
        return error
