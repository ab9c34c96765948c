"""The virtual bench served by a process of its own, which this process owns: started from a ``[bench]`` table, its
instruments at loopback addresses, ended with its owner however the owner ends.

Why: the embedded bench's emulators and renders run on threads of the session's process and share its interpreter
lock; a bench in a process of its own computes beside the session, as instruments do
(``benchmarks/bench_session_ab.py --served``: 0.506 -> 0.432 ms an image). How it ends with its owner: it serves until
its stdin closes, which ``stop`` does and the kernel does when the owner dies (SIGKILL included). It runs in a session
of its own, so a Ctrl-C or a hang-up at the terminal reaches only the owner, whose safe state still needs the
instruments. Its stderr goes to a file, read back only if it fails to start: a pipe nobody reads would block a bench
that logs.

Lines on its stdin: the table (JSON), then ``counts`` for each ``Bench.message_counts`` wanted (one JSON line back).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading
from typing import Any

START_TIMEOUT_S = 60.0  # a loaded 2-core machine starts one in ~0.5 s: this catches a hung start, not a slow one
STOP_TIMEOUT_S = 30.0   # after its stdin closed, before it is killed


class BenchProcess:
    """A served bench in a child process: ``instruments`` {name: address} once started; ``stop`` ends it
    (idempotent); a context manager."""

    def __init__(self, table: dict[str, Any], env: dict[str, str] | None = None):
        try:
            self._table_line = json.dumps(table) + "\n"
        except (TypeError, ValueError) as error:
            raise ValueError(f"[bench] table cannot be handed to a bench process ({error})") from None
        # one BLAS thread: the embedded bench computes on one as well, so both read the same bits (DECISIONS AF)
        self._env = {**(os.environ if env is None else env), "OPENBLAS_NUM_THREADS": "1"}
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.instruments: dict[str, str] = {}

    def start(self) -> BenchProcess:
        if self._process is not None:
            return self
        errors = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=errors, text=True, env=self._env,
                                         start_new_session=True)
        try:
            self._process.stdin.write(self._table_line)
            self._process.stdin.flush()
            first = self._line(START_TIMEOUT_S)
            self.instruments = {name: entry["address"] for name, entry in json.loads(first)["instruments"].items()}
        except (OSError, ValueError, KeyError, TimeoutError) as error:
            self.stop()
            errors.seek(0)
            lines = errors.read().strip().splitlines()
            raise OSError(f"the bench process did not start: {lines[-1] if lines else error}") from None
        finally:
            errors.close()
        return self

    def address(self, name: str) -> str:
        try:
            return self.instruments[name]
        except KeyError:
            raise KeyError(f"no instrument {name!r} on the bench; there are {sorted(self.instruments)}") from None

    def message_counts(self) -> dict[str, int]:
        """``Bench.message_counts`` of the served bench."""
        with self._lock:
            if self._process is None:
                raise OSError("the bench process is not running: its counts are read while it serves")
            self._process.stdin.write("counts\n")
            self._process.stdin.flush()
            return json.loads(self._line(START_TIMEOUT_S))

    def stop(self) -> None:
        """Close its stdin (it stops serving and exits), wait, kill it if it has not ended in STOP_TIMEOUT_S."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()
        except OSError:  # it has ended already
            pass
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def _line(self, timeout_s: float) -> str:
        """The child's next stdout line, or TimeoutError."""
        ready, _, _ = select.select([self._process.stdout], [], [], timeout_s)
        if not ready:
            raise TimeoutError(f"no reply from the bench process within {timeout_s:g} s")
        line = self._process.stdout.readline()
        if not line:
            raise ValueError("the bench process ended")
        return line

    def __enter__(self) -> BenchProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve() -> None:
    """The child: the bench of the table on stdin's first line, served until stdin closes."""
    from qslab.instruments.sim.server import Bench

    bench = Bench.from_table(json.loads(sys.stdin.readline())).start()
    try:
        print(json.dumps(bench.describe()), flush=True)
        for request in sys.stdin:
            if request.strip() == "counts":
                print(json.dumps(bench.message_counts()), flush=True)
    finally:
        bench.stop()


if __name__ == "__main__":
    serve()
