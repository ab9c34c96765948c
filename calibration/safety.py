"""Leaving the instruments safe around a calibration procedure, and one error that names the calibration.

Why one wrapper: every procedure must end with the light off and the drives at zero, also when it
fails half-way or is interrupted, and its failure must read as one line naming the calibration
(with what could not be made safe, if anything), whatever raised it: an instrument, a refused limit
or a fit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from qslab.calibration.result import CalibrationError

T = TypeVar("T")
SafeStep = tuple[Callable[[], object], str]   # (action, what it does, for the message when it fails)


def make_safe(steps: Iterable[SafeStep]) -> list[str]:
    """Run every step, even after one fails (the station's close makes safe again); returns "what: error" per failure."""
    problems = []
    for action, what in steps:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - every step still runs
            problems.append(f"{what}: {error}")
    return problems


def guarded(kind: str, body: Callable[[], T], steps: Sequence[SafeStep], *, after_success: bool = True) -> T:
    """Run a procedure and make safe afterwards (``after_success=False``: only when it fails, for a
    procedure whose caller goes on with the instruments as they are).

    A CalibrationError passes through; any other exception becomes CalibrationError(kind, "Type:
    message") naming what making safe could not do; an interrupt (KeyboardInterrupt) makes safe too.
    """
    try:
        result = body()
    except CalibrationError:
        make_safe(steps)
        raise
    except Exception as error:  # noqa: BLE001 - one line naming the calibration
        problems = make_safe(steps)
        extra = f"; making safe also failed: {problems}" if problems else ""
        raise CalibrationError(kind, f"{type(error).__name__}: {error}{extra}") from error
    except BaseException:
        make_safe(steps)
        raise
    if after_success:
        make_safe(steps)
    return result
