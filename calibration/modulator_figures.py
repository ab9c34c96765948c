"""Modulator calibration figures: data, fit and residuals of each procedure, one PNG each."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from qslab.analysis.figure_files import save_tight
from qslab.calibration.modulator_fits import IQ_CONFIGS, FieldFit, MzmFit
from qslab.analysis.estimate import Estimate


def figure_path(figure_dir: str | Path | None, stem: str) -> Path:
    directory = Path(figure_dir) if figure_dir is not None else Path(tempfile.mkdtemp(prefix="qslab_modulators_"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{stem}.png"


def plot_transfer(volts: np.ndarray, power_w: np.ndarray, fit: MzmFit, title: str, xlabel: str, path: Path,
                  marks: dict[str, tuple[float, float]] | None = None) -> Path:
    """Data, fit and residuals; the fitted bias points marked (and ``marks``: label -> (V, W))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fine = np.linspace(float(np.min(volts)), float(np.max(volts)), 2000)
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), height_ratios=[3, 1])
    top.plot(volts, power_w * 1e6, ".", ms=3, label="data")
    top.plot(fine, fit.power_w(fine) * 1e6, "-", lw=1,
             label=(f"fit: V_pi = {fit.vpi_v:.4g} V, phi = {fit.phase_rad:.4g} rad, "
                    f"ER = {fit.extinction_ratio_db:.3g} dB"))
    for point, color in (("null", "k"), ("quadrature+", "g")):
        top.axvline(fit.bias_point_v(point).value, ls=":", color=color, lw=0.8, label=point)
    for label, (mark_v, mark_w) in (marks or {}).items():
        top.plot([mark_v], [mark_w * 1e6], "r*", ms=10, label=label)
    top.set_ylabel("power (uW)")
    top.set_title(title)
    top.legend(fontsize=8)
    bottom.plot(volts, (power_w - fit.power_w(volts)) * 1e6, ".", ms=3)
    bottom.set_ylabel("residual (uW)")
    bottom.set_xlabel(xlabel)
    save_tight(figure, path)
    plt.close(figure)
    return path


def plot_field(volts: np.ndarray, mean_v: np.ndarray, sigma_v: np.ndarray, fit: FieldFit, title: str,
               path: Path) -> Path:
    """Per-level quadrature (with standard errors), the fitted sinusoid, and normalised residuals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fine = np.linspace(float(np.min(volts)), float(np.max(volts)), 1000)
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), height_ratios=[3, 1])
    top.errorbar(volts, mean_v * 1e3, yerr=sigma_v * 1e3, fmt=".", ms=3, label="capture (level means)")
    top.plot(fine, fit.quadrature_v(fine) * 1e3, "-", lw=1, label=f"fit: V_pi at AWG = {fit.vpi_v:.4g} V")
    top.set_ylabel("homodyne output (mV)")
    top.set_title(title)
    top.legend(fontsize=8)
    bottom.plot(volts, (mean_v - fit.quadrature_v(volts)) / sigma_v, ".", ms=3)
    bottom.set_ylabel("residual / sigma")
    bottom.set_xlabel("AWG output (V)")
    save_tight(figure, path)
    plt.close(figure)
    return path


def plot_iq(means, sigma, model, parameters: dict[str, Estimate], key: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"({a:+d},{b:+d})" for a, b in IQ_CONFIGS]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), height_ratios=[3, 1])
    top.errorbar(range(len(means)), means * 1e6, yerr=sigma * 1e6, fmt="o", ms=4, label="meter")
    top.plot(range(len(means)), model * 1e6, "x", ms=8, label="fit")
    g, d = parameters[f"{key}.iq_gain_imbalance"], parameters[f"{key}.iq_phase_error_rad"]
    top.set_title(f"{key}: IQ imbalance g = {g.value:.4f} +- {g.uncertainty:.1g}, "
                  f"delta = {d.value:.4f} +- {d.uncertainty:.1g} rad", fontsize=10)
    top.set_ylabel("power (uW)")
    top.legend(fontsize=8)
    bottom.plot(range(len(means)), (means - model) / sigma, "o", ms=4)
    bottom.set_ylabel("residual / sigma")
    bottom.set_xticks(range(len(means)), labels, rotation=45)
    bottom.set_xlabel("(I, Q) drive in units of +-U")
    save_tight(figure, path)
    plt.close(figure)
    return path
