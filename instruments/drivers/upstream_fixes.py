"""Workarounds for bugs in the maintained drivers we reuse unchanged, applied only where they bite.

qcodes 0.58's `KeysightInfiniium` reads traces with `container=npt.NDArray`; on Python >= 3.11 that
alias is no class, so pyvisa fails to build the array. `infiniium_trace_fix` maps the alias to its
origin (`np.ndarray`) while a trace is read, and restores pyvisa afterwards.
"""

from __future__ import annotations

import contextlib
import threading
import typing

_lock = threading.RLock()


@contextlib.contextmanager
def infiniium_trace_fix():
    """Let pyvisa accept a generic alias such as npt.NDArray as the container of binary values."""
    import pyvisa.util

    with _lock:
        original = pyvisa.util._use_numpy_routines
        pyvisa.util._use_numpy_routines = lambda container: original(typing.get_origin(container) or container)
        try:
            yield
        finally:
            pyvisa.util._use_numpy_routines = original
