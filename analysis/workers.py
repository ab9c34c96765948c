"""Named one-thread executors, each made on first use and kept for the process.

The session and the bench hand work to threads of their own (a record's quadratures, the client's upload, the
second receiver's render, the processor's evaluation ahead, the running sums): one thread per name, so the tasks
of a name run in the order they were submitted, and no call pays for starting a thread.
"""

from __future__ import annotations

import threading
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

