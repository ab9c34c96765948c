"""Named one-thread executors (analysis/workers.py): a background one's thread runs at the lowest CPU priority, its
own thread beside the ordinary one of the same name; a session's appends and running sums run on such threads."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from qslab.analysis.workers import BACKGROUND_NICE, OrderedTasks, beside, one_thread

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def thread_nice() -> tuple[str, int]:
    return threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
def test_a_background_executor_runs_at_the_lowest_priority_and_the_ordinary_one_of_its_name_does_not():
    process_nice = os.getpriority(os.PRIO_PROCESS, 0)
    background = one_thread("qslab-test-workers", background=True).submit(thread_nice).result()
    ordinary = one_thread("qslab-test-workers").submit(thread_nice).result()
    assert background[0].startswith("qslab-test-workers") and ordinary[0].startswith("qslab-test-workers")
    assert background[1] == max(BACKGROUND_NICE, process_nice)
    assert ordinary[1] == process_nice < BACKGROUND_NICE  # the same name without: another thread, untouched
    assert os.getpriority(os.PRIO_PROCESS, 0) == process_nice  # the process (its main thread) keeps its own
    tasks, seen = OrderedTasks("qslab-test-workers", background=True), []
    for _ in range(3):
        tasks.submit(lambda: seen.append(thread_nice()[1]))
    tasks.wait()
    assert seen == [background[1]] * 3


@linux_only
def test_a_sessions_appends_and_running_sums_yield_the_cpu(calibrated_store_at, tmp_path, monkeypatch):
    from pathlib import Path

    from qslab.analysis.recording.writer import SessionWriter
    from qslab.analysis.running_samples import _LayerSums
    from qslab.analysis.verified_samples import RunningFits
    from qslab.calibration.records import RecordStore
    from qslab.sequences.config import load_config
    from qslab.sequences.session import SessionSettings, run_session

    seen: dict[str, set[int]] = {"append": set(), "samples": set(), "fits": set()}

    def spy(key, method):
        def spied(*args, **kwargs):
            seen[key].add(thread_nice()[1])
            return method(*args, **kwargs)
        return spied

    monkeypatch.setattr(SessionWriter, "append_batch", spy("append", SessionWriter.append_batch))
    monkeypatch.setattr(_LayerSums, "add", spy("samples", _LayerSums.add))
    monkeypatch.setattr(RunningFits, "_sum", spy("fits", RunningFits._sum))
    config = load_config(Path(__file__).resolve().parents[1] / "lab_config.toml")
    settings = SessionSettings(images=6, mu=6.0, gain=1.3, seed=3, batch_images=2, verify_fraction=0.05,
                               failure_probability=1e-10, laser_power_dbm=10.0)
    run_session(config, settings, out_dir=tmp_path, store=RecordStore(calibrated_store_at(tmp_path / "records")),
                progress=False)
    lowest = max(BACKGROUND_NICE, os.getpriority(os.PRIO_PROCESS, 0))
    assert seen == {"append": {lowest}, "samples": {lowest}, "fits": {lowest}}


def test_beside_returns_once_both_are_done_and_raises_the_callers_error_first():
    """Two instruments set side by side (acquisition.py: the gate beside the attenuator, the server's set-up beside the
    client's upload): the call waits for the started one even when its own work fails, and that failure comes first."""
    release = threading.Event()

    def slow(error=None):
        release.wait(5)
        if error:
            raise error
        return "done"

    def release_then(error=None):
        release.set()
        if error:
            raise error

    for own, started, expected in ((None, None, None), (None, KeyError("started"), KeyError),
                                   (ValueError("own"), KeyError("started"), ValueError)):
        release.clear()
        future = one_thread("test-beside").submit(slow, started)
        if expected is None:
            beside(future, release_then)
        else:
            with pytest.raises(expected):
                beside(future, lambda: release_then(own))
        assert future.done()  # never left running behind the caller
