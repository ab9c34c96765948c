"""The accuracy's confidence interval covers the true accuracy at least at its stated level (Monte-Carlo)."""

import numpy as np
import pytest

from qslab.analysis.binomial import clopper_pearson


def test_the_issue_s_example():
    lower, upper = clopper_pearson(196, 200)
    assert (100 * lower, 100 * upper) == pytest.approx((94.96, 99.45), abs=0.01)  # "about 95-99.4 %"


@pytest.mark.parametrize("accuracy, images", [(0.98, 200), (0.9, 50), (0.995, 1000)])
def test_coverage_by_simulated_test_sets(accuracy, images):
    rng = np.random.default_rng(1)
    correct = rng.binomial(images, accuracy, 4000)
    covered = [lo <= accuracy <= hi for lo, hi in (clopper_pearson(int(k), images) for k in correct)]
    assert np.mean(covered) >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / 4000)


def test_edges_and_bad_input():
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="correct"):
        clopper_pearson(11, 10)
