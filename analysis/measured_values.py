"""The calibrated values a session's results use, as Estimates: built once by the session, recorded once in the
session file (/meta/calibrations_json "measured", docs/RECORDING.md), read back through this same type by the
analysis and `qslab replay`.

One sigma is stored; every conservative limit (k sigma) is taken where it is used, from the coverage factor the
caller names, so no value is ever widened twice. The JSON is the schema-1 layout: {field: {"value",
"uncertainty"}}; the units follow from the field (they are not stored), so files written before this type
replay unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from qslab.analysis.estimate import Estimate
from qslab.analysis.verification import ServerDetector

UNITS = {"mu_photons": "photons", "gain": "", "server_efficiency": "", "server_electronic_noise_snu": "SNU",
         "transmittance": "", "amplitude_transmittance": "", "excess_noise_snu": "SNU",
         "amplifier_noise_figure_db": "dB", "server_shot_noise_variance_v2": "V^2",
         "processor_loss_per_pass_db": "dB"}
EFFICIENCY_CAP = 0.99  # a widened efficiency uncertainty stays below the efficiency itself (ServerDetector's rule)


@dataclass(frozen=True)
class MeasuredValues:
    """mu, G, the server detector and the honest link, each with its one-sigma uncertainty.

    transmittance / amplitude_transmittance / excess_noise_snu: the honest round trip from a channel record
    (older files hold only transmittance); amplifier_noise_figure_db: None in files without an amplifier
    record; server_shot_noise_variance_v2: the server detector's shot-noise unit, whose relative uncertainty
    scales every verified quadrature (None in files written before it was recorded); processor_loss_per_pass_db: the
    client processor's loss per pass, which scales the noise returned to the server (None in older files: taken as
    lossless, the conservative end). The per-layer values, VOA settings and pilot phases are what the session set (recorded context,
    not read by the results).
    """

    mu_photons: Estimate
    gain: Estimate
    server_efficiency: Estimate
    server_electronic_noise_snu: Estimate
    transmittance: Estimate | None = None
    amplitude_transmittance: Estimate | None = None
    excess_noise_snu: Estimate | None = None
    amplifier_noise_figure_db: Estimate | None = None
    server_shot_noise_variance_v2: Estimate | None = None  # the server detector's SNU (None in older files)
    processor_loss_per_pass_db: Estimate | None = None  # the client processor's (processor record; None: lossless)
    mu_per_layer: tuple[Estimate, ...] = ()
    attenuation_db_per_layer: tuple[float, ...] = ()
    pilot: dict | None = None  # {"client_lo_phase_rad", "server_lo_phase_rad", "leakage_field": [re, im]}

    def __post_init__(self):
        if self.transmittance is None and self.amplitude_transmittance is None:
            raise ValueError("measured values need the honest transmittance or amplitude_transmittance")
        for name, unit in UNITS.items():  # the field names the quantity, hence its unit (not stored in the file)
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Estimate(value.value, value.uncertainty, unit))
        object.__setattr__(self, "mu_per_layer", tuple(Estimate(e.value, e.uncertainty, UNITS["mu_photons"])
                                                       for e in self.mu_per_layer))
        object.__setattr__(self, "attenuation_db_per_layer", tuple(self.attenuation_db_per_layer))

    def server_detector(self, k, trusted: bool = True) -> ServerDetector:
        """The server's detector with its uncertainties widened to k sigma (the worst case the bound takes).

        k: one coverage factor for all three, or a FailureBudget (qslab.analysis.failure_budget) giving each its
        own (efficiency, electronic noise, shot-noise unit)."""
        if hasattr(k, "sigmas"):
            k = {name: k.sigmas(name) for name in ("server_efficiency", "server_electronic_noise_snu",
                                                   "server_shot_noise_variance_v2")}
        return server_detector(self.server_efficiency, self.server_electronic_noise_snu, k, trusted,
                               self.server_shot_noise_variance_v2)

    def to_json(self) -> dict:
        """The schema-1 JSON object ({"value", "uncertainty"} per estimate; absent: left out)."""
        out = {}
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, Estimate):
                out[name] = _entry(value)
            elif name == "mu_per_layer":
                out[name] = [_entry(e) for e in value]
            elif name == "attenuation_db_per_layer":
                out[name] = [float(v) for v in value]
            else:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, measured) -> MeasuredValues:
        """Read back what to_json wrote (and what older sessions wrote); ValueError naming the entry otherwise."""
        if not isinstance(measured, dict):
            raise ValueError(f"'measured' is a JSON {type(measured).__name__}, expected an object")
        required = ["mu_photons", "gain", "server_efficiency", "server_electronic_noise_snu"]
        required += [] if "amplitude_transmittance" in measured else ["transmittance"]
        values = {}
        for name, unit in UNITS.items():
            if name in required or name in measured:
                values[name] = _estimate(f"measured.{name}", measured.get(name), unit, at_least_one=name == "gain")
        layers = measured.get("mu_per_layer", [])
        attenuation = measured.get("attenuation_db_per_layer", [])
        if not isinstance(layers, list) or not isinstance(attenuation, list) or not all(
                _is_number(v) for v in attenuation):
            raise ValueError(f"measured.mu_per_layer / attenuation_db_per_layer are {layers!r} / {attenuation!r}, "
                             "expected lists of estimates / numbers")
        pilot = measured.get("pilot")
        if pilot is not None and not isinstance(pilot, dict):
            raise ValueError(f"measured.pilot is {pilot!r}, expected an object")
        return cls(**values, pilot=pilot, attenuation_db_per_layer=tuple(float(v) for v in attenuation),
                   mu_per_layer=tuple(_estimate(f"measured.mu_per_layer[{i}]", e, UNITS["mu_photons"])
                                      for i, e in enumerate(layers)))


def server_detector(efficiency: Estimate, electronic_noise_snu: Estimate, k,
                    trusted: bool = True, shot_noise_variance_v2: Estimate | None = None) -> ServerDetector:
    """A ServerDetector whose uncertainties are the k-sigma half-widths of the one-sigma estimates given (the
    efficiency's capped below the efficiency; the shot-noise unit's relative, capped below 1).

    k: a number for all, or {"server_efficiency", "server_electronic_noise_snu", "server_shot_noise_variance_v2"}
    -> coverage factor (a FailureBudget's sigmas)."""
    if not isinstance(k, dict):
        k = dict.fromkeys(("server_efficiency", "server_electronic_noise_snu", "server_shot_noise_variance_v2"), k)
    shot = 0.0
    if shot_noise_variance_v2 is not None and shot_noise_variance_v2.value > 0.0:
        shot = min(k["server_shot_noise_variance_v2"] * shot_noise_variance_v2.uncertainty
                   / shot_noise_variance_v2.value, EFFICIENCY_CAP)
    return ServerDetector(efficiency=efficiency.value, electronic_noise_snu=electronic_noise_snu.value,
                          trusted=trusted,
                          efficiency_uncertainty=min(k["server_efficiency"] * efficiency.uncertainty,
                                                     EFFICIENCY_CAP * efficiency.value),
                          electronic_noise_uncertainty_snu=k["server_electronic_noise_snu"]
                          * electronic_noise_snu.uncertainty,
                          shot_noise_rel_uncertainty=shot)


def _entry(estimate: Estimate) -> dict:
    return {"value": estimate.value, "uncertainty": estimate.uncertainty}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _estimate(where: str, entry, unit: str, at_least_one: bool = False) -> Estimate:
    numbers = [entry.get(name, 0.0) for name in ("value", "uncertainty")] if isinstance(entry, dict) else []
    if (not numbers or "value" not in entry or not all(_is_number(n) for n in numbers) or numbers[1] < 0
            or (at_least_one and numbers[0] < 1.0)):
        raise ValueError(f"{where} is {entry!r}, expected {{\"value\": a finite number{' >= 1' if at_least_one else ''}"
                         ", \"uncertainty\": a finite number >= 0}")
    return Estimate(float(numbers[0]), float(numbers[1]), unit)
