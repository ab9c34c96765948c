"""calibration/figures.py: figures drawn in a second process are on disk when background() ends, the same files
as drawn in place; a figure that cannot be drawn is one FigureError naming it, after the others are drawn."""

import os
from pathlib import Path

import pytest

from qslab.calibration import figures
from qslab.calibration.instrument_cost import homodyne_least_time_s, least_time_s


# the worker imports a figure's function by name: a library function stands in for a plot (a test module is not
# importable there)
def test_background_figures_are_on_disk_when_it_ends_and_a_closure_is_drawn_in_place(tmp_path):
    with figures.background():
        figures.draw(Path.write_text, tmp_path / "a.txt", "a")
        figures.draw(lambda path: Path(path).write_text(f"b {os.getpid()}"), tmp_path / "b.txt")  # not picklable
    assert (tmp_path / "a.txt").read_text() == "a"
    assert (tmp_path / "b.txt").read_text() == f"b {os.getpid()}"


def test_outside_background_a_figure_is_drawn_in_place(tmp_path):
    figures.draw(Path.write_text, tmp_path / "c.txt", "c")
    assert (tmp_path / "c.txt").read_text() == "c"


def test_a_failed_figure_is_one_error_naming_it_and_the_rest_are_drawn(tmp_path):
    with pytest.raises(figures.FigureError, match="read_text: FileNotFoundError") as caught:
        with figures.background():
            figures.draw(Path.read_text, tmp_path / "missing.png")
            figures.draw(Path.write_text, tmp_path / "d.txt", "d")
    assert "1 calibration figure" in str(caught.value) and (tmp_path / "d.txt").read_text() == "d"


def test_least_times_follow_the_averaging_law_and_the_fisher_floor():
    # statistical only: the same uncertainty (within 1 %) needs the time it took, / 1.01^2
    assert least_time_s(10.0, 0.1, 0.1) == pytest.approx(10.0 / 1.01**2)
    # systematics dominate: far less time gives the same total within 1 %
    assert least_time_s(10.0, 1.0, 0.1) < 10.0 * 0.1**2 / 0.02 * 1.0001
    # S = 1, V_el = 0: a variance to u from n samples needs n = 2 / u^2
    assert homodyne_least_time_s(1.0, 0.0, 0.01, 1e-9) == pytest.approx(2e4 * 1e-9)
