"""Replay: a session's results recomputed from its file alone, through the same analysis code as the live session.

Without changes the numbers equal the live session's exactly (the live session computes its
results from the same arrays, as stored: float32 quadratures, uint8 pixels). With another
calibration (mu, G, the server detector, the honest transmittance) or another bound (failure
probability, trusted or untrusted detector) the new results are reported with what changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from qslab.analysis import mnist, recording
from qslab.analysis.estimate import Estimate
from qslab.analysis.measured_values import MeasuredValues
from qslab.analysis.session_results import ImageTotals, results_from_totals, weight_leakage_from_totals
from qslab.analysis.session_figures import MAX_POINTS
from qslab.analysis.verified_samples import RunningFits, StreamedSamples, scatter_indices

CANDIDATE_SET_KEY = "candidate_set"     # settings: L, a declared finite candidate set (0: none)
CURIOUS_KEY = "curious_server"          # settings: the curious server's spec (data_leakage_curious.CuriousSpec)

COMPARED = ("accuracy", "verified", "weight_leakage_bits_per_mode", "weight_leakage_bits_per_mode_cumulative",
            "weight_leakage_bits_per_mode_nominal", "data_leakage_bound_bits_cumulative",
            "data_leakage_bits_cramer_rao", "data_leakage_bits_per_bin", "data_leakage_bound_bits_per_query",
            "mu_photons_upper", "gain_upper", "curious_server")


CHUNK_VALUES = 1 << 18  # numbers per array read back at once (1 MB of float32): flat memory, whatever the length


@dataclass
class Recorded:
    """What the session has recorded, gathered batch by batch in flat memory (analysis/session_results.ImageTotals)
    and its verified samples read back from the file it was recorded in (`path`) when the results need them: results
    from it equal a replay's, and the pooled computation on the same arrays to the order of additions. A live session
    (`empty`) sums the samples' first pass as it adds batches (`running`), so a read-back reads the file once."""

    images: ImageTotals
    verified_rows: list        # per layer: list of the rows verified per batch (counts)
    curious: list              # per batch: images a curious server counted (its counts are read from `path`)
    path: Path | None = None   # the session file holding the batches added so far
    batches: int = 0           # batches added so far
    _samples: tuple[int, StreamedSamples] | None = None  # (batches, their estimates): read once per batch count
    running: RunningFits | None = None  # pass 1 of the verified samples, summed batch by batch (None: from the file)
    scatter_request: tuple[int, int, int] | None = None  # (points, layer, seed) samples() keeps for `scatter`
    # until every batch added is in `path` (a live session's background appends): what reads the file back waits first
    committed: Callable[[], None] | None = None
    # each batch's sent samples as decoded from `path` the first time (recording/sent_blocks.py): decoded once, or kept
    # as the batch was added
    sent: recording.SentBlocks = field(default_factory=recording.SentBlocks)
    sample_counts: list = field(default_factory=list)  # per layer: the verified samples of the batches so far
    # per layer, every image its weights were sent to, and whose data it carried, up to the last batch added (None:
    # not counted)
    weight_images_sent: tuple[int, ...] | None = None
    data_images_sent: tuple[int, ...] | None = None

    @classmethod
    def empty(cls, layers: int, keep_images: int, path: str | Path | None = None, background: bool = False) -> Recorded:
        """Nothing yet; keep_images: the inputs kept for per-bin photon counting (settings' exact_leakage_images);
        background: the running fits on a thread that yields the CPU (a session's: analysis/workers.py)."""
        return cls(ImageTotals(int(keep_images)), [[] for _ in range(layers)], [], None if path is None else Path(path),
                   running=RunningFits(layers, CHUNK_VALUES, background), scatter_request=(MAX_POINTS, 0, 0),
                   sample_counts=[0] * layers)

    @classmethod
    def from_file(cls, session: recording.SessionFile) -> Recorded:
        """Every committed batch of `session`, read a slice at a time."""
        layers = len(session.layers)
        keep = session.settings.get("exact_leakage_images", 0) if isinstance(session.settings, dict) else 0
        recorded = cls.empty(layers, int(keep) if isinstance(keep, int) and keep >= 0 else 0, session.path)
        recorded.running = None  # the verified samples are in the file only: both passes read it
        for images, quadratures in session.image_chunks(CHUNK_VALUES):
            recorded.images.add(images.label, quadratures[0], quadratures[-1], mnist.preprocess(images.pixels))
        recorded.batches = session.batches_written
        recorded.sample_counts = [int(session.batch_table["sample_stop"][-1, k]) if recorded.batches else 0
                                  for k in range(layers)]
        recorded.verified_rows = [[int(np.size(rows)) for rows in session.verification(k, samples=False).rows]
                                  for k in range(layers)]
        if session.curious_spec is not None:
            recorded.curious = [session.images_written]
        recorded.weight_images_sent, recorded.data_images_sent = session.weight_images_sent, session.data_images_sent
        return recorded

    @property
    def labels(self) -> list:
        return self.images.labels

    def add(self, labels, pixels, captures, curious=None, sent=(None, None)) -> None:
        """One batch, after it was committed to `path`; `curious`: (image index, counts, counted rows), as written
        (only the number of images is kept: curious_outcome reads the counts back from the file); `sent`: the
        per-layer counts of weights and data written with it (None: not counted)."""
        self.weight_images_sent, self.data_images_sent = sent
        self.images.add(labels, captures[0].client_quadratures_snu, captures[-1].client_quadratures_snu,
                        mnist.preprocess(np.asarray(pixels)))
        if curious is not None:
            self.curious.append(len(curious[0]))
        for index, capture in enumerate(captures):
            self.verified_rows[index].append(int(np.size(capture.verified_rows)))
            if self.running is not None:
                self.running.add(index, capture.sent_snu, capture.returned_snu)
            self.sent.keep(index, self.batches, self.sample_counts[index], capture.sent_snu)
            self.sample_counts[index] += int(np.size(capture.sent_snu))
        self.batches += 1

    def samples(self) -> StreamedSamples:
        """The verified samples' estimates over every batch added so far, read back from `path` in chunks (kept until
        a batch is added)."""
        kept = self._samples
        if kept is None or kept[0] != self.batches:
            if self.committed is not None:
                self.committed()
            with recording.SessionFile.open(self.path, check_values=False) as session:
                self.samples_from(session)
        return self._samples[1]

    def samples_from(self, session: recording.SessionFile) -> StreamedSamples:
        """samples() from `session` (open, holding exactly the batches added)."""
        if session.batches_written != self.batches:
            raise recording.RecordingError(f"{session.path} holds {session.batches_written} committed batches, the "
                                           f"session recorded {self.batches}")
        streamed = StreamedSamples(lambda k: session.verification_chunks(k, CHUNK_VALUES, self.sent), len(session.layers),
                                   running=None if self.running is None else self.running.snapshot(),
                                   scatter=self.scatter_request)
        self._samples = (self.batches, streamed)
        return streamed

    def scatter(self, points: int, layer: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Up to `points` (sent, returned) samples of `layer` drawn uniformly without replacement (the figure's): kept by
        the last samples() when it was asked for them (scatter_request), else read back."""
        if self._samples is not None and self._samples[0] == self.batches \
                and self._samples[1].scatter_request == (points, layer, seed):
            return self._samples[1].scattered
        if self.committed is not None:
            self.committed()
        with recording.SessionFile.open(self.path, check_values=False) as session:
            total = int(session.batch_table["sample_stop"][-1, layer]) if session.batches_written else 0
            pick = scatter_indices(total, points, seed)
            sent, returned, start = [], [], 0
            for chunk_sent, chunk_returned in session.verification_chunks(layer, CHUNK_VALUES, self.sent):
                inside = pick[(pick >= start) & (pick < start + chunk_sent.size)] - start
                sent.append(chunk_sent[inside])
                returned.append(chunk_returned[inside])
                start += chunk_sent.size
        return (np.concatenate(sent), np.concatenate(returned)) if sent else (np.empty(0), np.empty(0))


def results_from_recorded(recorded: Recorded, settings: dict, measured: MeasuredValues, shapes, *,
                          failure_probability: float | None = None, trusted: bool = True) -> dict:
    """qslab.analysis.session_results on what was recorded (the live session and `qslab replay` both end here),
    with a declared candidate set's figures and a curious server's outcome when the settings hold them."""
    candidates = int(settings.get(CANDIDATE_SET_KEY) or 0)
    results = results_from_totals(
        recorded.images, recorded.samples(), measured=measured, modes=shapes[0].modes,
        rows=[shape.rows for shape in shapes],
        failure_probability=settings["failure_probability"] if failure_probability is None else failure_probability,
        false_alarm=settings["false_alarm"], exact_leakage_images=settings["exact_leakage_images"], trusted=trusted,
        verified_rows=[sum(layer) for layer in recorded.verified_rows],
        weights_path=settings.get("weights"), candidate_entropy_bits=math.log2(candidates) if candidates else None,
        weight_images_sent=recorded.weight_images_sent, data_images_sent=recorded.data_images_sent)
    if candidates:
        from qslab.analysis.data_leakage_curious import candidate_x_hat
        from qslab.analysis.data_leakage_report import finite_set_figures

        data = results["security_report"]["data_leakage"]
        data["finite_set"] = finite_set_figures(candidate_x_hat(candidates), data["photons_upper"], shapes[0].rows)
    if settings.get(CURIOUS_KEY) and recorded.curious:
        results["curious_server"] = curious_outcome(recorded, settings)
    return results


def curious_outcome(recorded: Recorded, settings: dict) -> dict:
    """The curious server's conclusions from its recorded counts (analysis/data_leakage_curious.py), read back from the
    file in slices (flat memory, whatever the session's length)."""
    from qslab.analysis.data_leakage_curious import CuriousSpec, streamed_attack_outcome

    with recording.SessionFile.open(recorded.path, check_values=False) as session:
        if session.images_written != sum(recorded.curious):
            raise recording.RecordingError(f"{session.path} holds {session.images_written} committed images, the "
                                           f"curious server counted {sum(recorded.curious)}")
        return streamed_attack_outcome(CuriousSpec.from_json(settings[CURIOUS_KEY]),
                                       lambda: session.curious_chunks(CHUNK_VALUES))


def projected_weight_leakage(recorded: Recorded, settings: dict, measured: MeasuredValues, shapes, queries: int,
                             samples=None, images_sent: tuple[int, ...] | None = None):
    """The session's weight-leakage report on what it recorded so far, totalled over `queries` queries and per layer
    `images_sent` passes of its weights (the session's cap is checked on it before each batch, on its running sums:
    `samples`; None: read from the file)."""
    return weight_leakage_from_totals(
        recorded.images.count, recorded.images.mode_shares, recorded.samples() if samples is None else samples,
        measured=measured,
        modes=shapes[0].modes, rows=[shape.rows for shape in shapes], failure_probability=settings["failure_probability"],
        false_alarm=settings["false_alarm"], queries=queries,
        verified_rows=[sum(layer) for layer in recorded.verified_rows], images_sent=images_sent)


def replay(path, measured_override: dict[str, Estimate | None] | None = None, failure_probability: float | None = None,
           trusted: bool = True) -> dict:
    """The results of a session file; `changes` lists what differs from the results the session recorded.

    ``measured_override``: MeasuredValues field -> Estimate (None: not measured) replacing the recorded one.
    """
    with recording.SessionFile.open(path) as session:
        settings, recorded_measured = replay_inputs(session)
        recorded = Recorded.from_file(session)
        try:
            recorded.samples_from(session)
        except recording.RecordingError:
            raise
        except ValueError as error:  # no modulation, a singular fit: name the file
            raise recording.RecordingError(f"{path}: its recorded values cannot be analysed ({error})") from None
        shapes = session.layers
        live = session.results or {}
        status, run_id = session.status, session.run_id
    try:
        measured = replace(recorded_measured, **(measured_override or {}))
        results = results_from_recorded(recorded, settings, measured, shapes,
                                        failure_probability=failure_probability, trusted=trusted)
    except ValueError as error:  # a value the analysis refuses (mu < 0, efficiency > 1, ...): name the file
        raise recording.RecordingError(f"{path}: its recorded values cannot be analysed ({error})") from None
    results = {"file": str(path), "run_id": run_id, **results, "safe_state": live.get("safe_state"), "status": status}
    results["changes"] = {key: {"recorded": live.get(key), "replayed": results[key]}
                          for key in COMPARED if key in live and differs(live[key], results[key])}
    return results


# floats closer than this are the same figure summed in another order: a file recorded before the session streamed
# its samples pooled them, its fit over the previous symbol in BLAS dots, whose error grows with the samples (5e-13
# relative at 2000 images); a replay computes with pairwise sums in chunks (verified_samples.py)
SAME_RELATIVE = 1e-10


def differs(recorded, replayed) -> bool:
    """Whether a replayed figure differs from the recorded one by more than the order of additions: floats beyond
    SAME_RELATIVE, all else exactly."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        return recorded.keys() != replayed.keys() or any(differs(recorded[k], replayed[k]) for k in recorded)
    if isinstance(recorded, list) and isinstance(replayed, list):
        return len(recorded) != len(replayed) or any(differs(a, b) for a, b in zip(recorded, replayed))
    if isinstance(recorded, float) and isinstance(replayed, float) and not isinstance(recorded, bool):
        return not math.isclose(recorded, replayed, rel_tol=SAME_RELATIVE, abs_tol=0.0)
    return recorded != replayed


# what the analysis reads from /meta (sequences/session.py writes it): settings key -> integer?
_SETTINGS = {"failure_probability": False, "false_alarm": False, "exact_leakage_images": True}


def replay_inputs(session: recording.SessionFile) -> tuple[dict, MeasuredValues]:
    """The settings and calibrated values a replay needs, checked: RecordingError naming the file and the entry."""
    path = session.path
    if session.images_written == 0:
        raise recording.RecordingError(f"{path} holds no committed batch (status {session.status}): nothing to replay")
    settings, calibrations = session.settings, session.calibrations
    if not isinstance(settings, dict):
        raise recording.RecordingError(f"{path}: /meta/settings_json is a JSON {type(settings).__name__}, "
                                       "expected an object")
    for key, integer in _SETTINGS.items():
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not value >= 0:
            raise recording.RecordingError(f"{path}: /meta/settings_json {key} is {value!r}, expected "
                                           f"{'an integer' if integer else 'a number'} >= 0")
    measured = calibrations.get("measured") if isinstance(calibrations, dict) else None
    if not isinstance(measured, dict):
        raise recording.RecordingError(f"{path}: /meta/calibrations_json has no object 'measured' (the calibrated "
                                       "values the session used)")
    try:
        return settings, MeasuredValues.from_json(measured)
    except ValueError as error:
        raise recording.RecordingError(f"{path}: /meta/calibrations_json {error}") from None
