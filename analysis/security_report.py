"""The security report of a session: one typed object, one failure probability (docs/PHYSICS.md 13.4).

`SecurityReport` holds the failure budget every limit in it was taken at, the weight-leakage part (a
verified worst-mode bound per layer, per query and cumulative over every pass of the weights, with the
reference figures labelled for what they assume) and a slot for the data-leakage part (the server's
view of the client's data; filled by its own typed object with a `to_json()`).

Per-layer bounds (DECISIONS F, J). Each layer's weights are a different secret, verified on that
layer's rows only: a layer bound uses its own T_min and eps_max, and only when the layer has at least
MIN_VERIFIED_ROWS verified rows and MIN_VERIFIED_SAMPLES samples (docs/DECISIONS.md P). Otherwise the
layer is reported with the bound that needs no verification, g(mu), from the photon number alone. The
verified limit bounds the mean excess noise over the layer's samples; the honest client's noise is
2 n_sp (1 - 1/G)|x_i|^2 per mode, so the mode carrying the largest share of the data sees
eps_max + 2 n_sp (1 - 1/G)(max_i w_i - 1/n) (w_i = |x_i|^2/|x|^2, maximised over the session's data), and
the layer's figure is chi_E at that noise, capped by g(mu) which holds whatever the client does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from qslab.analysis import verification
from qslab.analysis.failure_budget import FailureBudget, verification_probability
from qslab.analysis.weight_leakage import holevo_verified_bits, modulation_variance_snu, unverified_bound_bits

# below these a layer's finite-size limits say nothing useful (docs/DECISIONS.md P): the layer gets g(mu)
MIN_VERIFIED_ROWS = 3
MIN_VERIFIED_SAMPLES = 20_000


@dataclass(frozen=True)
class LayerBound:
    """One layer's weight-leakage bound per complex mode and per query, and what it rests on."""

    layer: str
    verified_rows: int
    samples: int
    bits_per_mode: float                 # the bound this layer reports (verified worst mode, or g(mu))
    method: str                          # "verified, worst mode" | "no verification: g(mu)" | ...
    unverified_bits_per_mode: float      # g(mu) at mu's upper limit
    transmittance_min: float | None = None
    excess_noise_max_snu: float | None = None
    excess_noise_worst_mode_snu: float | None = None
    largest_mode_share: float | None = None  # max_i |x_i|^2/|x|^2 over the session's data
    average_mode_bits_per_mode: float | None = None  # chi_E at the verified mean noise (DECISIONS F: alongside)
    accepted: bool | None = None

    @property
    def verified(self) -> bool:
        return self.transmittance_min is not None


@dataclass(frozen=True)
class ReferenceFigure:
    """A figure that is not a bound for this session: its value and, in plain words, what it assumes."""

    name: str
    bits_per_mode: float
    assumes: str


@dataclass(frozen=True)
class WeightLeakage:
    """Per-layer bounds, per query and cumulative over every image each layer's weights were sent to (DECISIONS O,
    AI), and labelled reference figures.

    ``queries``: the recorded images, each covered by its layer's bound. ``images_sent``: per layer, every image its
    weights were sent to (>= queries; the set-up's leakage nulling and batches taken again add passes that no
    recorded verification covers, so those are counted at g(mu), which holds whatever the client does). None: not
    counted (a file of schema version 1-3): the cumulative figures then hold for the recorded images only."""

    layers: tuple[LayerBound, ...]
    queries: int
    weights_per_layer: tuple[int, ...]   # real weights per layer (two per complex mode)
    references: tuple[ReferenceFigure, ...] = ()
    images_sent: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.images_sent is not None and (len(self.images_sent) != len(self.layers)
                                             or any(n < self.queries for n in self.images_sent)):
            raise ValueError(f"images_sent {self.images_sent}: expected one count per layer ({len(self.layers)}), "
                             f"each at least the {self.queries} queries")

    @property
    def per_query_bits_per_mode(self) -> float:
        """The worst layer's bound: what one query can reveal about one complex mode (two real weights)."""
        return max(layer.bits_per_mode for layer in self.layers)

    @property
    def extra_passes(self) -> tuple[int, ...]:
        """Per layer, the images its weights were sent to beyond the recorded queries (0 where not counted)."""
        if self.images_sent is None:
            return (0,) * len(self.layers)
        return tuple(int(n) - self.queries for n in self.images_sent)

    @property
    def cumulative_bits_per_mode_per_layer(self) -> tuple[float, ...]:
        """Every pass re-sends the layer's weights (DECISIONS O): the recorded queries at the layer's bound, the passes
        beyond them at g(mu) (DECISIONS AI)."""
        return tuple(self.queries * layer.bits_per_mode + extra * layer.unverified_bits_per_mode
                     for layer, extra in zip(self.layers, self.extra_passes))

    @property
    def cumulative_bits_per_mode(self) -> float:
        """The worst layer's total over every pass of its weights."""
        return max(self.cumulative_bits_per_mode_per_layer)

    @property
    def cumulative_bits_per_weight(self) -> float:
        return 0.5 * self.cumulative_bits_per_mode

    @property
    def per_client_bits(self) -> float:
        """Everything one client can hold about all the weights after the session: the sum over layers."""
        return float(sum(0.5 * n * bits for n, bits in zip(self.weights_per_layer,
                                                           self.cumulative_bits_per_mode_per_layer)))

    def to_json(self) -> dict:
        return {"per_query_bits_per_mode": self.per_query_bits_per_mode,
                "per_query_bits_per_weight": 0.5 * self.per_query_bits_per_mode,
                "queries": self.queries,
                "images_sent_per_layer": None if self.images_sent is None else list(self.images_sent),
                "cumulative_bits_per_mode": self.cumulative_bits_per_mode,
                "cumulative_bits_per_mode_per_layer": list(self.cumulative_bits_per_mode_per_layer),
                "cumulative_bits_per_weight": self.cumulative_bits_per_weight,
                "per_client_bits": self.per_client_bits,
                "layers": [{**asdict(layer), "verified": layer.verified} for layer in self.layers],
                "weights_per_layer": list(self.weights_per_layer),
                "references": [asdict(r) for r in self.references]}


