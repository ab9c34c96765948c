"""The bench's CPU per thread (what bench_session_fresh.py prints): each instrument's connection threads, counted
whether they ended or still run, and logged once when the bench stops."""

from __future__ import annotations

import logging
import time

from qcodes.instrument import Instrument

from qslab.instruments.sim.bench_parameters import defaults_table
from qslab.instruments.sim.server import Bench


def test_cpu_per_instrument_counts_live_and_ended_connections(caplog):
    process_before = time.process_time()
    bench = Bench.from_table({**defaults_table(), "time_scale": 0.01}).start()
    try:
        instrument = bench.instruments["digitizer"]
        scope = instrument.driver_class()("digitizer", instrument.address, visalib="@py")
        scope.acquire_points(2**18)
        scope.sample_rate(8 * bench.params.server.symbol_rate_hz)
        scope.auto_digitize(False)
        scope.digitize()  # a record rendered in the digitizer's connection thread
        live = bench.cpu_by_thread_s()
        assert live["digitizer"] > 0.0  # the live connection thread, read through its CPU clock
        assert all(seconds >= 0.0 for seconds in live.values())
        scope.close()
        with caplog.at_level(logging.INFO, logger="qslab.instruments.sim.server"):
            bench.stop()
    finally:
        Instrument.close_all()
        bench.stop()
    ended = bench.cpu_by_thread_s()
    assert ended["digitizer"] >= live["digitizer"]  # the ended thread's total, no longer read live
    instruments = sum(seconds for name, seconds in ended.items() if name in bench.instruments)
    assert instruments <= time.process_time() - process_before + 1e-3  # part of this process's CPU (this bench's)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bench CPU by thread: ")]
    assert len(lines) == 1 and "digitizer " in lines[0]
