"""What every command shares: one-line usage errors, number arguments with their unit, JSON output.

Kept apart from ``qslab.sequences.cli`` (which only assembles the parser) so that no command module
imports the entry point that imports it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from pathlib import Path

from qslab.sequences.config import Number

_INVALID_CHOICE = re.compile(r"invalid choice: '?(?P<given>[^']*?)'? \(choose from (?P<choices>.*)\)$")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as a single line naming the option, without usage or traceback.

    A mistyped choice, command or option gets "(did you mean ...?)" on that same line (difflib).
    """

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.__dict__.setdefault("option_names", []).extend(action.option_strings)
        return action

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}{self.suggestion(message)}\n")

    def suggestion(self, message: str) -> str:
        """' (did you mean X?)' for an invalid choice or an unrecognized option close to a known one, else ''."""
        invalid = _INVALID_CHOICE.search(message)
        if invalid:
            choices = [choice.strip().strip("'\"") for choice in invalid["choices"].split(",")]
            return did_you_mean(invalid["given"], choices)
        if message.startswith("unrecognized arguments: "):
            for word in message.removeprefix("unrecognized arguments: ").split():
                if word.startswith("-"):
                    hint = did_you_mean(word.split("=", 1)[0], getattr(self, "option_names", []))
                    if hint:
                        return hint
        return ""


def did_you_mean(given: str, known: list[str]) -> str:
    close = difflib.get_close_matches(given, known, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def add_config_option(parser) -> None:
    """--config FILE, shared by the commands that connect a station."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="station config (default: lab_config.toml in the current directory, else qslab's "
                             "packaged virtual-bench config; `qslab init` writes one to edit)")


def station_config(args, command: str):
    """The LabConfig of ``args.config`` (sequences/starter_config.py); a bad file is a UsageError naming the key."""
    from qslab.sequences.config import ConfigError
    from qslab.sequences.starter_config import load_station_config

    try:
        config, packaged = load_station_config(args.config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if packaged:
        print(f"qslab {command}: no lab_config.toml here: using qslab's packaged virtual-bench config "
              "(`qslab init` writes it here to edit)", file=sys.stderr)
    return config


class UsageError(Exception):
    """A user mistake that the CLI reports as one line with exit status 2."""


def shown_path(path) -> str:
    """A path as one readable line: a 5000-character one is cut to its start and end."""
    text = str(path).replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


def writable_directory(path, option: str) -> Path:
    """``path`` as a directory this process can create files in (made if absent), checked before anything is
    switched on; else a UsageError naming the option and what was expected. Tried by creating and removing a
    file in it, because only that answers for /proc, read-only mounts and names too long for the file system."""
    import os
    import tempfile

    directory = Path(path)
    expected = "a directory qslab can create files in"
    try:
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"{option} {shown_path(directory)} is not a directory; expected {expected}")
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".qslab-probe-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UsageError(f"{option} {shown_path(directory)}: {error.strerror or type(error).__name__}; expected "
                         f"{expected}") from None
    return directory


def existing_file(path: str, option: str) -> Path:
    """``path`` as an existing regular file (or a UsageError naming the option): an empty, over-long or
    unreadable path is said in one line before anything else happens."""
    if not path.strip():
        raise UsageError(f"{option}: expected the path of a session file, got an empty string")
    try:
        found = Path(path).is_file()
    except OSError as error:  # a name too long for the file system
        raise UsageError(f"{option} {shown_path(path)}: {error.strerror or error}; expected a session file") from None
    except ValueError as error:  # an embedded NUL
        raise UsageError(f"{option} {shown_path(path)}: {error}; expected a session file") from None
    if not found:
        raise UsageError(f"{option} {shown_path(path)}: no such file; expected a session file")
    return Path(path)


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
