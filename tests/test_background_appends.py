"""Batches appended on a second thread (recording.BackgroundAppends): the same file as in-line appends, in order; an
append's error raised at the next wait with the committed batches intact; and under SIGKILL at any moment, every
batch the session saw committed survives exactly (docs/DECISIONS.md AA)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_recording import LAYERS, META, RESULTS, assert_long_batches, kill_a_few_batches_in, long_batch_data

from qslab.analysis.recording import BackgroundAppends, RecordingError, SessionFile, SessionWriter

ROOT = Path(__file__).resolve().parents[1]


def _create(path: Path) -> SessionWriter:
    return SessionWriter.create(path, LAYERS, META, qslab_version="0.1.0", git_revision="abc123")


def test_background_appends_write_what_in_line_appends_write_in_order(tmp_path):
    seen = []
    writer = _create(tmp_path / "background.h5")
    appends = BackgroundAppends(writer, committed=seen.append)
    for batch in range(5):
        images, layers = long_batch_data(batch)
        appends.append_batch(**images, layers=layers)
        assert writer.batches_written in (batch, batch + 1)  # at most the one handed over is still in flight
    appends.wait()
    assert seen == [1, 2, 3, 4, 5] and writer.batches_written == 5
    assert appends.close() is None
    writer.finish(RESULTS)
    with SessionFile.open(tmp_path / "background.h5") as session:
        assert session.status == "complete"
        assert_long_batches(session, 5)



def test_committed_runs_on_the_writer_thread_and_its_failure_is_logged_not_the_batchs(tmp_path, caplog):
    """The observer (a status line) runs where the batch was written, as soon as it is committed; what it raises is
    one log line, and the batch counts as committed (no error at the next wait)."""
    threads = []

    def observer(batches):
        threads.append(threading.current_thread().name)
        raise OSError("disk full")

    writer = _create(tmp_path / "observed.h5")
    appends = BackgroundAppends(writer, committed=observer)
    images, layers = long_batch_data(0)
    appends.append_batch(**images, layers=layers)
    appends.wait()
    assert writer.batches_written == 1 and threads and threads[0].startswith("session-writer")
    assert "after batch 1 was committed: OSError: disk full" in caplog.text
    assert appends.close() is None

def test_an_appends_error_comes_at_the_next_wait_and_the_committed_batches_stay(tmp_path):
    writer = _create(tmp_path / "failed.h5")
    appends = BackgroundAppends(writer)
    for batch in range(2):
        images, layers = long_batch_data(batch)
        appends.append_batch(**images, layers=layers)
    images, layers = long_batch_data(2)
    appends.append_batch(**{**images, "label": images["label"][:-1]}, layers=layers)  # one label short
    with pytest.raises(RecordingError, match="label has shape"):
        appends.wait()
    appends.wait()  # reported once
    images, layers = long_batch_data(2)
    appends.append_batch(**{**images, "label": images["label"][:-1]}, layers=layers)
    failed = appends.close()
    assert isinstance(failed, RecordingError)
    writer.abort("stopped")
    with SessionFile.open(tmp_path / "failed.h5") as session:
        assert session.status == "aborted"
        assert_long_batches(session, 2)


BACKGROUND_WRITER = """
import sys
sys.path.insert(0, sys.argv[2])
from test_recording import LAYERS, META, long_batch_data
from qslab.analysis.recording import BackgroundAppends, SessionWriter

writer = SessionWriter.create(sys.argv[1], LAYERS, META, qslab_version="0.1.0", git_revision="abc123")
appends = BackgroundAppends(writer, committed=lambda batches: print(batches, flush=True))
batch = 0
while True:
    images, layers = long_batch_data(batch)
    appends.append_batch(**images, layers=layers)
    batch += 1
"""


@pytest.mark.parametrize("delay_s", [0.0, 0.002, 0.007, 0.019])
def test_a_session_killed_with_a_batch_in_flight_keeps_every_batch_it_saw_committed(tmp_path, delay_s):
    """SIGKILL lands wherever the two threads are (the kill's moment shifted by a few ms; any moment is valid):
    every batch reported committed reads back exactly, a batch in flight is not data, and the file resumes."""
    path = tmp_path / "killed.h5"
    child = subprocess.Popen([sys.executable, "-c", BACKGROUND_WRITER, str(path), str(ROOT / "tests")], cwd=ROOT,
                             text=True, stdout=subprocess.PIPE)
    survived = kill_a_few_batches_in(child, path, delay_s)
    with SessionWriter.resume(path) as writer:
        assert writer.lock.crashed is not None and writer.batches_written == survived
        appends = BackgroundAppends(writer)
        images, layers = long_batch_data(survived)
        appends.append_batch(**images, layers=layers)
        assert appends.close() is None
        writer.finish(RESULTS)
    with SessionFile.open(path) as session:
        assert session.status == "complete"
        assert_long_batches(session, survived + 1)
