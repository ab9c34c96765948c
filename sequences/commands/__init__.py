"""The `qslab` subcommands: each module has HELP, register(parser) and run(args)."""

from sequences.commands import leakage

COMMANDS = {"leakage": leakage}
