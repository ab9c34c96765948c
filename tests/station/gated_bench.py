"""The virtual bench served in its own process, able to hold chosen messages: signal tests and the monitor's browser
test stop a session at a moment they choose, then look at it (or read the instruments back over their sockets after
the session has gone).

    python gated_bench.py CONFIG     serves the bench of CONFIG's [bench] table; first stdout line: the JSON of
                                     `qslab bench serve --json` ({"instruments": {name: {address, driver}}})
    stdin "hold REGEX"               the next message (any instrument) matching REGEX is held before the bench
                                     handles it; stdout then says "held NAME MESSAGE"
    stdin "hold-at N REGEX"          the same for the N-th message matching REGEX, counted from this command on
    stdin "release"                  the message held longest is handled and answered (none held: nothing happens)
    stdin "renew"                    every held message is released, armed holds are dropped, and the bench is replaced
                                     by a fresh one of CONFIG on the same ports; stdout repeats the JSON line (or says
                                     "refused renew: ..." and the process ends, if a port was taken meanwhile)
    stdin closed                     every held message is released, no more are held, and the bench stops
    a malformed command              stdout says "refused LINE: what was expected"; nothing is armed

Why counted holds: a test that waits for something the session did, then asks to hold "the next message", races the
session (it may have finished, or gone past the moment meant, in between). A hold armed before the session starts, at
a message the session sends a known number of times before the moment meant, stops it there whatever the speeds. Holds
may be armed together; each counts every message matching its pattern, held or not, from its own command on. A held
query is answered only when released: the session's I/O timeout must outlast the hold (the tests raise it).

Why renew: a session resumed after a kill must meet the bench a fresh start gives (every instrument's Generator at its
seed, the clock at 0) to take the readings an uninterrupted session took, and the same addresses, or the resume is
refused as another station (sequences/resume_check.py compares the config, addresses included).

Holding is a FaultPlan (the bench's own hook on every message), so nothing of the bench is patched.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from dataclasses import dataclass, field

from qslab.instruments.sim.bench_parameters import load_bench_table
from qslab.instruments.sim.faults_attacks.faults import FaultPlan
from qslab.instruments.sim.server import Bench, InstrumentServer


@dataclass
class Hold:
    """One armed hold: the ``remaining``-th message from now matching ``pattern`` waits for ``released``."""

    pattern: re.Pattern
    remaining: int
    released: threading.Event = field(default_factory=threading.Event)


class HoldingPlan(FaultPlan):
    """Every message passes through; one on which an armed hold's count runs out waits for a release first."""

    def __init__(self):
        super().__init__()
        self.holds: list[Hold] = []
        self.held: list[Hold] = []  # holding a message now, oldest first
        self.guard = threading.Lock()

    def arm(self, pattern: str, nth: int = 1) -> None:
        with self.guard:
            self.holds.append(Hold(re.compile(pattern), nth))

    def release(self) -> None:
        with self.guard:
            hold = self.held.pop(0) if self.held else None
        if hold is not None:
            hold.released.set()

    def stop(self) -> None:
        """No more holds; every held message goes on (never leave a connection waiting while the bench stops)."""
        with self.guard:
            self.holds, held, self.held = [], self.held, []
        for hold in held:
            hold.released.set()

    def exchange(self, emulator, message, handle):
        text = str(message, "latin-1")  # bytes, bytearray or a memoryview of a block received in place
        with self.guard:
            due = None
            for hold in [hold for hold in self.holds if hold.pattern.search(text)]:
                hold.remaining -= 1
                if hold.remaining == 0 and due is None:
                    due = hold
            if due is not None:
                self.holds.remove(due)
                self.held.append(due)
        if due is not None:
            print(f"held {emulator.name} {text.strip()}", flush=True)
            due.released.wait()
        return super().exchange(emulator, message, handle)


def obey(plan: HoldingPlan, line: str) -> None:
    """One stdin command; a malformed one is said on stdout (the test waiting for "held" then sees it)."""
    command, _, argument = line.strip().partition(" ")
    if command in ("hold", "hold-at"):
        count, pattern = ("1", argument) if command == "hold" else argument.partition(" ")[::2]
        try:
            if not count.isdigit() or int(count) < 1 or not pattern:
                raise ValueError("expected 'hold REGEX' or 'hold-at N REGEX' with N >= 1")
            plan.arm(pattern, int(count))
        except (ValueError, re.error) as error:
            print(f"refused {line.strip()!r}: {error}", flush=True)
    elif command == "release":
        plan.release()
    elif command:
        print(f"refused {line.strip()!r}: expected hold, hold-at, release or renew", flush=True)


def holding_bench(config: str, ports: dict[str, int] | None = None) -> tuple[Bench, HoldingPlan]:
    """The bench of ``config``'s [bench] table with every message going through one HoldingPlan (not started);
    ``ports``: {instrument: port} in place of the table's."""
    table = load_bench_table(config)
    bench = Bench.from_table(table if ports is None else {**table, "ports": ports})
    plan = HoldingPlan()
    plan.bind(bench.state, {name: instrument.kind for name, instrument in bench.instruments.items()})
    bench.faults = plan
    for instrument in bench.instruments.values():
        instrument.server.faults = plan
    return bench, plan


def renewed(bench: Bench, plan: HoldingPlan, config: str) -> tuple[Bench, HoldingPlan]:
    """A fresh bench of ``config``, started on the ports ``bench`` served, which is stopped first (its held messages
    released, its holds dropped); OSError if another process took one of those ports in between."""
    ports = {name: instrument.server.port for name, instrument in bench.instruments.items()
             if isinstance(instrument.server, InstrumentServer)}
    plan.stop()
    bench.stop()
    fresh, fresh_plan = holding_bench(config, ports)
    fresh.start()
    return fresh, fresh_plan


def main(config: str) -> int:
    bench, plan = holding_bench(config)
    bench.start()
    try:
        print(json.dumps(bench.describe()), flush=True)
        for line in sys.stdin:
            if line.strip() != "renew":
                obey(plan, line)
                continue
            try:
                bench, plan = renewed(bench, plan, config)
            except OSError as error:
                print(f"refused 'renew': {error}", flush=True)
                return 1
            print(json.dumps(bench.describe()), flush=True)
    finally:
        plan.stop()
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
