"""The bench's public counters and start observers: what the benchmarks read instead of wrapping drivers.

A message is what the real driver sends on its real transport: a query, a set and its error query, a
compound message, a binary block (with LF bytes inside), an MBX serial exchange.
"""

from __future__ import annotations

import numpy as np

from qslab.instruments.sim.server import Bench, observing_bench_starts


def _sent(bench: Bench, before: dict[str, int]) -> dict[str, int]:
    return {name: count - before[name] for name, count in bench.message_counts().items() if count != before[name]}


def test_each_message_is_counted_once_on_its_instrument(bench, connect):
    laser, awg, mbx = connect("laser"), connect("awg"), connect("bias_iq")
    before = bench.message_counts()
    assert set(before) == set(bench.instruments)

    laser.ask("*IDN?")
    assert _sent(bench, before) == {"laser": 1}

    before = bench.message_counts()
    laser.write("*CLS")                        # a set: the command and its SYST:ERR? check in one message (N77xx)
    laser.write_batch(["*CLS", "*IDN?"])       # one compound message, error query included
    assert _sent(bench, before) == {"laser": 2}

    before = bench.message_counts()
    samples = np.full(1280, 10, dtype=np.int8)  # every byte an LF: the block is framed by its length
    awg.ch1.define_segment(1, samples.size)
    awg.ch1.upload_segment(1, samples)
    assert _sent(bench, before) == {"awg": 4}  # two sets, each with its error query

    before = bench.message_counts()
    mbx.mzm.bias_mode()                        # one serial exchange
    mbx.mzm.bias_mode("null")                  # a set is one exchange too (the MBX answers 1)
    assert _sent(bench, before) == {"bias_iq": 2}


def test_start_observers_hear_each_start_while_observing():
    heard: list[Bench] = []
    first, second = Bench.from_config(), Bench.from_config()
    try:
        with observing_bench_starts(heard.append):
            first.start()
            first.start()                      # already serving: not a start
            assert heard == [first]
        second.start()
        assert heard == [first]
    finally:
        first.stop()
        second.stop()
