"""Fixtures for the virtual-bench tests: a served bench per test, drivers connected over loopback.

Every instrument is closed and every server stopped at the end of each test. ``infiniium_trace_fix``
works around a bug of the installed qcodes (0.58) KeysightInfiniium, not of the bench: its trace
read passes ``container=npt.NDArray`` to pyvisa, which on Python >= 3.11 is no class, so pyvisa
calls ``np.ndarray(<tuple of samples>)`` as if they were a shape and fails. The fix makes pyvisa
treat that alias as ``np.ndarray`` for the duration of a test; the driver itself runs unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qslab.instruments.drivers import upstream_fixes
from qcodes.instrument import Instrument

from qslab.instruments.sim.server import Bench


@pytest.fixture(autouse=True)
def _close_all_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


@pytest.fixture
def bench() -> Iterator[Bench]:
    with Bench.from_config() as served:
        yield served


@pytest.fixture
def infiniium_trace_fix():
    """For tests that read traces through the unchanged driver itself (the receiver role applies it too)."""
    with upstream_fixes.infiniium_trace_fix():
        yield


@pytest.fixture
def connect(bench: Bench):
    """``connect(name, **kwargs)``: the instrument's real driver on its emulator (pyvisa-py or pyserial)."""

    def open_driver(name: str, **kwargs):
        instrument = bench.instruments[name]
        cls = instrument.driver_class()
        if not instrument.address.startswith("socket://"):
            kwargs.setdefault("visalib", "@py")
        return cls(name, instrument.address, **kwargs)

    return open_driver
