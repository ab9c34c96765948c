"""The curious server's side of a session: what it concludes from the photon counts it recorded (docs/PHYSICS.md 17.7).

A session run with a curious server (`qslab session --curious-server KIND`) records, per test image,
the photon counts the bench rendered from the returned light of layer 1 (instruments/sim/faults_attacks/
curious_server.py) and how many rows were counted. From those counts alone, plus its own public
knowledge, the server here

* estimates N, the returned photons per row, as total counts / counted rows (it knows how many rows it
  counted; a residual of its displacement removal adds photons it cannot tell apart, so this is high then);
* simulates counts of public MNIST *training* images through the same measurement at that N (the exact
  Gamma-Poisson law of analysis/data_leakage_attacks.py, from a recorded seed) and fits a softmax
  classifier on them; the mode sorter's principal modes come from the same training images;
* classifies the session's test images from their recorded counts (digit accuracy, plug-in I(Y; Y_hat)),
  and identifies each among a candidate set it holds (the first L MNIST test images: the session's
  images are the first ones; maximum likelihood on the multinomial counts), with Fano's lower bound.

Everything is a pure function of the recorded counts, labels, image indices and the spec (seeds included),
so `qslab replay` recomputes the outcome exactly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np

from qslab.analysis import data_leakage_attacks as att
from qslab.analysis.data_leakage_bound import pack_unit_vectors
from qslab.analysis.mnist import load_mnist, preprocess

DEFAULT_TRAIN_IMAGES = 2000
CLASSES = 10
KIND_NAMES = {"per-bin": "per_bin", "delay": "delay", "mode-sorter": "mode_sorter"}
LABELS = {"per_bin": "per-bin photon counting", "delay": "one-bin delay interferometer, both ports counted",
          "mode_sorter": f"mode sorter (DFT over the {att.SORTED_MODES} leading principal modes of the training images)"}


@dataclass(frozen=True)
class CuriousSpec:
    """What the curious server does: its measurement, its public training data, its seeds and its residual error.

    candidates: L, the server's candidate set for identification (the first L MNIST test images; 0: the
    session's own images). seed: the server's simulation of training counts.
    """

    kind: str
    seed: int
    train_images: int = DEFAULT_TRAIN_IMAGES
    residual_amplitude: float = 0.0
    residual_phase_rad: float = 0.0
    candidates: int = 0
    sorted_modes: int = att.SORTED_MODES

    def __post_init__(self):
        if self.kind not in att.MEASUREMENTS:
            raise ValueError(f"curious server kind {self.kind!r}; expected one of {', '.join(KIND_NAMES)}")
        if not 10 <= int(self.train_images) <= 60_000:
            raise ValueError(f"curious server training images {self.train_images!r}: expected 10..60000")
        if int(self.candidates) < 0:
            raise ValueError(f"candidate set {self.candidates!r}: expected a number of images >= 0")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> CuriousSpec:
        return cls(**data)


@functools.lru_cache(maxsize=2)
def training_set(images: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `images` MNIST training images (network normalisation) and labels: the server's public data."""
    pixels, labels = load_mnist("train")
    return preprocess(pixels[:images].reshape(images, -1)), labels[:images].astype(int)


@functools.lru_cache(maxsize=4)
def _training_x_hat(images: int) -> np.ndarray:
    return pack_unit_vectors(training_set(images)[0])


@functools.lru_cache(maxsize=4)
def _basis(kind: str, modes: int, train_images: int, sorted_modes: int) -> np.ndarray:
    training = _training_x_hat(train_images) if kind == "mode_sorter" else None
    return att.measurement_basis(kind, modes, training, sorted_modes)


def server_basis(spec: CuriousSpec, modes: int) -> np.ndarray:
    """V [outputs, modes] of the server's measurement (the mode sorter's from its training images)."""
    return _basis(spec.kind, int(modes), int(spec.train_images), int(spec.sorted_modes))


def candidate_set(spec: CuriousSpec, images_in_session: int) -> int:
    """L: the declared candidate set, or the session's own images."""
    return int(spec.candidates) if spec.candidates else int(images_in_session)


