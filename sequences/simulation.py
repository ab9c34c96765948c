"""Secure inference of the MNIST test set on the simulated link: accuracy, verification, leakage.

`physics` mode runs every product through the optical model of instruments/sim/link/model.py and
lets the server verify a random fraction of rows; `paper` mode runs the authors' abstract model
y = x_hat.(sW) + N(0, 1) at their mapping F = sqrt(mu g(G)) (DECISIONS A), for comparison only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from qslab.analysis import data_leakage, mnist, verification
from qslab.analysis.binomial import clopper_pearson
from qslab.analysis.blas_threads import one_blas_thread
from qslab.analysis.client_measurement import snr_factor
from qslab.analysis.failure_budget import report_budget
from qslab.analysis.security_report import (WeightLeakage, has_enough_verification, largest_mode_share,
                                            layer_bound_from_estimate)
from qslab.analysis.leakage_report import OperatingPoint, leakage_summary
from qslab.analysis.network import PaperEngine, load_weights, predict_secure
from qslab.analysis.verified_samples import FLOAT32_BLOCK_SAMPLES, TableRecord, TableSamples
from qslab.instruments.sim.link.model import LinkEngine, LinkParameters

MODES = ("physics", "paper")
BATCH_IMAGES = 1000  # part of the random-stream layout: a seed reproduces a run only at the same batch size


@dataclass(frozen=True)
class SimulationSettings:
    """One simulated run; photon numbers per complex mode at the server's output."""

    mu: float
    gain: float
    images: int = 10_000
    seeds: int = 3
    mode: str = "physics"
    weights: str | None = None
    verify_fraction: float = 0.01
    seed: int = 0
    failure_probability: float = 1e-10
    false_alarm: float = 1e-3
    exact_leakage_images: int = 500

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}; expected one of {MODES}")


def paper_scaling_f(mu, gain):
    """The authors' `Maps.m` mapping from photons to their noise scaling, F = sqrt(mu g(G))."""
    return float(np.sqrt(mu * snr_factor(gain)))


def load_test_set(images: int):
    """The first `images` of the official 10k test set, preprocessed to [-1, 1] (DECISIONS H)."""
    x, labels = mnist.load_mnist("test")
    if not 1 <= images <= len(x):
        raise ValueError(f"images={images}; expected 1..{len(x)}")
    return mnist.preprocess(x[:images]), labels[:images].astype(np.int64)


def run_seed(settings: SimulationSettings, weights, x, labels, seed: int, progress_bar=None):
    """Accuracy and the server's verification records of one noise seed, in batches.

    The records (VerificationRecord, one per batch and verified layer) are kept as they are: the
    server pools their samples only when it runs the verification (verify_samples). None when no
    row was verified (paper mode, or verify_fraction = 0).
    """
    acc, pairs = run_seed_by_layer(settings, weights, x, labels, seed, progress_bar)
    return acc, (None if pairs is None else [record for _, record in pairs])


def image_batches(x) -> list[np.ndarray]:
    """The images in batches of BATCH_IMAGES (views, in order)."""
    return [x[start:start + BATCH_IMAGES] for start in range(0, len(x), BATCH_IMAGES)]


