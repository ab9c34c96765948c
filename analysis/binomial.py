"""A test accuracy's confidence interval: the images are a sample, so "98 % of 200" is 95 % to 99.4 %."""

from __future__ import annotations

from qslab.analysis.distribution_tails import beta_isf, beta_ppf


def clopper_pearson(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion: it covers at least `confidence`
    for every true accuracy, where the normal approximation undercovers near 100 %."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"{correct} correct of {total}: expected 0 <= correct <= total, total > 0")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence!r}: expected a probability in (0, 1)")
    alpha = 1.0 - confidence
    lower = 0.0 if correct == 0 else float(beta_ppf(alpha / 2, correct, total - correct + 1))
    upper = 1.0 if correct == total else float(beta_isf(alpha / 2, correct + 1, total - correct))
    return lower, upper