def candidate_x_hat(count: int) -> np.ndarray:
    """x_hat of the first `count` MNIST test images: the candidate set the server holds."""
    pixels, _ = load_mnist("test")
    return pack_unit_vectors(preprocess(pixels[:count].reshape(count, -1)))


def mutual_information_bias_bits(samples: int, classes: int = CLASSES) -> float:
    """The plug-in I(Y; Y_hat) of independent Y and Y_hat is about (k - 1)^2 / (2 n ln 2) bits: its upward bias."""
    return (classes - 1) ** 2 / (2.0 * max(int(samples), 1) * math.log(2.0))


def attack_outcome(spec: CuriousSpec, counts, counted_rows, labels, image_index) -> dict:
    """The server's conclusions from the recorded counts [images, outputs] (module docstring), as JSON: the arrays
    in memory (the reference of streamed_attack_outcome)."""
    counts = np.asarray(counts, dtype=np.int64)
    rows = np.asarray(counted_rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=int)
    index = np.asarray(image_index, dtype=np.int64)
    _check_counts(counts, rows, labels, index)
    if counts.size == 0 or rows.min() < 1 or counts.min() < 0:
        raise ValueError("curious-server counts: expected non-negative counts of at least one counted row per image")
    photons, rows_mean = float(counts.sum() / rows.sum()), float(rows.mean())
    model, basis = _server_model(spec, counts.shape[1], photons, rows_mean)
    size = _candidates(spec, labels.size, int(index.max()))
    guesses = att.predict_softmax(model, att.count_features(counts))
    identified = att.identify(counts, np.abs(candidate_x_hat(size) @ basis.T) ** 2)
    return _outcome(spec, labels, guesses, identified == index, photons, rows_mean, size)


def streamed_attack_outcome(spec: CuriousSpec, chunks) -> dict:
    """attack_outcome on counts read a slice at a time, so a session's memory does not grow with its length.

    ``chunks()`` gives the committed images in order as (image index, labels, counts [b, outputs], counted rows [b])
    slices (SessionFile.curious_chunks); it is called twice: the totals first (N and the counted rows, which the
    server's classifier is trained at), then the classification and identification slice by slice. Only per-image
    labels and outcomes are kept. The result equals attack_outcome's on the whole arrays."""
    total_counts = total_rows = images = 0
    outputs, least_rows, least_count, last_index = None, None, None, -1
    for index, labels, counts, rows in chunks():
        counts, rows = np.asarray(counts, dtype=np.int64), np.asarray(rows, dtype=np.int64)
        _check_counts(counts, rows, np.asarray(labels), np.asarray(index))
        if outputs is not None and counts.shape[1] != outputs:
            raise ValueError(f"curious-server counts over {counts.shape[1]} outputs after {outputs}")
        if not counts.shape[0]:
            continue
        outputs = counts.shape[1]
        total_counts += int(counts.sum())
        total_rows += int(rows.sum())
        images += rows.size
        least_rows = int(rows.min()) if least_rows is None else min(least_rows, int(rows.min()))
        least_count = int(counts.min()) if least_count is None else min(least_count, int(counts.min()))
        last_index = max(last_index, int(np.max(index)))
    if not images or not outputs or least_rows < 1 or least_count < 0:
        raise ValueError("curious-server counts: expected non-negative counts of at least one counted row per image")
    photons, rows_mean = float(np.int64(total_counts) / np.int64(total_rows)), float(total_rows / images)
    model, basis = _server_model(spec, outputs, photons, rows_mean)
    size = _candidates(spec, images, last_index)
    candidate_p = np.abs(candidate_x_hat(size) @ basis.T) ** 2
    labels_all, guesses, matches = [], [], []
    for index, labels, counts, _ in chunks():
        if not np.shape(counts)[0]:
            continue
        counts = np.asarray(counts, dtype=np.int64)
        labels_all.append(np.asarray(labels, dtype=int))
        guesses.append(att.predict_softmax(model, att.count_features(counts)))
        matches.append(att.identify(counts, candidate_p) == np.asarray(index, dtype=np.int64))
    return _outcome(spec, np.concatenate(labels_all), np.concatenate(guesses), np.concatenate(matches), photons,
                    rows_mean, size)


