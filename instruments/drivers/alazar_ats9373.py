"""qcodes' AlazarTech ATS9373 driver, with DMA buffers that stay allocated on every platform.

Why a subclass: qcodes' ``Buffer`` (qcodes 0.58, instrument_drivers/AlazarTech/ATS.py) allocates a buffer outside
Windows as a ctypes array held only by a local name, which it then rebinds; the array is freed while its address
is handed to the card (``AlazarPostAsyncBuffer``), and the samples are written into freed memory (a heap corruption
on Linux). ``OwnedBuffer`` keeps the array it allocated; ``allocate_and_post_buffer``, the driver's hook for
allocating and posting one buffer, uses it. Everything else is the maintained driver, unchanged.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from qcodes.instrument_drivers.AlazarTech import AlazarTechATS9373
from qcodes.instrument_drivers.AlazarTech.ATS import Buffer

_BYTES = {ctypes.c_uint8: 1, ctypes.c_uint16: 2, ctypes.c_uint32: 4, ctypes.c_int32: 4, ctypes.c_float: 4}


class OwnedBuffer(Buffer):
    """A page-locked buffer on Windows (qcodes' own allocation), else a ctypes array this object owns."""

    def __init__(self, c_sample_type: Any, size_bytes: int):
        if sys.platform == "win32":
            super().__init__(c_sample_type, size_bytes)
            return
        import numpy as np

        self.size_bytes = size_bytes
        self._allocated = False  # nothing to release by hand: Python frees the array with this object
        self.ctypes_buffer = (c_sample_type * (size_bytes // _BYTES[c_sample_type]))()
        self.addr = ctypes.addressof(self.ctypes_buffer)
        self.buffer = np.ctypeslib.as_array(self.ctypes_buffer)


class AlazarATS9373(AlazarTechATS9373):
    """``AlazarTechATS9373`` whose DMA buffers are OwnedBuffers (module docstring)."""

    def allocate_and_post_buffer(self, sample_type: Any, n_bytes: int) -> Buffer:
        buffer = OwnedBuffer(sample_type, n_bytes)
        self.api.post_async_buffer(self._handle, ctypes.cast(buffer.addr, ctypes.c_void_p), buffer.size_bytes)
        return buffer
