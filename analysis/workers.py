"""Named one-thread executors, each made on first use and kept for the process.

The session and the bench hand work to threads of their own (a record's quadratures, the client's upload, the
second receiver's render, the processor's evaluation ahead, the running sums): one thread per name, so the tasks
of a name run in the order they were submitted, and no call pays for starting a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

_LOCK = threading.Lock()
_EXECUTORS: dict[str, ThreadPoolExecutor] = {}


def one_thread(name: str) -> ThreadPoolExecutor:
    """The executor named `name` (its thread is named after it)."""
    with _LOCK:
        executor = _EXECUTORS.get(name)
        if executor is None:
            executor = _EXECUTORS[name] = ThreadPoolExecutor(1, thread_name_prefix=name)
        return executor


class OrderedTasks:
    """Tasks handed to the thread named `name` in the order given, and waited for together: ``wait`` returns once every
    task given so far is done, and raises what the first failed one raised. A failed task is kept (every later wait
    raises it: the sums it left are incomplete); finished ones are let go."""

    def __init__(self, name: str):
        self.name = name
        self._tasks: list[Future] = []

    def submit(self, task: Callable, *args) -> None:
        self._tasks = [done for done in self._tasks if not done.done() or done.exception() is not None]
        self._tasks.append(one_thread(self.name).submit(task, *args))

    def wait(self) -> None:
        for task in self._tasks:
            task.result()
