"""qslab.analysis.heap: the C heap keeps what an array computation frees (glibc's thresholds), so that the next
batch's arrays reuse its pages; `qslab simulate` sets it."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from qslab.analysis import heap

# A fresh interpreter (its heap untouched by the test run): ten 10 MB arrays made and freed, four times; the minor page
# faults of each round. Freed together, the ten leave 100 MB of free heap top, more than glibc's own trim threshold.
ROUNDS = """
import json, resource, sys
import numpy as np
from qslab.analysis.heap import keep_freed_memory
set_ = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
first = np.ones(10 << 20, np.uint8); del first  # (glibc raises its mmap threshold past 10 MB here)
counts = []
for _ in range(4):
    before = faults()
    arrays = [np.ones(10 << 20, np.uint8) for _ in range(10)]
    del arrays
    counts.append(faults() - before)
print(json.dumps({"set": set_, "faults": counts}))
"""


def _rounds(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_freed_arrays_are_reused_without_new_page_faults():
    """On glibc, the C library of the Linux hosts qslab runs its benches on (elsewhere: the next test)."""
    assert platform.libc_ver()[0] == "glibc", platform.libc_ver()
    default, kept = _rounds("default"), _rounds("keep")
    assert kept["set"] is True
    again_default, again_kept = sum(default["faults"][1:]), sum(kept["faults"][1:])
    assert again_default > 0, default  # by default the freed top went back to the kernel and faults in again
    assert again_kept * 10 <= again_default, (kept, default)


def test_elsewhere_the_c_library_is_left_as_it_is(monkeypatch):
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda *args: pytest.fail("mallopt called outside glibc"))
    assert heap.keep_freed_memory() is False


def test_qslab_simulate_keeps_freed_memory(monkeypatch, capsys):
    from qslab.sequences.cli import main

    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(True))
    assert main(["simulate", "--mu", "6", "--gain", "1.3", "--images", "20", "--seeds", "1", "--json"]) == 0
    assert calls == [True]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 20
