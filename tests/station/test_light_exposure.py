"""Light carries the weights and the client's data only while it is recorded.

The leakage figures count one pass of each layer's weights (to the client) and of the client's data (on the returned
light, to a curious server) per acquisition. A layer left playing while the station reads its records, or the
client's processor left playing its images while the health check plays layer 1 for the monitor tap, hands out more
passes than are counted. So in a session's batches every message the bench handles while light reaches the client
with a layer or the client's processor playing must be one of the capture's own (sequences/protocol/acquisition.py,
LinkAcquisition._capture: processor and layer started, the digitizer's acquisition, both stopped), and the check reads
the tap behind a closed shutter (sequences/protocol/health.py, read_light). The images every layer's weights met are
counted at the capture, recorded with each batch (/batches weight_images_sent) and totalled in the weight leakage
(DECISIONS AI): at every batch they agree with the bench's own count.
"""

from __future__ import annotations

from station_fixtures import patient_config

from qslab.analysis.recording import SessionFile
from qslab.calibration.records import RecordStore
from qslab.instruments.sim.server import observing_bench_starts
from qslab.sequences.config import load_config
from qslab.sequences.session import SessionSettings, run_session
from qslab.sequences.session_guard import observing_arms

SETTINGS = SessionSettings(images=20, mu=6.0, gain=1.3, seed=5, batch_images=10, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0)
# (instrument, the message's start) of the capture: the two starts (the layer's `:ABOR;:TRAC1:SEL ...;:INIT:IMM`, its
# segment selected and started in one message, and the processor's `:INIT:IMM`, sent together: either may arrive
# while the other already plays), the acquisition, and the two stops (sent together too)
CAPTURE = {("digitizer", b":DIGitize"), ("awg", b":ABOR"), ("client_awg", b":ABOR"), ("client_awg", b":INIT:IMM")}


def _carried(state) -> tuple[bool, bool]:
    """(a layer's weights, the client's data): what the light reaching the client carries now."""
    with state.lock:
        lit = state.server_attenuator.shutter_open and state.laser_power_w() > 0.0
        return lit and state.awg_state("awg").running, lit and state.awg_state("client_awg").running


def _playing(state) -> tuple[int, int] | None:
    """(the segment the server's layer plays, the images on the client's processor) while both play, else None."""
    with state.lock:
        awg, load = state.awg_state("awg"), state.processor_load()
        if not awg.running or load is None or load.x_hat is None:
            return None
        return awg.channels[state.params.server_iq.awg_channel_i].selected_segment, load.x_hat.shape[0]


def test_only_the_capture_runs_while_the_light_carries_weights_or_data(tmp_path, calibrated_store_at, monkeypatch):
    seen: list[tuple[str, bytes, bool, bool]] = []  # from the arming before batch 2 on: every message, and the light
    armed = []
    played: dict[int, int] = {}  # the bench's own count: segment -> images on the processor at each acquisition
    after: list[dict[int, int]] = []  # the count after each acquisition

    def watch(bench) -> None:
        for name, instrument in bench.instruments.items():
            handle = instrument.emulator.handle

            def observed(message, handle=handle, name=name, state=bench.state):
                if armed:
                    seen.append((name, bytes(message[:16]), *_carried(state)))
                if name == "digitizer" and bytes(message[:9]) == b":DIGitize" and (playing := _playing(state)):
                    played[playing[0]] = played.get(playing[0], 0) + playing[1]
                    after.append(dict(played))
                return handle(message)

            monkeypatch.setattr(instrument.emulator, "handle", observed)

    store = RecordStore(calibrated_store_at(tmp_path / "calibration"))
    with observing_bench_starts(watch), observing_arms(lambda station, batch: armed.append(batch)):
        result = run_session(load_config(patient_config(tmp_path)), SETTINGS, out_dir=tmp_path / "sessions",
                             store=store, progress=False)
    assert result["images"] == SETTINGS.images and armed == [1]

    carrying = [(name, head) for name, head, weights, data in seen if weights or data]
    foreign = [(name, head) for name, head in carrying if not any(name == n and head.startswith(h) for n, h in CAPTURE)]
    assert not foreign, f"messages while the light carried weights or data: {foreign[:10]}"
    acquisitions = [(weights, data) for name, head, weights, data in seen if head.startswith(b":DIGitize")]
    assert len(acquisitions) == 2  # the two layers of batch 2, the one after arming
    # the processor's start reaches the bench beside the layer's at most once a capture (the two are sent together)
    assert sum(name == "client_awg" and head.startswith(b":INIT:IMM") for name, head in carrying) <= len(acquisitions)
    assert all(weights and data for weights, data in acquisitions)  # and each acquisition does record both

    # every pass of a layer's weights is counted: the batches' images, and the set-up's leakage nulling (layer 2's 10
    # rows need 52 images a pass for its 200,000 samples); each batch's row holds the count after its last layer
    assert played[1] > SETTINGS.images and played[2] > SETTINGS.images + 100
    with SessionFile.open(result["file"]) as session:
        rows = session.batch_table["weight_images_sent"].tolist()
    assert rows == [[count[1], count[2]] for count in (after[-3], after[-1])]
    assert result["weight_images_per_layer"] == [played[1], played[2]]
    assert result["security_report"]["weight_leakage"]["images_sent_per_layer"] == [played[1], played[2]]
    # the client's data went out in the batches' captures only (the nulling plays no data): once per image and layer
    assert result["data_images_per_layer"] == [SETTINGS.images] * 2
    assert result["security_report"]["data_leakage"]["takes"] == SETTINGS.images
