"""Replay: a session's results recomputed from its file alone, through the same analysis code as the live session.

Without changes the numbers equal the live session's exactly (the live session computes its
results from the same arrays, as stored: float32 quadratures, uint8 pixels). With another
calibration (mu, G, the server detector, the honest transmittance) or another bound (failure
probability, trusted or untrusted detector) the new results are reported with what changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from qslab.analysis import mnist, recording
from qslab.analysis.estimate import Estimate
from qslab.analysis.measured_values import MeasuredValues
from qslab.analysis.session_results import session_results, session_weight_leakage

CANDIDATE_SET_KEY = "candidate_set"     # settings: L, a declared finite candidate set (0: none)
CURIOUS_KEY = "curious_server"          # settings: the curious server's spec (data_leakage_curious.CuriousSpec)

COMPARED = ("accuracy", "verified", "weight_leakage_bits_per_mode", "weight_leakage_bits_per_mode_nominal",
            "data_leakage_bits_cramer_rao", "data_leakage_bits_per_bin", "data_leakage_bound_bits_per_query",
            "mu_photons_upper", "gain_upper", "curious_server")


@dataclass
class Recorded:
    """What the session has recorded, kept in memory as stored (float32, uint8): results from it equal a replay's."""

    labels: list
    pixels: list
    quadratures: list        # per layer: list of [B, rows] arrays
    samples: list            # per layer: list of (sent, returned) arrays
    verified_rows: list | None = None  # per layer: list of the rows verified per batch (counts)
    curious: list | None = None  # per batch: (image index, counts, counted rows) of a curious server, else None

    @classmethod
    def empty(cls, layers: int) -> Recorded:
        return cls([], [], [[] for _ in range(layers)], [[] for _ in range(layers)], [[] for _ in range(layers)], [])

    @classmethod
    def from_file(cls, session: recording.SessionFile) -> Recorded:
        layers = len(session.layers)
        images = session.images
        verification = [session.verification(i) for i in range(layers)]
        curious = session.curious_server
        return cls([images.label], [images.pixels], [[session.client_quadratures_snu(i)] for i in range(layers)],
                   [[(v.sent_snu, v.returned_snu)] for v in verification],
                   [[int(np.size(rows)) for rows in v.rows] for v in verification],
                   [] if curious is None else [(images.index, curious[1], curious[2])])

    def add(self, labels, pixels, captures, curious=None) -> None:
        """One batch; `curious`: (image index, counts, counted rows) of a curious server."""
        self.labels.append(np.asarray(labels))
        self.pixels.append(np.asarray(pixels))
        if curious is not None:
            self.curious.append(tuple(np.asarray(part) for part in curious))
        for index, capture in enumerate(captures):
            self.quadratures[index].append(capture.client_quadratures_snu)
            self.samples[index].append((capture.sent_snu, capture.returned_snu))
            self.verified_rows[index].append(int(np.size(capture.verified_rows)))

    def pooled_samples(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.concatenate([s.ravel() for s, _ in layer]), np.concatenate([r.ravel() for _, r in layer]))
                for layer in self.samples if layer]


def results_from_recorded(recorded: Recorded, settings: dict, measured: MeasuredValues, shapes, *,
                          failure_probability: float | None = None, trusted: bool = True) -> dict:
    """qslab.analysis.session_results on the recorded arrays (the live session and `qslab replay` both end here),
    with a declared candidate set's figures and a curious server's outcome when the settings hold them."""
    candidates = int(settings.get(CANDIDATE_SET_KEY) or 0)
    results = session_results(
        labels=np.concatenate(recorded.labels), layer1_quadratures_snu=np.concatenate(recorded.quadratures[0]),
        last_quadratures_snu=np.concatenate(recorded.quadratures[-1]),
        layer1_inputs=mnist.preprocess(np.concatenate(recorded.pixels)),
        verification_samples=recorded.pooled_samples(), measured=measured, modes=shapes[0].modes,
        rows=[shape.rows for shape in shapes],
        failure_probability=settings["failure_probability"] if failure_probability is None else failure_probability,
        false_alarm=settings["false_alarm"], exact_leakage_images=settings["exact_leakage_images"], trusted=trusted,
        verified_rows=None if recorded.verified_rows is None else [sum(layer) for layer in recorded.verified_rows],
        weights_path=settings.get("weights"), candidate_entropy_bits=math.log2(candidates) if candidates else None)
    if candidates:
        from qslab.analysis.data_leakage_curious import candidate_x_hat
        from qslab.analysis.data_leakage_report import finite_set_figures

        data = results["security_report"]["data_leakage"]
        data["finite_set"] = finite_set_figures(candidate_x_hat(candidates), data["photons_upper"], shapes[0].rows)
    if settings.get(CURIOUS_KEY) and recorded.curious:
        results["curious_server"] = curious_outcome(recorded, settings)
    return results


def curious_outcome(recorded: Recorded, settings: dict) -> dict:
    """The curious server's conclusions from its recorded counts (analysis/data_leakage_curious.py)."""
    from qslab.analysis.data_leakage_curious import CuriousSpec, attack_outcome

    index, counts, rows = (np.concatenate(part) for part in zip(*recorded.curious))
    return attack_outcome(CuriousSpec.from_json(settings[CURIOUS_KEY]), counts, rows,
                          np.concatenate(recorded.labels), index)


def projected_weight_leakage(recorded: Recorded, settings: dict, measured: MeasuredValues, shapes, queries: int):
    """The session's weight-leakage report on what it recorded so far, totalled over `queries` queries (the
    session's cap is checked on it before each batch)."""
    return session_weight_leakage(
        layer1_quadratures_snu=np.concatenate(recorded.quadratures[0]),
        layer1_inputs=mnist.preprocess(np.concatenate(recorded.pixels)),
        verification_samples=recorded.pooled_samples(), measured=measured, modes=shapes[0].modes,
        rows=[shape.rows for shape in shapes], failure_probability=settings["failure_probability"],
        false_alarm=settings["false_alarm"], queries=queries,
        verified_rows=None if recorded.verified_rows is None else [sum(layer) for layer in recorded.verified_rows])


def replay(path, measured_override: dict[str, Estimate | None] | None = None, failure_probability: float | None = None,
           trusted: bool = True) -> dict:
    """The results of a session file; `changes` lists what differs from the results the session recorded.

    ``measured_override``: MeasuredValues field -> Estimate (None: not measured) replacing the recorded one.
    """
    with recording.SessionFile.open(path) as session:
        settings, recorded_measured = replay_inputs(session)
        recorded = Recorded.from_file(session)
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
                          for key in COMPARED if key in live and live[key] != results[key]}
    return results


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
