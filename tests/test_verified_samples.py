"""The streamed verification estimates against the pooled array code, and the image totals gathered batch by batch.

The pooled route (verification.remove_previous_symbol then verification.estimate_channel on the concatenated arrays)
is the independent reference: the streamed one keeps sums only and reads the samples twice, in chunks.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from channel_samples import assert_estimates_close, chunked, layer_samples

from qslab.analysis import verification
from qslab.analysis.session_results import ImageTotals, hidden_vectors, predictions
from qslab.analysis.security_report import largest_mode_share
from qslab.analysis.verified_samples import (PooledSamples, RunningFits, StreamedSamples, _FitSums, _ResidualSums,
                                            _Scratch)

DETECTOR = verification.ServerDetector(efficiency=0.7, electronic_noise_snu=0.02)
SAME = 1e-12


@pytest.mark.parametrize("sizes", [[1], [2, 7], [997], [10**6]])
def test_streamed_estimates_equal_the_pooled_ones_whatever_the_chunks(sizes):
    rng = np.random.default_rng(5)
    samples = [layer_samples(rng, 30_011, 0.74, 0.05, 1.02), layer_samples(rng, 4_003, 0.71, -0.03, 1.1)]
    pooled = PooledSamples(samples)
    streamed = StreamedSamples(chunked(samples, sizes), 2)
    assert streamed.sizes == pooled.sizes == [30_011, 4_003]
    for layer in range(2):
        assert_estimates_close(streamed.layer_estimate(layer, DETECTOR), pooled.layer_estimate(layer, DETECTOR), SAME)
    assert_estimates_close(streamed.pooled_estimate(DETECTOR), pooled.pooled_estimate(DETECTOR), SAME)


def test_the_fit_over_the_previous_symbol_runs_across_chunk_boundaries():
    """A chunk's first q_prev is the previous chunk's last q: cutting after every sample changes nothing."""
    rng = np.random.default_rng(1)
    samples = [layer_samples(rng, 5_000, 0.7, 0.3, 0.2)]
    whole = StreamedSamples(chunked(samples, [5_000]), 1).layer_estimate(0, DETECTOR)
    single = StreamedSamples(chunked(samples, [1]), 1).layer_estimate(0, DETECTOR)
    assert_estimates_close(single, whole, SAME)
    b = verification.remove_previous_symbol(*samples[0])[1]
    assert b == pytest.approx(0.3, abs=0.01)  # the data has a real previous-symbol term for the fit to find


def test_two_samples_are_not_fitted_over_the_previous_symbol_and_no_modulation_is_refused_as_pooled():
    few = [(np.array([1.0, -2.0], np.float32), np.array([0.8, -1.3], np.float32))]
    assert_estimates_close(StreamedSamples(chunked(few, [1]), 1).layer_estimate(0, DETECTOR),
                           PooledSamples(few).layer_estimate(0, DETECTOR), SAME)
    flat = [(np.zeros(10, np.float32), np.ones(10, np.float32))]  # the fit has nothing to stand on: a ValueError
    with pytest.raises(ValueError, match="Singular matrix"):
        PooledSamples(flat).layer_estimate(0, DETECTOR)
    with pytest.raises(ValueError, match="Singular matrix"):
        StreamedSamples(chunked(flat, [3]), 1)
    unmodulated = [(np.zeros(2, np.float32), np.ones(2, np.float32))]  # no fit below three samples: t has no q
    with pytest.raises(ValueError, match="carries no modulation"):
        PooledSamples(unmodulated).layer_estimate(0, DETECTOR)
    with pytest.raises(ValueError, match="carries no modulation"):
        StreamedSamples(chunked(unmodulated, [1]), 1).layer_estimate(0, DETECTOR)


def _estimates(streamed: StreamedSamples, layers: int) -> list:
    return [streamed.layer_estimate(k, DETECTOR) for k in range(layers)] + [streamed.pooled_estimate(DETECTOR)]


@pytest.mark.parametrize("chunk", [997, 4096, 10**6])
def test_the_first_pass_summed_batch_by_batch_equals_the_file_route_bit_for_bit(chunk):
    """RunningFits cuts the batches into the chunks the file is read in: every estimate equals the two-pass route's
    exactly (not to 1e-12), after any number of batches, with batches shorter and longer than a chunk."""
    rng = np.random.default_rng(8)
    samples = [layer_samples(rng, 30_011, 0.74, 0.05, 1.02), layer_samples(rng, 4_003, 0.71, -0.03, 1.1)]
    running = RunningFits(2, chunk)
    cuts = [np.sort(rng.choice(np.arange(1, layer[0].size), 9, replace=False)) for layer in samples]
    for batch in range(10):
        for k, (sent, returned) in enumerate(samples):
            part = slice(0 if batch == 0 else cuts[k][batch - 1], None if batch == 9 else cuts[k][batch])
            running.add(k, sent[part].reshape(-1, 1), returned[part])
        done = [(sent[:None if batch == 9 else cuts[k][batch]], returned[:None if batch == 9 else cuts[k][batch]])
                for k, (sent, returned) in enumerate(samples)]
        two_pass = StreamedSamples(chunked(done, [chunk]), 2)
        one_pass = StreamedSamples(chunked(done, [chunk]), 2, running=running.snapshot())
        assert one_pass.sizes == two_pass.sizes
        assert _estimates(one_pass, 2) == _estimates(two_pass, 2)
        assert one_pass.figure_line() == two_pass.figure_line()
    assert_estimates_close(one_pass.pooled_estimate(DETECTOR), PooledSamples(samples).pooled_estimate(DETECTOR), SAME)


def test_samples_read_back_other_than_those_summed_are_refused():
    """Pass 2 checks each chunk it reads against the sum q y recorded with pass 1: one changed returned sample (a
    file that does not hold what was recorded) or a missing chunk is a ValueError, never different numbers."""
    rng = np.random.default_rng(9)
    samples = [layer_samples(rng, 5_000, 0.74, 0.0, 1.0)]
    running = RunningFits(1, 1024)
    running.add(0, *samples[0])
    changed = [(samples[0][0], samples[0][1].copy())]
    changed[0][1][3000] += np.float32(1e-3)
    with pytest.raises(ValueError, match="chunk 3.*not those recorded"):
        StreamedSamples(chunked(changed, [1024]), 1, running=running.snapshot())
    short = [(samples[0][0][:4096], samples[0][1][:4096])]
    with pytest.raises(ValueError, match="4 chunks of verified samples read back, 5 were recorded"):
        StreamedSamples(chunked(short, [1024]), 1, running=running.snapshot())


def test_verification_from_the_streamed_estimate_equals_verify_on_the_arrays():
    rng = np.random.default_rng(2)
    sent, returned = layer_samples(rng, 50_000, 0.74, 0.0, 1.0)
    honest = verification.ChannelHypothesis.honest(1.3, 392, 0.5)
    on_arrays = verification.verify(sent, verification.remove_previous_symbol(sent, returned)[0], 6.0, honest,
                                    DETECTOR, mu_upper_photons=6.3).to_dict()
    estimate = StreamedSamples(chunked([(sent, returned)], [4096]), 1).layer_estimate(0, DETECTOR)
    streamed = verification.verify_estimate(estimate, 6.0, honest, DETECTOR, mu_upper_photons=6.3).to_dict()
    assert streamed.keys() == on_arrays.keys()
    for key, value in on_arrays.items():
        if isinstance(value, float):
            assert streamed[key] == pytest.approx(value, rel=SAME, abs=0.0), key
        else:
            assert streamed[key] == value, key


def test_image_totals_gathered_batch_by_batch_equal_the_whole_arrays():
    rng = np.random.default_rng(3)
    images = 57
    labels = rng.integers(0, 10, images).astype(np.uint8)
    layer1 = rng.normal(0.0, 1.0, (images, 784)).astype(np.float32)
    layer1[4] = -1.0  # an all-negative layer-1 outcome: its hidden vector cannot be normalised
    last = rng.normal(0.0, 1.0, (images, 10)).astype(np.float32)
    inputs = rng.uniform(-1.0, 1.0, (images, 784)).astype(np.float32)
    whole = ImageTotals.from_arrays(labels, layer1, last, inputs, keep=20)
    batched = ImageTotals(20)
    for start in range(0, images, 8):
        part = slice(start, start + 8)
        batched.add(labels[part], layer1[part], last[part], inputs[part])
    hidden, unusable = hidden_vectors(layer1)
    assert np.array_equal(batched.all_labels(), labels)
    assert np.array_equal(batched.all_predictions(), predictions(last, unusable))
    assert np.array_equal(batched.all_predictions(), whole.all_predictions())
    assert batched.unusable == whole.unusable == 1
    assert batched.mode_shares == whole.mode_shares == [largest_mode_share(inputs), largest_mode_share(hidden)]
    for kept, full in zip(batched.kept_inputs(), (inputs, hidden)):
        assert np.array_equal(kept, full[:20])


def test_the_scatter_kept_by_pass_2_equals_the_samples_picked_from_the_arrays():
    rng = np.random.default_rng(10)
    samples = [layer_samples(rng, 30_011, 0.74, 0.05, 1.02), layer_samples(rng, 4_003, 0.71, -0.03, 1.1)]
    for layer, points in ((0, 500), (1, 10_000)):
        streamed = StreamedSamples(chunked(samples, [997]), 2, scatter=(points, layer, 3))
        pick = np.sort(np.random.default_rng(3).choice(samples[layer][0].size, min(points, samples[layer][0].size),
                                                       replace=False))
        sent, returned = streamed.scattered
        assert sent.dtype == np.float32 and sent.size == min(points, samples[layer][0].size)
        np.testing.assert_array_equal(sent, samples[layer][0][pick])
        np.testing.assert_array_equal(returned, samples[layer][1][pick])


def random_session_batch(rng, shapes):
    """(images, labels, pixels, one LayerBatch per shape) of a random batch: 20-89 images, 3 verified rows in the
    first layer and 1 in the others, channel samples at T 0.74 and 0.02 SNU excess noise."""
    from qslab.analysis import recording

    images = int(rng.integers(20, 90))
    captures = []
    for k, shape in enumerate(shapes):
        rows = np.sort(rng.choice(shape.rows, 3 if k == 0 else 1, replace=False))
        sent, returned = layer_samples(rng, images * rows.size * shape.modes, 0.74, 0.02, 1.0)
        captures.append(recording.LayerBatch(rng.normal(size=(images, shape.rows)).astype(np.float32), rows,
                                             rng.random((images, rows.size)) < 0.5,
                                             sent.reshape(images, rows.size, shape.modes),
                                             returned.reshape(images, rows.size, shape.modes)))
    return images, rng.integers(0, 10, images), rng.integers(0, 256, (images, 784)), captures


def live_recording(tmp_path):
    """(layer shapes, an empty live Recorded, the SessionWriter of its file): two layers, 16 modes each."""
    from qslab.analysis import recording
    from qslab.analysis.replay import Recorded

    shapes = [recording.LayerShape(40, 16), recording.LayerShape(10, 16)]
    meta = {"config_toml": "", "station_snapshot_json": {}, "settings_json": {"exact_leakage_images": 5},
            "provenance_json": {}, "seeds_json": {}, "calibrations_json": {}}
    path = tmp_path / "live.h5"
    writer = recording.SessionWriter.create(path, shapes, meta, qslab_version="0", git_revision="x")
    return shapes, Recorded.empty(2, 5, path), writer


def test_a_live_recording_gives_the_replays_estimates_and_scatter_exactly(tmp_path):
    """Recorded as a session fills it (pass 1 summed batch by batch, the scatter kept by pass 2) against Recorded
    from the file alone (replay: both passes and the scatter read back): the same numbers, bit for bit."""
    from qslab.analysis import recording
    from qslab.analysis.replay import Recorded

    rng = np.random.default_rng(11)
    shapes, live, writer = live_recording(tmp_path)
    live.scatter_request = (3_000, 0, 0)
    with writer:
        for batch in range(7):
            images, labels, pixels, captures = random_session_batch(rng, shapes)
            writer.append_batch(np.arange(images) + 100 * batch, labels, pixels, rng.integers(0, 10, images),
                                captures)
            live.add(labels, pixels, captures)
            if batch in (0, 3, 6):
                with recording.SessionFile.open(live.path) as session:
                    replayed = Recorded.from_file(session)
                    assert replayed.running is None
                    replayed.samples_from(session)
                assert _estimates(live.samples(), 2) == _estimates(replayed.samples(), 2)
                kept, read = live.scatter(3_000), replayed.scatter(3_000)
                assert kept[0].size == min(3_000, live.samples().sizes[0])
                for a, b in zip(kept, read):
                    np.testing.assert_array_equal(a, b)


def test_the_passes_in_reused_buffers_give_the_bits_of_fresh_array_expressions():
    """Pass 1 and pass 2 write their products into buffers kept from chunk to chunk (no allocation per intermediate):
    every sum equals the plain array expressions' exactly, with chunks shrinking and growing between reads."""
    rng = np.random.default_rng(12)
    sent, returned = layer_samples(rng, 9_000, 0.74, 0.05, 1.02)
    sizes = [4_000, 17, 3_000, 1_983]
    fits, last = _FitSums(), 0.0
    expected = dict(qq=0.0, qp=0.0, pp=0.0, qy=0.0, py=0.0)
    scratch, start = _Scratch(), 0
    for size in sizes:
        q, y = sent[start:start + size].astype(np.float64), returned[start:start + size].astype(np.float64)
        previous = np.concatenate([[last], q[:-1]])
        for name, product in (("qq", q * q), ("qp", q * previous), ("pp", previous * previous), ("qy", q * y),
                              ("py", previous * y)):
            expected[name] += float(np.sum(product))
        assert fits.add(sent[start:start + size], returned[start:start + size], scratch) == float(np.sum(q * y))
        last, start = float(q[-1]), start + size
        r = y - 0.3 * previous - 0.7 * q
        r2 = r * r
        r4 = r2 * r2
        deviations = r4 - float(np.sum(r4)) / r.size
        kept = r.copy()
        assert _ResidualSums.chunk_in_place(r) == (r.size, float(np.sum(r2)), float(np.sum(r4)),
                                                   float(np.sum(deviations * deviations)))
        assert _ResidualSums.chunk(kept) == _ResidualSums.chunk_in_place(kept.copy())
    assert {name: getattr(fits, name) for name in expected} == expected


