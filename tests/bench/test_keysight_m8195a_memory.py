"""Issue 15 item 3: the M8195A memory model of its user's guide (Revision 2), enforced by the bench's emulator
with the instrument's errors, and followed by the driver and the Awg role.

Pages: memory mode per channel p. 26; one segment without -SEQ, no sequencing from internal memory, one
sequence table for the extended-memory channels p. 110; a deletion on one extended-memory channel deletes on
all p. 254."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.instruments.drivers._scpi import InstrumentError
from qslab.instruments.drivers.keysight_m8195a import KeysightM8195A
from qslab.instruments.optical.awg_channels import AwgChannels
from qslab.instruments.optical.limits import Limit

SEGMENT = np.zeros(1280, dtype=np.int8)


@pytest.fixture
def awg(connect) -> KeysightM8195A:
    return connect("awg")


def test_options_are_read_at_connect(awg):
    assert awg.options == ("004", "16G", "SEQ") and awg.has_sequencing


def test_internal_memory_holds_segment_1_only(awg):
    assert awg.ch1.memory_mode() == "INT"      # the bench's power-on mode: the stack must choose
    with pytest.raises(InstrumentError, match="-222") as refused:
        awg.write(":TRAC1:DEF 2,1280")
    assert "internal memory" in refused.value.text
    with pytest.raises(ValueError, match="p. 110"):   # the driver refuses before sending
        awg.ch1.define_segment(2, 1280)
    awg.ch1.define_segment(1, 1280)


def test_without_option_seq_extended_memory_holds_one_segment(bench, connect):
    bench.instruments["awg"].emulator.engine.options_reply = "004,16G"
    awg = connect("awg")
    assert not awg.has_sequencing
    awg.ch1.memory_mode("EXT")
    with pytest.raises(ValueError, match="without option SEQ"):
        awg.ch1.define_segment(2, 1280)
    with pytest.raises(InstrumentError, match="-222"):
        awg.write(":TRAC1:DEF 2,1280")


def test_a_deletion_on_one_extended_channel_deletes_on_all(awg):
    for channel in (awg.ch1, awg.ch2):
        channel.memory_mode("EXT")
        channel.define_segment(1, 1280)
        channel.define_segment(2, 2560)
    awg.ch3.define_segment(1, 1280)                 # internal memory: not part of the table
    awg.ch1.delete_segment(2)
    assert awg.ask(":TRAC2:CAT?") == "1,1280"
    awg.ch2.delete_all_segments()
    assert awg.ask(":TRAC1:CAT?") == "0,0" and awg.ask(":TRAC3:CAT?") == "1,1280"


def test_extended_channels_play_one_segment_and_different_ones_at_once_are_refused(awg):
    awg.write_batch([":TRAC1:MMOD EXT", ":TRAC2:MMOD EXT", ":TRAC1:DEF 1,1280", ":TRAC1:DEF 2,1280",
                     ":TRAC2:DEF 1,1280", ":TRAC2:DEF 2,1280"])
    awg.ch1.select_segment(2)
    assert awg.ask(":TRAC2:SEL?") == "2"            # one sequence table: the selection is everyone's
    with pytest.raises(InstrumentError, match="-221"):
        awg.write_batch([":TRAC1:SEL 1", ":TRAC2:SEL 2"])
    role = AwgChannels(awg, (1, 2), amplitude_max=Limit(1.0, "Vpp", "test"), name="iq")
    with pytest.raises(ValueError, match="selected at once"):
        role.switch([(1, 1, None), (2, 2, None)])


def test_the_role_loads_on_extended_memory_in_the_same_message(awg):
    """Fails on the old role: it never set MMOD, and the bench refuses segment 2 on internal memory."""
    role = AwgChannels(awg, (1, 2), amplitude_max=Limit(1.0, "Vpp", "test"), name="iq")
    role.load([(1, [SEGMENT, SEGMENT]), (2, [SEGMENT, -SEGMENT])], [0.5, 0.5], select=2)
    assert [awg.ch1.memory_mode(), awg.ch2.memory_mode(), awg.ch3.memory_mode()] == ["EXT", "EXT", "INT"]
    assert awg.ask(":TRAC2:CAT?") == "1,1280,2,1280"
    assert awg.ask(":TRAC1:SEL?") == "2"


GATE = np.zeros(64 * 256, dtype=np.int8)   # 64 granules at DIV1


def _gate_role(awg: KeysightM8195A) -> AwgChannels:
    return AwgChannels(awg, (4,), amplitude_max=Limit(1.0, "Vpp", "test"), name="gate")


def test_a_segment_name_goes_with_the_segment(awg):
    """:TRAC<ch>:NAME is kept until the segment is defined anew, deleted, or its memory changes; names hold at most
    32 characters (-223 beyond)."""
    awg.write(":TRAC4:MMOD EXT")
    awg.write(":TRAC4:DEF 1,1280")
    awg.write(':TRAC4:NAME 1,"gate"')
    awg.write(":TRAC4:DATA 1,0,0,0")
    assert awg.ch4.segment_name(1) == "gate"   # writing samples keeps it
    awg.write(":TRAC4:DEF 1,1280")
    assert awg.ch4.segment_name(1) == ""       # defined anew
    with pytest.raises(InstrumentError, match="-223"):
        awg.write(f':TRAC4:NAME 1,"{"x" * 33}"')
    awg.write(':TRAC4:NAME 1,"gate"')
    awg.write(":TRAC4:MMOD INT")
    awg.write(":TRAC4:MMOD EXT")
    assert awg.ch4.segment_catalog() == {}
    awg.write(":TRAC4:DEF 1,1280")
    assert awg.ch4.segment_name(1) == ""


def test_a_reload_with_few_changes_leaves_the_instrument_holding_what_a_whole_upload_would(bench, awg):
    """The role sends only the changed granules once the bench confirms its segment: the samples the bench plays are
    those of the new waveform, byte for byte, and far fewer bytes went over the line."""
    role = _gate_role(awg)
    role.load([(1, [GATE])], [0.5])
    changed = GATE.copy()
    changed[300:310], changed[9000] = 32, -32
    messages = bench.message_counts()["awg"]
    role.load([(1, [changed])], [0.5])
    assert bench.message_counts()["awg"] - messages == 2   # the catalogue check, then the pieces
    played = bench.state.awg_state("awg").channels[4].segments[1]
    np.testing.assert_array_equal(played, changed)
    assert awg.ch4.segment_name(1) == awg.ch4.loaded_samples(1)[1]


@pytest.mark.parametrize("behind_its_back", [":TRAC4:DEF 1,16384", ':TRAC4:NAME 1,"other"', "*RST"])
def test_a_segment_changed_behind_the_drivers_back_is_uploaded_whole(bench, awg, behind_its_back):
    role = _gate_role(awg)
    role.load([(1, [GATE])], [0.5])
    awg.write(behind_its_back)   # what another program (or a reset) does: the name the driver gave is gone
    if behind_its_back == "*RST":
        awg.ch4.memory_mode.get()
    changed = GATE.copy()
    changed[5] = 7
    role.load([(1, [changed])], [0.5])
    np.testing.assert_array_equal(bench.state.awg_state("awg").channels[4].segments[1], changed)


def test_the_bench_hears_once_per_message_that_wrote_samples(bench, connect, monkeypatch):
    """LoadsAwgSamples: after a whole message that changed the client AWG's samples (here two segments), the bench is
    told once (it evaluates the processor ahead); a message that writes none tells it nothing."""
    heard = []
    monkeypatch.setattr(bench.state, "samples_loaded", heard.append)
    client_awg = connect("client_awg")
    client_awg.ch1.memory_mode("EXT")
    client_awg.ch2.memory_mode("EXT")
    assert heard == []
    client_awg.write(":TRAC1:DEF 1,1280;:TRAC2:DEF 1,1280;:TRAC1:DATA 1,0," + ",".join(["5"] * 1280))
    assert heard == [bench.state.client_awg]
    client_awg.ask(":TRAC1:CAT?")
    client_awg.write(":VOLT1 0.5")
    assert heard == [bench.state.client_awg]
