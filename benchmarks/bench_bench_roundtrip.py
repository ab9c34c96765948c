"""Virtual-bench latency and throughput against a bare loopback socket echo measured in the same run.

Round trip: median of a short query (``SENS1:POW:UNIT?`` to the N7744A emulator) at three client
levels, each against the same client talking to a bare LF echo server on 127.0.0.1:
raw socket (send + recv), pyvisa-py ``query``, and the driver's ``ask`` (qcodes VisaInstrument
over pyvisa-py). Goal: bench round trip <= 3x the echo.

Transfer: one large ``:TRAC1:DATA`` message, sent by a raw socket and by pyvisa-py ``write_raw`` to a
byte-counting sink and to the bench (which then answers ``SYST:ERR?``), and the M8195A driver's own
upload (``write_binary_values`` in one block, and in its default 1 MiB blocks with a ``SYST:ERR?``
after each). Everything runs in one process, so clients and servers share the GIL.

    python benchmarks/bench_bench_roundtrip.py [--queries 2000] [--upload-mib 64] [--uploads 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time

import numpy as np
import pyvisa
from qcodes.instrument import Instrument, VisaInstrument

from qslab.instruments.drivers.keysight_m8195a import KeysightM8195A
from qslab.instruments.drivers.keysight_n77xx import KeysightN7744A
from qslab.instruments.sim.server import Bench

QUERY = "SENS1:POW:UNIT?"


class _LoopbackServer:
    """A bare TCP server on 127.0.0.1: ``echo`` returns each LF-terminated line; ``sink`` counts bytes
    and answers one LF once ``expect`` bytes have arrived."""

    def __init__(self, mode: str):
        self.mode = mode
        self.expect = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer, received = b"", 0
        with connection:
            while data := connection.recv(1 << 20):
                if self.mode == "echo":
                    buffer += data
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        connection.sendall(line + b"\n")
                else:
                    received += len(data)
                    if self.expect and received >= self.expect:
                        connection.sendall(b"\n")
                        received = 0

    @property
    def address(self) -> str:
        return f"TCPIP::127.0.0.1::{self.port}::SOCKET"

    def close(self) -> None:
        self._listener.close()


def median_us(call, repeats: int) -> float:
    return paired_medians_us(call, None, repeats)[0]


def paired_medians_us(first, second, repeats: int, rounds: int = 20) -> tuple[float, float]:
    """Medians of two calls timed in alternating blocks: each block keeps its server thread hot (as
    a driver talking to one instrument does) and alternating blocks spread slow drifts over both."""
    calls = [c for c in (first, second) if c is not None]
    block = max(1, repeats // rounds)
    for call in calls:  # warm-up
        for _ in range(min(200, block)):
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, store in zip(calls, times):
            for _ in range(block):
                start = time.perf_counter()
                call()
                store.append(time.perf_counter() - start)
    medians = [statistics.median(store) * 1e6 for store in times]
    return (medians[0], medians[1] if len(medians) > 1 else float("nan"))


def raw_client(port: int):
    connection = socket.create_connection(("127.0.0.1", port))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = (QUERY + "\n").encode()

    def ask() -> bytes:
        connection.sendall(message)
        reply = connection.recv(4096)
        while not reply.endswith(b"\n"):
            reply += connection.recv(4096)
        return reply

    return connection, ask


def round_trips(bench: Bench, echo: _LoopbackServer, repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    meter_port = bench.instruments["power_meter"].server.port
    echo_sock, echo_ask = raw_client(echo.port)
    bench_sock, bench_ask = raw_client(meter_port)
    rows.append(("raw socket send/recv", *paired_medians_us(echo_ask, bench_ask, repeats)))
    echo_sock.close()
    bench_sock.close()

    manager = pyvisa.ResourceManager("@py")
    resources = [manager.open_resource(address, read_termination="\n", write_termination="\n")
                 for address in (echo.address, bench.address("power_meter"))]
    rows.append(("pyvisa-py query", *paired_medians_us(lambda: resources[0].query(QUERY),
                                                       lambda: resources[1].query(QUERY), repeats)))
    for resource in resources:
        resource.close()

    echo_driver = VisaInstrument("echo", echo.address, visalib="@py", terminator="\n")
    meter = KeysightN7744A("meter", bench.address("power_meter"), visalib="@py")
    rows.append(("driver ask (qcodes + pyvisa-py)", *paired_medians_us(lambda: echo_driver.ask(QUERY),
                                                                       lambda: meter.ask(QUERY), repeats)))
    rows.append(("  driver parameter get (bench only)", float("nan"),
                 median_us(meter.ch1.power_unit.get, repeats)))
    rows.append(("  driver set + SYST:ERR? (bench only)", float("nan"),
                 median_us(lambda: meter.ch1.averaging_time_s.set(0.1), max(repeats // 4, 50))))
    return rows


def best_rate_mb_s(send, size: int, repeats: int) -> float:
    """Median rate of ``repeats`` transfers of ``size`` bytes (the process is shared with the bench, so
    the client and the servers compete for the GIL: the median tames the scheduling noise)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        send()
        times.append(time.perf_counter() - start)
    return size / statistics.median(times) / 1e6


