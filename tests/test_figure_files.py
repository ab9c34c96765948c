"""save_tight (analysis/figure_files.py): the pixels of tight_layout + savefig, drawn once instead of twice."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from qslab.analysis.figure_files import save_tight  # noqa: E402


def _figure():
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5, 4), sharex=True)
    x = np.linspace(0.0, 1.0, 50)
    top.plot(x, np.sin(7 * x), label="a long legend entry")
    top.legend()
    top.set_ylabel("transmitted power (uW)")
    bottom.plot(x, 1e-5 * np.cos(7 * x), ".")
    bottom.set_xlabel("drive (V)")
    figure.suptitle("a title above both")
    return figure


def test_the_file_holds_the_pixels_of_tight_layout_and_savefig(tmp_path, monkeypatch):
    reference = _figure()
    reference.tight_layout()
    reference.savefig(tmp_path / "reference.png", dpi=100)
    plt.close(reference)
    draws = []
    original = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda figure, renderer: (draws.append(1), original(figure, renderer))[1])
    figure = _figure()
    assert save_tight(figure, tmp_path / "fast.png") == tmp_path / "fast.png"
    plt.close(figure)
    assert len(draws) == 1  # no layout pass of its own inside savefig
    pixels = [np.asarray(Image.open(tmp_path / name)) for name in ("reference.png", "fast.png")]
    np.testing.assert_array_equal(pixels[0], pixels[1])
