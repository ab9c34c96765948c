"""The settings read-back (changed_settings) asks an instrument's settings in one compound query, byte-exact.

IEEE 488.2 (7.1 program messages: units separated by ``;``; 8.4.1 response messages: replies separated by ``;``)
and SCPI-99 (6.2.4: a unit's header starting with ``:`` is rooted): every N77xx programming guide states the
instruments accept them (docs/INSTRUMENTS.md 1.2); the meter's unit-and-reading message already relies on it.
A reply whose units do not match the queries one to one, or a unit its parser refuses, is asked again on its
own: the read-back never takes a reply for a setting other than its own query's.
"""

from __future__ import annotations

import pytest

from qslab.instruments.drivers._scpi import SettingsPlan, changed_settings, settings_evidence, split_response_units
from qslab.instruments.drivers.keysight_n77xx import KeysightN7711A, KeysightN7762A
from tests.drivers.expected_protocol import expected_protocol
from tests.drivers.test_n77xx_protocol import NO_ERROR, attenuator_connect, laser_connect

SET_20_DB = [(b"INP1:ATT 20.0000;:SYST:ERR?\n", NO_ERROR)]
TOGETHER = b":INP1:ATT:SPE?;:INP1:ATT?;:INP3:ATT:SPE?;:INP3:ATT?\n"


def _voa(address):
    return KeysightN7762A("voa", address, visalib="@py", timeout=2, device_clear=False)


def test_one_message_reads_every_cached_setting_and_finds_none_changed():
    pairs = attenuator_connect() + SET_20_DB + [
        (TOGETHER, b"+1.00000000E+001;+2.00000000E+001;+1.00000000E+001;+0.00000000E+000\r\n")]
    with expected_protocol(_voa, pairs) as voa:
        voa.att1.attenuation_db(20.0)
        assert changed_settings(voa) == {}


def test_a_reset_attenuation_shows_as_changed_from_the_compound_reply():
    pairs = attenuator_connect() + SET_20_DB + [
        (TOGETHER, b"+1.00000000E+001;+0.00000000E+000;+1.00000000E+001;+0.00000000E+000\r\n")]
    with expected_protocol(_voa, pairs) as voa:
        voa.att1.attenuation_db(20.0)
        assert changed_settings(voa) == {"voa_att1_attenuation_db": (20.0, 0.0)}
        assert voa.att1.attenuation_db.get_latest() == 0.0  # the cache now holds what the instrument reads


def test_a_reply_with_too_few_units_is_not_used_each_setting_is_asked_on_its_own():
    pairs = attenuator_connect() + SET_20_DB + [
        (TOGETHER, b"+1.00000000E+001;+2.00000000E+001;+1.00000000E+001\r\n"),
        (b"INP1:ATT:SPE?\n", b"+1.00000000E+001\r\n"), (b"INP1:ATT?\n", b"+2.00000000E+001\r\n"),
        (b"INP3:ATT:SPE?\n", b"+1.00000000E+001\r\n"), (b"INP3:ATT?\n", b"+0.00000000E+000\r\n")]
    with expected_protocol(_voa, pairs) as voa:
        voa.att1.attenuation_db(20.0)
        assert changed_settings(voa) == {}


def test_a_garbled_unit_is_asked_again_on_its_own():
    pairs = attenuator_connect() + SET_20_DB + [
        (TOGETHER, b"+1.00000000E+001;+2.0000#000E+001;+1.00000000E+001;+0.00000000E+000\r\n"),
        (b"INP1:ATT?\n", b"+2.00000000E+001\r\n")]
    with expected_protocol(_voa, pairs) as voa:
        voa.att1.attenuation_db(20.0)
        assert changed_settings(voa) == {}


def _laser(address):
    return KeysightN7711A("laser", address, visalib="@py", timeout=2, device_clear=False)


LASER_SET = [(b"SOUR1:POW:STAT 1;:SYST:ERR?\n", NO_ERROR), (b"SOUR1:POW 1.00000000E+01DBM;:SYST:ERR?\n", NO_ERROR)]
LASER_TOGETHER = b"*ESR?;:SOUR1:POW:STAT?;:SOUR1:POW:UNIT 0;:SOUR1:POW?\n"


