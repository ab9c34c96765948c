"""Loopback TCP servers for the emulators, and ``Bench``: every instrument of the station, served.

Each instrument gets its own listening socket on 127.0.0.1 (a free port unless configured), like
the raw SCPI port 5025 of a LAN instrument: VISA address ``TCPIP::127.0.0.1::<port>::SOCKET``,
opened by the real pyvisa-py. Serial instruments (the MBX) are served the same way but speak
their line protocol, and the driver opens them with pyserial's ``socket://127.0.0.1:<port>``.
SCPI streams are framed by LF with definite-length blocks skipped by their length; serial
streams by CR and/or LF. One thread per connection, TCP_NODELAY, no sleeps anywhere.

    with Bench() as bench:                      # or Bench.from_config("lab_config.toml")
        laser = KeysightN7714A("laser", bench.address("laser"), visalib="@py")

Faults (``qslab.instruments.sim.faults_attacks.faults``): ``Bench(faults=[...])`` or ``bench.inject("timeout@laser")``; every
message then passes through the bench's ``FaultPlan``, which may swallow it, garble or cut its reply,
queue an error, power-cycle the emulator or change the optics.

Counting (``bench.message_counts()``): every server counts the messages it frames, so a benchmark or a
test sees the round trips a procedure costs per instrument without wrapping the drivers or pyvisa.
Starts (``observing_bench_starts``): whoever needs the benches a station starts on its own (a benchmark
reading the bench's state after the session closed) is told of each start.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from qslab.instruments.sim.bench import BenchState
from qslab.instruments.sim.bench_parameters import (BenchParameters, defaults_table, from_mapping,
                                              load_bench_table)
from qslab.instruments.sim.emulators import DEFAULT_INSTRUMENTS, KINDS
from qslab.instruments.sim.emulators.alazar_ats import IN_PROCESS_FRAMING
from qslab.instruments.sim.emulators.base import SCPI_FRAMING, Emulator
from qslab.instruments.sim.faults_attacks.faults import Disconnect, Fault, FaultPlan
from qslab.instruments.sim.scpi.parsing import MessageFramer

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


def thread_cpu_s(thread: threading.Thread) -> float:
    """A live thread's CPU seconds so far (0 when it has ended or the platform has no per-thread clocks)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError, TypeError):
        return 0.0


def check_loopback(host: Any, allow_non_loopback: bool = False) -> str:
    """``host`` when it is a loopback address (127.0.0.0/8, ::1, localhost): the emulators speak SCPI without
    credentials, as real instruments do, so by default only this machine may reach them. Any other address is
    a ValueError naming [bench] host, unless ``allow_non_loopback`` (the operator's explicit choice)."""
    import ipaddress

    if not isinstance(host, str):
        raise ValueError(f"[bench] host = {host!r}: expected a loopback address such as '127.0.0.1'")
    if allow_non_loopback or host == "localhost":
        return host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"[bench] host = {host!r}: expected a loopback address such as '127.0.0.1' (the bench "
                         "speaks SCPI without credentials, so any host that can reach it could drive the lasers; "
                         "set [bench] allow_non_loopback = true or pass --allow-non-loopback to mean it)")
    return host
_RECV_BYTES = 1 << 16


def _quick_ack(connection: socket.socket) -> None:
    """Acknowledge at once (Linux): a write-only message gets no reply to carry the ACK, and the
    client's next small write would otherwise wait for the delayed ACK (Nagle + delayed ACK)."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is not None:
        try:
            connection.setsockopt(socket.IPPROTO_TCP, option, 1)
        except OSError:
            pass


class _LineFramer:
    """Serial-port framing: a message ends at CR or LF (CR LF and LF CR give one empty line)."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def reserve(self) -> None:
        return None

    def next_message(self) -> bytes | None:
        buffer = self.buffer
        cr, lf = buffer.find(b"\r"), buffer.find(b"\n")
        ends = [i for i in (cr, lf) if i >= 0]
        if not ends:
            return None
        end = min(ends)
        message = bytes(buffer[:end])
        del buffer[:end + 1]
        return message


