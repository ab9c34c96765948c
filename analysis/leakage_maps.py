"""The paper's Fig. 5-style leakage figures and the (mu, G - 1) leakage maps, computed vectorised."""

from __future__ import annotations


import numpy as np

from qslab.analysis import data_leakage, weight_leakage
from qslab.analysis.client_measurement import client_snr
from qslab.analysis.leakage_report import OperatingPoint

MU_RANGE = (1e-2, 1e2)
GAIN_MINUS_ONE_RANGE = (1e-3, 1e1)


def leakage_grid(point: OperatingPoint, n_points: int = 512, mu_range=MU_RANGE, gain_minus_one_range=GAIN_MINUS_ONE_RANGE) -> dict:
    """Weight and data leakage and client SNR over an n x n log grid of (mu, G - 1); rows index G."""
    mu = np.geomspace(*mu_range, n_points)
    gain = 1.0 + np.geomspace(*gain_minus_one_range, n_points)
    mu_grid, gain_grid = np.meshgrid(mu, gain)
    eps = weight_leakage.honest_excess_noise_snu(gain_grid, point.modes) + point.technical_noise
    weight = weight_leakage.holevo_verified_bits(weight_leakage.modulation_variance_snu(mu_grid), point.transmittance, eps)
    return {
        "mu": mu,
        "gain": gain,
        "weight_leakage_bits_per_mode": weight,
        "data_leakage_bits_cramer_rao": np.broadcast_to(data_leakage.cramer_rao_arxiv_bits(gain, point.modes)[:, None], weight.shape),
        "data_leakage_bits_prx": np.broadcast_to(data_leakage.prx_bits(gain, point.modes, point.rows)[:, None], weight.shape),
        "client_snr": client_snr(mu_grid, gain_grid),
    }


def leakage_vs_modes(point: OperatingPoint, modes=None) -> dict:
    """Leakage against the number of complex modes per row (the paper's 'dimension size' panel)."""
    modes = np.unique(np.geomspace(50, 5000, 200).astype(int)) if modes is None else np.asarray(modes)
    eps = weight_leakage.honest_excess_noise_snu(point.gain, modes) + point.technical_noise
    return {
        "modes": modes,
        "weight_leakage_bits_per_mode": weight_leakage.holevo_verified_bits(2 * point.mu + 1, point.transmittance, eps),
        "data_leakage_bits_cramer_rao": data_leakage.cramer_rao_arxiv_bits(point.gain, modes),
        "data_leakage_bits_prx": data_leakage.prx_bits(point.gain, modes, point.rows),
    }


def leakage_vs_loss(point: OperatingPoint, loss_db=None) -> dict:
    """Weight leakage against round-trip loss at fixed mu at the server's output (DECISIONS G)."""
    loss_db = np.linspace(0.0, 6.0, 241) if loss_db is None else np.asarray(loss_db)
    eps = weight_leakage.honest_excess_noise_snu(point.gain, point.modes) + point.technical_noise
    bits = weight_leakage.holevo_verified_bits(2 * point.mu + 1, 10 ** (-loss_db / 10), eps)
    return {"loss_db": loss_db, "weight_leakage_bits_per_mode": bits}


def leakage_vs_loss_and_noise(point: OperatingPoint, n_points: int = 200) -> dict:
    """Weight leakage over round-trip loss 0-3 dB and technical noise 0-0.2 SNU (the PRX third panel)."""
    loss_db = np.linspace(0.0, 3.0, n_points)
    xi = np.linspace(0.0, 0.2, n_points)
    loss_grid, xi_grid = np.meshgrid(loss_db, xi)
    eps = weight_leakage.honest_excess_noise_snu(point.gain, point.modes) + xi_grid
    bits = weight_leakage.holevo_verified_bits(2 * point.mu + 1, 10 ** (-loss_grid / 10), eps)
    return {"loss_db": loss_db, "technical_noise_snu": xi, "weight_leakage_bits_per_mode": bits}


