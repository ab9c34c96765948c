"""What the drivers' retries tell their observers: each retried query and each reopened connection.

Why observers rather than the log: a lab session reports the retries in its results, and it should not
depend on the wording of a log message. The drivers still log each retry at WARNING, for people.
Observers are process-wide, as the log is: a session subscribes once, before its instruments connect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class QueryRetried:
    """Attempt ``attempt`` of ``attempts`` of ``command`` failed (``what``); it is asked again after ``pause_s``."""

    instrument: str
    address: str
    command: str
    what: str
    attempt: int
    attempts: int
    pause_s: float


@dataclass(frozen=True)
class ConnectionReopened:
    """The connection to ``instrument`` at ``address`` was found closed and was reopened before sending."""

    instrument: str
    address: str


RetryEvent = QueryRetried | ConnectionReopened
RetryObserver = Callable[[RetryEvent], None]

_observers: list[RetryObserver] = []
_lock = threading.Lock()


def add_retry_observer(observer: RetryObserver) -> None:
    """Call ``observer(event)`` for every retry and reopened connection from now on."""
    with _lock:
        _observers.append(observer)


def remove_retry_observer(observer: RetryObserver) -> None:
    """Stop calling ``observer`` (nothing happens when it was not added)."""
    with _lock:
        if observer in _observers:
            _observers.remove(observer)


@contextmanager
def observing_retries(observer: RetryObserver) -> Iterator[RetryObserver]:
    """``observer`` added for the ``with`` block."""
    add_retry_observer(observer)
    try:
        yield observer
    finally:
        remove_retry_observer(observer)


def notify(event: RetryEvent) -> None:
    """For the drivers: tell every observer (an observer that raises stops the query, as any bug would)."""
    with _lock:
        observers = list(_observers)
    for observer in observers:
        observer(event)
