"""The monitor's server: one polling thread looks at the session, a Bokeh server serves the page.

Why one poller for every tab: the file is read once per interval however many browsers watch, and the reads
and the analysis run off the server's event loop, so a slow look never stalls the page. A look that fails
(the session file being created, a damaged stream line) becomes an ``error`` in the view; the poller never
stops. Nothing here writes anything.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import traceback

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 5006


class Poller:
    """``follower.refresh()`` every ``interval_s`` in a daemon thread; ``latest()`` is (sequence number, view)."""

    def __init__(self, follower, interval_s: float):
        self.follower, self.interval_s = follower, interval_s
        self._lock = threading.Lock()
        self._latest: tuple[int, dict | None] = (0, None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qslab-monitor-poller", daemon=True)

    def start(self) -> Poller:
        self.look()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def look(self) -> dict:
        try:
            view = self.follower.refresh()
        except Exception as error:  # noqa: BLE001 - the monitor keeps looking; the page says what failed
            last = traceback.extract_tb(error.__traceback__)[-1:]
            where = f" at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno}" if last else ""
            view = {"target": str(self.follower.target), "error": f"{type(error).__name__}: {error}{where}",
                    "waiting": f"the last look failed ({type(error).__name__}: {error}); looking again"}
        with self._lock:
            self._latest = (self._latest[0] + 1, view)
        return view

    def latest(self) -> tuple[int, dict | None]:
        with self._lock:
            return self._latest

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.look()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def free_port(host: str) -> int:
    """A port the OS says is free on ``host`` (for --port 0: the page's origin must name its port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def make_server(poller, host: str = LOOPBACK, port: int = DEFAULT_PORT, refresh_ms: int = 1000):
    """A started-up (not yet running) Bokeh server for the page at ``/``; ``server.port`` is the port bound.

    The websocket is accepted from pages loaded at ``host:port`` (and localhost, on loopback); on another
    interface from any origin, since a lab network's names are not known here (the CLI warns)."""
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server

    from qslab.sequences.monitor.page import MonitorPage

    port = port or free_port(host)
    origins = [f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"] if is_loopback(host) else ["*"]
    application = Application(FunctionHandler(lambda doc: MonitorPage(doc, poller, refresh_ms)))
    return Server({"/": application}, address=host, port=port, allow_websocket_origin=origins, num_procs=1)

