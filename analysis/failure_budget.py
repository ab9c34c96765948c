"""One failure probability for the whole security report (docs/PHYSICS.md 13.3, DECISIONS J).

Every number the report's bounds rest on is an estimate: the verification's T and eps (finite-size
statistics), mu, G, the server detector's efficiency, electronic noise and shot-noise unit, the
amplifier's noise figure, the processor's loss per pass (calibrations), and the second moments of the declared
data distribution the data-leakage bound uses (a sampling estimate). Each limit the report uses fails with some probability; the
report is wrong only if at least one does, so by the union bound the probability that the report is
wrong is at most the sum of the shares. `FailureBudget` splits one total epsilon equally over the
quantities the report estimates, and says at how many sigma each calibrated limit sits.

Calibrated Estimates are taken as Gaussian (value, one-sigma): a limit used on one side only (mu's
upper limit) fails with share p at Phi^-1(1 - p) sigma; an interval whose two ends are both used
(G, the efficiency, the shot-noise unit) fails with p in all, p/2 at each end, at Phi^-1(1 - p/2)
sigma. A verified layer's T_min and eps_max take their shares as the exact finite-size quantiles of
analysis/verification.py. A quantity without uncertainty (known exactly) spends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from qslab.analysis.distribution_tails import normal_isf

# the calibrated quantities, as MeasuredValues names them -> (sides used, what the limit is)
CALIBRATED = {
    "mu_photons": (1, "mu's upper limit (photons per mode at the server's output)"),
    "gain": (2, "the client amplifier's gain G, both ends"),
    "server_efficiency": (2, "the server detector's efficiency, both ends"),
    "server_electronic_noise_snu": (1, "the server detector's electronic noise, lower limit"),
    "server_shot_noise_variance_v2": (2, "the server detector's shot-noise unit, both ends"),
    "amplifier_noise_figure_db": (1, "the client amplifier's noise figure, upper limit"),
    "processor_loss_per_pass_db": (1, "the client processor's loss per pass, lower limit (data leakage)"),
}
# the data-leakage bound's own estimated quantity (analysis/data_leakage_report.py)
DATA_MOMENTS = ("data_second_moments", 1, "the data-leakage bound's sampling error from the declared data's C, "
                "upper limit")
VERIFIED = {
    "transmittance": "T_min of the verified rows (Student t quantile)",
    "excess_noise": "eps_max of the verified rows (chi-square quantile)",
}


@dataclass(frozen=True)
class BudgetTerm:
    """One estimated quantity's share of the failure probability; sides = 2 when both ends of its interval are used."""

    name: str
    probability: float
    sides: int
    what: str

    @property
    def sigmas(self) -> float:
        """The coverage factor k of a Gaussian estimate's limit at this share (one-sided quantile per end)."""
        return float(normal_isf(self.probability / self.sides))


@dataclass(frozen=True)
class FailureBudget:
    """A total failure probability and its split (union bound): the report holds unless one of the terms fails."""

    total: float
    terms: tuple[BudgetTerm, ...]

    def __post_init__(self):
        if not 0.0 < self.total < 1.0:
            raise ValueError(f"failure probability {self.total!r}: expected a probability in (0, 1)")
        if sum(t.probability for t in self.terms) > self.total * (1.0 + 1e-12):
            raise ValueError("the terms' shares exceed the total failure probability")

    @classmethod
    def split(cls, total: float, quantities: list[tuple[str, int, str]]) -> FailureBudget:
        """Equal shares of `total` for (name, sides, what) each; names must be distinct."""
        names = [name for name, _, _ in quantities]
        if len(set(names)) != len(names):
            raise ValueError(f"budget terms {names} are not distinct")
        share = total / max(len(quantities), 1)
        return cls(float(total), tuple(BudgetTerm(name, share, sides, what) for name, sides, what in quantities))

    def term(self, name: str) -> BudgetTerm | None:
        return next((t for t in self.terms if t.name == name), None)

    def sigmas(self, name: str) -> float:
        """k for `name`'s limit; 0 for a quantity not in the budget (known exactly: its limit is its value)."""
        term = self.term(name)
        return 0.0 if term is None else term.sigmas

    def probability(self, name: str) -> float:
        term = self.term(name)
        return 0.0 if term is None else term.probability

    @property
    def combined(self) -> float:
        """The failure probability of the whole report: the sum of the shares spent (union bound)."""
        return float(sum(t.probability for t in self.terms))

    def to_json(self) -> dict:
        return {"total": self.total, "combined": self.combined,
                "terms": [{"name": t.name, "probability": t.probability, "sides": t.sides, "sigmas": t.sigmas,
                           "what": t.what} for t in self.terms]}


def report_budget(total: float, measured, verified_layers: list[str], data_leakage: bool = True) -> FailureBudget:
    """The budget of one session report: every calibrated value with an uncertainty in `measured`
    (qslab.analysis.measured_values.MeasuredValues), T_min, eps_max of each layer in `verified_layers`, and the
    data-leakage bound's C (unless `data_leakage` is False: a report without its data part)."""
    quantities = [(name, sides, what) for name, (sides, what) in CALIBRATED.items()
                  if getattr(measured, name, None) is not None and getattr(measured, name).uncertainty > 0.0]
    quantities += [(f"{layer}.{name}", 1, what) for layer in verified_layers for name, what in VERIFIED.items()]
    quantities += [DATA_MOMENTS] if data_leakage else []
    return FailureBudget.split(total, quantities)


def verification_probability(budget: FailureBudget, layer: str) -> float:
    """What analysis.verification.verify takes as its failure probability for `layer`: the sum of the T and eps
    shares (it spends half on each one-sided limit)."""
    return sum(budget.probability(f"{layer}.{name}") for name in VERIFIED)
