"""A curious server on the bench: photon counts of the light an honest client returns (docs/PHYSICS.md 17.7).

Why: the data-leakage bound (analysis/data_leakage_bound.py) says how much a server that keeps and
measures the returned light can learn about the client's image; this renders what such a server
would record from the session's own queries, so the claim can be tested on the bench.

    server = CuriousServer("delay", basis, residual_amplitude=0.0, residual_phase_rad=0.0, rows=784)
    bench.state.set_curious_server(server)    # every later session acquisition with 784 rows is counted
    server.records[-1]                        # CountRecord: counts [images, outputs], counted rows

Physics: after the client's amplifier, coupler and inverse chain, returned row r carries the mean the
server sent, sqrt(T) alpha_r (T = T_f t^2 T_r), plus the kick xi_r x_hat along the client's data mode,
xi_r complex Gaussian with E|xi_r|^2 = N = n_sp (1 - 1/G) t T_r (the bench's true amplifier, processor
loss and return fibre), and vacuum everywhere else. The server removes the displacement it knows,
(1 + a) e^{i phi} sqrt(T) alpha_r, with a relative amplitude error a and a phase error phi (both 0: a
perfect removal), sends each row's n bins through its passive interferometer V [J, n] (an isometry:
V^H V = I) and counts photons in the J outputs with ideal detectors. Given xi, output j of row r is a
coherent state of amplitude xi_r (V x_hat)_j + m_rj, m_r = -delta sqrt(T) V alpha_r, delta = (1 + a)
e^{i phi} - 1, so its count is Poisson(|xi_r (V x_hat)_j + m_rj|^2), and the sum over the counted
rows is Poisson of the summed intensities

    I_j = |(V x_hat)_j|^2 sum_r |xi_r|^2 + 2 Re[(V x_hat)_j conj(w_j)] + sum_r |m_rj|^2,
    w = -delta sqrt(T) V sum_r conj(xi_r) alpha_r,

exact for the server's view. The rows the server verifies by homodyne are not counted (a mode is
measured once). The xi_r are drawn here, independent of the client's own outcomes: exact for what the
server holds (its counts), which is all this module renders. Each row is measured on its own n bins (a
gated interferometer; a delay line leaves one empty guard bin between rows).

Random draws: a Generator of its own, from (bench seed, this stream's tag, what the processor and the
gate hold, how often that very state was counted before), so arming a curious server changes nothing
else the bench draws, and a batch is counted the same whatever ran before it (a resumed session
matches a clean one).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

STREAM_TAG = 0x43555249  # "CURI": the curious server's own random stream
KINDS = ("per_bin", "delay", "mode_sorter")


@dataclass(frozen=True, eq=False)
class CountRecord:
    """One counted acquisition: counts [images, outputs] summed over `counted_rows` rows per image."""

    counts: np.ndarray
    counted_rows: int
    photons: float            # the true N per returned row (bench truth, for tests)
    transmittance: float      # the true round trip T of the displacement


@dataclass(eq=False)
class CuriousServer:
    """The server's photon-counting measurement on the returned light of acquisitions with `rows` rows."""

    kind: str
    basis: np.ndarray                     # V [outputs, modes], V^H V = I
    residual_amplitude: float = 0.0       # a: relative amplitude error of the displacement removal
    residual_phase_rad: float = 0.0       # phi: its phase error
    rows: int | None = None               # the layer it listens to (None: every session acquisition)
    records: list = field(default_factory=list)
    _repeats: dict = field(default_factory=dict, repr=False)
    _background: tuple | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"curious server kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        basis = np.asarray(self.basis, dtype=complex)
        if basis.ndim != 2 or basis.shape[0] < basis.shape[1]:
            raise ValueError(f"curious server basis of shape {basis.shape}: expected V [outputs >= modes, modes]")
        if not np.allclose(basis.conj().T @ basis, np.eye(basis.shape[1]), atol=1e-9):
            raise ValueError("curious server basis is not passive and lossless: expected V^H V = I")
        self.basis = basis
        for name in ("residual_amplitude", "residual_phase_rad"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"curious server {name} {value!r}: expected a finite number")
            setattr(self, name, value)
        if self.residual_amplitude <= -1.0:
            raise ValueError(f"curious server residual_amplitude {self.residual_amplitude!r}: expected > -1 "
                             "(a relative error of the removed amplitude)")

    @property
    def delta(self) -> complex:
        """delta = (1 + a) e^{i phi} - 1: what is left of the returned mean, relative to it, with a minus sign."""
        return (1.0 + self.residual_amplitude) * complex(math.cos(self.residual_phase_rad),
                                                         math.sin(self.residual_phase_rad)) - 1.0

    def listens_to(self, rows: int) -> bool:
        return self.rows is None or int(rows) == int(self.rows)

    def observe(self, x_hat, symbols, verified_rows, link, bench_seed) -> CountRecord:
        """Count one acquisition (x_hat [B, n] as the processor implements it, symbols [R, n] as sent, the gate's
        verified rows, the true LinkParameters); the record is appended to `records` and returned."""
        x_hat = np.asarray(x_hat, dtype=complex)
        symbols = np.asarray(symbols, dtype=complex)
        counted = np.setdiff1d(np.arange(symbols.shape[0]), np.asarray(verified_rows, dtype=np.intp))
        rng = self._generator(x_hat, counted, bench_seed)
        t_pass = link.processor_transmittance_per_pass
        photons = float(link.inversion_factor * (1.0 - 1.0 / link.gain) * t_pass * link.return_transmittance)
        transmittance = float(link.round_trip_transmittance)
        counts = render_counts(x_hat, symbols[counted], self.basis, photons, transmittance, self.delta, rng,
                               self._background_of(symbols, counted, transmittance))
        record = CountRecord(counts, int(counted.size), photons, transmittance)
        self.records.append(record)
        return record

    def take(self) -> CountRecord | None:
        """The last record, and forget them all (the session takes one per batch)."""
        last = self.records[-1] if self.records else None
        self.records.clear()
        return last

    def _generator(self, x_hat, counted, bench_seed) -> np.random.Generator:
        digest = hashlib.blake2b(digest_size=16)
        for array in (x_hat, counted):
            digest.update(np.ascontiguousarray(array).tobytes())
        key = digest.digest()
        repeat = self._repeats[key] = self._repeats.get(key, -1) + 1
        words = np.frombuffer(key, dtype=np.uint32).tolist()
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(bench_seed or 0), STREAM_TAG, repeat,
                                                                           *words])))

    def _background_of(self, symbols, counted, transmittance) -> np.ndarray | None:
        """sum_r |(V alpha_r)_j|^2 over the counted rows (None for a perfect removal): the residual's own photons."""
        if self.delta == 0.0:
            return None
        key = (hashlib.blake2b(np.ascontiguousarray(symbols).tobytes() + counted.tobytes(), digest_size=16).digest(),
               transmittance)
        if self._background is None or self._background[0] != key:
            self._background = (key, np.sum(np.abs(symbols[counted] @ self.basis.T) ** 2, axis=0))
        return self._background[1]


