"""The client's processor load worked out ahead (BenchState.prepare_processor_load, when the client's AWG starts): the
acquisition after it finds that very load, the same bits as one evaluated at the acquisition, and a load worked out
for what was played before a change is never kept."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from qslab.analysis.givens import unit_vector_from_angles
from qslab.instruments.sim import bench as bench_module
from qslab.instruments.sim.bench import BenchState
from qslab.instruments.sim.bench_parameters import from_mapping
from qslab.instruments.sim.emulators.keysight_m8195a import KeysightM8195AEmulator

ROWS = 3


def playing_processor(seed: int = 1, state: BenchState | None = None) -> BenchState:
    """A bench whose client AWG holds ROWS rows of random processor codes on both channels, outputs on, stopped."""
    state = BenchState(from_mapping({})) if state is None else state
    c, awg = state.params.client_processor, state.client_awg
    sps = awg.samples_per_symbol(state.params.server.symbol_rate_hz)
    rng = np.random.default_rng(seed)
    for number in (c.awg_channel_beam_splitter, c.awg_channel_phase):
        channel = awg.channels[number]
        channel.segments[1] = np.repeat(rng.integers(-100, 100, ROWS * c.bins_per_row, dtype=np.int8), sps)
        awg.segment_written(channel, 1)
        channel.output_enabled = True
    return state


def expected_x_hat(state: BenchState) -> np.ndarray:
    """x_hat from the codes by the processor's transfer functions, written out here (the module docstring's chain)."""
    c, awg = state.params.client_processor, state.client_awg
    sps = awg.samples_per_symbol(state.params.server.symbol_rate_hz)
    volts = []
    for number in (c.awg_channel_beam_splitter, c.awg_channel_phase):
        channel = awg.channels[number]
        codes = channel.segments[1][sps // 2::sps].astype(np.float64)
        volts.append(channel.offset_v + 0.5 * channel.amplitude_vpp / 127.0 * codes)
    theta = np.pi * c.beam_splitter_driver_gain * volts[0] / (2.0 * c.beam_splitter_vpi_v) + c.beam_splitter_theta_offset_rad
    phi = np.pi * c.phase_driver_gain * volts[1] / c.phase_vpi_v
    return unit_vector_from_angles(theta.reshape(ROWS, -1), phi.reshape(ROWS, -1))


def test_the_client_awg_start_works_the_load_out_and_the_acquisition_finds_it():
    state = BenchState(from_mapping({}))
    emulator = KeysightM8195AEmulator(state, state.params.client_processor.awg)  # (its reset clears the AWG)
    assert emulator.awg is state.client_awg
    playing_processor(state=state)
    emulator.handle(b":INIT:IMM\n")
    ahead = bench_module._ahead_worker().submit(lambda: state._processor).result()  # after the worker's job
    assert ahead is not None, "the client AWG's start did not work the load out"
    load = state.processor_load()
    assert load is ahead[2]  # found, not worked out again
    np.testing.assert_array_equal(load.x_hat, expected_x_hat(state))
    assert load.x_hat_digest.digest() == hashlib.blake2b(load.x_hat.tobytes(), digest_size=16).digest()


def test_the_server_awg_start_works_nothing_out():
    state = BenchState(from_mapping({}))
    emulator = KeysightM8195AEmulator(state, "awg")
    playing_processor(state=state)
    emulator.handle(b":INIT:IMM\n")
    assert bench_module._ahead_worker().submit(lambda: state._processor).result() is None


def test_a_load_worked_out_for_what_was_played_before_a_change_is_not_kept(monkeypatch):
    """A new upload lands while the load is worked out (outside the lock): that load is dropped and the new one
    returned, as if the upload had come first."""
    state = playing_processor()
    state.client_awg.running = True
    evaluate = bench_module._evaluate_processor
    other = playing_processor(seed=2)
    calls = []

    def upload_meanwhile(*args):
        calls.append(args)
        if len(calls) == 1:
            with state.lock:
                for number, channel in other.client_awg.channels.items():
                    state.client_awg.channels[number].segments[1] = channel.segments.get(1)
                    state.client_awg.segment_written(state.client_awg.channels[number], 1)
        return evaluate(*args)

    monkeypatch.setattr(bench_module, "_evaluate_processor", upload_meanwhile)
    load = state.prepare_processor_load().result()
    assert len(calls) == 2
    np.testing.assert_array_equal(load.x_hat, expected_x_hat(other))
    assert state.processor_load() is load


@pytest.mark.parametrize("ahead", [False, True])
def test_a_stopped_client_awg_has_no_load(ahead):
    state = playing_processor()
    assert (state.prepare_processor_load().result() if ahead else state.processor_load()) is None
