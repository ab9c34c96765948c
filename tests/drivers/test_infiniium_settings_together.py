"""The session's settings check on the Infiniium (qcodes' upstream parameters): ``*ESR?`` and every cached setting in
ONE compound query, byte-exact, a changed setting found from it, and a reply that does not split one unit per query
not used (each asked on its own, as the upstream driver asks them).

IEEE 488.2 7.1 (program message units separated by ``;``) and 8.4.1 (response units separated by ``;``); the
Infiniium programmer's guide, "Program Message Syntax": several queries in one message are answered in one
response message, in order, separated by semicolons.
"""

from __future__ import annotations

from qslab.instruments.drivers._scpi import settings_evidence
from qslab.instruments.optical.faults import DriverSettings
from tests.drivers.expected_protocol import expected_protocol
from tests.drivers.test_keysight_infiniium_protocol import CONNECT, scope

SET_CH2 = [(b"CHAN2:OFFS 0.02\n", None), (b"CHAN2:RANG 0.4\n", None)]
TOGETHER = b"*ESR?;:CHAN2:OFFS?;:CHAN2:RANG?\n"


def _set_channel_2(driver) -> None:
    driver.ch2.offset(0.02)
    driver.ch2.range(0.4)


def test_the_power_on_bit_and_every_cached_setting_are_one_message():
    pairs = CONNECT + SET_CH2 + [(TOGETHER, b"+0;2.000000E-02;4.000000E-01\n")]
    with expected_protocol(scope, pairs) as driver:
        _set_channel_2(driver)
        assert DriverSettings(driver, name="scope").evidence() == (False, {})


def test_a_foreign_range_and_the_power_on_bit_are_read_from_the_compound_reply():
    pairs = CONNECT + SET_CH2 + [(TOGETHER, b"+128;2.000000E-02;1.600000E-01\n")]
    with expected_protocol(scope, pairs) as driver:
        _set_channel_2(driver)
        assert settings_evidence(driver) == (True, {"scope_chan2_range": (0.4, 0.16)})
        assert driver.ch2.range.get_latest() == 0.16  # the cache holds what the scope reads now


def test_a_reply_with_too_few_units_is_not_used_each_is_asked_on_its_own():
    pairs = CONNECT + SET_CH2 + [(TOGETHER, b"+0;2.000000E-02\n"), (b"*ESR?\n", b"+0\n"),
                                 (b"CHAN2:OFFS?\n", b"2.000000E-02\n"),
                                 (b"CHAN2:RANG?\n", b"4.000000E-01\n")]
    with expected_protocol(scope, pairs) as driver:
        _set_channel_2(driver)
        assert settings_evidence(driver) == (False, {})


def test_outside_the_check_every_query_is_asked_on_its_own():
    pairs = CONNECT + SET_CH2 + [(b"CHAN2:RANG?\n", b"4.000000E-01\n")]
    with expected_protocol(scope, pairs) as driver:
        _set_channel_2(driver)
        assert driver.ch2.range() == 0.4
