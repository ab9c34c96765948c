"""Fixtures for the virtual-bench tests: a served bench per test, drivers connected over loopback.

Every instrument is closed and every server stopped at the end of each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qcodes.instrument import Instrument

from qslab.instruments.sim.bench_parameters import defaults_table
from qslab.instruments.sim.server import Bench


@pytest.fixture(autouse=True)
def _close_all_instruments() -> Iterator[None]:
    Instrument.close_all()  # what a test elsewhere left open (which ran before depends on xdist's scheduling)
    yield
    Instrument.close_all()


# The bench clock's scale in these tests (real s per instrument s), as lab_config.toml's embedded bench.
TEST_TIME_SCALE = 0.01


@pytest.fixture
def bench() -> Iterator[Bench]:
    with Bench.from_table({**defaults_table(), "time_scale": TEST_TIME_SCALE}) as served:
        yield served


@pytest.fixture
def connect(bench: Bench):
    """``connect(name, **kwargs)``: the instrument's real driver on its emulator (pyvisa-py or pyserial).

    VISA drivers connect without qcodes' device clear unless a test asks for it: on a fresh TCP socket pyvisa-py's
    clear only drains replies nobody asked for yet (there are none) and waits 0.1 s of real time for them."""

    def open_driver(name: str, **kwargs):
        instrument = bench.instruments[name]
        cls = instrument.driver_class()
        if not instrument.address.startswith("socket://"):
            kwargs.setdefault("visalib", "@py")
            kwargs.setdefault("device_clear", False)
        return cls(name, instrument.address, **kwargs)

    return open_driver
