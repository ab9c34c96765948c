"""The session's picture: what the server verified and what the client classified, one PNG beside the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qslab.analysis.figure_files import save_tight

MAX_POINTS = 20_000


def plot_session(path, *, sent_snu: np.ndarray, returned_snu: np.ndarray, labels: np.ndarray,
                 predictions: np.ndarray, results: dict, line: tuple[float, float, float] | None = None,
                 samples: int | None = None) -> Path:
    """Left: returned vs sent quadratures of the verified rows with the fitted slope sqrt(eta T); right: the
    confusion matrix of the secure inference (rows: true digit, columns: predicted).

    A streamed session passes a uniform draw of its samples (at most MAX_POINTS), the fitted ``line`` (slope, least
    and largest sent quadrature) over all of them and their number ``samples``; otherwise all three come from the
    arrays."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    sent, returned = np.asarray(sent_snu, dtype=np.float64).ravel(), np.asarray(returned_snu, dtype=np.float64).ravel()
    if sent.size:
        pick = np.random.default_rng(0).choice(sent.size, size=min(sent.size, MAX_POINTS), replace=False)
        left.plot(sent[pick], returned[pick], ",", alpha=0.4, label=f"verification samples ({pick.size} shown)")
        slope, low, high = line if line is not None else (float(sent @ returned / (sent @ sent)), sent.min(), sent.max())
        ends = np.array([low, high])
        left.plot(ends, slope * ends, "r-", lw=1, label=f"slope {slope:.3f}")
        left.legend(fontsize=8)
    verification = results.get("verification") or {}
    left.set_title(f"server verification: {sent.size if samples is None else samples} samples, "
                   f"{'accepted' if results.get('verified') else 'REJECTED' if results.get('verified') is False else 'none'}"
                   f"\nT_hat {verification.get('transmittance_hat', float('nan')):.3f}, eps_hat "
                   f"{verification.get('excess_noise_hat_snu', float('nan')):.2e} SNU", fontsize=9)
    left.set_xlabel("sent quadrature (SNU)")
    left.set_ylabel("returned quadrature (SNU)")
    confusion = np.zeros((10, 10), dtype=int)
    for truth, guess in zip(np.asarray(labels), np.asarray(predictions)):
        if 0 <= guess < 10:
            confusion[int(truth), int(guess)] += 1
    right.imshow(confusion, cmap="Blues")
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            right.text(j, i, str(count), ha="center", va="center", fontsize=7)
    right.set_xticks(range(10))
    right.set_yticks(range(10))
    right.set_xlabel("predicted digit")
    right.set_ylabel("true digit")
    right.set_title(f"secure inference: {100 * results.get('accuracy', 0.0):.2f} % of {labels.size} images", fontsize=9)
    if results.get("run_id"):
        figure.suptitle(f"session {results['run_id']}", fontsize=10)
    path = save_tight(figure, path)
    plt.close(figure)
    return path
