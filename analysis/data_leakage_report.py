"""The data-leakage part of the security report: an upper bound on what the server learns about the client's data.

Built from the station's calibrated values (docs/PHYSICS.md 17): each returned row is thermal with N photons
in the data's temporal mode, N = n_sp (1 - 1/G) t with the amplifier's gain and noise figure at their upper
limits and the processor's loss per pass at its lower limit (more returned noise tells the server more; T_r
and the server's detector efficiency are taken as 1). Each limit sits at its share of the report's one
failure probability (analysis/failure_budget.py), as does the sampling error of C, the second moments of
the declared data distribution (MNIST training images by default). The bound per row, per query, per data
symbol and over the session's queries is qslab.analysis.data_leakage_bound.gaussian_bound, capped by H(X)
when a finite candidate set is declared.

The paper's figures are carried alongside, labelled for what they are: its Eq. 3 (Cramer-Rao) and PRX
forms are estimates, not bounds (a Cramer-Rao variance limit is not an information bound, and both model
independent bins); the per-bin negative-binomial figure is what per-bin photon counting achieves, an
achievable value for that one measurement, not the server's best.

The second moments of MNIST under the shipped weights are shipped precomputed
(analysis/data/mnist_second_moments.npz, with its provenance; `python -m qslab.analysis.data_leakage_report`
writes it and a test recomputes it), so a session does not spend 15 s on 60,000 images.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from qslab.analysis.data_leakage_bound import (SecondMoments, finite_set_holevo_bits, gaussian_bound,
                                               mnist_second_moments, returned_photons)
from qslab.analysis.failure_budget import FailureBudget

DISTRIBUTION = "MNIST training images (60,000; Normalize(0.5, 0.5), two values per complex mode)"
FORMAT_VERSION = 1
LAYER_INPUTS = ("the client's data (the image)", "the hidden vector (ReLU of the layer-1 outcomes)")
PAPER_NOT_A_BOUND = ("the paper's estimate, not a bound: a Cramer-Rao variance limit is not an information bound, "
                     "and it treats the returned bins as independent (docs/PHYSICS.md 17.5)")
PER_BIN_LABEL = "per-bin photon counting (an achievable value for that measurement)"


# --- the declared data distribution's second moments -------------------------------------------------

def shipped_moments_path() -> Path:
    return Path(str(resources.files("qslab.analysis") / "data" / "mnist_second_moments.npz"))


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_moments(path, moments: list[SecondMoments], provenance: dict) -> Path:
    """Eigenvalues and jackknife replicates per layer, and the JSON provenance, in one .npz."""
    arrays = {}
    for index, m in enumerate(moments):
        arrays[f"eigenvalues{index}"] = m.eigenvalues
        arrays[f"replicates{index}"] = m.replicate_eigenvalues
        arrays[f"samples{index}"] = np.array(m.samples)
    record = {"format_version": FORMAT_VERSION, "layers": len(moments), **provenance}
    path = Path(path)
    with path.open("wb") as fh:
        np.savez_compressed(fh, provenance=np.array(json.dumps(record, sort_keys=True)), **arrays)
    return path


def load_moments(path=None) -> tuple[list[SecondMoments], dict]:
    """(per-layer SecondMoments without the matrix, provenance) from `save_moments`'s file (the shipped one by default)."""
    path = shipped_moments_path() if path is None else Path(path)
    with np.load(path, allow_pickle=False) as data:
        record = json.loads(str(data["provenance"]))
        moments = [SecondMoments(np.empty((0, 0)), data[f"eigenvalues{i}"], int(data[f"samples{i}"]),
                                 data[f"replicates{i}"]) for i in range(record["layers"])]
    return moments, record


def compute_mnist_moments(weights_path=None) -> tuple[list[SecondMoments], dict]:
    """C per layer of the MNIST training images through the weights (the shipped ones by default), and what it
    was computed from."""
    from qslab.analysis.network import default_weights_path, load_weights
    from qslab.analysis.provenance import git_revision, training_provenance

    path = default_weights_path() if weights_path is None else Path(weights_path)
    weights, _ = load_weights(path)
    moments = mnist_second_moments("train", weights)
    origin = training_provenance(0)
    provenance = {"distribution": DISTRIBUTION, "weights_sha256": file_sha256(path),
                  "mnist_sha256": origin["mnist_sha256"], "numpy": origin["numpy"], "git_revision": git_revision(),
                  "made_by": "qslab.analysis.data_leakage_report.compute_mnist_moments (data_leakage_bound."
                             "mnist_second_moments, 20 jackknife groups)"}
    return moments, provenance


