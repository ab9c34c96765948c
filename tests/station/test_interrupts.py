"""sequences/interrupts.py: SIGINT, SIGTERM and SIGHUP set a flag; a signal inside a weakref callback is not lost."""

from __future__ import annotations

import os
import signal
import sys
import weakref

import pytest

from qslab.sequences.interrupts import Interrupts, SessionInterrupted


class Thing:
    pass


def _signal_inside_a_weakref_callback(signum: int) -> None:
    """What qcodes' and pyvisa's WeakValueDictionary registries do when an instrument is collected: a callback
    runs, and the signal is handled there (os.kill runs the Python handler before it returns)."""
    thing = Thing()
    ref = weakref.ref(thing, lambda _: os.kill(os.getpid(), signum))
    del thing
    assert ref() is None


def test_the_default_handler_loses_a_ctrl_c_inside_a_weakref_callback(monkeypatch):
    """The swallowed Ctrl-C: KeyboardInterrupt raised in a callback is printed as "Exception ignored" and dropped."""
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _signal_inside_a_weakref_callback(signal.SIGINT)  # no KeyboardInterrupt reaches the caller
    finally:
        signal.signal(signal.SIGINT, previous)
    assert [type(event.exc_value) for event in ignored] == [KeyboardInterrupt]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_inside_a_weakref_callback_is_kept_and_stops_at_the_next_check(signum, monkeypatch):
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    with Interrupts() as interrupts:
        _signal_inside_a_weakref_callback(signum)
        assert ignored == [] and interrupts.signum == signum
        with pytest.raises(SessionInterrupted) as stopped:
            interrupts.check("between batches")
    assert stopped.value.signum == signum and str(stopped.value) == f"stopped by {signal.Signals(signum).name} " \
                                                                    f"between batches"
    assert isinstance(stopped.value, KeyboardInterrupt)


def test_a_second_signal_escalates_except_while_protected_and_the_handlers_are_restored():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with Interrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGTERM)  # only the flag
        with interrupts.protected():
            os.kill(os.getpid(), signal.SIGHUP)  # while closing: counted, nothing raised
        with pytest.raises(SessionInterrupted):
            os.kill(os.getpid(), signal.SIGINT)
        assert interrupts.received == [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
    assert {signum: signal.getsignal(signum) for signum in before} == before
