"""one_blas_thread is one window shared by every thread: the session's and the embedded bench's overlap in time, and
neither may give the other's computation back to a threaded BLAS (whose bits differ: qslab.analysis.blas_threads)."""

from __future__ import annotations

import threading

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from qslab.analysis.blas_threads import one_blas_thread


def _blas_threads() -> set[int]:
    """The thread counts of the BLAS libraries loaded (numpy's at least)."""
    counts = {library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"}
    assert counts, f"no BLAS loaded with numpy {np.__version__}"
    return counts


def test_a_window_closed_in_one_thread_leaves_blas_on_one_thread_while_another_thread_is_still_inside_one():
    entered, closed, seen = threading.Event(), threading.Event(), []

    def bench() -> None:  # opens its window after the session's and is still computing when the session's closes
        with one_blas_thread():
            entered.set()
            closed.wait(timeout=60)
            seen.append(_blas_threads())

    with threadpool_limits(limits=2, user_api="blas"):  # the process's own setting (e.g. a served bench's default)
        assert _blas_threads() == {2}
        worker = threading.Thread(target=bench)
        with one_blas_thread():
            worker.start()
            assert entered.wait(timeout=60)
        closed.set()
        worker.join(timeout=60)
        assert seen == [{1}]  # the session's window closed first: the bench's still holds one thread
        assert _blas_threads() == {2}  # the last window closed: the process's setting is back


def test_nested_windows_in_one_thread_restore_the_setting_only_at_the_outermost():
    with threadpool_limits(limits=2, user_api="blas"):
        with one_blas_thread():
            with one_blas_thread():
                assert _blas_threads() == {1}
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}


def test_a_window_opened_in_another_thread_after_the_main_thread_used_one_takes_effect():
    """threadpoolctl drops a change made by any thread but the one that changed OpenBLAS's pool last, until released:
    the embedded bench's acquisitions outside the session's windows (a calibration's) open theirs in its own thread."""
    seen = []

    def bench() -> None:
        with one_blas_thread():
            seen.append(_blas_threads())

    with threadpool_limits(limits=2, user_api="blas"):
        with one_blas_thread():  # the session's, in this (the main) thread
            pass
        worker = threading.Thread(target=bench)
        worker.start()
        worker.join(timeout=60)
        assert seen == [{1}]
        assert _blas_threads() == {2}