@functools.lru_cache(maxsize=4)
def _moments_for(weights_sha256: str, weights_path: str | None) -> tuple[tuple[SecondMoments, ...], str]:
    shipped, record = load_moments()
    if record["weights_sha256"] == weights_sha256:
        return tuple(shipped), f"{DISTRIBUTION}, precomputed ({shipped_moments_path().name})"
    moments, _ = compute_mnist_moments(weights_path)   # other weights: layer 2 changes, computed once per process
    return tuple(moments), f"{DISTRIBUTION}, computed for weights {weights_sha256[:12]}"


def declared_moments(weights_path=None) -> tuple[list[SecondMoments], str]:
    """The declared distribution's C per layer for the session's weights (None: the shipped ones) and its label."""
    from qslab.analysis.network import default_weights_path

    path = default_weights_path() if weights_path is None else Path(weights_path)
    if not path.is_file():
        raise ValueError(f"{path}: the session's weights file is not there; layer 2's declared second moments need it")
    moments, label = _moments_for(file_sha256(path), None if weights_path is None else str(weights_path))
    return list(moments), label


# --- the report part ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataLeakageLayer:
    """One layer's bound (bits) about its input: per row at C's central value and at its upper limit (what the
    per-query figures use), per query (M rows), per complex data symbol, and per input over its repeats."""

    layer: str
    input: str
    rows: int
    modes: int
    eigenvalue_entropy_bits: float
    per_row_bits: float
    per_row_uncertainty_bits: float
    per_row_upper_bits: float
    per_query_bits: float
    per_symbol_bits: float
    per_input_bits: float        # min(repeats M b, H(X)): everything `repeats` queries of one input reveal
    capped: bool


@dataclass(frozen=True)
class LabelledFigure:
    """A data-leakage figure that is not an upper bound, in bits per data symbol, and what it is."""

    name: str
    bits_per_symbol: float
    what: str


@dataclass(frozen=True)
class DataLeakage:
    """The data-leakage upper bound of a session or an operating point, with the limits it was taken at.

    `inputs` distinct data vectors were sent, each `repeats` times (a session: every test image once); the
    cumulative figure is inputs x each input's capped total. ``takes``: in a session, every image whose data the light
    carried, a take of a batch repeated after a fault or never recorded included (None: not counted, as inputs);
    each take counts as an input of its own, an upper bound on an image sent twice (min(2 x, H) <= 2 min(x, H)).
    """

    photons: float                   # N at the central calibrated values
    photons_upper: float             # N at the limits: what every bound uses
    inversion_factor: float          # n_sp at the limits
    transmittance_per_pass: float    # t at the loss's lower limit
    gain_upper: float
    noise_figure_db_upper: float | None
    loss_per_pass_db_lower: float
    inputs: int
    repeats: int
    candidate_entropy_bits: float | None
    distribution: str
    layers: tuple[DataLeakageLayer, ...]
    figures: tuple[LabelledFigure, ...] = ()
    takes: int | None = None

    @property
    def data(self) -> DataLeakageLayer:
        """Layer 1: the bound about the client's data itself."""
        return self.layers[0]

    @property
    def per_query_bits(self) -> float:
        return self.data.per_query_bits

    @property
    def per_symbol_bits(self) -> float:
        return self.data.per_symbol_bits

    @property
    def cumulative_bits(self) -> float:
        return max(self.inputs, self.takes or 0) * self.data.per_input_bits

    def to_json(self) -> dict:
        return {"kind": "upper bound (Gaussian extremality on the joint returned state, docs/PHYSICS.md 17.2)",
                "per_query_bits": self.per_query_bits, "per_symbol_bits": self.per_symbol_bits,
                "cumulative_bits": self.cumulative_bits, "inputs": self.inputs, "repeats": self.repeats,
                "takes": self.takes,
                "photons": self.photons, "photons_upper": self.photons_upper,
                "inversion_factor": self.inversion_factor, "transmittance_per_pass": self.transmittance_per_pass,
                "gain_upper": self.gain_upper, "noise_figure_db_upper": self.noise_figure_db_upper,
                "loss_per_pass_db_lower": self.loss_per_pass_db_lower,
                "candidate_entropy_bits": self.candidate_entropy_bits, "distribution": self.distribution,
                "layers": [asdict(layer) for layer in self.layers],
                "not_bounds": [asdict(f) for f in self.figures]}


