"""The virtual bench served in its own process, able to hold one message: signal tests stop a session at a moment
they choose, then read the instruments back over their sockets after the session has gone.

    python gated_bench.py CONFIG     serves the bench of CONFIG's [bench] table; first stdout line: the JSON of
                                     `qslab bench serve --json` ({"instruments": {name: {address, driver}}})
    stdin "hold REGEX"               the next message (any instrument) matching REGEX is held before the bench
                                     handles it; stdout then says "held NAME MESSAGE"
    stdin "release"                  the held message is handled and answered
    stdin closed                     the bench stops

Holding is a FaultPlan (the bench's own hook on every message), so nothing of the bench is patched.
"""

from __future__ import annotations

import json
import re
import sys
import threading

from qslab.instruments.sim.bench_parameters import load_bench_table
from qslab.instruments.sim.faults_attacks.faults import FaultPlan
from qslab.instruments.sim.server import Bench


class HoldingPlan(FaultPlan):
    """Every message passes through; one matching the armed pattern waits for a release first."""

    def __init__(self):
        super().__init__()
        self.pattern: re.Pattern | None = None
        self.released = threading.Event()
        self.guard = threading.Lock()

    def arm(self, pattern: str) -> None:
        with self.guard:
            self.released.clear()
            self.pattern = re.compile(pattern)

    def exchange(self, emulator, message, handle):
        with self.guard:
            held = self.pattern is not None and self.pattern.search(message.decode("latin-1")) is not None
            if held:
                self.pattern = None
        if held:
            print(f"held {emulator.name} {message.decode('latin-1').strip()}", flush=True)
            self.released.wait()
        return super().exchange(emulator, message, handle)


def main(config: str) -> int:
    bench = Bench.from_table(load_bench_table(config))
    plan = HoldingPlan()
    plan.bind(bench.state, {name: instrument.kind for name, instrument in bench.instruments.items()})
    bench.faults = plan
    for instrument in bench.instruments.values():
        instrument.server.faults = plan
    with bench:
        print(json.dumps(bench.describe()), flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "hold":
                plan.arm(argument)
            elif command == "release":
                plan.released.set()
        plan.released.set()  # never leave a connection waiting while the bench stops
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