class InstrumentServer:
    """One emulator on one loopback port; ``start()`` and ``stop()`` are idempotent.

    ``faults``: the bench's FaultPlan, which sees every message (None: messages go straight in).
    """

    def __init__(self, emulator: Emulator, host: str = DEFAULT_HOST, port: int = 0, faults: FaultPlan | None = None):
        self.emulator = emulator
        self.faults = faults
        self.host = host
        self.requested_port = port
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._messages = 0
        self._ended_cpu_s = 0.0           # CPU of the connection threads that have ended
        self._ended: set[int] = set()     # their thread idents

    @property
    def messages_received(self) -> int:
        """Messages framed so far, over every connection (a compound SCPI message ``a;b;c?`` is one).

        Counted as a message is framed, before it is handled: once a query's reply has arrived, every
        message sent before it on that connection is counted.
        """
        with self._lock:
            return self._messages

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError(f"{self.emulator.name}: server not started")
        return self._listener.getsockname()[1]

    @property
    def address(self) -> str:
        """What the driver opens: a VISA SOCKET resource, or a pyserial URL for serial instruments."""
        if self.emulator.framing == SCPI_FRAMING:
            return f"TCPIP::{self.host}::{self.port}::SOCKET"
        return f"socket://{self.host}:{self.port}"

    def start(self) -> InstrumentServer:
        if self._listener is not None:
            return self
        try:
            listener = socket.create_server((self.host, self.requested_port), reuse_port=False)
        except OSError as error:
            raise OSError(f"{self.emulator.name}: cannot listen on {self.host}:{self.requested_port} ({error})") from None
        listener.listen(8)
        self._listener = listener
        self._stopping.clear()
        thread = threading.Thread(target=self._accept_loop, name=f"bench-{self.emulator.name}-accept", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self, wait: bool = True) -> None:
        """Close its sockets; ``wait``: and wait for its threads to end (a bench closes all its servers first)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            self._stopping.set()
            for sock in [listener, *list(self._connections)]:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(timeout=5.0)
            self._threads.clear()

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stopping.is_set():
                    connection.close()
                    return
                self._connections.add(connection)
                thread = threading.Thread(target=self._serve, args=(connection,), daemon=True,
                                          name=f"bench-{self.emulator.name}-connection")
                self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        framer = MessageFramer() if self.emulator.framing == SCPI_FRAMING else _LineFramer()
        try:
            while True:
                view = framer.reserve()
                if view is not None:  # a large block: receive it straight into place
                    filled = 0
                    with view:
                        while filled < len(view):
                            count = connection.recv_into(view[filled:])
                            if not count:
                                return
                            _quick_ack(connection)
                            filled += count
                    framer.commit(filled)
                else:
                    data = connection.recv(_RECV_BYTES)
                    if not data:
                        return
                    _quick_ack(connection)
                    framer.feed(data)
                while (message := framer.next_message()) is not None:
                    with self._lock:
                        self._messages += 1
                    try:
                        reply = self._exchange(message)
                    except Disconnect as drop:  # an injected fault: the line drops mid-reply
                        connection.sendall(drop.partial_reply)
                        connection.shutdown(socket.SHUT_WR)
                        return
                    if reply:
                        connection.sendall(reply)
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(connection)
                self._ended_cpu_s += time.thread_time()
                self._ended.add(threading.get_ident())
            connection.close()

    @property
    def cpu_s(self) -> float:
        """CPU seconds this instrument's connection threads used (its emulator's work: parsing, rendering), the
        ended ones' totals plus the live ones' so far. For the benchmarks' per-thread accounting."""
        with self._lock:
            total = self._ended_cpu_s
            live = [t for t in self._threads if t.name.endswith("-connection") and t.ident not in self._ended]
        return total + sum(thread_cpu_s(t) for t in live)

    def _exchange(self, message: bytes) -> bytes:
        try:
            if self.faults is not None:
                return self.faults.exchange(self.emulator, message, self.emulator.handle)
            return self.emulator.handle(message)
        except Disconnect:
            raise
        except Exception:  # an emulator bug must not take the instrument off the bench
            log.exception("%s: error handling %r", self.emulator.name, message[:80])
            return b""