def _check_counts(counts, rows, labels, index) -> None:
    if counts.ndim != 2 or counts.shape[0] != rows.size or rows.size != labels.size or labels.size != index.size:
        raise ValueError(f"curious-server counts {counts.shape}, counted rows {rows.shape}, labels {labels.shape}, "
                         f"image indices {index.shape}: expected one row per image")


def _server_model(spec: CuriousSpec, outputs: int, photons: float, rows_mean: float):
    """(the softmax classifier the server trains on simulated counts of its training images at N = photons, its
    measurement's V): the server knows only N, the rows it counted and public training images."""
    x_train = _training_x_hat(int(spec.train_images))
    basis = server_basis(spec, x_train.shape[1])
    if basis.shape[0] != outputs:
        raise ValueError(f"curious-server counts over {outputs} outputs; the {spec.kind} measurement has "
                         f"{basis.shape[0]}")
    copies = int(round(rows_mean))
    rng = np.random.default_rng([int(spec.seed), 0x5EA])
    train_counts = att.simulate_counts(np.abs(x_train @ basis.T) ** 2, photons, copies, rng)
    return att.train_softmax(att.count_features(train_counts), training_set(int(spec.train_images))[1]), basis


def _candidates(spec: CuriousSpec, images: int, last_index: int) -> int:
    size = candidate_set(spec, images)
    if last_index >= size:
        raise ValueError(f"candidate set of {size} images: it must hold the session's images (test images up to "
                         f"{last_index + 1})")
    return size


def _outcome(spec: CuriousSpec, labels, guesses, identified, photons: float, rows_mean: float, size: int) -> dict:
    rate = float(np.mean(identified))
    return {"kind": spec.kind, "measurement": LABELS[spec.kind], "images": int(labels.size),
            "photons_per_row_estimate": photons, "counted_rows_mean": rows_mean,
            "train_images": int(spec.train_images), "accuracy": float(np.mean(guesses == labels)),
            "mutual_information_bits": att.plug_in_mutual_information_bits(labels, guesses),
            "mutual_information_bias_bits": mutual_information_bias_bits(labels.size),
            "candidates": size, "identification_rate": rate,
            "identification_fano_bits": att.fano_lower_bound_bits(rate, size) if size > 1 else 0.0,
            "residual_amplitude": spec.residual_amplitude, "residual_phase_rad": spec.residual_phase_rad}


def report_rows(outcome: dict, bound_bits_per_query: float | None = None) -> list[tuple[str, str]]:
    """The session report's lines for a curious server: an achievable value, next to the upper bound."""
    chance = 1.0 / outcome["candidates"] if outcome["candidates"] else float("nan")
    residual = ("perfect displacement removal" if not (outcome["residual_amplitude"] or outcome["residual_phase_rad"])
                else f"displacement removal off by {outcome['residual_amplitude']:.3g} in amplitude, "
                     f"{outcome['residual_phase_rad']:.3g} rad in phase")
    rows = [("curious server (bench)", f"{outcome['measurement']} on the returned light of layer 1 "
                                       f"({outcome['counted_rows_mean']:.0f} unverified rows per image, {residual}; "
                                       f"N estimated {outcome['photons_per_row_estimate']:.4g} photons/row)"),
            ("  digit accuracy", f"{100 * outcome['accuracy']:.1f} % of {outcome['images']} test images (chance 10 %); "
                                 f"I(label; guess) {outcome['mutual_information_bits']:.3g} bit/query (plug-in, "
                                 f"biased up by about {outcome['mutual_information_bias_bits']:.2g}); classifier "
                                 f"trained on {outcome['train_images']} MNIST training images only"),
            ("  identification", f"{100 * outcome['identification_rate']:.1f} % among {outcome['candidates']} candidate "
                                 f"images (chance {100 * chance:.2g} %): >= {outcome['identification_fano_bits']:.4g} "
                                 "bit/query (Fano); an achievable value, a lower bound on the leakage")]
    if bound_bits_per_query is not None:
        rows.append(("  upper bound", f"{bound_bits_per_query:.4g} bit/query (data leakage upper bound above)"))
    return rows
