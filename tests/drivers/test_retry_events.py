"""The retry observers (qslab.instruments.drivers.retry_events): called once per retry with what was retried,
and once per connection found closed and reopened; a session's RetryWatch turns them into report actions."""

from __future__ import annotations

from test_retries import AMPLIFIER, MBX, SILENT, TIMEOUT_S, Drop, amplifier_on, flaky, mbx_on  # noqa: F401 - fixture

from qslab.instruments.drivers import retry_events
from qslab.instruments.drivers.retry_events import ConnectionReopened, QueryRetried
from qslab.sequences.session_guard import FaultReport, RetryWatch


def test_each_retry_is_told_once_with_what_was_retried(flaky):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN?": [SILENT, "xx#@"]})
    amplifier = amplifier_on(server)
    events = []
    with retry_events.observing_retries(events.append):
        assert amplifier.gain_db() == 1.5
    assert events == [
        QueryRetried("amp", amplifier.address, "SOUR:GAIN?", f"no reply within {TIMEOUT_S:g} s", 1, 3, 0.05),
        QueryRetried("amp", amplifier.address, "SOUR:GAIN?", "reply 'xx#@' is not a number", 2, 3, 0.1)]


def test_a_query_that_needs_no_retry_tells_nothing_and_a_removed_observer_hears_nothing(flaky):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN?": [SILENT]})
    amplifier = amplifier_on(server)
    events = []
    with retry_events.observing_retries(events.append):
        amplifier.input_power_w()
    assert events == []
    amplifier.gain_db()  # retried, but nobody listens any more
    assert events == []


def test_a_connection_found_closed_is_told_as_reopened(flaky):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN 2.0000": [Drop()]})
    amplifier = amplifier_on(server)
    events = []
    with retry_events.observing_retries(events.append):
        try:
            amplifier.gain_db(2.0)
        except Exception:  # noqa: BLE001 - the write is not repeated (test_retries); the next query reconnects
            pass
        assert amplifier.gain_db() == 1.5
    assert ConnectionReopened("amp", amplifier.address) in events


def test_serial_retries_are_told_too(flaky):
    server = flaky(MBX, **{"MZM:VOLTAGE?": [Drop("1.")]})
    mbx = mbx_on(server)
    events = []
    with retry_events.observing_retries(events.append):
        assert mbx.mzm.bias_v() == 1.25
    assert [(e.instrument, e.command, e.attempt) for e in events] == [("mbx", "MZM:VOLTAGE?", 1)]


def test_the_session_report_counts_the_retries_it_was_told(flaky):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN?": [SILENT]})
    amplifier = amplifier_on(server)
    report = FaultReport([])
    watch = RetryWatch(report).install()
    try:
        amplifier.gain_db()
    finally:
        watch.remove()
    amplifier.gain_db()
    assert report.actions == [{"batch": None, "action": "retried", "instrument": "amp",
                               "detail": f"'SOUR:GAIN?': no reply within {TIMEOUT_S:g} s (attempt 1 of 3)"}]


def test_reconnect_is_public_and_keeps_the_connection_settings(flaky):
    server = flaky(AMPLIFIER)
    amplifier = amplifier_on(server)
    before = amplifier.visa_handle
    settings = (before.read_termination, before.write_termination, before.timeout)
    amplifier.reconnect()
    after = amplifier.visa_handle
    assert after is not before
    assert (after.read_termination, after.write_termination, after.timeout) == settings
    assert amplifier.gain_db() == 1.5  # answered on the new line, so the server has accepted it by now
    assert server.connections == 2
