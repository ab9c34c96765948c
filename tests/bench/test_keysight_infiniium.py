"""Our KeysightInfiniium subclass on the bench's Infiniium: traces, the two-message capture, reconnect, and the
gate of the upstream trace workaround (qcodes_trace_needs_fix: below QCODES_TRACE_FIXED_IN, the first release
after microsoft/Qcodes#8206)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from qcodes.instrument_drivers.Keysight import KeysightInfiniium as UpstreamInfiniium
from qcodes.instrument_drivers.Keysight.Infiniium import DSOTraceParam

from qslab.instruments.drivers._scpi import InstrumentError
from qslab.instruments.drivers.keysight_infiniium import (BlockTrace, EdgeTrigger, KeysightInfiniium,
                                                        qcodes_trace_needs_fix, read_trace_block,
                                                        read_trace_words)
from qslab.instruments.optical.digitizer import InfiniiumDigitizer


@pytest.mark.parametrize(("version", "needs_fix"), [("0.53.0", True), ("0.58.0", True), ("0.58.3", True),
                                                    ("0.59.0.dev12", True), ("0.59.0", False), ("1.0.0", False)])
def test_the_workaround_applies_below_the_fixed_release_only(version, needs_fix):
    assert qcodes_trace_needs_fix(version) is needs_fix


def test_the_gate_matches_the_installed_qcodes_source():
    """The gate says what the installed qcodes does: its trace passes the broken container exactly when the gate
    says it needs the fix (fails if qcodes released a version still broken, or the gate outlives the bug)."""
    broken = "container=npt.NDArray" in inspect.getsource(DSOTraceParam.get_raw)
    assert broken is qcodes_trace_needs_fix()


def test_our_trace_reads_on_the_installed_qcodes(connect):
    ours = connect("digitizer")
    assert isinstance(ours.ch1.trace, BlockTrace) is qcodes_trace_needs_fix()
    ours.auto_digitize(False)
    ours.digitize()
    trace_v = ours.ch1.trace()
    assert trace_v.shape == (ours.acquire_points(),) and np.all(np.isfinite(trace_v))
    np.testing.assert_array_equal(read_trace_block(ours.ch1), trace_v)


def test_a_record_read_as_words_is_the_trace_in_volts(connect):
    """The words and the preamble's map (what the session filters a piece at a time) give the trace's volts exactly,
    through the role too (InfiniiumDigitizer.read_record), with the channel's range and offset as the record's."""
    ours = connect("digitizer")
    ours.auto_digitize(False)
    ours.ch2.offset(0.01)
    ours.digitize()
    trace_v = ours.read_trace_v(ours.ch2)
    words, block = read_trace_words(ours.ch2)
    assert words.dtype == np.int16 and words.size == block.points == trace_v.size and block.origin_v != 0.0
    np.testing.assert_array_equal(block.volts(words), trace_v)
    record = InfiniiumDigitizer(ours).read_record(2)
    np.testing.assert_array_equal(record.volts(), trace_v)
    np.testing.assert_array_equal(record.volts(100, 200), trace_v[100:200])
    assert record.extremes_v() == (trace_v.min(), trace_v.max())


def test_upstream_trace_fails_exactly_where_the_gate_applies(bench):
    address = bench.instruments["digitizer"].address
    upstream = UpstreamInfiniium("upstream_scope", address, visalib="@py", silence_pyvisapy_warning=True)
    upstream.auto_digitize(False)
    upstream.digitize()
    if qcodes_trace_needs_fix():
        with pytest.raises(Exception):  # noqa: B017 - whatever pyvisa raises building npt.NDArray(<samples>)
            upstream.ch1.trace()
    else:
        assert upstream.ch1.trace().size == upstream.acquire_points()
    assert read_trace_block(upstream.ch1) is None  # not our driver: the receiver takes qcodes' own path


def test_capture_in_two_messages_updates_the_caches(connect):
    scope: KeysightInfiniium = connect("digitizer")
    samples_v = scope.digitize_and_read_v(scope.ch2, 4096, 2e9, 0.4, 0.01)
    assert samples_v.shape == (4096,)
    assert scope.acquire_points.cache.get(get_if_invalid=False) == 4096
    assert scope.ch2.range.cache.get(get_if_invalid=False) == 0.4
    assert scope.ch2.offset.cache.get(get_if_invalid=False) == 0.01
    np.testing.assert_array_equal(scope.read_trace_v(scope.ch2), samples_v)


def test_reconnect_is_public_and_the_scope_answers_after_it(connect):
    scope: KeysightInfiniium = connect("digitizer")
    before, timeout_ms = scope.visa_handle, scope.visa_handle.timeout
    scope.reconnect()
    assert scope.visa_handle is not before
    assert scope.visa_handle.timeout == timeout_ms
    assert scope.acquire_points() > 0


def test_a_refused_capture_raises_and_the_caches_hold_what_the_scope_took(connect):
    """Issue 15 item 4: 3.3 GSa/s and a 100 V range used to leave the scope at 3.0 GSa/s and its old range with
    -222 queued, no exception, and the caches holding 3.3e9 and 100."""
    scope: KeysightInfiniium = connect("digitizer")
    range_before_v = scope.ch1.range()
    with pytest.raises(InstrumentError, match=r"-222") as refused:
        scope.digitize_and_read_v(scope.ch1, 4096, 3.3e9, 100.0)
    assert refused.value.code == -222
    assert scope.sample_rate.cache.get(get_if_invalid=False) == pytest.approx(3.0e9)   # the rate it took
    assert scope.ch1.range.cache.get(get_if_invalid=False) == pytest.approx(range_before_v)
    assert scope.read_errors() == []                                                   # the queue was emptied
    assert scope.sample_rate() == pytest.approx(3.0e9)                                 # cache = instrument


def test_an_acquisition_error_is_raised_by_the_role(connect):
    scope: KeysightInfiniium = connect("digitizer", silence_pyvisapy_warning=True)
    digitizer = InfiniiumDigitizer(scope)
    scope.write(":CHAN1:RANG 100")     # refused: -222 waits in the queue, as it would after any stray command
    digitizer.trigger()
    with pytest.raises(InstrumentError, match="-222"):
        digitizer.wait()


def test_the_edge_trigger_is_set_and_read_back_in_one_message(connect):
    scope: KeysightInfiniium = connect("digitizer")
    trigger = scope.set_edge_trigger("AUX", 0.2, "POS")
    assert trigger == EdgeTrigger("AUX", 0.2, "POS", "TRIG")
    assert scope.trigger_sweep.cache.get(get_if_invalid=False) == "TRIG"
    assert scope.trigger_level_aux() == pytest.approx(0.2)
    with pytest.raises(InstrumentError, match="-222"):
        scope.set_edge_trigger("AUX", 50.0)          # beyond the scope's trigger level range


def test_the_block_received_on_the_socket_equals_pyvisas_read_of_it(connect):
    """The words received straight into an array (read_words on a raw socket) against the same block read again
    through pyvisa's read_bytes (termination character off): the same words, read-only as pyvisa's bytes are."""
    from pyvisa import constants

    scope = connect("digitizer")
    scope.auto_digitize(False)
    scope.digitize()
    words, block = read_trace_words(scope.ch1)
    scope.write(":WAV:DATA?")  # the same source, the same record
    handle = scope.visa_handle
    handle.set_visa_attribute(constants.ResourceAttribute.termchar_enabled, False)
    try:
        raw = handle.read_bytes(2 * block.points + 3)
    finally:
        handle.set_visa_attribute(constants.ResourceAttribute.termchar_enabled, True)
    assert raw[:2] == b"#0" and raw[-1:] == b"\n" and block.points > 1000
    np.testing.assert_array_equal(words, np.frombuffer(raw[2:-1], dtype="<i2"))
    assert not words.flags.writeable
    assert scope.ask("*OPC?").strip() == "1"  # nothing of the block left on the line


def test_a_block_cut_short_or_malformed_is_an_error_never_words():
    import socket
    from types import SimpleNamespace

    from pyvisa.errors import VisaIOError

    from qslab.instruments.drivers.keysight_infiniium import TraceBlock

    block = TraceBlock(4, 1e-3, 0.0)
    words = np.array([-3, 10, 2570, 7], dtype="<i2")  # 2570 = 0x0A0A: LF bytes inside the block
    ours, scope_side = socket.socketpair()
    stand_in = SimpleNamespace(name="scope", visa_handle=SimpleNamespace(timeout=100))
    receive = KeysightInfiniium._received_words
    try:
        scope_side.sendall(b"#0" + words.tobytes() + b"\n")
        np.testing.assert_array_equal(receive(stand_in, ours, block), words)
        scope_side.sendall(b"#8" + words.tobytes() + b"\n")
        with pytest.raises(ValueError, match="scope: trace block of 4 points arrived malformed"):
            receive(stand_in, ours, block)
        scope_side.sendall(b"#0" + words[:2].tobytes())
        with pytest.raises(VisaIOError, match="Timeout"):
            receive(stand_in, ours, block)
        scope_side.sendall(words[2:].tobytes())  # late: read as the next block, whose LF never comes
        scope_side.close()
        with pytest.raises(VisaIOError, match="connection"):
            receive(stand_in, ours, block)
    finally:
        ours.close()