def calibrated_limits(measured, budget: FailureBudget) -> tuple[float, float | None, float]:
    """(G upper, noise figure upper (None: not measured, quantum limited), loss per pass lower) at the budget's
    shares: each is the end that returns more noise to the server."""
    gain = max(measured.gain.upper(budget.sigmas("gain")), 1.0)
    nf = measured.amplifier_noise_figure_db
    nf_upper = None if nf is None else nf.upper(budget.sigmas("amplifier_noise_figure_db"))
    loss = getattr(measured, "processor_loss_per_pass_db", None)
    loss_lower = 0.0 if loss is None else max(loss.lower(budget.sigmas("processor_loss_per_pass_db")), 0.0)
    return gain, nf_upper, loss_lower


def data_leakage_report(measured, budget: FailureBudget, layer_shapes, moments: list[SecondMoments], *,
                        distribution: str, inputs: int = 1, repeats: int = 1, candidate_entropy_bits=None,
                        figures: tuple[LabelledFigure, ...] = (), takes: int | None = None) -> DataLeakage:
    """The bound per layer (weight shapes [out, in]) from calibrated values (MeasuredValues or anything with
    gain, amplifier_noise_figure_db and processor_loss_per_pass_db Estimates) at `budget`'s shares."""
    gain, nf_upper, loss_lower = calibrated_limits(measured, budget)
    central_loss = getattr(measured, "processor_loss_per_pass_db", None)
    central = returned_photons(measured.gain.value, None if measured.amplifier_noise_figure_db is None
                               else measured.amplifier_noise_figure_db.value,
                               0.0 if central_loss is None else central_loss.value, coverage=0.0)
    limit = returned_photons(gain, nf_upper, loss_lower, coverage=0.0)
    k_moments = budget.sigmas("data_second_moments")
    layers = []
    for index, (shape, mom) in enumerate(zip(layer_shapes, moments)):
        rows, modes = int(shape[0]), (int(shape[1]) + 1) // 2
        bound = gaussian_bound(limit.value, mom.eigenvalues, rows, repeats, candidate_entropy_bits, modes=modes,
                               per_row_uncertainty_bits=mom.per_row_bound_uncertainty_bits(limit.value))
        upper = bound.per_row_bits + k_moments * bound.per_row_uncertainty_bits
        cap = math.inf if candidate_entropy_bits is None else float(candidate_entropy_bits)
        per_query = min(rows * upper, cap)
        layers.append(DataLeakageLayer(f"layer{index + 1}", LAYER_INPUTS[min(index, 1)], rows, modes,
                                       mom.eigenvalue_entropy_bits(), bound.per_row_bits,
                                       bound.per_row_uncertainty_bits, upper, per_query, per_query / modes,
                                       min(repeats * rows * upper, cap), repeats * rows * upper >= cap))
    return DataLeakage(central.value, limit.value, limit.inversion_factor, limit.transmittance_per_pass, gain,
                       nf_upper, loss_lower, int(inputs), int(repeats),
                       None if candidate_entropy_bits is None else float(candidate_entropy_bits), distribution,
                       tuple(layers), tuple(figures), None if takes is None else int(takes))


def paper_figures(cramer_rao_bits: float, prx_bits: float, per_bin_bits: float | None = None) -> tuple:
    """The paper's two forms and the per-bin figure, each labelled (bits per data symbol)."""
    out = [LabelledFigure("paper_eq3_cramer_rao", float(cramer_rao_bits), PAPER_NOT_A_BOUND),
           LabelledFigure("paper_prx_form", float(prx_bits), PAPER_NOT_A_BOUND)]
    if per_bin_bits is not None:
        out.append(LabelledFigure("per_bin_photon_counting", float(per_bin_bits), PER_BIN_LABEL))
    return tuple(out)


EXACT_CANDIDATES_MAX = 2000   # the exact figure needs an L x L Gram matrix: 2000 takes seconds, 10,000 a gigabyte


