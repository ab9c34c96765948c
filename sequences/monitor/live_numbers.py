"""The numbers a running session has earned so far, computed from its file with the session's own analysis.

Accuracy and its exact 95 % interval (qslab.analysis.binomial), the server's verification on every verified
sample so far (session_results.verify_layers: T and eps, their estimates and finite-size limits, accept or
abort) and the weight leakage spent so far: images done x the per-query bound on what was verified so far
(replay.projected_weight_leakage, the very figure the session checks against its cap before each batch).
The failure budget is the one the session's final report uses on the same data, so after the last batch
these equal the session's results exactly (tests/test_monitor_browser.py checks it against `--json`).
"""

from __future__ import annotations

import numpy as np

from qslab.analysis.binomial import clopper_pearson
from qslab.analysis.failure_budget import report_budget
from qslab.analysis.replay import projected_weight_leakage
from qslab.analysis.security_report import has_enough_verification
from qslab.analysis.session_results import POOLED, verify_layers
from qslab.sequences.monitor.live_session import LiveSession


def progress(session: LiveSession) -> dict:
    settings = session.settings
    images_total = int(settings.get("images") or 0)
    batch_images = int(settings.get("batch_images") or 1)
    return {"batches_done": session.batches_written, "batches_total": -(-images_total // batch_images),
            "images_done": session.images_written, "images_total": images_total, "batch_images": batch_images}


def accuracy(session: LiveSession) -> dict | None:
    """Correct predictions among the committed images, with the Clopper-Pearson 95 % interval."""
    if not session.images_written:
        return None
    labels = np.concatenate(session.labels)
    guesses = np.concatenate(session.predictions)
    correct = int(np.sum(guesses.astype(np.int64) == labels.astype(np.int64)))
    low, high = clopper_pearson(correct, labels.size)
    return {"correct": correct, "images": int(labels.size), "accuracy": correct / labels.size, "ci95": [low, high]}


def security(session: LiveSession) -> dict:
    """Verification (pooled, as the session's report) and the weight leakage spent so far against the cap."""
    settings, measured = session.settings, session.measured
    cap = float(settings.get("max_weight_leakage_bits_per_mode") or 0.0)
    out = {"verification": None, "layers": [], "leakage": {"cap_bits_per_mode": cap if cap > 0 else None}}
    if not session.images_written:
        return out
    samples = session.samples()
    rows = [sum(layer) for layer in session.verified_rows]
    enough = [f"layer{i + 1}" for i, (size, r) in enumerate(zip(samples.sizes, rows)) if has_enough_verification(r, size)]
    pooled = [POOLED] if sum(samples.sizes) >= 2 else []
    budget = report_budget(settings["failure_probability"], measured, pooled + enough)
    checked = verify_layers(samples, measured, session.shapes[0].modes, failure_probability=settings["failure_probability"],
                            false_alarm=settings["false_alarm"], budget=budget)
    if checked is not None:
        out["verification"] = {key: checked[key] for key in (
            "transmittance_hat", "transmittance_min", "excess_noise_hat_snu", "excess_noise_max_snu", "accepted",
            "n_samples", "amplitude_threshold", "variance_threshold_snu")}
    weight = projected_weight_leakage(session, settings, measured, session.shapes, session.images_written,
                                      images_sent=session.weight_images_sent)
    out["layers"] = [{"layer": layer["layer"], "verified": layer["verified"], "method": layer["method"],
                      "bits_per_mode": layer["bits_per_mode"], "transmittance_min": layer["transmittance_min"],
                      "excess_noise_max_snu": layer["excess_noise_max_snu"], "verified_rows": layer["verified_rows"]}
                     for layer in weight.to_json()["layers"]]
    out["leakage"].update(per_query_bits_per_mode=weight.per_query_bits_per_mode,
                          spent_bits_per_mode=weight.cumulative_bits_per_mode, queries=weight.queries)
    return out