class InProcessEndpoint:
    """Where an emulator without a transport is reached (a PCIe card's vendor API, called in this process): the
    address its simulated API resolves, and the calls it answered. Nothing listens; start and stop do nothing."""

    def __init__(self, emulator: Emulator):
        self.emulator = emulator

    @property
    def address(self) -> str:
        return self.emulator.address

    @property
    def messages_received(self) -> int:
        return self.emulator.calls

    def start(self) -> InProcessEndpoint:
        return self

    def stop(self, wait: bool = True) -> None:
        return None


BenchObserver = Callable[["Bench"], None]
_start_observers: list[BenchObserver] = []
_start_observers_lock = threading.Lock()


@contextmanager
def observing_bench_starts(observer: BenchObserver) -> Iterator[BenchObserver]:
    """Call ``observer(bench)`` whenever a Bench starts serving, for the ``with`` block (process-wide: a
    LabStation starts its benches itself, so this is how a caller outside it learns which they are)."""
    with _start_observers_lock:
        _start_observers.append(observer)
    try:
        yield observer
    finally:
        with _start_observers_lock:
            _start_observers.remove(observer)


@dataclass
class BenchInstrument:
    name: str
    kind: str
    emulator: Emulator
    server: InstrumentServer | InProcessEndpoint

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def driver(self) -> str:
        return self.emulator.driver

    def driver_class(self) -> type:
        """The real driver class (imported on demand)."""
        module, _, name = self.driver.rpartition(".")
        return getattr(import_module(module), name)


class Bench:
    """The virtual bench: the shared physical state and one served emulator per instrument.

    ``instruments``: {name: kind} (default ``DEFAULT_INSTRUMENTS``); ``ports``: {name: port} (0 or
    missing = a free port); ``faults``: Fault objects or spec strings to arm (``inject`` arms more
    later; ``faults.fired`` records what they did). Use as a context manager, or ``start()``/``stop()``.
    """

    def __init__(self, params: BenchParameters | None = None, *, instruments: dict[str, str] | None = None,
                 host: str = DEFAULT_HOST, ports: dict[str, int] | None = None,
                 faults: Iterable[Fault | str] = (), allow_non_loopback: bool = False):
        self.host = check_loopback(host, allow_non_loopback)
        self.state = BenchState(params)
        lineup = dict(DEFAULT_INSTRUMENTS if instruments is None else instruments)
        ports = dict(ports or {})
        unknown = sorted(set(ports) - set(lineup))
        if unknown:
            raise ValueError(f"[bench] ports: no instrument named {unknown}; instruments are {sorted(lineup)}")
        self.instruments: dict[str, BenchInstrument] = {}
        self.faults = FaultPlan()
        for name, kind in lineup.items():
            if kind not in KINDS:
                raise ValueError(f"[bench] instruments.{name} = {kind!r}: expected one of {sorted(KINDS)}")
            port = ports.get(name, 0)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"[bench] ports.{name} = {port!r}: expected an integer port 0..65535 (0 = free)")
            emulator = KINDS[kind](self.state, name)
            server = (InProcessEndpoint(emulator) if emulator.framing == IN_PROCESS_FRAMING
                      else InstrumentServer(emulator, host, port, faults=self.faults))
            self.instruments[name] = BenchInstrument(name, kind, emulator, server)
        self.faults.bind(self.state, lineup)
        for fault in faults:
            self.inject(fault)
        self._started = False

    def inject(self, fault: Fault | str) -> Fault:
        """Arm a fault (``Fault`` or a spec like ``"timeout@laser:after=0"``); returns it, target resolved."""
        return self.faults.add(fault)

    @classmethod
    def from_table(cls, table: dict[str, Any], *, faults: Iterable[Fault | str] = (),
                   allow_non_loopback: bool = False) -> Bench:
        """From a ``[bench]`` table: hardware truth, plus ``host``, ``ports``, ``instruments`` and
        ``allow_non_loopback`` (true: serve ``host`` even when other machines can reach it)."""
        params = from_mapping(table)
        allowed = table.get("allow_non_loopback", False)
        if not isinstance(allowed, bool):
            raise ValueError(f"[bench] allow_non_loopback = {allowed!r}: expected true or false")
        return cls(params, instruments=table.get("instruments"), host=table.get("host", DEFAULT_HOST),
                   ports=table.get("ports"), faults=faults, allow_non_loopback=allowed or allow_non_loopback)

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, faults: Iterable[Fault | str] = ()) -> Bench:
        """From a TOML file's ``[bench]`` table, or the packaged defaults when ``path`` is None."""
        return cls.from_table(defaults_table() if path is None else load_bench_table(path), faults=faults)

    @property
    def params(self) -> BenchParameters:
        return self.state.params

    def start(self) -> Bench:
        if self._started:
            return self
        try:
            for instrument in self.instruments.values():
                instrument.server.start()
        except Exception:
            self.stop()
            raise
        self._started = True
        with _start_observers_lock:
            observers = list(_start_observers)
        for observer in observers:
            observer(self)
        return self

    def stop(self) -> None:
        for instrument in self.instruments.values():  # every connection closed first, then their threads joined
            instrument.server.stop(wait=False)
        for instrument in self.instruments.values():
            instrument.server.stop()
        if self._started:
            self._log_cpu()
        self._started = False

    def cpu_by_thread_s(self) -> dict[str, float]:
        """CPU seconds per instrument (its connection threads) and of the render and normal-drawing worker threads
        alive in this process (``qslab-*``: the digitizer's render pool lives as long as the process)."""
        cpu = {name: i.server.cpu_s for name, i in self.instruments.items() if isinstance(i.server, InstrumentServer)}
        for thread in threading.enumerate():
            if thread.name.startswith("qslab-"):
                prefix = thread.name.rsplit("_", 1)[0]
                cpu[f"{prefix} threads"] = cpu.get(f"{prefix} threads", 0.0) + thread_cpu_s(thread)
        return cpu

    def _log_cpu(self) -> None:
        cpu = sorted(((s, name) for name, s in self.cpu_by_thread_s().items() if s >= 0.005), reverse=True)
        if cpu:
            log.info("bench CPU by thread: %s (s)", ", ".join(f"{name} {s:.2f}" for s, name in cpu))

    def __enter__(self) -> Bench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def message_counts(self) -> dict[str, int]:
        """{instrument: messages it received so far} (``InstrumentServer.messages_received``); the difference of
        two calls is what was sent in between. Why on the bench: it sees every message of every path (VISA
        writes and queries, binary blocks, serial exchanges) as the instrument would, with no driver wrapped."""
        return {name: instrument.server.messages_received for name, instrument in self.instruments.items()}

    def charged_s(self) -> float:
        """Instrument seconds its emulators charged so far (``BenchClock.charged_s``)."""
        return self.state.clock.charged_s()

    def address(self, name: str) -> str:
        try:
            return self.instruments[name].address
        except KeyError:
            raise KeyError(f"no instrument {name!r} on the bench; there are {sorted(self.instruments)}") from None

    def describe(self) -> dict[str, Any]:
        """``{"instruments": {name: {"address": ..., "driver": ...}}}`` (what ``qslab bench serve`` prints)."""
        return {"instruments": {name: {"address": i.address, "driver": i.driver}
                                for name, i in self.instruments.items()}}