def render_counts(x_hat, counted_symbols, basis, photons: float, transmittance: float, delta: complex,
                  rng: np.random.Generator, background=None) -> np.ndarray:
    """Photon counts [B, J] summed over the counted rows (module docstring): Poisson of the summed intensities.

    counted_symbols [R, n]: the sent amplitudes of the counted rows; background: sum_r |(V alpha_r)_j|^2
    (computed here when None and delta != 0).
    """
    basis = np.asarray(basis, dtype=complex)
    batch, rows = x_hat.shape[0], counted_symbols.shape[0]
    xi = math.sqrt(photons / 2.0) * (rng.standard_normal((batch, rows)) + 1j * rng.standard_normal((batch, rows)))
    data_out = x_hat @ basis.T                                     # (V x_hat)_j per image
    intensity = np.abs(data_out) ** 2 * np.sum(np.abs(xi) ** 2, axis=1, keepdims=True)
    if delta != 0.0:
        scale = -delta * math.sqrt(transmittance)
        w = scale * ((np.conj(xi) @ counted_symbols) @ basis.T)   # -delta sqrt(T) V sum_r conj(xi_r) alpha_r
        if background is None:
            background = np.sum(np.abs(counted_symbols @ basis.T) ** 2, axis=0)
        intensity += 2.0 * np.real(data_out * np.conj(w)) + abs(delta) ** 2 * transmittance * background[None, :]
    return rng.poisson(np.clip(intensity, 0.0, None)).astype(np.int64)
