"""Parameter sweeps of physics-mode accuracy over (mu, G), one Dask task per point.

A local cluster by default; pass the address of an existing scheduler to use a bigger one. Every
point is evaluated with the same noise seeds (common random numbers), so neighbouring points are
compared without extra noise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from qslab.analysis import data_leakage, weight_leakage
from qslab.analysis.client_measurement import client_snr
from qslab.analysis import mnist
from qslab.analysis.network import accuracy, load_weights, predict_secure
from qslab.instruments.sim.link.model import LinkEngine, LinkParameters
from qslab.sequences.simulation import BATCH_IMAGES, load_test_set


@dataclass(frozen=True)
class Point:
    """One (mu, G) point: mean photons per complex mode at the server's output, amplifier gain."""

    mu: float
    gain: float


@functools.lru_cache(maxsize=4)
def _cached_inputs(weights_path, images, data="test"):
    weights, metadata = load_weights(weights_path)
    if data == "validation":  # the held-out part of the training set the weights were trained without
        split_seed = _training_config(metadata).get("split_seed", 0)
        _, (x, labels), _ = mnist.load_split(split_seed)
        if not 1 <= images <= len(x):
            raise ValueError(f"images={images}; expected 1..{len(x)} validation images")
        return weights, x[:images], labels[:images]
    x, labels = load_test_set(images)
    return weights, x, labels


def _training_config(metadata) -> dict:
    import ast

    config = metadata.get("config", {})
    if isinstance(config, str):
        try:
            config = ast.literal_eval(config)
        except (ValueError, SyntaxError):
            return {}
    return config if isinstance(config, dict) else {}


def physics_accuracy(mu: float, gain: float, images: int = 10_000, seeds=(0,), weights_path=None,
                     data: str = "test") -> float:
    """Mean physics-mode accuracy over the given noise seeds, without verification (fast); data: "test" (the
    official test set) or "validation" (the training set's held-out split, for choosing an operating point)."""
    weights, x, labels = _cached_inputs(weights_path, images, data)
    engine = LinkEngine(LinkParameters(mu_photons=mu, gain=gain), verify_fraction=0.0)
    scores = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        predictions = np.concatenate([predict_secure(weights, x[i:i + BATCH_IMAGES], engine, rng)
                                      for i in range(0, len(x), BATCH_IMAGES)])
        scores.append(accuracy(predictions, labels))
    return float(np.mean(scores))


def evaluate_point(point: Point, images: int, seeds: tuple, weights_path) -> dict:
    """Accuracy and the leakage figures of one point (runs on a Dask worker).

    weight_leakage_bits_per_mode_verified is the bound a session would report at the default conditions
    (qslab.analysis.verified_planning.BoundConditions: T = 1, a default session's verified samples, failure
    probability 1e-10) and the worst mode of the evaluated images; the Eq. 2 figure beside it is not a bound.
    """
    from qslab.analysis.security_report import largest_mode_share
    from qslab.analysis.verified_planning import BoundConditions, expected_verified_bound_bits
    from qslab.sequences.simulation import layer_inputs

    n_modes = 392
    weights, x, _ = _cached_inputs(weights_path, images)
    conditions = BoundConditions(mode_share=max(largest_mode_share(v) for v in layer_inputs(weights, x)),
                                 limits=2 * len(weights), modes=n_modes)
    return {
        "mu": point.mu,
        "gain": point.gain,
        "accuracy": physics_accuracy(point.mu, point.gain, images, seeds, weights_path),
        "weight_leakage_bits_per_mode": float(weight_leakage.weight_leakage_bits_per_mode(point.mu, point.gain, n_modes)),
        "weight_leakage_assumes": "Eq. 2 at T = 1, a quantum-limited amplifier, the average mode: not a bound",
        "weight_leakage_bits_per_mode_verified": float(expected_verified_bound_bits(point.mu, point.gain, conditions)),
        "verified_bound_conditions": conditions.to_json(),
        "data_leakage_bits_cramer_rao": float(data_leakage.cramer_rao_arxiv_bits(point.gain, n_modes)),
        "data_leakage_bits_prx": float(data_leakage.prx_bits(point.gain, n_modes, 794)),
        "client_snr": float(client_snr(point.mu, point.gain)),
    }


CONNECT_TIMEOUT_S = 5.0


class SchedulerUnreachable(ConnectionError):
    """The --scheduler address did not answer within CONNECT_TIMEOUT_S."""


def open_client(scheduler: str | None = None, workers: int = 2, timeout_s: float = CONNECT_TIMEOUT_S,
                dashboard_address: str | None = None):
    """A Dask client: to `scheduler` if given (SchedulerUnreachable after ``timeout_s``), else to a new local
    cluster of `workers` processes whose dashboard serves on ``dashboard_address`` (None: none; a port in use:
    Dask takes a free one, see ``dashboard_link``)."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as error:  # dask raises OSError("Timed out trying to connect ...")
            raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {scheduler} within {timeout_s:g} s "
                                       f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=dashboard_address)
    return Client(cluster)


def dashboard_link(client) -> str | None:
    """The address of the Dask dashboard of ``client``'s scheduler (None when it serves none)."""
    try:
        services = client.scheduler_info().get("services") or {}
        return client.dashboard_link if "dashboard" in services else None
    except (KeyError, AttributeError, OSError):
        return None


