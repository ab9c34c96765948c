"""What a calibration cost in instrument time, and the least time its stated uncertainty needs.

On hardware a calibration's cost is the instruments' time (averaging, acquiring, settling, switching on,
locking), not the socket. Every procedure's record carries ``conditions["instrument_cost"]``
(docs/DECISIONS.md X): ``round_trips``, the messages it sent, and ``instrument_s``, the instrument seconds
those messages asked for, both counted by the bench that answered them (each emulator charges its
instruments' clock for exactly the operations the commands asked for: ``BenchClock.charged_s``). A station
of real instruments has no such ledger: there the two are recorded as None and ``counted_by`` says so.

The least time (``least_time_s``) is the averaging law: a statistical uncertainty that falls as
1/sqrt(T) with the time T spent measuring, next to declared systematics that no averaging reduces.
The least T for the stated total uncertainty u (within ``tolerance``, 1 %) keeps the statistical part
u_stat(T)^2 = u_stat^2 T0 / T below (1 + tolerance)^2 u^2 - u_sys^2; a measurement dominated by
its systematics needs far less than it took. For the homodyne's shot-noise variance the Fisher
information of Gaussian samples gives the floor directly (``homodyne_least_time_s``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass

COST_KEY = "instrument_cost"
TOLERANCE = 0.01   # the least time keeps the total uncertainty within 1 % of the stated one


@dataclass(frozen=True)
class InstrumentCost:
    """Messages sent and instrument seconds asked for by one calibration kind (None: not counted)."""

    round_trips: int | None
    instrument_s: float | None
    counted_by: str

    def as_dict(self) -> dict:
        return asdict(self)


class CostMeter:
    """The station's benches' message counts and charged instrument seconds, read before and after a procedure."""

    def __init__(self, station) -> None:
        self.benches = list(getattr(station, "benches", []) or [])
        self.cost: InstrumentCost | None = None

    def _read(self) -> tuple[int, float]:
        trips = sum(sum(bench.message_counts().values()) for bench in self.benches)
        return trips, sum(bench.charged_s() for bench in self.benches)

    @contextmanager
    def measuring(self):
        """``cost`` is set on leaving: exact once the procedure has returned (every message it sent answered)."""
        if not self.benches:
            yield self
            self.cost = InstrumentCost(None, None, "not counted: no virtual bench answers this station")
            return
        trips0, seconds0 = self._read()
        yield self
        trips1, seconds1 = self._read()
        self.cost = InstrumentCost(trips1 - trips0, seconds1 - seconds0, "the virtual bench (messages framed, "
                                   "instrument seconds charged by the emulators)")


def least_time_s(measurement_s: float, stated_u: float, statistical_u: float, tolerance: float = TOLERANCE) -> float:
    """The averaging law (module docstring): the least measuring time that keeps the total uncertainty within
    (1 + tolerance) of ``stated_u`` when ``measurement_s`` gave the statistical part ``statistical_u``."""
    systematic_sq = max(stated_u**2 - statistical_u**2, 0.0)
    allowed_sq = (1.0 + tolerance) ** 2 * stated_u**2 - systematic_sq
    return measurement_s * statistical_u**2 / allowed_sq


def homodyne_least_time_s(shot_noise_v2: float, electronic_v2: float, stated_u_v2: float, symbol_period_s: float
                          ) -> float:
    """The Fisher floor of the shot-noise variance S = V_tot - V_el: from n Gaussian samples a variance V is
    known to V sqrt(2/n) at best, so n_tot = 2 V_tot^2/a, n_el = 2 V_el^2/b with a + b = u^2; the fewest samples
    in all, n = 2 (V_tot + V_el)^2 / u^2 (records split as V_tot : V_el), one independent sample per symbol."""
    total = shot_noise_v2 + electronic_v2
    return 2.0 * (total + electronic_v2) ** 2 / stated_u_v2**2 * symbol_period_s


def statistical_part(stated_u: float, relative_budget: dict, statistical_keys) -> float:
    """The statistical share of a stated uncertainty from its relative budget (terms in quadrature)."""
    total = math.sqrt(sum(v**2 for v in relative_budget.values())) or 1.0
    stat = math.sqrt(sum(relative_budget[k] ** 2 for k in statistical_keys if k in relative_budget))
    return stated_u * stat / total
