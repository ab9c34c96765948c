"""What every command shares: one-line usage errors, number arguments with their unit, JSON output.

Kept apart from ``qslab.sequences.cli`` (which only assembles the parser) so that no command module
imports the entry point that imports it.
"""

from __future__ import annotations

import argparse
import json
import math

from qslab.sequences.config import Number


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as a single line naming the option, without usage or traceback."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class UsageError(Exception):
    """A user mistake that the CLI reports as one line with exit status 2."""


def number(name: str, minimum=None, maximum=None, *, min_open=False, max_open=False, integer=False, unit=""):
    """An argparse type: a finite number in a range (the config's ``Number`` rule), naming the range when it refuses."""
    spec = Number(unit, minimum, maximum, min_open=min_open, max_open=max_open, integer=integer)

    def parse(text: str):
        shown = repr(text) if len(text) <= 40 else repr(text[:37] + "...")
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            value = None
        if value is None or not spec.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {spec.expected()}, got {shown}")
        return value

    parse.__name__ = name
    return parse


def require_finite(result: dict, inputs: str) -> None:
    """UsageError when a top-level figure of ``result`` is not finite: inputs beyond what the formulas evaluate."""
    bad = sorted(key for key, value in result.items() if isinstance(value, float) and not math.isfinite(value))
    if bad:
        raise UsageError(f"{', '.join(bad)} not finite at {inputs}: the inputs are beyond what the bounds can "
                         "evaluate")


def print_json_last(payload: dict) -> None:
    """The machine-readable result: one JSON object on the last stdout line."""
    print(json.dumps(payload, separators=(",", ":"), default=_jsonable))


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
