"""The bench's time-bin processor evaluated from per-code lookups equals the chain evaluated on every bin.

bench._evaluate_processor looks each bin's angle functions (sin and cos of theta, e^(-i phi)) up among the
values of the 256 int8 codes; evaluated bin by bin from the drive volts (givens.unit_vector_from_angles) they must
be the same bits, so a change of arithmetic on either route shows up here.
"""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis.givens import unit_vector_from_angles
from qslab.instruments.sim.bench import BenchState


def per_bin_load(state: BenchState, numbers: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(theta, phi) per bin from the codes at each bin's centre, evaluated bin by bin."""
    awg, c = state.client_awg, state.params.client_processor
    sps = awg.samples_per_symbol(state.params.server.symbol_rate_hz)
    codes = [awg.playing_codes(n) for n in numbers]
    centre = np.arange(max(code.size for code in codes) // sps) * sps + sps // 2
    volts = [awg.channels[n].offset_v + 0.5 * awg.channels[n].amplitude_vpp / 127.0
             * code[centre % code.size].astype(np.float64) for n, code in zip(numbers, codes)]
    theta = (np.pi * c.beam_splitter_driver_gain * volts[0] / (2.0 * c.beam_splitter_vpi_v)
             + c.beam_splitter_theta_offset_rad)
    return theta, np.pi * c.phase_driver_gain * volts[1] / c.phase_vpi_v


@pytest.mark.parametrize("images, offsets_v, phase_images", [(3, (0.0, 0.0), 3), (40, (0.013, -0.021), 40),
                                                          (6, (0.0, 0.01), 2)])
def test_processor_lookup_matches_the_chain_evaluated_on_every_bin(images, offsets_v, phase_images):
    """phase_images < images: the phase channel's segment is shorter and plays again (its codes wrap)."""
    state = BenchState()
    c = state.params.client_processor
    numbers = (c.awg_channel_beam_splitter, c.awg_channel_phase)
    awg = state.client_awg
    sps = awg.samples_per_symbol(state.params.server.symbol_rate_hz)
    rng = np.random.default_rng(images)
    awg.running = True
    for number, amplitude_vpp, offset_v, count in zip(numbers, (0.8, 0.45), offsets_v, (images, phase_images)):
        channel = awg.channels[number]
        channel.output_enabled, channel.amplitude_vpp, channel.offset_v = True, amplitude_vpp, offset_v
        channel.segments[1] = np.repeat(rng.integers(-128, 128, count * c.bins_per_row, dtype=np.int8), sps)

    load = state.processor_load()
    theta, phi = per_bin_load(state, numbers)
    np.testing.assert_array_equal(load.theta_rad, theta)
    np.testing.assert_array_equal(load.phi_rad, phi)
    expected = unit_vector_from_angles(theta.reshape(images, -1), phi.reshape(images, -1))
    np.testing.assert_array_equal(load.x_hat, expected)
    assert np.unique(theta).size > 200  # the codes cover the table: a wrong index would show


def _loaded_state(images: int, seed: int) -> tuple[BenchState, tuple[int, int]]:
    """A bench whose client AWG holds `images` rows of random codes on both processor channels, outputs on, stopped."""
    state = BenchState()
    c = state.params.client_processor
    numbers = (c.awg_channel_beam_splitter, c.awg_channel_phase)
    awg, rng = state.client_awg, np.random.default_rng(seed)
    sps = awg.samples_per_symbol(state.params.server.symbol_rate_hz)
    for number in numbers:
        channel = awg.channels[number]
        channel.output_enabled, channel.amplitude_vpp = True, 0.6
        channel.segments[1] = np.repeat(rng.integers(-128, 128, images * c.bins_per_row, dtype=np.int8), sps)
        awg.segment_written(channel, 1)
    return state, numbers


def test_the_processor_is_evaluated_ahead_on_the_worker_and_the_acquisition_finds_it(monkeypatch):
    """samples_loaded (after an AWG message wrote the samples) evaluates on the bench's worker while the AWG is still
    stopped; processor_load, once it plays, uses that evaluation (no second one) and it equals a fresh one's bits."""
    import threading

    from qslab.instruments.sim import bench as bench_module

    evaluated, evaluate = [], bench_module._evaluate_processor

    def noted(*args):
        evaluated.append(threading.current_thread().name)
        return evaluate(*args)

    monkeypatch.setattr(bench_module, "_evaluate_processor", noted)
    state, numbers = _loaded_state(5, 1)
    assert state.processor_load() is None  # stopped: nothing plays
    state.samples_loaded(state.awg)  # the server's AWG: nothing to evaluate
    assert state._processor_ahead is None and evaluated == []
    state.samples_loaded(state.client_awg)
    state._processor_ahead[2].result()
    state.client_awg.running = True
    load = state.processor_load()
    assert evaluated == ["bench-processor_0"] and load is state._processor_ahead[2].result()
    fresh, _ = _loaded_state(5, 1)
    fresh.client_awg.running = True
    np.testing.assert_array_equal(load.x_hat, fresh.processor_load().x_hat)


def test_samples_written_after_the_evaluation_ahead_are_evaluated_again():
    """A write into the samples after samples_loaded changes their key: the acquisition evaluates what they hold now,
    never the evaluation ahead of the older samples."""
    state, numbers = _loaded_state(4, 2)
    state.samples_loaded(state.client_awg)
    ahead = state._processor_ahead[2].result()
    channel = state.client_awg.channels[numbers[0]]
    channel.segments[1][:] = np.int8(37)  # the emulator's write of a piece, in place
    state.client_awg.segment_written(channel, 1)
    state.client_awg.running = True
    load = state.processor_load()
    assert load is not ahead and np.all(load.theta_rad == load.theta_rad[0])
    assert not np.array_equal(load.theta_rad, ahead.theta_rad)


def test_the_noise_seed_from_the_hash_taken_ahead_is_the_seed_hashed_at_the_trigger():
    """A session acquisition's noise seed hashes x_hat first (link/receivers._session_rng); the processor's
    evaluation hashes it ahead (ProcessorLoad.x_hat_sha256), off the trigger's path. Either way: the same seed."""
    from dataclasses import replace
    from types import SimpleNamespace

    from qslab.instruments.sim.link import receivers

    state = BenchState()
    c = state.params.client_processor
    awg = state.client_awg
    sps = awg.samples_per_symbol(state.params.server.symbol_rate_hz)
    awg.running = True
    for number in (c.awg_channel_beam_splitter, c.awg_channel_phase):
        channel = awg.channels[number]
        channel.output_enabled, channel.amplitude_vpp = True, 0.6
        channel.segments[1] = np.repeat(np.random.default_rng(number).integers(-128, 128, 3 * c.bins_per_row,
                                                                              dtype=np.int8), sps)
    load = state.processor_load()
    assert load.x_hat_sha256 is not None
    period = np.exp(1j * np.arange(4 * c.bins_per_row, dtype=float))
    ahead = receivers._SessionInputs(period, period.reshape(4, -1), load.x_hat, np.array([1, 3]),
                                     np.array([True, False]), load.x_hat_sha256)
    draws = []
    for inputs in (ahead, replace(ahead, x_hat_sha256=None)):
        bench = SimpleNamespace(session_repeats={}, params=SimpleNamespace(seed=7))
        draws += [receivers._session_rng(bench, inputs, 1000).random(4) for _ in range(2)]
    np.testing.assert_array_equal(draws[0], draws[2])
    assert not np.array_equal(draws[0], draws[1])  # the same state again: fresh noise (the repeat count)
    assert load.x_hat_sha256.copy().digest() == load.x_hat_sha256.digest()  # copied, never updated
