"""Every figure the CLI writes names each line and contour, and no contour label is cut or overlaps (issue 16, 5)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from cli_capture import cli  # noqa: E402
from figure_checks import figure_problems, record_figures  # noqa: E402
from shared_once import copy_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "lab_config.toml")
SESSION_FIGURES = {"homodyne-client_receiver.png", "homodyne-server_receiver.png", "photons-server_output.png",
                   "amplifier-client_amplifier.png", "server_iq_bias_transfer.png", "server_carver_bias_transfer.png",
                   "server_iq_rf_transfer_ch1.png", "server_carver_rf_transfer_ch3.png", "server_iq_iq_imbalance.png",
                   "server_iq_lock_null.png", "server_carver_lock_null.png", "processor-client_processor.png",
                   "channel-link.png", "session.png"}


def test_the_check_finds_an_unlabelled_dashed_line_and_a_cut_contour_label():
    figure, axes = plt.subplots(figsize=(3, 3))
    axes.plot([0, 1], [0, 1], label="data")
    axes.axhline(0.5, ls="--")
    axes.legend()
    x, y = np.meshgrid(np.linspace(0, 1, 50), np.linspace(0, 1, 50))
    contours = axes.contour(x, y, x + y, levels=[0.05, 1.0])
    axes.clabel(contours, fmt="%g", manual=[(0.02, 0.02), (0.5, 0.5)])
    figure.savefig(Path("/dev/null"), format="png")
    problems = figure_problems(figure)
    plt.close(figure)
    assert any("dashed or dotted line" in p for p in problems)
    assert any("contour label '0.05' is cut at the edge" in p for p in problems), problems


def test_the_session_and_its_calibrations_draw_named_lines_only(tmp_path, monkeypatch, first_cli_session):
    """The figures of a session in an empty store (its pre-flight calibrates every kind; tests/conftest.py runs it
    once, checking each figure as it is drawn) and of the security budget on its records."""
    code, err = first_cli_session["code"], first_cli_session["stderr"]
    assert code == 0, err
    saved = [(path, problems) for path, problems in first_cli_session["figures"]]
    calibration = copy_of(first_cli_session["calibration"], tmp_path / "cal")
    with record_figures(monkeypatch) as budget:
        code, _, err = cli("security-budget", "--config", CONFIG, "--calibration-dir", str(calibration),
                           "--figure", str(tmp_path / "budget.png"))
        assert code == 0, err
    saved += budget
    assert SESSION_FIGURES | {"budget.png"} <= {Path(path).name for path, _ in saved}
    assert {Path(path).name: problems for path, problems in saved if problems} == {}


def test_the_leakage_maps_and_the_sweep_name_every_line_and_contour(tmp_path, monkeypatch):
    with record_figures(monkeypatch) as saved:
        code, _, err = cli("leakage", "--mu", "6", "--gain", "1.3", "--map", str(tmp_path / "leakage.png"))
        assert code == 0, err
        code, _, err = cli("sweep", "--mu-points", "4", "--gains", "1.2", "1.5", "--images", "100", "--seeds", "1",
                           "--workers", "1", "--out", str(tmp_path / "sweep"), "--json")
        assert code == 0, err
    assert {Path(path).name for path, _ in saved} == {"leakage.png", "sweep.png"}
    assert {Path(path).name: problems for path, problems in saved if problems} == {}
