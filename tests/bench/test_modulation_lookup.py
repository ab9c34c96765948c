"""The server's modulated field from per-value lookups equals the field evaluated on every sample.

bench._field_lookup evaluates each modulator once per value its int8 drive takes (256 codes, or 65536 (code,
previous code) pairs for the skewed Q drive) and looks the terms up: bit for bit the model evaluated on every
sample (Drive.volts, bench.sample_fields), so any change in the arithmetic (or in numpy's rounding of it) shows
up as a difference. bench._modulate looks them up once per run of equal samples and weighs each run by its
length: its symbol means and powers equal the per-sample sums (chunk by chunk as the bench walks the period) to
rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from qslab.instruments.sim import bench as bench_module
from qslab.instruments.sim.bench import Drive, sample_fields
from qslab.instruments.sim.bench_parameters import BenchParameters

SPS = 8


def per_sample_modulation(params, drives, carver_bias_v, iq_bias_v):
    """(symbol fields, carver power, output power) with the field computed on every sample."""
    period = next(d.codes.size for d in drives if d.codes is not None)
    step = bench_module._CHUNK_SYMBOLS * SPS
    fields, carver_energy, iq_energy = [], 0.0, 0.0
    for start in range(0, period, step):
        stop = min(start + step, period)
        carver_v, i_v, q_v = (d.volts(start, stop) for d in drives)
        carver, out = sample_fields(params, carver_bias_v, iq_bias_v, carver_v, i_v, q_v)
        out = np.broadcast_to(out, (stop - start,))
        carver_energy += float(np.sum(np.abs(np.broadcast_to(carver, (stop - start,))) ** 2))
        iq_energy += float(np.sum(np.abs(out) ** 2))
        fields.append(out.reshape(-1, SPS).mean(axis=1))
    return np.concatenate(fields), carver_energy / period, iq_energy / period


def random_drives(rng, symbols, delay_samples, off=()):
    """Carver, I and Q drives of random int8 codes (None where ``off`` says the channel plays nothing)."""
    return [Drive(None, 0.0, 0.0) if k in off else
            Drive(rng.integers(-128, 128, symbols * SPS, dtype=np.int8), 0.011 * (k + 1), 0.05 * k,
                  delay_samples if k == 2 else 0.0) for k in range(3)]


CASES = [
    (40000, 0.096, (0,)),    # a session: the carver not driven (CW), the Q drive 12 ps late; several chunks, a short one
    (40000, 0.096, ()),      # every channel driven
    (20000, 0.0, ()),        # no skew: 256-entry tables
    (3000, 1.7, ()),         # a delay of more than a sample
    (5000, 0.3, (1,)),       # the I channel off
    (5000, 0.0, (0, 2)),     # only the I channel driven
]


@pytest.mark.parametrize("symbols, delay_samples, off", CASES)
def test_lookup_matches_per_sample_evaluation_bit_for_bit(symbols, delay_samples, off):
    params = BenchParameters()
    drives = random_drives(np.random.default_rng(symbols), symbols, delay_samples, off)
    looked_up = bench_module._field_lookup(params, drives, 0.37, -0.21)
    for start, stop in ((0, 4096), (4096, symbols * SPS)):
        carver, out = sample_fields(params, 0.37, -0.21, *(d.volts(start, stop) for d in drives))
        carver_power, looked_out = looked_up(*(None if d.codes is None else d.table_index(start, stop) for d in drives))
        n = stop - start
        assert np.broadcast_to(looked_out, (n,)).tobytes() == np.broadcast_to(out, (n,)).tobytes()
        assert np.broadcast_to(carver_power, (n,)).tobytes() == (np.abs(np.broadcast_to(carver, (n,))) ** 2).tobytes()


@pytest.mark.parametrize("repeated", [False, True])
@pytest.mark.parametrize("symbols, delay_samples, off", CASES)
def test_the_modulation_summed_over_runs_is_the_per_sample_sum(symbols, delay_samples, off, repeated):
    """Random codes on every sample (a run per sample), or held over each symbol as an uploaded segment is (one or
    two runs per symbol): the symbol means and powers equal the per-sample sums to rounding."""
    params = BenchParameters()
    drives = random_drives(np.random.default_rng(symbols), symbols, delay_samples, off)
    if repeated:
        drives = [d if d.codes is None else Drive(np.repeat(d.codes[::SPS], SPS), d.scale_v, d.offset_v,
                                                  d.delay_samples) for d in drives]
    modulation = bench_module._modulate(params, drives, SPS, False, 0.37, -0.21)
    fields, carver_power, iq_power = per_sample_modulation(params, drives, 0.37, -0.21)
    assert np.allclose(modulation.symbol_fields, fields, rtol=1e-13, atol=1e-15)
    assert modulation.carver_power == pytest.approx(carver_power, rel=1e-13)
    assert modulation.iq_power == pytest.approx(iq_power, rel=1e-13)


def test_volts_table_holds_what_volts_gives_per_sample():
    rng = np.random.default_rng(7)
    for delay in (0.0, 0.4, 2.25):
        drive = Drive(rng.integers(-128, 128, 4096, dtype=np.int8), 0.013, -0.2, delay)
        looked_up = drive.volts_table()[drive.table_index(100, 3000)]
        assert looked_up.tobytes() == np.asarray(drive.volts(100, 3000), dtype=np.float64).tobytes()
