"""Hardware spread (issue 15): `calibrate all` on benches whose true parameters are perturbed by +-10 % recovers
every calibrated quantity within its stated uncertainty, and a station at a limit edge says what it cannot do.

Coverage factor: each estimate's truth within k of its stated one-sigma uncertainties, with k chosen so that
an honest calibration fails the whole comparison with probability 1 % (Bonferroni over the n estimates
compared: k = z at 0.01 / (2 n) two-sided, about 3.6 for the ~35 per bench). A fixed k = 3 over that many
estimates would fail an honest calibration about one run in five; an uncertainty that ignores a real error
(a datasheet gain taken as exact, a fit that reaches past the declared limit) fails it by far (z of 20 or more
before the datasheet tolerance of DECISIONS U).

The truths are read from the bench parameters in this test only; the procedures see roles.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from qcodes.instrument import Instrument

from qslab.calibration.records import RecordStore
from qslab.instruments.optical.awg_channels import AwgChannels
from qslab.instruments.optical.limits import Limit, LimitError
from qslab.instruments.optical.time_bin_processor import AwgTimeBinProcessor, ProcessorCalibration
from qslab.instruments.sim.bench_parameters import SPREAD_PATHS, BenchParameters, as_table, from_mapping, perturbed
from qslab.sequences.calibrations import KIND_NAMES, CalibrationOptions, record_kind
from qslab.sequences.config import parse_config
from qslab.sequences.station import LabStation

ROOT = Path(__file__).resolve().parents[2]
FAMILY_FALSE_ALARM = 0.01  # probability that an honest calibration fails the comparison of one bench
FRACTION = 0.10
SEEDS = (2, 3)          # both perturb the client's phase modulator past the 1 Vpp limit (a limit edge)
TIME_SCALE = 0.05       # real seconds per instrument second: locks and averaging at 1/20 of their time
HOMODYNE_POINTS = 2**19


def _perturbed_config(seed: int):
    """lab_config.toml with ``[bench.spread]`` (the config's way to a perturbed bench) and a fast clock."""
    data = tomllib.loads((ROOT / "lab_config.toml").read_text())
    data["bench"]["time_scale"] = TIME_SCALE
    data["bench"]["spread"] = {"fraction": FRACTION, "seed": seed}
    params = perturbed(from_mapping({k: v for k, v in data["bench"].items() if k != "spread"}), FRACTION, seed)
    config = parse_config(data, f"lab_config.toml perturbed by +-{FRACTION:g} (seed {seed})")
    return config, params


def _truth(params: BenchParameters, key: str) -> float | None:
    """The true value a calibrated key estimates, or None for a live quantity (measured at an operating point)."""
    head, _, leaf = key.partition(".")
    paths = params.paths()
    if leaf.endswith("vpi_at_awg_v"):   # V_pi at the AWG: V_pi at the modulator over the driver's true gain
        part = leaf[: -len("vpi_at_awg_v")]
        gain = f"{head}.{part}driver_gain" if head == "client_processor" else f"{head}.driver_gain"
        return paths[f"{head}.{part}vpi_v"] / paths[gain]
    return paths.get(key)


@pytest.mark.long
@pytest.mark.parametrize("seed", SEEDS)
def test_calibrate_all_recovers_perturbed_truths(seed, tmp_path):
    config, params = _perturbed_config(seed)
    defaults = from_mapping(tomllib.loads((ROOT / "lab_config.toml").read_text())["bench"])
    moved = [path for path in SPREAD_PATHS if params.get(path) != defaults.get(path)]
    assert len(moved) >= len(SPREAD_PATHS) - 2   # (a value of 0 stays 0)
    store = RecordStore(tmp_path / "records")
    options = CalibrationOptions.from_config(config, homodyne_points=HOMODYNE_POINTS)
    estimates = {}
    try:
        with LabStation(config) as station:
            for name in KIND_NAMES:
                for record in record_kind(name, station, store, options, tmp_path):
                    estimates.update(record.parameters)
    finally:
        Instrument.close_all()
    truths = {key: _truth(params, key) for key in estimates}
    compared = {key: estimate for key, estimate in sorted(estimates.items()) if truths[key] is not None}
    assert len(compared) >= 25, sorted(estimates)
    k = stats.norm.isf(FAMILY_FALSE_ALARM / (2 * len(compared)))
    outside = []
    for key, estimate in compared.items():
        z = (estimate.value - truths[key]) / estimate.uncertainty if estimate.uncertainty > 0 else np.inf
        if not abs(z) <= k:
            outside.append(f"{key}: {estimate.value:.6g} +- {estimate.uncertainty:.3g}, truth {truths[key]:.6g} "
                           f"(z {z:+.1f}, k {k:.2f})")
    assert not outside, outside


def test_perturbed_is_reproducible_bounded_and_refuses_a_bad_fraction():
    base = BenchParameters()
    one, again, other = perturbed(base, 0.1, 7), perturbed(base, 0.1, 7), perturbed(base, 0.1, 8)
    assert one == again and one != other
    for path in SPREAD_PATHS:
        value, nominal = one.get(path), base.get(path)
        assert abs(value - nominal) <= 0.1 * abs(nominal) + 1e-15, path
    assert from_mapping(as_table(one)) == one
    assert one.server_iq.vpi_v != base.server_iq.vpi_v and one.seed == base.seed
    with pytest.raises(ValueError, match="fraction"):
        perturbed(base, 1.5, 1)
    assert from_mapping({"spread": {"fraction": 0.1, "seed": 7}}) == one   # the config's [bench.spread]
    for bad, message in (({"fraction": 0.1}, r"^\[bench\] spread: expected a table with fraction and seed"),
                         ({"fraction": -0.1, "seed": 1}, r"^\[bench\] spread\.fraction: expected"),
                         ({"fraction": 0.1, "seed": "x"}, r"^\[bench\] spread\.seed: expected")):
        with pytest.raises(ValueError, match=message):
            from_mapping({"spread": bad})


def _processor(phase_vpi_v: float) -> AwgTimeBinProcessor:
    limit = Limit(1.0, "Vpp", "instruments.client_awg.limits.amplitude_max_vpp")
    channels = AwgChannels(None, (1, 2), amplitude_max=limit, name="client_processor")
    return AwgTimeBinProcessor(channels, ProcessorCalibration(3.2, phase_vpi_v, 7.0, 1.0))


def test_a_processor_at_the_limit_edge_says_what_it_cannot_reach_and_plays_within_it():
    edge = _processor(0.5033)    # the full phase range needs 1.0066 Vpp: 0.7 % of it is out of reach
    [note] = edge.reach()
    assert note == ("client_processor: its phase modulator reaches 99.3 % of phi in [-pi, pi) at the declared "
                    "instruments.client_awg.limits.amplitude_max_vpp = 1 Vpp (the full range needs 1.007 Vpp); "
                    "angles beyond are played at the nearest reachable one")
    x_hat = np.exp(1j * np.linspace(-np.pi, np.pi, 16, endpoint=False)) / 4.0   # phases up to -pi
    _, phase_v = edge.drive_v_for_unit_vectors(x_hat[None, :])
    assert np.max(np.abs(phase_v)) == pytest.approx(0.5)   # at the limit, not beyond
    assert _processor(0.45).reach() == []
    with pytest.raises(LimitError, match=r"^client_processor: its phase modulator reaches 83\.3 %"):
        _processor(0.6).reach()
