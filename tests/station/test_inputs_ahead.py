"""Work done while the digitizer takes a record (SecureLink.take_layer(meanwhile=...)): the next batch's client
encoding and processor upload (SecureLink.layer_inputs, session.InputsAhead) while layer 1's record is taken, and
layer 1's server filter (TakenLayer.finish) while layer 2's is. It must upload the very bytes the batch would have
computed itself, run between the trigger and the read of the reply, and never leave the digitizer's reply unread. (A session whose batch 2 used inputs computed ahead ends where one resumed at batch 2, which
computed them itself, does: test_session.py's resume tests.)"""

from __future__ import annotations

import numpy as np
import pytest
from station_fixtures import bench_config

from qslab.analysis import mnist
from qslab.analysis.encoding import weight_symbols
from qslab.analysis.network import load_weights
from qslab.calibration.modulators import DRIVER_GAINS
from qslab.calibration.records import RecordStore
from qslab.sequences.protocol import SecureLink
from qslab.sequences.protocol.errors import ProtocolError
from qslab.sequences.protocol.layers import LayerInputs
from qslab.sequences.session import InputsAhead, run_batch
from qslab.sequences.station import LabStation
from qslab.sequences.station_calibration import load_station_calibration


@pytest.fixture
def link(bench_calibration):
    """A prepared SecureLink on a bench station, its client AWG's uploads and its digitizer's calls recorded."""
    weights, _ = load_weights(None)
    calibration = load_station_calibration(RecordStore(bench_calibration), DRIVER_GAINS["server_iq"], channel=False)
    with LabStation(bench_config()) as station:
        prepared = SecureLink(station, calibration, gain=1.3, laser_power_dbm=10.0, verify_fraction=0.05)
        prepared.prepare([weight_symbols(w, 6.0) for w in weights], 6.0)
        prepared.uploads, prepared.calls = [], []
        load, trigger, wait = prepared.client_awg.load, prepared.digitizer.trigger, prepared.digitizer.wait

        def recording_load(segments, amplitudes, **options):
            prepared.uploads.append(([np.array(c) for _, codes in segments for c in codes], list(amplitudes)))
            return load(segments, amplitudes, **options)

        def recording(name, call):
            def recorded(*args, **kwargs):
                prepared.calls.append(name)
                return call(*args, **kwargs)
            return recorded

        prepared.client_awg.load = recording_load  # this link's roles only
        prepared.digitizer.trigger = recording("trigger", trigger)
        prepared.digitizer.wait = recording("wait", wait)
        prepared.server_rx.record_quadratures_snu = recording("server filter", prepared.server_rx.record_quadratures_snu)
        yield prepared


def _images(first: int, count: int = 4) -> np.ndarray:
    images, _ = mnist.load_mnist("test")
    return mnist.preprocess(images[first:first + count].reshape(count, -1))


def _last_upload(link) -> tuple[list[np.ndarray], list[float]]:
    return link.uploads[-1]


def _same_upload(a, b) -> bool:
    return a[1] == b[1] and len(a[0]) == len(b[0]) and all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))


def test_inputs_computed_ahead_upload_the_bytes_the_batch_computes_and_run_between_trigger_and_reply(link):
    data, other = _images(0), _images(8)
    link.run_layer(0, data, np.random.default_rng(1))
    computed_at_the_batch = _last_upload(link)
    inputs = link.layer_inputs(0, data)
    link.calls.clear()
    link.run_layer(0, inputs, np.random.default_rng(1), meanwhile=lambda: link.calls.append("meanwhile"))
    assert _same_upload(_last_upload(link), computed_at_the_batch)
    assert link.calls == ["trigger", "meanwhile", "wait", "server filter"]  # once, while the acquisition was pending

    stale = link.layer_inputs(0, other).processor_drive  # another batch's drive with the x_hat of data: not uploaded
    link.run_layer(0, LayerInputs(0, inputs.x_hat, stale), np.random.default_rng(1))
    assert _same_upload(_last_upload(link), computed_at_the_batch)
    assert not _same_upload(_last_upload(link), (list(stale.samples), list(stale.amplitudes)))


def test_work_that_fails_meanwhile_still_reads_the_reply_and_inputs_ahead_leave_a_failure_to_the_batch(link):
    def failing():
        raise RuntimeError("the work done meanwhile failed")

    link.calls.clear()
    with pytest.raises(RuntimeError, match="meanwhile failed"):
        link.run_layer(0, _images(0), np.random.default_rng(3), meanwhile=failing)
    assert link.calls == ["trigger", "wait"]  # the pending reply was read before the error went on
    capture = link.run_layer(0, _images(4), np.random.default_rng(3))  # the digitizer's I/O is still in step
    assert capture.client_quadratures_snu.shape == (4, link.layers[0].rows)

    ahead = InputsAhead(link)
    ahead.computing(5, mnist.load_mnist("test")[0][:4].reshape(4, -1))()
    kept = ahead.take(5)
    assert kept.layer == 0 and kept.x_hat.shape == (4, link.layers[0].modes)
    assert ahead.take(5) is None  # taken once
    ahead.computing(6, np.ones((4, 10)))()  # 10 pixels: not an image of this layer; layer_inputs refuses it ...
    assert ahead.take(6) is None  # ... and nothing is kept: batch 7 computes (and refuses) them itself
    with pytest.raises(ProtocolError, match="modes"):
        link.layer_inputs(0, np.ones((4, 10)))


def test_a_batch_filters_layer_1s_server_record_while_layer_2s_record_is_taken(link):
    images, _ = mnist.load_mnist("test")
    link.calls.clear()
    captures, _ = run_batch(link, len(link.layers), images[:4].reshape(4, -1), 3, 0)
    layer_1 = ["trigger", "wait", "trigger", "server filter", "wait"]  # its filter between layer 2's trigger and reply
    assert link.calls[:5] == layer_1 and link.calls[5:] in ([], ["server filter"])  # (layer 2 verifies rows or not)
    rows = captures[0].verified_rows.size
    assert rows and captures[0].returned_snu.shape == (4, rows, link.layers[0].modes)
    assert np.all(np.isfinite(captures[0].returned_snu)) and captures[0].returned_snu.dtype == np.float32
