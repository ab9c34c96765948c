"""One operating point's leakage figures, as the CLI and the session report them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from qslab.analysis import data_leakage, weight_leakage
from qslab.analysis.client_measurement import client_snr


@dataclass(frozen=True)
class OperatingPoint:
    """The inputs of the leakage analysis, with their units."""

    mu: float  # mean photons per complex mode at the server's output
    gain: float  # the client's amplifier power gain G >= 1
    modes: int = 392  # complex modes per row, n
    rows: int = 794  # rows reusing one data vector per query, M
    transmittance: float = 1.0  # round-trip power transmittance T, in (0, 1]
    technical_noise: float = 0.0  # untrusted technical excess noise xi, SNU
    queries: int = 1  # queries reusing the data, Q


def leakage_summary(point: OperatingPoint) -> dict:
    """Weight leakage (Eq. 2) and data leakage (both published forms), per symbol and cumulative."""
    eps = float(weight_leakage.honest_excess_noise_snu(point.gain, point.modes) + point.technical_noise)
    per_mode = float(weight_leakage.holevo_verified_bits(weight_leakage.modulation_variance_snu(point.mu), point.transmittance, eps))
    data = data_leakage.per_symbol_and_cumulative(point.gain, point.modes, point.rows, point.queries)
    return {
        "inputs": asdict(point),
        "weight_leakage_bits_per_mode": per_mode,
        "weight_leakage_bits_per_real_weight": 0.5 * per_mode,
        "weight_leakage_bits_per_mode_cumulative": per_mode * point.queries,
        "weight_leakage_bits_unverified": float(weight_leakage.unverified_bound_bits(point.mu)),
        "data_leakage_bits_cramer_rao": data["cramer_rao"],
        "data_leakage_bits_cramer_rao_cumulative": data["cramer_rao_cumulative"],
        "data_leakage_bits_prx": data["prx"],
        "data_leakage_bits_prx_cumulative": data["prx_cumulative"],
        "excess_noise_snu": eps,
        "client_snr": float(client_snr(point.mu, point.gain)),
    }