def station_benches(table: dict[str, Any], uncabled: dict[str, str]) -> list[Bench]:
    """A station's benches, not started: the ``[bench]`` table's, and for the instruments cabled to nothing
    ({name: kind}) a second with the same parameters and a state of its own (nothing they do reaches the first's
    optical model)."""
    bench = Bench.from_table(table)
    return [bench, Bench(bench.params, instruments=uncabled, host=bench.host)] if uncabled else [bench]


def served_over_sockets(table: dict[str, Any], uncabled: dict[str, str]) -> bool:
    """Whether every instrument of these benches is reached over a socket (a card its driver calls in this process,
    e.g. the ATS digitizer, is not): only then can the benches be served by another process."""
    kinds = [*(table.get("instruments") or DEFAULT_INSTRUMENTS).values(), *uncabled.values()]
    return all(kind in KINDS and KINDS[kind].framing != IN_PROCESS_FRAMING for kind in kinds)


def bench_starts_observed() -> bool:
    """Whether someone in this process is told of bench starts (``observing_bench_starts``): they are handed the
    Bench, so it has to be served by this process."""
    with _start_observers_lock:
        return bool(_start_observers)


def _after_fork_in_child() -> None:
    """A forked child starts with no observers (theirs are the parent's) and a lock no parent thread can hold."""
    global _start_observers_lock
    _start_observers_lock = threading.Lock()
    _start_observers.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
