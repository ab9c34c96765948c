"""`qslab`: one console script, one subcommand per job. Bad input gets one line and exit status 2."""

from __future__ import annotations

import argparse
import os
import sys

# OpenBLAS worker threads otherwise spin ~0.1 s after every matmul and starve the thread that draws
# the verification noise (instruments/sim/link/random_streams.NormalStream) on a 2-core machine. Must be set
# before numpy loads; a value in the environment wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import qslab  # noqa: E402 - after the OpenBLAS setting
from qslab.calibration import figures  # noqa: E402
from qslab.sequences.commands import COMMANDS  # noqa: E402
from qslab.sequences.commands.cli_io import OneLineParser, UsageError  # noqa: E402


class LazyVersion(argparse.Action):
    """``--version``: the installed version, looked up only when asked (importlib.metadata is not free)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"qslab {qslab.__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="qslab", description="Lab automation for quantum-secure multiparty deep learning (arXiv:2408.05629).")
    parser.add_argument("--version", action=LazyVersion, help="show program's version number and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    parser.commands = {}
    for name, module in COMMANDS.items():
        parser.commands[name] = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter,
                                               conflict_handler="resolve")  # a command may give its own --help
        module.register(parser.commands[name])
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        return 0
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, which knows its options (and suggests the closest)
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        figures.wanted()  # a bad $QSLAB_FIGURES is said now, not after a measurement
    except ValueError as exc:
        print(f"qslab {args.command}: error: {exc}", file=sys.stderr)
        return 2
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
