"""One BLAS thread around the hot loops of a session or a simulation, whatever OPENBLAS_NUM_THREADS says.

Why: the products there are matrix-vector and skinny matrix products (records of millions of samples
against an 8-sample filter, batches against a layer's weights) that a second BLAS thread barely speeds
up, while the bench's renderers and the normal-drawing workers already keep the other core busy. OpenBLAS's
threads then spin (2^28 cycles after every call, by default) against those workers, and a product that
takes 1 ms alone takes 10 ms on a loaded 2-core machine. One thread gives the same numbers (the threads
split rows, not sums) in a time that does not depend on the thread settings of the environment.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_LOCK = threading.Lock()
_CONTROLLER: list = []


def _controller():
    """threadpoolctl's view of the BLAS libraries loaded so far (built once: it costs ~15 ms)."""
    with _LOCK:
        if not _CONTROLLER:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER.append(ThreadpoolController())
        return _CONTROLLER[0]


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread inside the block (the previous setting is restored after)."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
