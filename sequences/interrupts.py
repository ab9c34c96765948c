"""SIGINT, SIGTERM and SIGHUP alike: a flag the session checks at safe points, never an exception at a random one.

Why: Python's default SIGINT handler raises KeyboardInterrupt in whatever Python code runs next. When that
is a weakref callback (qcodes' and pyvisa's WeakValueDictionary registries drop an instrument or resource
as it is collected) or a ``__del__``, the interpreter prints "Exception ignored in: ... KeyboardInterrupt"
and carries on: the Ctrl-C is lost and the session runs to the end. SIGTERM and SIGHUP had no handler at
all: the process died with the lasers on. Here the handler only records the signal; the session calls
``check()`` between steps (between calibrations, between batches) and stops there, closing the station.

A second signal escalates: KeyboardInterrupt is raised from the handler, unless the station is being made
safe (``protected()``), where nothing may cut a command short. Even if that escalation lands in a weakref
callback and is lost, the flag stays set and the next ``check()`` stops the session.

    with Interrupts() as interrupts:
        ...
        interrupts.check()            # SessionInterrupted if a signal arrived
        with interrupts.protected():  # closing: signals are only counted
            station.close()
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SessionInterrupted(KeyboardInterrupt):
    """A signal stopped the session at a safe point; ``signum`` names it (the exit status is 128 + signum)."""

    def __init__(self, signum: int, where: str = ""):
        self.signum = signum
        self.where = where
        super().__init__(f"stopped by {signal_name(signum)}" + (f" {where}" if where else ""))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupts:
    """Installs flag-setting handlers for SIGINT, SIGTERM and SIGHUP while entered; restores the previous ones.

    Outside the main thread (where Python cannot install handlers) it installs nothing and never trips.
    """

    def __init__(self, signals: tuple[int, ...] = HANDLED):
        self.signals = tuple(signals)
        self.received: list[int] = []     # every signal, in order of arrival
        self._previous: dict[int, object] = {}
        self._protected = 0

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Only the flag; a second signal outside ``protected()`` escalates to KeyboardInterrupt."""
        self.received.append(signum)
        if len(self.received) > 1 and not self._protected:
            raise SessionInterrupted(signum, "(a second signal: stopping at once)")

    @property
    def signum(self) -> int | None:
        """The first signal received, or None."""
        return self.received[0] if self.received else None

    def check(self, where: str = "") -> None:
        """SessionInterrupted if a signal has arrived (call it where stopping is safe)."""
        if self.received:
            raise SessionInterrupted(self.received[0], where)

    @contextlib.contextmanager
    def protected(self) -> Iterator[None]:
        """While the station is made safe: signals are recorded, none raises."""
        self._protected += 1
        try:
            yield
        finally:
            self._protected -= 1