def transfer(bench: Bench, sink: _LoopbackServer, mib: int, repeats: int) -> list[tuple[str, float, float]]:
    """(client, MB/s to the sink, MB/s to the bench) for the same :TRAC1:DATA message."""
    samples = (np.arange(mib << 20) % 251 - 125).astype(np.int8)
    payload = b":TRAC1:DATA 1,0,#9" + f"{samples.size:09d}".encode() + samples.tobytes() + b"\n"
    sink.expect = len(payload)
    awg = KeysightM8195A("awg", bench.address("awg"), visalib="@py")
    awg.ch1.define_segment(1, samples.size)
    rows = []

    to_sink = socket.create_connection(("127.0.0.1", sink.port))
    to_bench = socket.create_connection(("127.0.0.1", bench.instruments["awg"].server.port))

    def raw(connection: socket.socket, ask: bytes) -> None:
        connection.sendall(payload + ask)
        reply = b""
        while not reply.endswith(b"\n"):
            reply += connection.recv(64)

    rows.append(("bare socket sendall",
                 best_rate_mb_s(lambda: raw(to_sink, b""), len(payload), repeats),
                 best_rate_mb_s(lambda: raw(to_bench, b"SYST:ERR?\n"), len(payload), repeats)))
    to_sink.close()
    to_bench.close()

    manager = pyvisa.ResourceManager("@py")
    resources = [manager.open_resource(address, read_termination="\n", write_termination="")
                 for address in (sink.address, bench.address("awg"))]

    def visa(resource, ask: str) -> None:
        resource.write_raw(payload + ask.encode())
        resource.read()

    rows.append(("pyvisa-py write_raw",
                 best_rate_mb_s(lambda: visa(resources[0], ""), len(payload), repeats),
                 best_rate_mb_s(lambda: visa(resources[1], "SYST:ERR?\n"), len(payload), repeats)))
    for resource in resources:
        resource.close()

    nan = float("nan")
    rows.append(("M8195A driver upload, one block", nan, best_rate_mb_s(
        lambda: awg.ch1.upload_segment(1, samples, chunk_samples=samples.size), samples.size, repeats)))
    rows.append(("M8195A driver upload, 1 MiB blocks", nan, best_rate_mb_s(
        lambda: awg.ch1.upload_segment(1, samples), samples.size, repeats)))
    assert bench.state.awg.channels[1].segments[1].tobytes() == samples.tobytes()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000, help="round trips per median")
    parser.add_argument("--upload-mib", type=int, default=64, help="size of the :TRAC:DATA upload, MiB")
    parser.add_argument("--uploads", type=int, default=5, help="uploads per median rate")
    args = parser.parse_args()

    echo, sink = _LoopbackServer("echo"), _LoopbackServer("sink")
    try:
        with Bench.from_config() as bench:
            rows = round_trips(bench, echo, args.queries)
            rates = transfer(bench, sink, args.upload_mib, args.uploads)
    finally:
        Instrument.close_all()
        echo.close()
        sink.close()

    print(f"\nmedian round trip of {QUERY!r} over 127.0.0.1 ({args.queries} queries each)")
    print(f"{'client':<40} {'echo us':>9} {'bench us':>9} {'ratio':>7}")
    for name, echo_us, bench_us in rows:
        ratio = bench_us / echo_us if echo_us == echo_us else float("nan")
        print(f"{name:<40} {echo_us:9.1f} {bench_us:9.1f} {ratio:7.2f}")
    bare = rows[0][1]
    driver = rows[2][2]
    print(f"{'driver ask through the bench vs bare socket echo':<40} {bare:9.1f} {driver:9.1f} {driver / bare:7.2f}")
    worst = max(bench_us / echo_us for _, echo_us, bench_us in rows[:3])
    print(f"goal (bench <= 3x echo, same client): {'met' if worst <= 3 else 'NOT met'} (worst {worst:.2f}x)")

    print(f"\nwaveform transfer: one :TRAC1:DATA message with {args.upload_mib} MiB of int8 samples "
          f"(median of {args.uploads})")
    print(f"{'client':<40} {'sink MB/s':>9} {'bench MB/s':>10} {'ratio':>7}")
    for name, sink_rate, bench_rate in rates:
        print(f"{name:<40} {sink_rate:9.0f} {bench_rate:10.0f} {bench_rate / sink_rate:7.2f}")


if __name__ == "__main__":
    main()
