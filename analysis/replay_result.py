"""Replay as an analyst calls it: a typed result with exactly the numbers `qslab replay --json` prints.

Why a dataclass: ``result.weight_leakage_bits_per_mode`` is checked by an editor and a type checker,
a misspelt key in a dict is not. The result is built from the very dict the command prints (``as_json()``
returns it unchanged), so the two can never disagree. Another calibration comes in as records (anything
with ``kind``, ``instrument``, ``parameters`` and ``estimate(key)``, e.g. ``RecordStore(dir).get(id)``) or
as MeasuredValues fields directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from qslab.analysis.estimate import Estimate
from qslab.analysis.replay import replay as replay_json


@dataclass(frozen=True)
class Change:
    """One compared result the replay changed: what the session recorded and what the replay computes."""

    recorded: object
    replayed: object


@dataclass(frozen=True)
class ReplayResult:
    """A session's results recomputed from its file (analysis/replay.py); ``as_json()`` is what the CLI prints."""

    file: str
    run_id: str | None
    status: str                                   # complete, aborted or running
    images: int
    correct: int
    accuracy: float
    accuracy_ci95: tuple[float, float] | None     # Clopper-Pearson 95 % interval
    verified: bool | None                         # None: nothing was verified
    mu_photons: float                             # photons per mode (recorded or replaced calibration)
    mu_photons_upper: float
    gain: float                                   # the client amplifier's power gain G, linear
    gain_upper: float
    failure_probability: float                    # of the whole report (union bound)
    weight_leakage_bits_per_mode: float           # per query, worst layer and mode: a bound
    weight_leakage_bits_per_mode_cumulative: float
    weight_leakage_bits_per_client: float
    weight_leakage_bits_per_mode_nominal: float   # the paper's Eq. 2: not a bound
    data_leakage_bound_bits_per_query: float      # an upper bound
    data_leakage_bound_bits_per_symbol: float
    data_leakage_bound_bits_cumulative: float
    data_leakage_bits_cramer_rao: float           # the paper's estimate: not a bound
    data_leakage_bits_prx: float                  # the paper's estimate: not a bound
    data_leakage_bits_per_bin: float              # per-bin photon counting: an achievable value
    verification: dict | None                     # T and eps estimates with their limits, the accept test
    security_report: dict                         # the whole report (security_report.SecurityReport as JSON)
    changes: dict[str, Change]                    # compared results that differ from the recorded ones
    json: dict = field(repr=False, compare=False)  # everything, as `qslab replay --json` prints it

    @classmethod
    def from_json(cls, result: dict) -> ReplayResult:
        """The typed view of a replay's dict (every field must be present: a missing one is a KeyError)."""
        values = {f.name: result[f.name] for f in fields(cls) if f.name not in ("json", "changes", "accuracy_ci95")}
        interval = result["accuracy_ci95"]
        return cls(**values, accuracy_ci95=None if interval is None else (float(interval[0]), float(interval[1])),
                   changes={key: Change(**change) for key, change in result["changes"].items()}, json=result)

    def as_json(self) -> dict:
        return self.json


def replay(path: str | Path, *, records=(), measured: dict[str, Estimate | None] | None = None,
           failure_probability: float | None = None, trusted: bool = True) -> ReplayResult:
    """The results of the session file at ``path``, recomputed through the live session's analysis code.

    ``records``: calibration records whose values replace the recorded ones (as ``qslab replay --calibration``);
    ``measured``: MeasuredValues field -> Estimate (None: not measured), applied after the records;
    ``failure_probability``: of the whole report (default: the session's); ``trusted``: False charges the
    server detector's loss and noise to the client (``--untrusted-detector``). A file that cannot be
    replayed is one RecordingError naming it; a record that measures nothing the results use, a ValueError.
    """
    override = {}
    for record in records:
        override.update(measured_from_record(record))
    override.update(measured or {})
    return ReplayResult.from_json(replay_json(path, override, failure_probability, trusted=trusted))


def measured_from_record(record) -> dict[str, Estimate | None]:
    """The session's calibrated values this record replaces: MeasuredValues field -> Estimate (None: the record
    does not measure it, so the session's value is dropped rather than mixed with the record's)."""
    def optional(key):
        return record.estimate(key) if key in record.parameters else None

    if record.kind == "photons":
        return {"mu_photons": record.estimate("server.photons_per_symbol")}
    if record.kind == "amplifier":
        return {"gain": record.estimate("client_amplifier.gain"),
                "amplifier_noise_figure_db": optional("client_amplifier.noise_figure_db")}
    if record.kind == "channel":  # the honest link: T, and the pilots' amplitude and excess noise it came with
        return {"transmittance": record.estimate("channel.transmittance"),
                "amplitude_transmittance": optional("channel.amplitude_transmittance"),
                "excess_noise_snu": optional("channel.excess_noise_snu")}
    if record.kind == "processor":  # its loss per pass scales the noise returned to the server (data leakage)
        return {"processor_loss_per_pass_db": optional("client_processor.loss_per_pass_db")}
    if record.kind == "homodyne" and record.instrument == "server_receiver":
        return {"server_efficiency": record.estimate("server_receiver.efficiency"),
                "server_electronic_noise_snu": record.estimate("server_receiver.electronic_noise_snu_at_operating_lo")}
    raise ValueError(f"calibration record {record.id} ({record.kind} of {record.instrument}) holds nothing the "
                     "session's results use; expected photons, amplifier, channel, processor or homodyne of server_receiver")
