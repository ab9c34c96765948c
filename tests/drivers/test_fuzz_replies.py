"""Every query of every driver we wrote, answered with junk (hypothesis): random bytes, nothing, a very long line,
non-UTF-8 bytes, numbers no parser should take. Whatever comes back, a get returns a value or raises
InstrumentFault / InstrumentError naming the instrument (qcodes may add the parameter to its message), never a bare
ValueError, KeyError or UnicodeDecodeError; and the driver works again once the instrument answers normally.

Beyond tests/drivers/test_retries.py (scripted failures of a few amplifier and MBX queries on a fake server), this
walks every gettable parameter of the N7714A, N7762A, N7744A, M8195A, amplifier and MBX drivers against their bench
emulators, and the queries each driver sends while it connects.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcodes.instrument import ChannelTuple
from qcodes.validators import Enum

from qslab.instruments.drivers import _scpi
from qslab.instruments.drivers._scpi import InstrumentError, InstrumentFault
from qslab.instruments.drivers.keysight_m8195a import KeysightM8195A
from qslab.instruments.drivers.keysight_n77xx import KeysightN7714A, KeysightN7744A, KeysightN7762A
from qslab.instruments.drivers.scpi_optical_amplifier import ScpiOpticalAmplifier
from qslab.instruments.drivers.thorlabs_mbx import ThorlabsMBX
from qslab.instruments.sim.bench_parameters import from_mapping
from qslab.instruments.sim.server import Bench

# Silence is the one junk that needs a timeout, and a short one keeps its examples cheap. Every other reply comes, so
# those examples run with a generous timeout: on a loaded host a slow reply is never turned into a timeout, whose late
# answer would then depend on the host's speed.
SILENT_TIMEOUT_S = 0.2
TIMEOUT_S = 10.0


def visa_driver(cls: type) -> Callable:
    return lambda name, address, timeout_s: cls(name, address, visalib="@py", timeout=timeout_s, device_clear=False)


DRIVERS: dict[str, tuple[str, Callable]] = {  # bench name: (emulator kind, driver constructor(name, address, timeout))
    "laser": ("keysight_n7714a", visa_driver(KeysightN7714A)),
    "attenuator": ("keysight_n7762a", visa_driver(KeysightN7762A)),
    "power_meter": ("keysight_n7744a", visa_driver(KeysightN7744A)),
    "awg": ("keysight_m8195a", visa_driver(KeysightM8195A)),
    "amplifier": ("scpi_amplifier", visa_driver(ScpiOpticalAmplifier)),
    "bias_iq": ("thorlabs_mbx", lambda name, address, timeout_s: ThorlabsMBX(name, address, timeout_s=timeout_s)),
}


def timeout_for(name: str, reply: bytes) -> float:
    """Short for silence: no reply, or for the MBX (which reads past empty lines) nothing but line ends."""
    silent = reply == b"" or (name == "bias_iq" and not reply.strip())
    return SILENT_TIMEOUT_S if silent else TIMEOUT_S


def set_timeout(driver, timeout_s: float) -> None:
    if isinstance(driver, ThorlabsMBX):
        driver.timeout_s = timeout_s
    else:
        driver.timeout(timeout_s)


# examples per driver: an MBX (pyserial socket://) reconnect costs ~0.3 s, a VISA one a few ms
EXAMPLES = {name: 24 if name == "bias_iq" else 60 for name in DRIVERS}
JUNK = st.one_of(
    st.binary(max_size=32).map(lambda b: b + b"\n"),                        # random bytes, terminated
    st.binary(min_size=1, max_size=8).map(lambda b: b * 2500 + b"\n"),      # a very long line
    st.sampled_from([b"\n", b"\r\n", b"", b"\xff\xfe\n", b"\xc3\x28\n", b"1.5\xff\n", b"\x00\n",  # empty, silent,
                     b"nan\n", b"inf\n", b"-inf\n", b"1e999\n", b"+9.91E37\n", b"-1\n", b"7\n", b"2\n",  # non-UTF-8
                     b"ON\n", b"BANANA\n", b"1,2\n", b"1\n2\n", b'0,"No error"\n', b"Err: junk\n",
                     b"DIV3\n", b"+1.00000000E+000\n", b"1 2\n"]))


def is_query(message: bytes) -> bool:
    head = message.split(b"#", 1)[0]  # a binary block's bytes may hold '?'
    return b"?" in head


class JunkReplies:
    """Wraps an emulator: while ``reply`` is set, the queries it matches get ``reply`` instead of the real answer."""

    def __init__(self, emulator):
        self.reply: bytes | None = None
        self.only: bytes | None = None   # one exact query, or None: every query
        self.queries: list[bytes] = []   # every query seen (what a driver asks at connect)
        original = emulator.handle

        def handle(message: bytes) -> bytes:
            normal = original(message)
            if is_query(message):
                self.queries.append(message.strip())
                if self.reply is not None and (self.only is None or message.strip() == self.only):
                    return self.reply
            return normal

        emulator.handle = handle

    def clear(self) -> None:
        self.reply, self.only = None, None


def gettable(module, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(dotted name, parameter) of every gettable parameter of an instrument and its channels."""
    for name, parameter in module.parameters.items():
        if parameter.gettable and name != "timeout":
            yield prefix + name, parameter
    for name, submodule in module.submodules.items():
        if not isinstance(submodule, ChannelTuple):
            yield from gettable(submodule, f"{prefix}{name}.")


