"""Run the `qslab` entry point in-process and capture what it prints (shared by the CLI tests)."""

import contextlib
import io

from qslab.sequences.cli import main


def cli(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``qslab ARGV``; argparse's SystemExit counts as the exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()
