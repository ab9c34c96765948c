"""The gated bench's holds (gated_bench.py), which the signal and monitor tests stop sessions with: a counted hold
stops exactly the N-th matching message (counted from its command, over every instrument), nothing else waits, a
release lets it go on, a stopping bench leaves no connection waiting, and a renewed bench reads as a fresh one at the
same addresses."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import pyvisa
from gated_bench import HoldingPlan, holding_bench, obey, renewed

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
HANG_GUARD_S = 120.0  # only against a hung test, never a timing assumption


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {HANG_GUARD_S} s")
        time.sleep(0.01)


class Client:
    """Raw SCPI to one bench instrument; ``query_later`` asks from a thread, so the test can see it wait."""

    def __init__(self, manager: pyvisa.ResourceManager, address: str, plan: HoldingPlan):
        self.resource = manager.open_resource(address, read_termination="\n", write_termination="\n",
                                              timeout=int(HANG_GUARD_S * 1000))
        self.plan = plan
        self.answers: list[str] = []

    def query_later(self, command: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: self.answers.append(self.resource.query(command)), daemon=True)
        thread.start()
        return thread

    def query(self, command: str) -> None:
        """Ask and wait for the answer; fails at once if the bench holds the question instead."""
        held_before = len(self.plan.held)
        thread = self.query_later(command)
        _until(lambda: not thread.is_alive() or len(self.plan.held) > held_before,
               f"an answer to {command} (or a hold)")
        assert len(self.plan.held) == held_before, f"{command} was held, not meant to be"


@pytest.fixture
def served():
    bench, plan = holding_bench(str(CONFIG))
    manager = pyvisa.ResourceManager("@py")
    with bench:
        addresses = {name: entry["address"] for name, entry in bench.describe()["instruments"].items()}
        try:
            yield plan, {name: Client(manager, addresses[name], plan) for name in ("laser", "attenuator")}
        finally:
            plan.stop()
            manager.close()


def test_a_counted_hold_stops_the_nth_matching_message_of_any_instrument_until_released(served, capsys):
    plan, clients = served
    laser, attenuator = clients["laser"], clients["attenuator"]
    obey(plan, r"hold-at 3 ^\*IDN\?")
    laser.query("*IDN?")  # 1st match
    laser.query("SYST:ERR?")  # no match: not counted
    attenuator.query("*IDN?")  # 2nd match, on another instrument
    assert len(laser.answers) == 2 and len(attenuator.answers) == 1 and not plan.held
    third = laser.query_later("*IDN?")
    _until(lambda: plan.held, "the hold at the 3rd *IDN?")
    assert capsys.readouterr().out == "held laser *IDN?\n"
    attenuator.query("SYST:ERR?")  # another connection goes on meanwhile
    assert len(attenuator.answers) == 2 and third.is_alive() and len(laser.answers) == 2
    obey(plan, "release")
    _until(lambda: not third.is_alive(), "the answer to the released *IDN?")
    assert laser.answers[2] == laser.answers[0]  # handled and answered as any *IDN?
    laser.query("*IDN?")  # the hold is spent: the 4th passes
    assert len(laser.answers) == 4 and not plan.held and not plan.holds


def test_holds_armed_together_count_on_their_own_and_a_stopping_bench_releases_them(served, capsys):
    plan, clients = served
    laser = clients["laser"]
    obey(plan, r"hold-at 2 ^\*IDN\?")
    obey(plan, r"hold SYST:ERR\?")
    laser.query("*IDN?")  # the 1st
    first = laser.query_later("SYST:ERR?")  # the 1st SYST:ERR? is held; the *IDN? count stays at 1 meanwhile
    _until(lambda: plan.held, "the hold at the first SYST:ERR?")
    obey(plan, "release")
    _until(lambda: not first.is_alive(), "the answer to the released SYST:ERR?")
    second = laser.query_later("*IDN?")  # the 2nd *IDN?
    _until(lambda: plan.held, "the hold at the 2nd *IDN?")
    assert capsys.readouterr().out == "held laser SYST:ERR?\nheld laser *IDN?\n"
    plan.stop()  # what a closed stdin does
    _until(lambda: not second.is_alive(), "the answer to the *IDN? held when the bench stopped holding")
    assert len(laser.answers) == 3


@pytest.mark.parametrize("line", ["hold-at 0 IDN", "hold-at two IDN", "hold-at 2", "hold (", "holdat 2 IDN"])
def test_a_malformed_command_is_refused_in_one_line_and_arms_nothing(line, capsys):
    plan = HoldingPlan()
    obey(plan, line)
    said = capsys.readouterr().out
    assert said.startswith(f"refused {line!r}: ") and said.count("\n") == 1 and not plan.holds


def test_a_renewed_bench_reads_as_a_fresh_one_at_the_same_addresses_and_lets_the_held_message_go():
    """What the kill-9 tests resume on: the meter's first readings again (its Generator back at the seed), the same
    ports (the same station to a resume), no hold left armed, and no connection left waiting on the old bench."""
    bench, plan = holding_bench(str(CONFIG))
    manager = pyvisa.ResourceManager("@py")
    bench.start()
    try:
        addresses = bench.describe()["instruments"]
        meter = Client(manager, addresses["power_meter"]["address"], plan)
        meter.query("READ1:POW?")
        meter.query("READ1:POW?")
        assert meter.answers[0] != meter.answers[1]  # each reading draws the meter's noise afresh
        obey(plan, r"hold ^READ")
        port = int(addresses["power_meter"]["address"].split("::")[2])
        raw = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S)  # sees the close pyvisa-py waits out
        raw.sendall(b"READ1:POW?\n")
        _until(lambda: plan.held, "the hold at the raw reading")
        obey(plan, r"hold ^READ")  # armed and never reached: the renewal drops it
        bench, plan = renewed(bench, plan, str(CONFIG))
        raw.recv(4096)  # returns once the held query is answered or its connection closed (a wait times out: fails)
        raw.close()
        assert bench.describe()["instruments"] == addresses and not plan.holds and not plan.held
        fresh = Client(manager, addresses["power_meter"]["address"], plan)
        fresh.query("READ1:POW?")
        fresh.query("READ1:POW?")
        assert fresh.answers == meter.answers[:2], (fresh.answers, meter.answers)
    finally:
        plan.stop()
        bench.stop()
        manager.close()

