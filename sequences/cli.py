"""`qslab`: one console script, one subcommand per job. Bad input gets one line and exit status 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

# OpenBLAS worker threads otherwise spin ~0.1 s after every matmul and starve the thread that draws
# the verification noise (instruments/sim/physics.NormalStream) on a 2-core machine. Must be set
# before numpy loads; a value in the environment wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from sequences.commands import COMMANDS  # noqa: E402 - after the OpenBLAS setting


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as a single line naming the option, without usage or traceback."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class UsageError(Exception):
    """A user mistake that the CLI reports as one line with exit status 2."""


def number(name: str, minimum=None, maximum=None, *, min_open=False, max_open=False, integer=False, unit=""):
    """An argparse type that accepts a finite number in a range and names the range when it refuses."""
    lo = "" if minimum is None else (f"> {minimum:g}" if min_open else f">= {minimum:g}")
    hi = "" if maximum is None else (f"< {maximum:g}" if max_open else f"<= {maximum:g}")
    expected = " and ".join(s for s in (lo, hi) if s) or "finite"
    kind = "an integer" if integer else "a number"
    what = f"{kind} {expected}" + (f" ({unit})" if unit else "")

    def parse(text: str):
        shown = repr(text) if len(text) <= 40 else repr(text[:37] + "...")
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {shown}") from None
        try:
            ok = math.isfinite(value)
        except OverflowError:  # an integer beyond any float
            ok = False
        if ok and minimum is not None:
            ok = value > minimum if min_open else value >= minimum
        if ok and maximum is not None:
            ok = value < maximum if max_open else value <= maximum
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, got {shown}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="qslab", description="Lab automation for quantum-secure multiparty deep learning (arXiv:2408.05629).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name, module in COMMANDS.items():
        module.register(sub.add_parser(name, help=module.HELP, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except UsageError as exc:
        print(f"qslab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qslab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