def run_points(points, client, images: int = 2000, seeds=(0,), weights_path=None, progress: bool = True) -> list[dict]:
    """Evaluate every point on the cluster; results come back in the order of `points`."""
    from dask.distributed import as_completed

    futures = [client.submit(evaluate_point, p, images, tuple(seeds), weights_path, pure=False) for p in points]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[dict | None] = [None] * len(points)
    with tqdm(total=len(points), desc="sweep", unit="point", disable=not progress) as bar:
        for future in as_completed(futures):
            results[index[future.key]] = future.result()
            bar.update(1)
    return results


def rerun_command(settings: dict, weights_path=None) -> str:
    """The `qslab sweep` command line that evaluates the same points (the scheduler aside: results do not depend
    on it)."""
    options = [f"--mu-min {settings['mu_min']!r}", f"--mu-max {settings['mu_max']!r}",
               f"--mu-points {settings['mu_points']}", "--gains " + " ".join(repr(g) for g in settings["gains"]),
               f"--images {settings['images']}", f"--seeds {len(settings['seeds'])}"]
    if weights_path is not None:
        options.append(f"--weights {weights_path}")
    return "qslab sweep " + " ".join(options)


def sweep_record(points: list[dict], settings: dict, weights_path=None) -> dict:
    """sweep.json: the points with what a replay needs (settings, the weights' hash) and where they came from."""
    import datetime as dt
    import hashlib
    import platform
    from pathlib import Path

    import dask

    from qslab.analysis.network import default_weights_path
    from qslab.calibration.records import CodeVersion

    weights = Path(weights_path) if weights_path is not None else default_weights_path()
    version = CodeVersion.current()
    return {"schema": "qslab.sweep", "schema_version": 1, "settings": settings,
            "data": f"the first {settings['images']} images of the official MNIST test set, noise seeds "
                    f"{settings['seeds']}",
            "rerun": rerun_command(settings, weights_path),
            "weights": {"path": str(weights), "shipped": weights_path is None,
                        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()},
            "provenance": {"created_utc": dt.datetime.now(dt.timezone.utc).isoformat(),
                           "qslab_version": version.qslab_version, "git_revision": version.git_revision,
                           "python": platform.python_version(), "numpy": np.__version__, "dask": dask.__version__,
                           "host": platform.node(),
                           "model": "qslab.instruments.sim.link.model.LinkEngine, verify_fraction 0 (physics mode)"},
            "points": points}


def grid(mu_min: float, mu_max: float, mu_points: int, gains) -> list[Point]:
    """Log-spaced mu for each gain."""
    return [Point(float(mu), float(g)) for g in gains for mu in np.geomspace(mu_min, mu_max, mu_points)]


def plot_sweep(results: list[dict], path) -> None:
    """Accuracy vs photons per gain, and the accuracy map over (weight leakage, data leakage) like Fig. 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6), constrained_layout=True)
    gains = sorted({r["gain"] for r in results})
    for g in gains:
        rows = sorted((r for r in results if r["gain"] == g), key=lambda r: r["mu"])
        left.semilogx([r["mu"] for r in rows], [100 * r["accuracy"] for r in rows], "o-", ms=3, label=f"G = {g:g}")
    left.set(xlabel="mu (photons per mode at server output)", ylabel="test accuracy (%)", title="Physics-mode accuracy vs photons")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)

    w = np.log10([r["weight_leakage_bits_per_mode_verified"] for r in results])
    d = np.log10([max(r["data_leakage_bits_cramer_rao"], r["data_leakage_bits_prx"]) for r in results])
    acc = 100 * np.array([r["accuracy"] for r in results])
    handles = []
    if len(set(gains)) >= 2 and len(results) >= 6:
        levels = [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 96, 97, 98, 100]
        filled = right.tricontourf(w, d, acc, levels=levels, cmap="viridis")
        lined, styles = [90, 95, 96, 97], [":", "-.", "--", "-"]
        right.tricontour(w, d, acc, levels=lined, colors="w", linewidths=1.0, linestyles=styles)
        handles += [Line2D([], [], color="w", lw=1.0, ls=style, label=f"{level:g} % accuracy")
                    for level, style in zip(lined, styles)]  # a legend, not inline labels cut at the edges
        fig.colorbar(filled, ax=right, label="test accuracy (%)")
    handles.append(right.scatter(w, d, c="k", s=4, label="simulated (mu, G) points"))
    handles.append(right.axvline(-1, color="r", ls="--", lw=0.8, label="0.1 bit/mode (the paper's weight-leakage figure)"))
    handles.append(right.axhline(-2, color="r", ls=":", lw=0.8, label="0.01 bit/symbol (the paper's data-leakage figure)"))
    right.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3,
                 facecolor="0.6")  # below the map: nothing on it is hidden
    right.set(xlabel="log10 verified weight-leakage bound (bit/mode; T = 1, worst mode, finite size, 1e-10)",
              ylabel="log10 data leakage (bit/symbol, largest of Cramer-Rao and PRX)",
              title="Accuracy over (verified weight leakage, data leakage)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