def test_pass_2_on_several_workers_gives_the_bits_of_one(monkeypatch):
    """Blocks summed on two workers and merged in their order: every estimate the same bits as on one worker (a merge
    in the order the workers finish moves the last bits of the Chan merge)."""
    rng = np.random.default_rng(8)
    samples = [layer_samples(rng, 700_001, 0.74, 0.05, 1.02), layer_samples(rng, 300_007, 0.71, -0.03, 1.1)]
    estimates, merged, merge = {}, [], _ResidualSums.merge

    def noted(sums, n, *rest):
        merged.append((id(sums), n))
        merge(sums, n, *rest)

    monkeypatch.setattr(_ResidualSums, "merge", noted)
    for threads in (1, 2):
        monkeypatch.setattr(StreamedSamples, "pass_2_threads", threads)
        streamed = StreamedSamples(chunked(samples, [100_000]), 2, scatter=(50, 1, 3))
        estimates[threads] = ([streamed.layer_estimate(k, DETECTOR) for k in range(2)]
                              + [streamed.pooled_estimate(DETECTOR)], streamed.scattered)
        first = [n for sums, n in merged if sums == id(streamed._own[0])]
        assert first == [65_536, 34_464] * 7 + [1]  # each chunk's blocks in order: a long one, then a short one
    assert estimates[1][0] == estimates[2][0]
    assert all(np.array_equal(a, b) for a, b in zip(estimates[1][1], estimates[2][1]))