@dataclass(frozen=True)
class SecurityReport:
    """The whole report: the failure budget it holds at, weight leakage, and data leakage (issue 14's part)."""

    failure_budget: FailureBudget
    weight_leakage: WeightLeakage
    data_leakage: object | None = None  # a typed data-leakage report with to_json(); None until one is computed

    @property
    def failure_probability(self) -> float:
        return self.failure_budget.combined

    def to_json(self) -> dict:
        return {"failure_probability": self.failure_probability, "failure_budget": self.failure_budget.to_json(),
                "weight_leakage": self.weight_leakage.to_json(),
                "data_leakage": None if self.data_leakage is None else self.data_leakage.to_json()}


def largest_mode_share(vectors) -> float:
    """max over vectors and modes of |x_i|^2/|x|^2 for the complex-packed (two reals per mode) data; 0 if none.

    Squared in float64 straight from the input's type (no float64 copy of it), and each vector's largest power
    divided once: division is monotonic, so max_i(p_i / t) = max_i(p_i) / t bit for bit (a session calls this for
    every batch, between the batch's check and the next batch's light)."""
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[0] == 0:
        return 0.0
    if x.shape[1] % 2:
        x = np.pad(x, ((0, 0), (0, 1)))
    square = np.multiply(x, x, dtype=np.float64)
    power = np.add(square[:, 0::2], square[:, 1::2], out=square[:, 0::2])
    total = power.sum(axis=1)
    usable = total > 0
    return float(np.max(power.max(axis=1)[usable] / total[usable])) if usable.any() else 0.0


def has_enough_verification(verified_rows: int, samples: int) -> bool:
    return verified_rows >= MIN_VERIFIED_ROWS and samples >= MIN_VERIFIED_SAMPLES


def layer_bound(layer: str, sent_snu, returned_snu, verified_rows: int, *, mu_upper_photons: float, mu_photons: float,
                modes: int, mode_share: float, honest_noise_per_share_snu: float, budget: FailureBudget,
                detector: verification.ServerDetector, honest: verification.ChannelHypothesis,
                tester: verification.ServerDetector, false_alarm: float) -> LayerBound:
    """One layer's bound (module docstring). honest_noise_per_share_snu: 2 n_sp (1 - 1/G) at the leakier limits."""
    sent = np.asarray(sent_snu, dtype=np.float64).ravel()

    def estimate() -> verification.ChannelEstimate:
        return verification.estimate_channel(sent, verification.remove_previous_symbol(sent, returned_snu)[0], detector)

    return layer_bound_from_estimate(layer, sent.size, estimate, verified_rows, mu_upper_photons=mu_upper_photons,
                                     mu_photons=mu_photons, modes=modes, mode_share=mode_share,
                                     honest_noise_per_share_snu=honest_noise_per_share_snu, budget=budget,
                                     detector=detector, honest=honest, tester=tester, false_alarm=false_alarm)


def layer_bound_from_estimate(layer: str, samples: int, estimate, verified_rows: int, *, mu_upper_photons: float,
                              mu_photons: float, modes: int, mode_share: float, honest_noise_per_share_snu: float,
                              budget: FailureBudget, detector: verification.ServerDetector,
                              honest: verification.ChannelHypothesis, tester: verification.ServerDetector,
                              false_alarm: float) -> LayerBound:
    """layer_bound from the layer's sample count and ``estimate()`` (its ChannelEstimate after the previous symbol is
    removed, referred with `detector`; called only when the layer has enough verification): what a caller that sums
    the samples in chunks passes (analysis/verified_samples.py)."""
    unverified = float(unverified_bound_bits(mu_upper_photons))
    if not has_enough_verification(verified_rows, samples):
        return LayerBound(layer, int(verified_rows), int(samples), unverified, "no verification: g(mu)", unverified,
                          largest_mode_share=mode_share)
    result = verification.verify_estimate(estimate(), mu_photons, honest, detector,
                                          failure_probability=verification_probability(budget, layer),
                                          false_alarm=false_alarm, mu_upper_photons=mu_upper_photons,
                                          test_detector=tester)
    t_min, eps_max = float(result.transmittance_min), float(result.excess_noise_max_snu)
    worst_eps = max(eps_max, 0.0) + honest_noise_per_share_snu * max(mode_share - 1.0 / modes, 0.0)
    v = modulation_variance_snu(mu_upper_photons)
    worst = float(holevo_verified_bits(v, min(max(t_min, 0.0), 1.0), worst_eps))
    average = float(result.chi_bits_per_mode)
    bits, method = (worst, "verified, worst mode") if worst <= unverified else (unverified, "g(mu) (below the verified)")
    return LayerBound(layer, int(verified_rows), int(samples), bits, method, unverified, t_min, eps_max, worst_eps,
                      mode_share, average, bool(result.accepted))