def test_a_laser_reads_its_power_in_the_same_message_once():
    """The power joins the message with its unit set in front of it, as every power read; power_w, the same setting
    in W, is not asked again."""
    pairs = laser_connect() + LASER_SET + [(LASER_TOGETHER, b"+0;1;+1.00000000E+001\r\n")]
    with expected_protocol(_laser, pairs) as laser:
        laser.port1.output_enabled(True)
        laser.port1.power_dbm(10.0)
        assert settings_evidence(laser) == (False, {})


def test_a_laser_power_changed_behind_the_session_shows_once_in_dbm():
    pairs = laser_connect() + LASER_SET + [(LASER_TOGETHER, b"+0;1;+7.00000000E+000\r\n")]
    with expected_protocol(_laser, pairs) as laser:
        laser.port1.output_enabled(True)
        laser.port1.power_dbm(10.0)
        assert settings_evidence(laser) == (False, {"laser_port1_power_dbm": (10.0, 7.0)})
        assert laser.port1.power_w.get_latest() == pytest.approx(10 ** 0.7 * 1e-3)  # its view follows


@pytest.mark.parametrize(("reply", "units"), [
    ("+1.0;+2.0", ["+1.0", "+2.0"]),
    ('"a;b";+3', ['"a;b"', "+3"]),
    ("'x;y';\"\";1", ["'x;y'", '""', "1"]),
    ("5", ["5"]),
])
def test_response_units_split_at_semicolons_outside_quoted_strings(reply, units):
    assert split_response_units(reply) == units


def test_a_kept_plan_skips_the_gets_of_replies_read_back_as_set_before_and_still_sees_every_change():
    """With the plan a check keeps (SettingsPlan), a reply equal to one that read back as the same cached value is
    not parsed again (qcodes' get costs more than the round trip); a reply that differs, or a cache the session
    changed since, goes through the get as always."""
    set_25_db = [(b"INP1:ATT 25.0000;:SYST:ERR?\n", NO_ERROR)]
    as_set = b"+1.00000000E+001;+2.00000000E+001;+1.00000000E+001;+0.00000000E+000\r\n"
    reset = b"+1.00000000E+001;+0.00000000E+000;+1.00000000E+001;+0.00000000E+000\r\n"
    pairs = attenuator_connect() + SET_20_DB + [(TOGETHER, as_set), (TOGETHER, as_set)] + set_25_db + [
        (TOGETHER, as_set), (TOGETHER, reset)]
    with expected_protocol(_voa, pairs) as voa:
        gets = []

        def count_gets(parameter):
            get = parameter.get

            def counted():
                gets.append(parameter.name)
                return get()

            parameter.get = counted

        for parameter in (voa.att1.attenuation_db, voa.att1.attenuation_speed_db_s, voa.att2.attenuation_db,
                          voa.att2.attenuation_speed_db_s):
            count_gets(parameter)
        voa.att1.attenuation_db(20.0)
        plan = SettingsPlan(voa)
        assert settings_evidence(voa, power_on_bit=False, plan=plan) == (False, {})
        assert len(gets) == 4  # the first check parses every reply
        gets.clear()
        assert settings_evidence(voa, power_on_bit=False, plan=plan) == (False, {})
        assert gets == []  # the same replies for the same cached values: nothing parsed
        voa.att1.attenuation_db(25.0)
        assert settings_evidence(voa, power_on_bit=False, plan=plan) == (
            False, {"voa_att1_attenuation_db": (25.0, 20.0)})  # a new cached value: its reply parsed again
        assert gets == ["attenuation_db"]
        gets.clear()
        voa.att1.attenuation_db.cache.set(20.0)
        assert settings_evidence(voa, power_on_bit=False, plan=plan) == (False, {"voa_att1_attenuation_db": (20.0, 0.0)})
        assert gets == ["attenuation_db"]  # a reply that differs: parsed, and the change found