def finite_set_figures(candidate_x_hat, photons: float, rows: int) -> dict:
    """The declared finite candidate set's figures for layer 1: H(X) = log2 L (the cap) and the exact Holevo
    information per query, sum_K NB_M(K) S_K (data_leakage_bound.finite_set_holevo_bits), at the bound's N.

    Above EXACT_CANDIDATES_MAX candidates only the cap is given (the exact value is at most the cap).
    """
    x = np.asarray(candidate_x_hat)
    size = int(x.shape[0])
    figures = {"candidates": size, "entropy_bits": math.log2(size) if size else 0.0, "photons": float(photons),
               "rows": int(rows), "exact_holevo_bits_per_query": None,
               "what": "the first L MNIST test images, uniform (the session's images are among them)"}
    if size > EXACT_CANDIDATES_MAX:
        figures["exact_not_computed"] = f"L > {EXACT_CANDIDATES_MAX}: the L x L Gram matrix is too large; the cap holds"
    elif size > 1:
        figures["exact_holevo_bits_per_query"] = finite_set_holevo_bits(x, photons, rows)
    return figures


def finite_set_rows(figures: dict) -> list[tuple[str, str]]:
    exact = figures.get("exact_holevo_bits_per_query")
    text = (f"H(X) = {figures['entropy_bits']:.4g} bit caps every figure above; exact Holevo information "
            + (f"{exact:.4g} bit per query" if exact is not None else f"not computed ({figures['exact_not_computed']})")
            + f" (M = {figures['rows']} rows at N = {figures['photons']:.4g}): the server learns "
            + (f"{100 * exact / figures['entropy_bits']:.3g} % of which candidate it is" if exact is not None
               and figures["entropy_bits"] > 0 else "at most all of which candidate it is"))
    return [(f"  candidate set of {figures['candidates']}", text)]


def _queries_text(inputs: int, repeats: int, takes: int | None = None) -> str:
    if takes is not None and takes > inputs:
        return (f"{takes} images sent: {inputs} different inputs, and {takes - inputs} sent again in takes repeated "
                f"after faults or never recorded (each counted as an input of its own)")
    if repeats == 1:
        return f"{inputs} different inputs, each sent once" if inputs > 1 else "one query"
    return f"{repeats} queries of the same input" + (f", for each of {inputs} inputs" if inputs > 1 else "")


def report_rows(data: dict) -> list[tuple[str, str]]:
    """The report's text lines from DataLeakage.to_json(): the bound per query, per symbol and in total, each layer
    with what it was taken at, and the figures that are not bounds with what they are."""
    nf = data["noise_figure_db_upper"]
    cap = data["candidate_entropy_bits"]
    rows = [("data leakage (upper bound)",
             f"{data['per_query_bits']:.4g} bit per query about the image ({data['per_symbol_bits']:.3g} bit per complex "
             f"data symbol); {data['cumulative_bits']:.4g} bit in total over " + _queries_text(data["inputs"], data["repeats"], data.get("takes"))
             + (f", each capped by H(X) = {cap:.4g} bit of the declared candidate set" if cap is not None else "")),
            ("  taken at", f"N = {data['photons_upper']:.4g} returned photons per row (central {data['photons']:.4g}): "
                           f"G {data['gain_upper']:.4g}, noise figure "
                           + ("quantum limited" if nf is None else f"{nf:.3g} dB")
                           + f" (n_sp {data['inversion_factor']:.3g}), processor loss {data['loss_per_pass_db_lower']:.3g} "
                           "dB per pass, at their limits; T_r and the server's detector efficiency taken as 1; C from "
                           f"{data['distribution']}")]
    for layer in data["layers"]:
        rows.append((f"  {layer['layer']}", f"{layer['per_query_bits']:.4g} bit/query, {layer['per_symbol_bits']:.3g} "
                                            f"bit/symbol about {layer['input']}: M = {layer['rows']} rows x "
                                            f"{layer['per_row_upper_bits']:.4g} bit/row, n = {layer['modes']} modes, "
                                            f"H(lambda) = {layer['eigenvalue_entropy_bits']:.3g}"
                                            + (" (capped)" if layer["capped"] else "")))
    if data.get("finite_set"):
        rows.extend(finite_set_rows(data["finite_set"]))
    for figure in data["not_bounds"]:
        name = {"paper_eq3_cramer_rao": "the paper's Eq. 3 (Cramer-Rao)", "paper_prx_form": "the paper's PRX form",
                "per_bin_photon_counting": PER_BIN_LABEL}.get(figure["name"], figure["name"])
        what = "" if figure["what"] == PER_BIN_LABEL else f": {figure['what']}"
        rows.append(("  not a bound", f"{figure['bits_per_symbol']:.3g} bit/symbol, {name}{what}"))
    return rows


if __name__ == "__main__":   # regenerate the shipped file: python -m qslab.analysis.data_leakage_report
    moments, provenance = compute_mnist_moments()
    print(save_moments(shipped_moments_path(), moments, provenance))