def plot_leakage_maps(point: OperatingPoint, path, n_points: int = 512) -> None:
    """Write a six-panel PNG: leakage vs modes, vs loss, vs loss and noise, and the (mu, G-1) maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5), constrained_layout=True)
    label = f"mu = {point.mu:g}, G = {point.gain:g}"

    modes = leakage_vs_modes(point)
    ax = axes[0, 0]
    ax.loglog(modes["modes"], modes["weight_leakage_bits_per_mode"], label="weight (Eq. 2, per mode)")
    ax.loglog(modes["modes"], modes["data_leakage_bits_cramer_rao"], label="data (arXiv Cramer-Rao)")
    ax.loglog(modes["modes"], modes["data_leakage_bits_prx"], label=f"data (PRX form, M = {point.rows})")
    ax.axvline(point.modes, color="grey", ls=":", label=f"n = {point.modes}")
    ax.set(xlabel="complex modes per row n", ylabel="bits per symbol", title=f"Leakage vs modes ({label})")
    ax.legend(fontsize=8)

    loss = leakage_vs_loss(point)
    ax = axes[0, 1]
    ax.semilogy(loss["loss_db"], loss["weight_leakage_bits_per_mode"], label=f"Eq. 2 at {label}")
    for (x_db, name), style in zip(((3.0, "LAN"), (6.0, "MAN")), ("--", "-.")):
        ax.axvline(x_db, color="grey", ls=style, label=f"{name}: {x_db:g} dB round trip")
    ax.set(xlabel="round-trip loss (dB)", ylabel="weight leakage (bits per mode)", title="Weight leakage vs loss (mu fixed at server output)")
    ax.legend(fontsize=8, loc="lower right")

    noise = leakage_vs_loss_and_noise(point)
    ax = axes[0, 2]
    mesh = ax.pcolormesh(noise["loss_db"], noise["technical_noise_snu"], noise["weight_leakage_bits_per_mode"], shading="auto", cmap="viridis")
    ax.axhline(0.02, color="w", ls="--", lw=1, label="realistic technical noise 0.02 SNU")
    ax.legend(fontsize=8, loc="upper right")
    fig.colorbar(mesh, ax=ax, label="bits per mode")
    ax.set(xlabel="round-trip loss (dB)", ylabel="technical noise xi (SNU)", title="Weight leakage vs loss and noise")

    grid = leakage_grid(point, n_points)
    levels, styles = [0.025, 0.1, 1.0], [":", "--", "-"]
    for ax, key, title, unit in (
        (axes[1, 0], "weight_leakage_bits_per_mode", "Weight leakage (bits per mode)", "bits per mode"),
        (axes[1, 1], "data_leakage_bits_prx", f"Data leakage, PRX form (M = {point.rows})", "bits per data symbol"),
        (axes[1, 2], "client_snr", "Client SNR per product (2 mu g(G))", "client SNR F"),
    ):
        values = np.clip(grid[key], 1e-12, None)
        mesh = ax.pcolormesh(grid["mu"], grid["gain"] - 1.0, values, norm=LogNorm(vmin=max(values.min(), 1e-6), vmax=values.max()), shading="auto", cmap="magma")
        fig.colorbar(mesh, ax=ax, label=unit)
        # the weight-leakage levels on every map, named in the legend (inline labels get cut at the edges)
        ax.contour(grid["mu"], grid["gain"] - 1.0, grid["weight_leakage_bits_per_mode"], levels=levels, colors="c",
                   linewidths=1.0, linestyles=styles)
        handles = [Line2D([], [], color="c", lw=1.0, ls=style, label=f"weight leakage {level:g} bit/mode")
                   for level, style in zip(levels, styles)]
        handles += ax.plot(point.mu, point.gain - 1.0, "w*", ms=10, mec="k", ls="none",
                           label=f"operating point ({label})")
        ax.legend(handles=handles, fontsize=7, loc="lower left", framealpha=0.8)
        ax.set(xscale="log", yscale="log", xlabel="mu (photons per mode at server output)", ylabel="G - 1", title=title)
    fig.suptitle(f"qslab leakage: n = {point.modes} modes, M = {point.rows} rows, T = {point.transmittance:g}, xi = {point.technical_noise:g} SNU")
    fig.savefig(path, dpi=110)
    plt.close(fig)