def test_running_fits_sum_on_a_worker_and_the_snapshot_waits_for_them(monkeypatch):
    """add() returns before its chunks are summed (the session's next batch goes on); snapshot() waits for every batch
    added, in order, and raises what failed there."""
    rng = np.random.default_rng(10)
    sent, returned = layer_samples(rng, 5_000, 0.74, 0.0, 1.0)
    release, fit = threading.Event(), RunningFits._fit

    def held(self, *args):
        assert release.wait(timeout=60)
        return fit(self, *args)

    monkeypatch.setattr(RunningFits, "_fit", held)
    running, reference = RunningFits(1, 1024), RunningFits(1, 1024)
    for part in (slice(0, 3000), slice(3000, None)):
        running.add(0, sent[part], returned[part])  # would wait for `release` if it summed here
    release.set()
    for part in (slice(0, 3000), slice(3000, None)):
        reference.add(0, sent[part], returned[part])
    assert running.snapshot() == reference.snapshot()
    monkeypatch.setattr(RunningFits, "_fit", lambda self, *args: 1 / 0)
    failing = RunningFits(1, 1024)
    failing.add(0, sent, returned)
    with pytest.raises(ZeroDivisionError):
        failing.snapshot()


def test_recorded_reads_its_file_once_per_batch_count(tmp_path):
    """The estimates are read back once and kept until a batch is added; then read again, with the new batch."""
    rng = np.random.default_rng(12)
    shapes, live, writer = live_recording(tmp_path)
    with writer:
        images, labels, pixels, captures = random_session_batch(rng, shapes)
        writer.append_batch(np.arange(images), labels, pixels, rng.integers(0, 10, images), captures)
        live.add(labels, pixels, captures)
        first = live.samples()
        assert live.samples() is first
        more, labels, pixels, captures = random_session_batch(rng, shapes)
        writer.append_batch(images + np.arange(more), labels, pixels, rng.integers(0, 10, more), captures)
        live.add(labels, pixels, captures)
        again = live.samples()
        assert again is not first and sum(again.sizes) > sum(first.sizes) and live.samples() is again
