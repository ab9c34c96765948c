"""A file HDF5 marks open for writing whose metadata stays torn (its writer killed while the cache wrote a block) is
refused in one line by every reader, never read for ever (analysis/recording/swmr.py).

The torn file is made as a kill can leave it: a copy of a live writer's file (HDF5's open-for-writing mark and all)
with a byte of every extensible-array index block changed, so their checksums fail. An SWMR reader reads such a block
again and again, sleeping twice as long each time: with HDF5's default of 100 attempts it never returns. Each reader
runs in a child process with a hang guard (a generous deadline, not a timing assumption)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from qslab.analysis.recording import SessionWriter
from qslab.analysis.recording.swmr import READ_ATTEMPTS, bounded_attempts, open_swmr_read
import test_monitor
import test_recording
from test_recording import LAYERS, META

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD_S = 300.0  # a bounded reader gives up after ~4 s; an unbounded one sleeps for hours
INDEX_BLOCK = b"EAIB"  # the signature of an HDF5 extensible-array index block (chunk indices of SWMR datasets)

READERS = {
    "SessionFile.open": "from qslab.analysis.recording import SessionFile\nSessionFile.open(path)",
    "SessionWriter.resume": "from qslab.analysis.recording import SessionWriter\nSessionWriter.resume(path)",
    "the monitor's LiveSession": "from qslab.sequences.monitor.live_session import LiveSession\n"
                                 "live = LiveSession(path)\nlive.poll()\nlive.samples()",
}


def torn_copy(tmp_path: Path, session_meta: bool = False) -> Path:
    """A copy of a live writer's session file, as if it had been killed, with every index block's checksum broken.
    ``session_meta``: a session's meta and batches as the monitor reads them (test_monitor's), else test_recording's."""
    writer = (test_monitor.new_session(tmp_path) if session_meta else
              SessionWriter.create(tmp_path / "live.h5", LAYERS, META, qslab_version="0.1.0", git_revision="abc"))
    with writer:
        for batch in range(2):
            test_monitor.append(writer) if session_meta else test_recording.append(writer, batch)
        path = tmp_path / "killed.h5"
        shutil.copyfile(writer.path, path)  # HDF5's open-for-writing mark comes along: the writer never closed it
    data = bytearray(path.read_bytes())
    blocks = 0
    start = data.find(INDEX_BLOCK)
    while start >= 0:
        data[start + 6] ^= 0xFF  # inside the block, after its signature, version and class: the checksum fails
        blocks += 1
        start = data.find(INDEX_BLOCK, start + 1)
    assert blocks, "the copy has no extensible-array index block to tear"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("reader", READERS)
def test_a_torn_file_is_refused_in_one_line_and_never_read_for_ever(tmp_path, reader):
    assert bounded_attempts(), "HDF5's H5Pset_metadata_read_attempts was not found: SWMR reads are unbounded here"
    path = torn_copy(tmp_path, session_meta=reader.endswith("LiveSession"))
    script = f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\npath = {str(path)!r}\n{READERS[reader]}\n"
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                           timeout=HANG_GUARD_S)
    assert child.returncode != 0, f"{reader} read a torn file without an error"
    last = child.stderr.strip().splitlines()[-1]
    assert "metadata checksum" in last and "killed.h5" in last, last


def test_a_file_being_written_reads_with_the_bounded_attempts(tmp_path):
    """The bounded open reads a live writer's file as h5py's own SWMR open does: every committed value, the same."""
    with SessionWriter.create(tmp_path / "live.h5", LAYERS, META, qslab_version="0.1.0", git_revision="abc") as writer:
        test_recording.append(writer, 0)
        with open_swmr_read(writer.path) as ours, h5py.File(writer.path, "r", libver="latest", swmr=True) as theirs:
            assert ours.id.get_access_plist().get_libver_bounds() == theirs.id.get_access_plist().get_libver_bounds()
            for name in ("batches", "images/pixels", "layers/0/verification/returned_snu"):
                assert ours[name][()].tobytes() == theirs[name][()].tobytes()
    assert READ_ATTEMPTS < 100  # HDF5's own default for SWMR readers, which never ends on a torn block
