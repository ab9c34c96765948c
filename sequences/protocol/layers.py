"""What the set-up uploads and the acquisitions return: a layer as played, one (batch, layer) capture, the pilots."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from qslab.analysis.estimate import Estimate


@dataclass
class Layer:
    """One layer as uploaded: rows x modes, the AWG segment, and the reference symbols the server verifies against."""

    segment_id: int
    rows: int
    modes: int
    played: np.ndarray               # fields the calibrated model predicts for the codes played [rows, modes]
    photons_per_field: float = 1.0   # sqrt(photons) at the server's output per unit modulator field
    mu_photons: Estimate | None = None
    attenuation_db: float = float("nan")  # the VOA setting that gives this layer mu
    reference: np.ndarray | None = None   # played scaled to the measured mu: alpha in sqrt(photons)
    leakage_field: complex = 0j           # the carrier leakage its codes compensate (modulator field units)


@dataclass(frozen=True)
class LayerPlan:
    """What one acquisition of layer ``index`` verifies: its ``rows`` and, per row, the quadrature the server's
    receiver measures (``measure_p``: P, else X). Drawn before the acquisition (LinkAcquisition.plan_layer), so that
    the server's set-up of a layer can be made while the layer before it is read (LinkAcquisition.run_layers)."""

    index: int
    rows: np.ndarray
    measure_p: np.ndarray

    def same_as(self, other: LayerPlan) -> bool:
        """The same layer, rows and quadratures (a batch's plans drawn again from its seed)."""
        return (self.index == other.index and np.array_equal(self.rows, other.rows)
                and np.array_equal(self.measure_p, other.measure_p))


@dataclass(frozen=True)
class LayerCapture:
    """One (batch, layer) acquisition, as the parties hold it."""

    client_quadratures_snu: np.ndarray   # [B, rows] float32
    verified_rows: np.ndarray            # [v]
    measure_p: np.ndarray                # [B, v] bool
    sent_snu: np.ndarray                 # [B, v, modes] float32: the server's reference quadratures
    returned: np.ndarray | Future        # returned_snu, or its computation while the next layer runs (acquisition.py)

    @property
    def returned_snu(self) -> np.ndarray:
        """[B, v, modes] float32: the server's quadratures of the returned light (waits for them)."""
        return self.returned.result() if isinstance(self.returned, Future) else self.returned


@dataclass(frozen=True)
class PilotResult:
    """What the pilot acquisition measured: both LO phases, the client's gain per SNU, the channel samples."""

    client_phase_rad: float      # the client LO's phase relative to the signal: the server pre-rotates by -phi
    server_phase_rad: float      # the returned light's phase relative to the server's reference
    client_gain_snu: float       # <X>/(2 Re beta) at the client: sqrt(T_f t eta_c) (G - 1)/sqrt(G) if honest
    leakage_photons_sqrt: complex  # the carrier leakage at the server's output (server's estimate), sqrt(photons)
    leakage_client_photons_sqrt: complex  # the same seen by the client (a cross-check)
    sent_snu: np.ndarray         # the server's phase-corrected reference quadratures of the gated pilot rows
    returned_snu: np.ndarray
    rows: int
    skew_symbols: Estimate = Estimate(0.0, 0.0)  # the IQ skew left after the drives' compensation, symbol periods
