"""The `qslab` subcommands: each module has HELP, register(parser) and run(args)."""

from qslab.sequences.commands import (bench, calibrate, calibrations, data_privacy, init, instruments, leakage,
                                      monitor, operating_point, replay, security_budget, session, sessions,
                                      simulate, sweep, train)

COMMANDS = {
    "init": init,
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
    "sessions": sessions,
    "monitor": monitor,
    "calibrations": calibrations,
    "security-budget": security_budget,
    "data-privacy": data_privacy,
}
