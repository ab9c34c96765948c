"""The test side of tests/station/gated_bench.py: the bench in its own process, holding chosen messages on request,
and a child's output read line by line, so that a test can wait for a line or a hold without ever hanging."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyvisa
from qslab.analysis import recording
from qslab.sequences.config import served_config_text

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "lab_config.toml"
GATED_BENCH = ROOT / "tests" / "station" / "gated_bench.py"
HANG_GUARD_S = 600.0  # only against a hung test, never a timing assumption
# The laser's part of BatchGuard's settings check (sequences/session_guard.py): sent once when the guard starts, then
# once in the check after every batch, before that batch is handed to the writer; the calibrations send none.
SETTINGS_CHECK = r"^\*ESR\?;:SOUR1:POW:STAT\?"


class Lines:
    """A child's stdout or stderr read line by line in a thread, so a test can wait for one."""

    reading: dict[int, Lines] = {}  # id(stream) -> the Lines that reads it (an error message asks it, not the stream)

    def __init__(self, stream):
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        Lines.reading[id(stream)] = self
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, process: subprocess.Popen | None = None, what: str = "") -> str:
        """The next line matching ``pattern``; fails if the stream ends, ``process`` ends or HANG_GUARD_S pass first."""
        what = what or f"a line matching {pattern!r}"
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if process is not None and process.poll() is not None:
                    raise AssertionError(f"the session ended (exit {process.returncode}) before {what}: "
                                         f"{stderr_text(process)}") from None
                continue
            if line is None:
                raise AssertionError(f"the stream ended before {what}: {''.join(self.lines)}")
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no {what} within {HANG_GUARD_S} s: {''.join(self.lines)}")

    def text(self) -> str:
        self._thread.join(timeout=HANG_GUARD_S)
        return "".join(self.lines)


def stderr_text(process: subprocess.Popen) -> str:
    """An ended process's stderr: from the Lines that reads it, else from its pipe ("" without one)."""
    stream = process.stderr
    if stream is None:
        return ""
    lines = Lines.reading.get(id(stream))
    return lines.text() if lines is not None else stream.read()


def images_committed(out_dir: Path, process: subprocess.Popen, at_least: int, poll_s: float) -> int:
    """Poll the session file in ``out_dir`` (as any SWMR reader) every ``poll_s`` until it commits ``at_least``
    images; returns how many it has. Fails if ``process`` ends or HANG_GUARD_S pass first."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        for path in out_dir.glob("session-*.h5"):
            try:
                with recording.SessionFile.open(path) as session:
                    if session.images_written >= at_least:
                        return session.images_written
            except recording.RecordingError:
                pass  # being created
        if process.poll() is not None:
            raise AssertionError(f"the session ended before {at_least} images: {stderr_text(process)}")
        time.sleep(poll_s)
    raise AssertionError(f"no {at_least} images within {HANG_GUARD_S} s")


def recorded_differences(a_path, b_path) -> list[str]:
    """Every recorded array of two session files that differs (with how many values), batch by batch and layer by
    layer, then the images' columns; the files must hold as many batches."""
    differences = []
    with recording.SessionFile.open(a_path) as a, recording.SessionFile.open(b_path) as b:
        assert a.batches_written == b.batches_written
        for batch in range(a.batches_written):
            for layer in range(len(a.layers)):
                x, y = a.layer_batch(batch, layer), b.layer_batch(batch, layer)
                for name in ("client_quadratures_snu", "verified_rows", "measure_p", "sent_snu", "returned_snu"):
                    left, right = getattr(x, name), getattr(y, name)
                    if not np.array_equal(left, right):
                        differences.append(f"batch {batch} layer {layer} {name}: {np.count_nonzero(left != right)} values")
        differences += [f"images {name}" for name in ("index", "label", "pixels", "prediction")
                        if not np.array_equal(getattr(a.images, name), getattr(b.images, name))]
    return differences


class GatedBench:
    """tests/station/gated_bench.py in its own process: it outlives the session and holds what the test asks."""

    def __init__(self, env: dict[str, str] | None = None):
        """``env``: the bench process's environment (default: this process's)."""
        self.process = subprocess.Popen([sys.executable, str(GATED_BENCH), str(CONFIG)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)
        self.out = Lines(self.process.stdout)
        self.instruments = json.loads(self.out.wait_for(r"^\{"))["instruments"]

    def hold_at(self, nth: int, pattern: str) -> None:
        """Hold the ``nth`` message matching ``pattern`` from now on (armed before the moment it is meant for)."""
        self.process.stdin.write(f"hold-at {nth} {pattern}\n")
        self.process.stdin.flush()

    def wait_held(self, session: subprocess.Popen, what: str) -> str:
        line = self.out.wait_for(r"^(held|refused) ", session, f"the hold at {what}")
        assert line.startswith("held "), line
        return line

    def release(self) -> None:
        self.process.stdin.write("release\n")
        self.process.stdin.flush()

    def renew(self) -> None:
        """A fresh bench in place of this one, at the same addresses (gated_bench.py "renew"): what a newly started
        bench reads, and the same station to a session resumed on it. Held messages are released, holds dropped."""
        self.process.stdin.write("renew\n")
        self.process.stdin.flush()
        line = self.out.wait_for(r"^(\{|refused )", self.process, "the renewed bench")
        assert line.startswith("{"), line
        assert json.loads(line)["instruments"] == self.instruments, line

    def config(self, directory: Path) -> Path:
        """lab_config.toml with every bench instrument at this bench's address (no embedded bench)."""
        # the session's I/O timeout outlasts any hold (a held query is answered when released, never timed out)
        timeout = f"timeout_s = {HANG_GUARD_S:.1f}"
        text = re.sub(r"(?m)^timeout_s = 5\.0$", timeout, CONFIG.read_text(), count=1)
        assert timeout in text
        served = served_config_text(text, {name: entry["address"] for name, entry in self.instruments.items()})
        # every bench instrument is served by this bench
        assert 'address = "bench"' not in [line.strip() for line in served.splitlines()]
        path = directory / "served.toml"
        path.write_text(served)
        return path

    def read_back(self) -> dict[str, bool]:
        """Every output a close must have switched off, as the instruments answer now (raw SCPI)."""
        manager = pyvisa.ResourceManager("@py")
        queries = {"laser": [f"SOUR{port}:POW:STAT?" for port in range(1, 5)], "amplifier": ["OUTP:STAT?"],
                   "attenuator": ["OUTP1:STAT?", "OUTP3:STAT?"],
                   **{awg: [":STAT:OPER:RUN:COND?"] + [f":OUTP{ch}?" for ch in range(1, 5)]
                      for awg in ("awg", "client_awg")}}
        state = {}
        for name, commands in queries.items():
            resource = manager.open_resource(self.instruments[name]["address"], read_termination="\n",
                                             write_termination="\n", timeout=20_000)
            try:
                for command in commands:
                    state[f"{name} {command}"] = float(resource.query(command)) != 0
            finally:
                resource.close()
        return state

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=HANG_GUARD_S)