def run_seed_by_layer(settings: SimulationSettings, weights, x, labels, seed: int, progress_bar=None,
                      engine: LinkEngine | None = None, batches: list[np.ndarray] | None = None):
    """run_seed with each record's layer index: (accuracy, [(layer, VerificationRecord)] or None).

    ``engine``: physics mode's LinkEngine for these settings, when the caller keeps one across seeds (it packs each
    layer's weights once; a new seed's Generator starts its own normal stream, so the draws are the same).
    ``batches``: image_batches(x), when the caller keeps them across seeds too: the engine then finds its kept
    first-layer inputs by identity instead of comparing every batch's 6 MB of pixels."""
    batches = image_batches(x) if batches is None else batches
    rng = np.random.default_rng(seed)
    correct = 0
    records = []
    if settings.mode == "paper":
        engine = PaperEngine(paper_scaling_f(settings.mu, settings.gain))
    elif engine is None:
        engine = physics_engine(settings)
    with one_blas_thread():  # the same bits whatever the environment's threads (simulate); physics: the other core
        # draws the verified samples' normals (NormalStream)
        for start, images in zip(range(0, len(x), BATCH_IMAGES), batches):
            # the link model normalises each layer's inputs itself (encoding.unit_vectors), the paper's model does not
            predictions = predict_secure(weights, images, engine, rng, engine_normalises=settings.mode == "physics")
            correct += int(np.sum(predictions == labels[start:start + len(images)]))
            for layer, output in getattr(engine, "outputs", {}).items():
                record = output.verification
                if record.row_indices.size:
                    records.append((layer, record))
            if progress_bar is not None:
                progress_bar.update(len(predictions))
    return correct / len(x), (records or None)


