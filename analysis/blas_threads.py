"""One BLAS thread around the hot loops of a session, a simulation and every bench acquisition, whatever
OPENBLAS_NUM_THREADS says.

Why: the products there are matrix-vector and skinny matrix products (records of millions of samples
against an 8-sample filter, batches against a layer's weights) that a second BLAS thread barely speeds
up, while the bench's renderers and the normal-drawing workers already keep the other core busy. OpenBLAS's
threads then spin (2^28 cycles after every call, by default) against those workers, and a product that
takes 1 ms alone takes 10 ms on a loaded 2-core machine.

And the bits: a threaded OpenBLAS splits some products' sums, not only their rows (0.3.31: a [10, 784] x
[784, 784] float32 product differs in the last bits in 3361 of its 7840 outputs between one and two threads),
so the virtual bench computes every acquisition on one thread (instruments/sim/link/receivers.py): a bench in
its own process (`qslab bench serve`, any core count) reads the same bits as the bench embedded in a session.

The window is counted across threads: the BLAS setting is process-wide, and the session's window and the
embedded bench's overlap in time, so the limit is set when the first window opens and the previous setting
restored when the last one closes, never while another thread is still inside one. threadpoolctl lets one live
thread at a time change OpenBLAS's pool (the first to set it; the others' changes are silently dropped), and a
window may open in one thread and close in another, so each change releases that control at once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

_LOCK = threading.Lock()
_CONTROLLER: list = []
_OPEN: list = []  # the limiter of the windows open now (empty: none open)
_DEPTH = [0]      # how many windows are open, in every thread


def _controller():
    """threadpoolctl's view of the BLAS libraries loaded so far (built once: it costs ~15 ms; call under _LOCK)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread inside the block, in every thread of the process (the setting before the first
    open window is restored when the last one closes)."""
    with _LOCK:
        if _DEPTH[0] == 0:
            _OPEN.append(_controller().limit(limits=1, user_api="blas"))
            _release_control()
        _DEPTH[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                _OPEN.pop().restore_original_limits()
                _release_control()


def _after_fork_in_child() -> None:
    """A forked child's windows are its own: none open (the parent's, whose setting it inherited, stay the parent's),
    under a lock no parent thread can hold."""
    global _LOCK
    _LOCK = threading.Lock()
    _OPEN.clear()
    _DEPTH[0] = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


def _release_control() -> None:
    """Let any thread make the next change (threadpoolctl 3.6+ keeps OpenBLAS's pool to the thread that set it last
    until released; a thread that holds it for itself, e.g. a bare ``threadpool_limits(1)``, keeps it)."""
    from threadpoolctl import OpenBLASController

    clear = getattr(OpenBLASController, "clear_controlling_thread", None)  # absent before 3.6: no controlling thread
    if clear is not None:
        clear()
