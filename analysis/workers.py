"""Named one-thread executors, each made on first use and kept for the process.

The session and the bench hand work to threads of their own (a record's quadratures, the client's upload, the
second receiver's render, the processor's evaluation ahead, the running sums): one thread per name, so the tasks
of a name run in the order they were submitted, and no call pays for starting a thread.

A session's bookkeeping (its file's appends, the running sums) runs on *background* threads, at the lowest CPU
priority (``yield_cpu``): nothing waits for it until a checkpoint or the next append, while the acquisition's steps
follow one another on the two cores it shares with them. Measured on the 2-core machine: whole 6000-image sessions
alternating nice 19 and 0 read the same (0.520 and 0.523 ms an image, medians of 8 pairs, session 27); the 3-7 %
that batches alternating within one session showed (session 26) did not hold for whole sessions (the bookkeeping
deferred in one mode's batches is probably done in the other's).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

BACKGROUND_NICE = 19  # the lowest priority a thread can give itself (Linux nice values run -20..19)

_LOCK = threading.Lock()
_EXECUTORS: dict[tuple[str, bool], ThreadPoolExecutor] = {}


def yield_cpu() -> None:
    """The calling thread at BACKGROUND_NICE: it runs when the other threads leave a core free. Linux gives each
    thread a nice value of its own (setpriority(2) on the thread's id); elsewhere that call would set the whole
    process's, so nothing is done there."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        except OSError:  # (a sandbox may refuse it: the work then runs at the process's priority)
            pass


def one_thread(name: str, background: bool = False) -> ThreadPoolExecutor:
    """The executor named `name` (its thread is named after it); ``background``: its thread yields the CPU
    (yield_cpu), a different thread from the one of the same name without."""
    with _LOCK:
        executor = _EXECUTORS.get((name, background))
        if executor is None:
            executor = _EXECUTORS[(name, background)] = ThreadPoolExecutor(
                1, thread_name_prefix=name, initializer=yield_cpu if background else None)
        return executor


def _after_fork_in_child() -> None:
    """A forked child (the station's bench, bench_process.ForkedBench) has none of the parent's threads: it makes its
    own executors, under a lock no parent thread can hold."""
    global _LOCK
    _LOCK = threading.Lock()
    _EXECUTORS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def beside(started: Future, work: Callable[[], None]) -> None:
    """``work()`` while ``started`` runs on its own thread; returns once both are done, whatever either did (so the
    instrument ``started`` talks to is idle again), and raises ``work``'s error first, then ``started``'s."""
    try:
        work()
    finally:
        failed = started.exception()  # waits
    if failed is not None:
        raise failed


class OrderedTasks:
    """Tasks handed to the thread named `name` in the order given, and waited for together: ``wait`` returns once every
    task given so far is done, and raises what the first failed one raised. A failed task is kept (every later wait
    raises it: the sums it left are incomplete); finished ones are let go."""

    def __init__(self, name: str, background: bool = False):
        self.name, self.background = name, background
        self._tasks: list[Future] = []

    def submit(self, task: Callable, *args) -> None:
        self._tasks = [done for done in self._tasks if not done.done() or done.exception() is not None]
        self._tasks.append(one_thread(self.name, self.background).submit(task, *args))

    def wait(self) -> None:
        for task in self._tasks:
            task.result()
