"""The `qslab` subcommands: each module has HELP, register(parser) and run(args)."""

from qslab.sequences.commands import (bench, calibrate, instruments, leakage, operating_point, replay, security_budget,
                                     session, simulate, sweep, train)

COMMANDS = {
    "leakage": leakage,
    "simulate": simulate,
    "operating-point": operating_point,
    "sweep": sweep,
    "train": train,
    "bench": bench,
    "instruments": instruments,
    "calibrate": calibrate,
    "session": session,
    "replay": replay,
    "security-budget": security_budget,
}
