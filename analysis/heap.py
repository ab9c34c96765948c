"""The C heap keeps what a long array computation frees, instead of handing it back to the kernel between batches
(DECISIONS AO).

Why: glibc returns the free top of its heap to the kernel once it exceeds its trim threshold (twice its mmap
threshold, which it raises with the blocks freed, to 64 MB at most), and the next batch's arrays then fault in
fresh pages that the kernel zeroes first. `qslab simulate --mode physics` (10k images x 3 seeds) shrank and regrew
its heap by ~560 MB that way (strace: 255 brk calls), and perf put 13 % of its CPU in the kernel's page zeroing.
With glibc's largest mmap threshold (32 MB: arrays below it come from the heap) and 256 MB of free heap kept, what
a batch frees is the next one's: physics mode 4-13 % faster in one interleaved comparison
(benchmarks/bench_secure_inference.py --compare), its peak memory 0.52 -> 0.54 GB. glibc only (mallopt); other C
libraries are left as they are.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1   # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20   # glibc's largest on 64-bit (4 * 1024 * 1024 * sizeof(long))
TRIM_THRESHOLD_BYTES = 256 * 2**20  # free heap kept before any is returned


def keep_freed_memory() -> bool:
    """Fix this process's C heap thresholds (module docstring); True when set (glibc), False elsewhere. Setting
    either ends glibc's own adjustment of both, so both are set."""
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))
