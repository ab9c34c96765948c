"""The set-up's verification-gate uploads (sequences/protocol/setup.py): each segment's gate is defined empty before
its first monitor reading and left empty when the set-up ends (what the first batch's gate upload is compared with);
in between, the set-up's acquisitions gate every row, and no empty gate is sent between two of them (the same gate
loaded again is only compared by the driver, not sent)."""

from __future__ import annotations

import numpy as np
from station_fixtures import bench_config

from qslab.analysis.encoding import weight_symbols
from qslab.analysis.network import load_weights
from qslab.calibration.modulators import DRIVER_GAINS
from qslab.calibration.records import RecordStore
from qslab.sequences.protocol import SecureLink
from qslab.sequences.protocol.setup import GATE_CODE
from qslab.sequences.station import LabStation
from qslab.sequences.station_calibration import load_station_calibration


def test_each_gate_upload_changes_what_the_segment_holds_and_the_setup_ends_on_empty_gates(bench_calibration):
    weights, _ = load_weights(None)
    calibration = load_station_calibration(RecordStore(bench_calibration), DRIVER_GAINS["server_iq"], channel=False)
    with LabStation(bench_config()) as station:
        link = SecureLink(station, calibration, gain=1.3, laser_power_dbm=10.0, verify_fraction=0.05)
        loads: list[tuple[int, np.ndarray]] = []
        load = link.gate.load

        def recording_load(segments, amplitudes, **options):
            loads.extend((segment, np.array(codes[0])) for segment, codes in segments)
            return load(segments, amplitudes, **options)

        link.gate.load = recording_load  # this link's gate role only
        link.prepare([weight_symbols(w, 6.0) for w in weights], 6.0)
        bench_gate = station.bench.state.verification_gate
        for layer in link.layers:  # what the bench's AWG plays per segment, read from the bench itself
            link.awg.stop()
            link.awg.select(layer.segment_id)
            link.gate.select(layer.segment_id)
            assert bench_gate(layer.rows, layer.modes) is None or bench_gate(layer.rows, layer.modes)[0].size == 0
    segments = sorted({segment for segment, _ in loads})
    layer_segments = [layer.segment_id for layer in link.layers]
    assert segments == [1, 2, 3] and layer_segments == [1, 2]  # the two layers and the pilot segment
    for segment in segments:
        contents = [codes for s, codes in loads if s == segment]
        assert len({codes.size for codes in contents}) == 1, segment
        assert not contents[0].any(), segment  # defined empty first
        acquisitions = contents[1:-1] if segment in layer_segments else contents[1:]  # (the pilots end on theirs)
        if segment in layer_segments:
            assert not contents[-1].any(), segment  # a layer's gate left empty for the batches
        assert len(acquisitions) >= 2, segment  # the set-up's acquisitions (pilots, nulling) ran on this segment ...
        for codes in acquisitions:  # ... every row gated, and no empty gate sent between two of them
            assert np.all(np.abs(codes.astype(int)) == GATE_CODE), segment
