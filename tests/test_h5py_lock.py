"""h5py's global lock is never left held by a read that fails (DECISIONS AL).

h5py's items(), values() and attribute iterators yield while holding the lock; an iteration abandoned mid-way keeps
it held by its thread for as long as the iterator lives (an error's traceback keeps it), and h5py calls from any other
thread wait meanwhile: a session's writer waited forever (the hang of two clean-checkout runs). The suite checks the
lock after every test (tests/h5py_lock.py); these tests pin the mechanism and the reads that used to trip it.
"""

from __future__ import annotations

import datetime as dt
import gc
import stat
import threading

import h5py
import numpy as np
import pytest
from h5py._objects import phil

import h5py_lock
from qslab.calibration.records import CorruptRecord, RecordStore, read_record
from qslab.calibration.result import CalibrationResult, Estimate

NOW = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)


def taken_by_another_thread() -> bool:
    """Whether a new thread takes the lock without waiting (released again at once)."""
    taken = []

    def attempt() -> None:
        if phil.acquire(False):
            phil.release()
            taken.append(True)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return bool(taken)


def test_an_abandoned_h5py_items_iteration_holds_the_lock_until_it_is_closed(tmp_path):
    """The mechanism, on h5py itself: the lock is held across the iterator's yields."""
    with h5py.File(tmp_path / "two.h5", "w") as file:
        file.create_group("a")
        file.create_group("b")
        items = iter(file.items())
        next(items)  # suspended inside h5py's `with phil`
        assert h5py_lock.lock_state()["count"] >= 1 and phil._is_owned()
        assert not taken_by_another_thread()
        items.close()  # finalized on the owning thread: released
    assert h5py_lock.lock_state()["count"] == 0 and taken_by_another_thread()


@pytest.fixture
def damaged_record(tmp_path):
    """A photons record whose second parameter lost its uncertainty: reading it raises after the first parameter
    was read, mid-way through the parameters group."""
    result = CalibrationResult("photons", "server_output",
                               {"server.attenuator_scale": Estimate(1.0, 0.001, ""),
                                "server.photons_per_symbol": Estimate(6.0, 0.05, "photons")},
                               {"monitor_w": np.linspace(1e-6, 2e-6, 5)}, {"attenuation_db": 30.0})
    path = RecordStore(tmp_path / "records").write(result, created=NOW).path
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with h5py.File(path, "r+") as file:
        del file["parameters/server.photons_per_symbol"].attrs["uncertainty"]
    return path


def test_a_damaged_record_read_leaves_the_lock_free_while_its_error_lives(damaged_record):
    """The error is kept (as a caller that reports it later does): before DECISIONS AL its chained traceback kept
    h5py's items() iterator suspended, and the lock held, for as long as the error lived."""
    gc.disable()  # no collection may tidy up after the read: the lock must be free as the read returns
    try:
        with pytest.raises(CorruptRecord, match="has no attribute uncertainty") as caught:
            read_record(damaged_record)
        assert caught.value.__context__ is not None  # the reader's own error, with its traceback, is still alive
        assert h5py_lock.lock_state()["count"] == 0
        assert taken_by_another_thread()
    finally:
        gc.enable()


def test_the_check_after_each_test_sees_a_lock_this_thread_holds():
    assert h5py_lock.free(wait_s=0.0)
    phil.acquire()
    try:
        assert not h5py_lock.free(wait_s=0.1)
        assert "owner: MainThread" in h5py_lock.describe_holder()
    finally:
        phil.release()
    assert h5py_lock.free(wait_s=0.0)
