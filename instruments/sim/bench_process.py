"""A station's virtual bench served by a process forked from the station's, which it owns: its instruments at
loopback addresses, ended with its owner however the owner ends (docs/DECISIONS.md AM).

Why: embedded, the bench's emulators and renders run on threads of the session's process and share its interpreter
lock; in a process of its own it computes beside the session, as instruments do (``benchmarks/bench_session_ab.py
--embedded``: 0.501 -> 0.441 ms an image). Why forked: the child inherits the imported modules and the table and is
ready in ~25 ms, where starting an interpreter takes ~0.5 s. How it ends with its owner: it serves until its pipe
says stop or closes, which the kernel does when the owner dies (SIGKILL included). It runs in a session of its own, so
a Ctrl-C or a hang-up at the terminal reaches only the owner, whose safe state still needs the instruments.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import weakref
from typing import Any

START_TIMEOUT_S = 60.0  # a loaded 2-core machine starts one in ~0.05 s: this catches a hung start, not a slow one
STOP_TIMEOUT_S = 30.0   # after it was told to stop, before it is killed
# A bench process hands its interpreter lock over after 0.5 ms instead of Python's 5 ms: its threads are the
# instruments' connections and the second receiver's render, and a thread woken for its part (the render submitted
# while the first runs, a query) otherwise waits up to 5 ms for it. Forked sessions, 4000 images, fresh processes:
# 0.5 ms faster than 5 ms in 10 of 12 pairs, ~0.02-0.04 ms an image (of ~0.45); 0.1 ms no faster than 0.5.
SWITCH_INTERVAL_S = 0.0005
# Where a station may fork its bench: Linux (macOS's system frameworks are not safe in a forked child of a threaded
# process, Windows has no fork); elsewhere the bench stays in the station's process.
CAN_FORK = sys.platform.startswith("linux")


class ForkedBench:
    """A station's benches (``server.station_benches``) served by a child forked from this process, in a session of
    its own (a Ctrl-C or hang-up at the terminal reaches only this process, whose safe state still needs the
    instruments). It serves until ``stop``, or until this process ends however it ends (its pipe then closes).
    ``instruments`` {name: address} once started; ``message_counts``, ``charged_s`` and ``cpu_by_thread_s`` as
    ``Bench``'s (after ``stop``: the last ones, read as it stopped); a context manager."""

    def __init__(self, table: dict[str, Any], uncabled: dict[str, str] | None = None):
        self._table, self._uncabled = table, dict(uncabled or {})
        self._process: Any = None
        self._connection: Any = None
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None
        self.instruments: dict[str, str] = {}

    @property
    def pid(self) -> int | None:
        """The child's process id while it serves."""
        return None if self._process is None else self._process.pid

    def start(self) -> ForkedBench:
        if self._process is not None:
            return self
        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe()
        # daemonic: a process that ends without stop() ends it too (multiprocessing's exit handler), never waits on it
        self._process = context.Process(target=_serve_forked, args=(self._table, self._uncabled, theirs, ours),
                                        name="qslab-bench", daemon=True)
        self._process.start()
        theirs.close()
        self._connection = ours
        _FORKED.add(self)
        try:
            reply = self._reply(START_TIMEOUT_S)
            if "error" in reply:
                raise OSError(reply["error"])
        except (OSError, TimeoutError) as error:
            self.stop()
            raise OSError(f"the bench process did not start: {error}") from None
        self.instruments = reply["instruments"]
        return self

    def address(self, name: str) -> str:
        try:
            return self.instruments[name]
        except KeyError:
            raise KeyError(f"no instrument {name!r} on the bench; there are {sorted(self.instruments)}") from None

    def message_counts(self) -> dict[str, int]:
        return self._tallies()["messages"]

    def charged_s(self) -> float:
        return self._tallies()["charged_s"]

    def cpu_by_thread_s(self) -> dict[str, float]:
        return self._tallies()["cpu_s"]

    def stop(self) -> None:
        """Stop serving: returns once its instruments are closed (the last counts kept); the child is then reaped on a
        thread (its exit, unmapping what it shares with this process, takes ~30 ms), killed if not ended in
        STOP_TIMEOUT_S, and killed at once if it did not confirm the stop."""
        with self._lock:
            process, self._process = self._process, None
            if process is None:
                return
            try:
                self._connection.send("stop")
                reply = self._reply(STOP_TIMEOUT_S)
                self._last = reply if "messages" in reply else self._last
            except (OSError, TimeoutError):  # it has ended already, or hangs
                process.kill()
            self._connection.close()
            _FORKED.discard(self)
        threading.Thread(target=_reap, args=(process,), name="qslab-bench-reaper", daemon=True).start()

    def _tallies(self) -> dict[str, Any]:
        with self._lock:
            if self._process is None:
                if self._last is None:
                    raise OSError("the bench process has not served: it has no counts")
                return self._last
            self._connection.send("tallies")
            return self._reply(START_TIMEOUT_S)

    def _reply(self, timeout_s: float) -> dict[str, Any]:
        if not self._connection.poll(timeout_s):
            raise TimeoutError(f"no reply from the bench process within {timeout_s:g} s")
        try:
            return self._connection.recv()
        except EOFError:
            raise OSError("the bench process ended") from None

    def __enter__(self) -> ForkedBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reap(process: Any) -> None:
    process.join(STOP_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        process.join()


_FORKED: weakref.WeakSet[ForkedBench] = weakref.WeakSet()  # started and not stopped: a child closes their pipes


def _serve_forked(table: dict[str, Any], uncabled: dict[str, str], connection: Any, parent_end: Any) -> None:
    """The forked child: the station's benches, served until the parent says stop or its pipe closes."""
    from qslab.instruments.sim.server import station_benches

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    os.setsid()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    parent_end.close()
    for other in list(_FORKED):  # the other benches' pipes: their children see their parent's end close, not ours
        other._connection.close()
    benches: list = []
    try:
        for bench in station_benches(table, uncabled):
            benches.append(bench)
            bench.start()
    except (OSError, ValueError) as error:  # e.g. a fixed [bench.ports] port already in use
        for bench in benches:
            bench.stop()
        connection.send({"error": str(error)})
        return
    try:
        connection.send({"instruments": {name: bench.address(name) for bench in benches
                                         for name in bench.instruments}})
        while (request := _next_request(connection)) == "tallies":
            connection.send(_bench_tallies(benches))
    finally:
        for bench in benches:
            bench.stop()
    if request == "stop":
        connection.send(_bench_tallies(benches))
    connection.close()
    os._exit(0)  # nothing of this process is left to finish: its instruments are stopped, its tallies sent


def _next_request(connection: Any) -> str:
    try:
        return connection.recv()
    except EOFError:  # the parent has ended
        return "ended"


def _bench_tallies(benches: list) -> dict[str, Any]:
    return {"messages": {name: count for bench in benches for name, count in bench.message_counts().items()},
            "charged_s": sum(bench.charged_s() for bench in benches),
            "cpu_s": {name: s for bench in benches for name, s in bench.cpu_by_thread_s().items()}}