@pytest.fixture(scope="module")
def benches() -> Iterator[dict]:
    """One uncabled bench instrument per driver, its junk switch and its connected driver."""
    started = {}
    for name, (kind, _) in DRIVERS.items():
        bench = Bench(from_mapping({"time_scale": 0.01}), instruments={name: kind}).start()  # fast bench clock
        started[name] = (bench, JunkReplies(bench.instruments[name].emulator))
    yield started
    for bench, _ in started.values():
        bench.stop()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(_scpi, "RETRY_BACKOFF_S", (0.0,))


def check_outcome(parameter, instrument: str) -> None:
    """The property: a value (one of the enumerated ones, for an enumerated parameter), or InstrumentFault /
    InstrumentError naming the instrument."""
    try:
        value = parameter.get()
    except (InstrumentFault, InstrumentError) as error:
        assert instrument in str(error), str(error)
        return
    if isinstance(parameter.vals, Enum) and getattr(parameter, "val_mapping", None) is None:
        parameter.vals.validate(value)  # a mode the instrument does not have is garbled, not a value


_names = itertools.count()


# a reply of +9.91E37 (SCPI's not-a-number) to a dBm query is read as that many dBm: its W twin overflows to inf
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_junk_replies_to_every_query_parameter(benches, fast_retries, name):
    """Each gettable parameter (channels included) with junk replies: only the driver's own errors come out, and the
    same parameter reads normally afterwards."""
    bench, junk = benches[name]
    driver = DRIVERS[name][1](f"{name}_{next(_names)}", bench.address(name), TIMEOUT_S)
    parameters = list(gettable(driver))
    assert len(parameters) >= 5
    try:
        @settings(max_examples=EXAMPLES[name], deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(index=st.integers(0, len(parameters) - 1), reply=JUNK)
        def check(index: int, reply: bytes) -> None:
            _, parameter = parameters[index]
            junk.reply = reply
            set_timeout(driver, timeout_for(name, reply))
            try:
                check_outcome(parameter, driver.name)
            finally:
                junk.clear()
                set_timeout(driver, TIMEOUT_S)
            parameter.get()  # answers normally again: the driver recovered (reconnected, buffer emptied)

        check()
    finally:
        junk.clear()
        driver.close()


def test_a_reply_of_two_lines_leaves_the_awg_trigger_mode_readable(benches, fast_retries):
    """Found by the fuzz above: '1\n2\n' to both trigger-state queries left a line behind, which the next query read
    as its reply ('2' taken for ON): the mode read as continuous and gated at once, refused again after the junk
    stopped. A '2' is no SCPI boolean: the reply is garbled, retried after the stream is cleared."""
    bench, junk = benches["awg"]
    driver = DRIVERS["awg"][1](f"awg_{next(_names)}", bench.address("awg"), TIMEOUT_S)
    try:
        junk.reply = b"1\n2\n"
        with pytest.raises(InstrumentFault, match=driver.name):
            driver.trigger_mode.get()
        junk.clear()
        assert driver.trigger_mode.get() in ("continuous", "triggered", "gated")
    finally:
        junk.clear()
        driver.close()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # (as above: a dBm limit of +9.91E37)
@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_junk_replies_while_connecting(benches, fast_retries, name):
    """Junk to any one query a driver sends while it connects (limits, units, divider, error queue): it connects,
    or refuses with InstrumentFault / InstrumentError (or a ValueError that starts with the instrument's name),
    never a bare parse error (the N77xx limits and power units were read without the retries, unnamed)."""
    bench, junk = benches[name]
    junk.queries.clear()
    DRIVERS[name][1](f"{name}_{next(_names)}", bench.address(name), TIMEOUT_S).close()
    asked = sorted(set(junk.queries))
    assert asked

    @settings(max_examples=EXAMPLES[name] // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(query=st.sampled_from(asked), reply=JUNK)
    def check(query: bytes, reply: bytes) -> None:
        instrument = f"{name}_{next(_names)}"
        junk.reply, junk.only = reply, query
        driver = None
        try:
            try:
                driver = DRIVERS[name][1](instrument, bench.address(name), timeout_for(name, reply))
            except (InstrumentFault, InstrumentError) as error:
                assert instrument in str(error), str(error)
            except ValueError as error:  # a reply that parses but makes no sense (an empty MIN..MAX range)
                assert str(error).startswith(f"{instrument}: "), f"{type(error).__name__}: {error}"
        finally:
            junk.clear()
            if driver is not None:
                driver.close()

    check()
