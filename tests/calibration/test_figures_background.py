"""calibration/figures.py: figures drawn in a second process are on disk when background() ends, the same files
as drawn in place; a figure that cannot be drawn is one FigureError naming it, after the others are drawn; the worker
serves the next background() of the process and ends with it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_capture import cli

from qslab.calibration import figures
from qslab.calibration.instrument_cost import homodyne_least_time_s, least_time_s

pytestmark = pytest.mark.usefixtures("figures_drawn")  # (the suite draws none unless a test asks: tests/conftest.py)


def test_with_figures_off_nothing_is_drawn_and_no_worker_started(tmp_path, monkeypatch):
    monkeypatch.setenv("QSLAB_FIGURES", "off")
    with figures.background():
        assert figures._active is None  # no worker process (its matplotlib import alone is a second of CPU)
        figures.draw(Path.write_text, tmp_path / "a.txt", "a")
    figures.draw(Path.write_text, tmp_path / "b.txt", "b")
    assert not any(tmp_path.iterdir())


def test_a_bad_figures_setting_is_one_line_before_anything_runs(monkeypatch):
    monkeypatch.setenv("QSLAB_FIGURES", "maybe")
    with pytest.raises(ValueError, match="QSLAB_FIGURES='maybe'; expected 'on' or 'off'"):
        figures.wanted()
    code, out, err = cli("session", "--images", "1")
    assert code == 2 and out == "" and err == "qslab session: error: $QSLAB_FIGURES='maybe'; expected 'on' or 'off'\n"


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


def test_the_next_background_use_hands_its_figures_to_the_same_worker(tmp_path):
    with figures.background():
        figures.draw(Path.write_text, tmp_path / "e.txt", "e")
        first = figures._active.process
    with figures.background():
        figures.draw(Path.write_text, tmp_path / "f.txt", "f")
        assert figures._active.process is first  # matplotlib is imported once per process, not once per session
    assert first.poll() is None and (tmp_path / "f.txt").read_text() == "f"


def test_a_worker_that_died_between_uses_is_replaced_and_a_failed_figure_does_not_end_it(tmp_path):
    with pytest.raises(figures.FigureError):
        with figures.background():
            figures.draw(Path.read_text, tmp_path / "missing.png")
    kept = figures._kept  # a figure that failed answered its error: the worker stays
    assert kept is not None and kept.process.poll() is None
    kept.process.kill()
    kept.process.wait()
    with figures.background():
        figures.draw(Path.write_text, tmp_path / "g.txt", "g")
        assert figures._active is not kept
    assert (tmp_path / "g.txt").read_text() == "g" and kept.process.returncode is not None


def test_the_kept_worker_ends_with_the_process_that_started_it(tmp_path):
    script = ("from pathlib import Path\nfrom qslab.calibration import figures\n"
              f"with figures.background():\n    figures.draw(Path.write_text, Path({str(tmp_path / 'h.txt')!r}), 'h')\n"
              "print(figures._kept.process.pid)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    worker = int(done.stdout.split()[-1])
    assert (tmp_path / "h.txt").read_text() == "h"
    with pytest.raises(ProcessLookupError):  # waited for at exit: gone, not a zombie nor still running
        os.kill(worker, 0)
