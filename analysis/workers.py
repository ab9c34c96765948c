"""Named one-thread executors, each made on first use and kept for the process.

The session and the bench hand work to threads of their own (a record's quadratures, the client's upload, the
second receiver's render, the processor's evaluation ahead, the running sums): one thread per name, so the tasks
of a name run in the order they were submitted, and no call pays for starting a thread. And `read_ahead`: an
iterator's next item taken on a worker while the caller works on this one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

_LOCK = threading.Lock()
_EXECUTORS: dict[str, ThreadPoolExecutor] = {}


def one_thread(name: str) -> ThreadPoolExecutor:
    """The executor named `name` (its thread is named after it)."""
    with _LOCK:
        executor = _EXECUTORS.get(name)
        if executor is None:
            executor = _EXECUTORS[name] = ThreadPoolExecutor(1, thread_name_prefix=name)
        return executor


_END = object()


def read_ahead(items: Iterable) -> Iterator:
    """The items of `items` in order, each next one taken on a worker thread while the caller works on this one.

    Why: a session file's chunks are read and decompressed by h5py, which releases the GIL meanwhile, so the reading
    of chunk k + 1 overlaps the passes' arithmetic on chunk k (numpy's, also without the GIL). The iterator is only
    ever advanced on the worker, one step at a time; an error there is raised here, at its item."""
    iterator = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="qslab-read-ahead") as worker:
        try:
            pending = worker.submit(next, iterator, _END)
            while (item := pending.result()) is not _END:
                pending = worker.submit(next, iterator, _END)
                yield item
        finally:
            worker.submit(getattr(iterator, "close", lambda: None)).result()