def physics_engine(settings: SimulationSettings) -> LinkEngine:
    """The optical model's layer engine at the settings' operating point and verified fraction. It keeps every batch's
    first-layer encoding and noiseless outcomes (~13 MB per 1000 images) for the next seeds, which send the same
    images: the same bits, a quarter less work per seed on the thread that runs the inference."""
    return LinkEngine(LinkParameters(mu_photons=settings.mu, gain=settings.gain), settings.verify_fraction,
                      first_layer_batches=-(-settings.images // BATCH_IMAGES))


def pooled_samples(records) -> tuple[np.ndarray, np.ndarray]:
    """The verified samples of every record pooled into two flat float64 arrays (sent, returned), in order.

    The array route, kept as the reference the summed route (verified_samples) is checked against."""
    total = sum(record.returned_quadratures_snu.size for record in records)
    sent, returned = np.empty(total), np.empty(total)
    offset = 0
    for record in records:
        size = record.returned_quadratures_snu.size
        record.write_sent_quadratures_snu(sent[offset:offset + size])
        returned[offset:offset + size] = record.returned_quadratures_snu.ravel()
        offset += size
    return sent, returned


def record_chunks(records) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(sent, returned) quadratures of the records in capture order, a few images at a time, both float32 (the chunks
    analysis.verified_samples.Float32Samples reads: the generic route record_tables' is checked against).

    The sent ones are written into one reused buffer (2 Re alpha or 2 Im alpha per row, as the server chose), so
    that a run's ~3e7 samples are never pooled: each piece is consumed before the next is written."""
    for record in records:
        returned = record.returned_quadratures_snu
        images, rows, modes = returned.shape
        if not returned.size:
            continue
        signals = np.concatenate([2.0 * record.sent_symbols.real, 2.0 * record.sent_symbols.imag]).astype(np.float32)
        step = max(1, FLOAT32_BLOCK_SAMPLES // (rows * modes))
        buffer = np.empty((step * rows, modes), dtype=np.float32)
        row_index = np.arange(rows)
        for first in range(0, images, step):
            last = min(first + step, images)
            sent = buffer[:(last - first) * rows]
            np.take(signals, (row_index + rows * record.measure_p[first:last]).ravel(), axis=0, out=sent)
            yield sent, returned[first:last]


def record_tables(records) -> Iterator[TableRecord]:
    """The records as TableRecords: each verified row sends 2 Re alpha or 2 Im alpha (float32) of its symbol for
    every image, as the server chose; the same samples as record_chunks, never written out."""
    for record in records:
        returned = record.returned_quadratures_snu
        rows = returned.shape[1]
        table = np.concatenate([2.0 * record.sent_symbols.real, 2.0 * record.sent_symbols.imag]).astype(np.float32)
        yield TableRecord(table, np.arange(rows) + rows * record.measure_p.astype(np.intp), returned)


def verified_samples(pairs, layers: int) -> TableSamples:
    """The sums the server's verification needs from run_seed_by_layer's records: each layer's, after the fit over
    the previous symbol (the weight-leakage bound), and every layer's pooled without it (verify_samples)."""
    by_layer = {index: [r for layer, r in (pairs or []) if layer == index] for index in range(layers)}
    return TableSamples(lambda layer: record_tables(by_layer[layer]), layers, raw=True, pooled=False)


def verify_samples(settings: SimulationSettings, records, n_modes: int, samples: TableSamples | None = None
                   ) -> dict | None:
    """The server's accept/abort decision and the weight-leakage bound at the finite-size limits.

    `records` are run_seed's verification records (None when no row was verified); `samples`: their
    verified_samples when the caller has them already. verification.verify's figures on the pooled arrays,
    from sums (analysis/verified_samples.py, TableSamples.raw_estimate).
    """
    if records is None:
        return None
    if samples is None:
        samples = TableSamples(lambda _: record_tables(records), 1, raw=True, pooled=False)
    honest = verification.ChannelHypothesis.honest(settings.gain, n_modes)
    result = verification.verify_estimate(samples.raw_estimate(verification.ServerDetector()), settings.mu, honest,
                                          failure_probability=settings.failure_probability,
                                          false_alarm=settings.false_alarm)
    return result.to_dict()


def layer_inputs(weights, x) -> list[np.ndarray]:
    """What the client sends into each layer: the images, then the noiseless ReLU activations."""
    return [x, np.maximum(x @ weights[0].T, 0.0)][:len(weights)]


def weight_leakage_bound(settings: SimulationSettings, pairs, weights, x, queries: int, samples=None,
                         inputs=None, mode_shares=None) -> WeightLeakage:
    """Each layer's verified worst-mode bound, or g(mu) with too little verification (DECISIONS F, P); the
    simulated station has no calibration uncertainty, so the failure probability is split over T and eps of
    the verified layers only. ``samples`` (verified_samples), ``inputs`` (layer_inputs) or ``mode_shares``
    (largest_mode_share of each layer's inputs): when the caller has them already (the inputs and their shares
    are the same for every seed)."""
    n_modes = (weights[0].shape[1] + 1) // 2
    by_layer = {index: [r for layer, r in (pairs or []) if layer == index] for index in range(len(weights))}
    if samples is None:
        samples = verified_samples(pairs, len(weights))
    sizes = samples.sizes
    rows = {index: sum(r.row_indices.size for r in records) for index, records in by_layer.items()}
    names = {index: f"layer{index + 1}" for index in by_layer}
    budget = report_budget(settings.failure_probability, None,
                           [names[i] for i in by_layer if has_enough_verification(rows[i], sizes[i])])
    detector = verification.ServerDetector()
    honest = verification.ChannelHypothesis.honest(settings.gain, n_modes)
    if mode_shares is None:
        mode_shares = [largest_mode_share(v) for v in (layer_inputs(weights, x) if inputs is None else inputs)]
    layers = tuple(layer_bound_from_estimate(
        names[i], sizes[i], functools.partial(samples.layer_estimate, i, detector), rows[i],
        mu_upper_photons=settings.mu, mu_photons=settings.mu, modes=n_modes, mode_share=mode_shares[i],
        honest_noise_per_share_snu=2.0 * (1.0 - 1.0 / settings.gain), budget=budget, detector=detector, honest=honest,
        tester=detector, false_alarm=settings.false_alarm / len(weights)) for i in by_layer)
    return WeightLeakage(layers, queries, tuple(w.size for w in weights))


def worst_mode_lossless_bits(settings: SimulationSettings, weights, x, mode_shares=None) -> float:
    """Eq. 2 at T = 1 at the worst mode of the data actually sent (DECISIONS F): a reference, not a bound.
    ``mode_shares``: largest_mode_share of each layer's inputs, when the caller has them already."""
    if mode_shares is None:
        mode_shares = [largest_mode_share(inputs) for inputs in layer_inputs(weights, x)]
    worst = 0.0
    for share in mode_shares:
        eps = 2.0 * (1.0 - 1.0 / settings.gain) * share
        worst = max(worst, float(verification.leakage_bound_bits(settings.mu, 1.0, eps)[0]))
    return worst


def per_bin_data_leakage(settings: SimulationSettings, weights, x) -> dict:
    """Per-bin photon counting's per-symbol information about the data actually sent (DECISIONS C, E, F): an
    achievable value for that measurement, not a bound (docs/PHYSICS.md 17.1).

    Layer 1 reuses the image for every one of its rows; the hidden layer reuses the (digital)
    hidden activation for every output row. Reported per layer as the mean and worst image.
    """
    count = min(settings.exact_leakage_images, len(x))
    inputs = [x[:count], np.maximum(x[:count] @ weights[0].T, 0.0)]
    per_layer = {}
    for index, (layer_input, w) in enumerate(zip(inputs, weights)):
        packed = layer_input[:, 0::2] + 1j * layer_input[:, 1::2]
        bits = np.array([data_leakage.exact_mutual_information_bits(settings.gain, v, w.shape[0]) for v in packed])
        per_layer[f"layer{index + 1}"] = {"mean": float(bits.mean()), "max": float(bits.max()), "reuses": int(w.shape[0])}
    return {"images": count, "per_layer": per_layer, "bits": max(v["mean"] for v in per_layer.values())}


def seed_verification(settings: SimulationSettings, pairs, weights, x=None, mode_shares=None
                      ) -> tuple[dict | None, WeightLeakage]:
    """One seed's verification outcome (verify_samples) and weight-leakage bound (weight_leakage_bound) from its
    run_seed_by_layer records, through one verified_samples (two passes of sums). ``x`` (the images) is needed
    only without ``mode_shares``."""
    samples = verified_samples(pairs, len(weights))
    records = None if pairs is None else [record for _, record in pairs]
    n_modes = (weights[0].shape[1] + 1) // 2
    return (verify_samples(settings, records, n_modes, samples),
            weight_leakage_bound(settings, pairs, weights, x, queries=1, samples=samples, mode_shares=mode_shares))


def mode_shares_of(weights, x) -> list[float]:
    """largest_mode_share of each layer's inputs (layer_inputs; the same for every seed), batch by batch: the same
    maxima without the whole set's hidden activations and their powers in memory (~0.3 GB of fresh pages at 10k
    images, whose page faults cost as much as the arithmetic when a thread other than the one that freed the
    loading's memory computes them)."""
    shares = [0.0] * min(len(weights), 2)
    for images in image_batches(x):
        for index, inputs in enumerate(layer_inputs(weights, images)):
            shares[index] = max(shares[index], largest_mode_share(inputs))
    return shares


def _seed_verification_after(settings: SimulationSettings, pairs, weights, shares: Future) -> tuple:
    """seed_verification with the mode shares of an earlier task of the same single-thread executor (done by now)."""
    return seed_verification(settings, pairs, weights, mode_shares=shares.result())


class _Inline:
    """An executor's submit that runs the call at once (paper mode: no verification thread to hand work to)."""

    @staticmethod
    def submit(function, *args) -> Future:
        future = Future()
        future.set_result(function(*args))
        return future


def simulate(settings: SimulationSettings, progress: bool = True) -> dict:
    """Accuracy over seeds (mean, std), verification outcome and every leakage figure at one point."""
    weights, metadata = load_weights(settings.weights)
    x, labels = load_test_set(settings.images)
    seeds = [settings.seed + k for k in range(settings.seeds)]
    accuracies, verifications, bounds = [], [], []
    n_modes = (weights[0].shape[1] + 1) // 2
    checks = []
    # One BLAS thread from here on, in both modes: a threaded OpenBLAS splits some products' sums (the hidden
    # activations of the per-bin leakage, the paper model's products), so its bits would follow the environment's
    # thread settings (qslab.analysis.blas_threads). Physics also runs the last seed's verification and the per-bin
    # leakage alongside each other, and the seeds alongside the normal-drawing and verification threads: OpenBLAS's
    # own threads would only compete with those for the 2 cores.
    physics = settings.mode == "physics"
    with one_blas_thread(), ThreadPoolExecutor(1, thread_name_prefix="qslab-verification") as verifier, \
            tqdm(total=len(seeds) * len(x), desc=f"{settings.mode} inference", unit="img", disable=not progress) as bar:
        # Before the seeds, physics hands its verification thread (idle until the first seed's records) the first
        # layer's encodings and noiseless outcomes of every batch, which the first seed takes in order, then the
        # largest mode shares (the same for every seed), which the seeds' verifications, queued behind, use.
        # Meanwhile this thread works out the per-bin leakage: not at the end beside the last seed's verification,
        # where each took ~2.5x as long (both hold the interpreter lock between many small numpy calls).
        engine = physics_engine(settings) if physics else None  # weights packed once
        batches = image_batches(x)
        if physics:
            engine.prepare_first_layer(weights[0], batches, verifier.submit)
        shares = (verifier if physics else _Inline()).submit(mode_shares_of, weights, x)
        per_bin = per_bin_data_leakage(settings, weights, x)
        for seed in seeds:
            acc, pairs = run_seed_by_layer(settings, weights, x, labels, seed, bar, engine, batches)
            accuracies.append(acc)
            if physics:
                if checks:  # done long since (~0.1 s of sums against ~0.3 s of inference): two seeds' records at most
                    checks[-1].result()
                # summed on the other core while the next seed runs (numpy releases the GIL in its loops)
                checks.append(verifier.submit(_seed_verification_after, settings, pairs, weights, shares))
            del pairs
        for check in checks:
            verification_result, bound = check.result()
            verifications.append(verification_result)
            bounds.append(bound)
        shares = shares.result()
    point = OperatingPoint(mu=settings.mu, gain=settings.gain, modes=n_modes, rows=sum(w.shape[0] for w in weights))
    leakage = leakage_summary(point)
    checked = [v for v in verifications if v is not None]
    result = {
        "mode": settings.mode,
        "mu": settings.mu,
        "gain": settings.gain,
        "images": len(x),
        "seeds": seeds,
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
        "accuracies": accuracies,
        # the test images are a sample: an exact binomial interval on the seed-averaged count (DECISIONS H)
        "accuracy_ci95": list(clopper_pearson(int(round(float(np.mean(accuracies)) * len(x))), len(x))),
        "weight_leakage_bits_per_mode": leakage["weight_leakage_bits_per_mode"],
        "weight_leakage_bits_per_mode_worst_mode_lossless": worst_mode_lossless_bits(settings, weights, x, shares),
        "weight_leakage_bits_per_real_weight": leakage["weight_leakage_bits_per_real_weight"],
        "data_leakage_bits_cramer_rao": leakage["data_leakage_bits_cramer_rao"],
        "data_leakage_bits_prx": leakage["data_leakage_bits_prx"],
        "data_leakage_bits_per_bin": per_bin["bits"],
        "data_leakage_per_bin": per_bin,
        "client_snr": leakage["client_snr"],
        "verified": all(v["accepted"] for v in checked) if checked else None,
        "verification": checked,
        "weight_leakage_bits_per_mode_at_limits": max(b.per_query_bits_per_mode for b in bounds) if bounds else None,
        "weight_leakage_verified": max(bounds, key=lambda b: b.per_query_bits_per_mode).to_json() if bounds else None,
        "weights": metadata.get("name", settings.weights or "shipped"),
        "settings": asdict(settings),
    }
    if settings.mode == "paper":
        result["scaling_f"] = paper_scaling_f(settings.mu, settings.gain)
    return result
