"""The virtual bench's optical engine: one mode-level Gaussian model of the secure link (docs/PHYSICS.md).

Modes are complex amplitudes a with additive complex Gaussian noise; a vacuum has variance 1/4 per
real component, so X = 2 Re a and P = 2 Im a have variance 1 (SNU), and a coherent state |alpha>
has <X> = 2 Re alpha. Every random draw comes from the numpy Generator passed in.

Two paths compute the same physics:

* fast path (rows the server does not verify): the client's processor output mode 1 is exactly the
  coherent state sqrt(T_f t) beta, beta = sum_i conj(x_hat_i) alpha_i, so Re beta for the whole batch
  is one real matmul and the client's homodyne outcome is one Gaussian draw with the closed-form
  mean and variance of qslab.analysis.client_measurement (the idler, coupler, detector-loss and electronic
  noises are combined; the returned state is not needed);
* joint path (rows the server verifies): the client's measurement and the returned modes are drawn
  from the same noise realisations (processor-output vacuum, amplifier idler, coupler vacuum), so
  their correlations are exact. It uses the identity U^dagger (b + D e_1) = U^dagger b + D x_hat,
  which holds for any unitary with first row conj(x_hat), to avoid an N x N unitary per image.

`simulate_rows_reference` runs the same chain with explicit Givens matrices and mode-by-mode noise;
it is slow (O(N^2) per image) and exists to check the two fast paths. Weights and data are encoded
by qslab.analysis.encoding (the lab's protocol uses the same); the fast normals and the server's
per-sample normal stream live in random_streams.py.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from qslab.analysis import client_measurement as cm
from qslab.analysis.encoding import pack_weights, unit_vectors
from qslab.analysis.givens import givens_angles, givens_unitary
from qslab.analysis.units import db_to_linear, linear_to_db
from qslab.instruments.sim.link import random_streams as streams
from qslab.instruments.sim.link.random_streams import NormalStream, standard_normal_f32

VACUUM_COMPONENT_VARIANCE = 0.25  # per real component of a complex amplitude (X = 2 Re a has variance 1)
DEFAULT_CHUNK_IMAGES = 16384      # fast-path images per chunk (temporaries ~ chunk x rows x 8 B)
VERIFY_BLOCK_SAMPLES = 2**19      # returned samples per verification block (2 MB per float32 array: stays in cache)
# Both sizes (and random_streams.NORMAL_STREAM_BLOCK) are part of the random-stream layout: keep
# them fixed for bit-for-bit replays.
# The per-sample normals' block sampler (random_streams.BLOCK_SAMPLERS, also part of the layout): SFC64 through the
# all-float32 Box-Muller, about twice as fast as PCG64 through standard_normal_f32.
FAST_SAMPLER = "sfc64"
UNIT_NORM_TOLERANCE = 1e-9


# --- validation ------------------------------------------------------------------------------------

def _finite(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _at_least(name: str, value, minimum: float) -> float:
    value = _finite(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return value


def _unit_interval(name: str, value) -> float:
    """Transmittances and efficiencies: (0, 1]."""
    value = _finite(name, value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return value


# --- parameters ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinkParameters:
    """Everything physical about one secure link (DECISIONS G, M, N).

    mu_photons is the mean photon number per complex mode over the layer at the server's output.
    forward/return transmittances are the fibre (or free-space) power transmittances server ->
    client and client -> server; the processor loses processor_loss_per_pass_db each time the light
    goes through it (forward chain, inverse chain), so the round trip the server sees is
    T = T_f t^2 T_r. amplifier_noise_figure_db None means a quantum-limited amplifier (n_sp = 1).
    Electronic noises are in SNU referred to each detector's own shot noise.
    """

    mu_photons: float
    gain: float
    amplifier_noise_figure_db: float | None = None
    forward_transmittance: float = 1.0
    return_transmittance: float = 1.0
    processor_loss_per_pass_db: float = 0.0
    client_efficiency: float = 1.0
    client_electronic_noise_snu: float = 0.0
    server_efficiency: float = 1.0
    server_electronic_noise_snu: float = 0.0

    def __post_init__(self):
        _at_least("mu_photons", self.mu_photons, 0.0)
        _at_least("gain", self.gain, 1.0)
        if self.amplifier_noise_figure_db is not None:
            _finite("amplifier_noise_figure_db", self.amplifier_noise_figure_db)
            self.inversion_factor  # raises below the quantum limit
        _unit_interval("forward_transmittance", self.forward_transmittance)
        _unit_interval("return_transmittance", self.return_transmittance)
        _at_least("processor_loss_per_pass_db", self.processor_loss_per_pass_db, 0.0)
        _unit_interval("client_efficiency", self.client_efficiency)
        _at_least("client_electronic_noise_snu", self.client_electronic_noise_snu, 0.0)
        _unit_interval("server_efficiency", self.server_efficiency)
        _at_least("server_electronic_noise_snu", self.server_electronic_noise_snu, 0.0)

    @property
    def inversion_factor(self) -> float:
        """n_sp >= 1 from the noise figure (1 at the quantum limit, and for G = 1 where there is no amplifier)."""
        if self.amplifier_noise_figure_db is None or self.gain == 1.0:
            return 1.0
        n_sp = float(cm.inversion_factor_from_noise_figure(self.gain, self.amplifier_noise_figure_db))
        if n_sp < 1.0 - 1e-12:
            minimum_db = float(linear_to_db((2.0 * self.gain - 1.0) / self.gain))
            raise ValueError(f"amplifier_noise_figure_db must be >= {minimum_db:.4f} dB (quantum limit at gain "
                             f"{self.gain:g}), got {self.amplifier_noise_figure_db!r}")
        return max(n_sp, 1.0)

    @property
    def processor_transmittance_per_pass(self) -> float:
        return float(db_to_linear(-self.processor_loss_per_pass_db))

    @property
    def round_trip_transmittance(self) -> float:
        """T of DECISIONS G: server output -> server verification input."""
        return self.forward_transmittance * self.processor_transmittance_per_pass**2 * self.return_transmittance

    @property
    def client_mean_per_re_beta(self) -> float:
        """<X_meas>/Re(beta) = 2 sqrt(eta (G - 1)) sqrt(T_f t); beta is the lossless server-side product."""
        loss = self.forward_transmittance * self.processor_transmittance_per_pass
        return float(cm.measured_mean_per_re_beta(self.gain, self.client_efficiency)) * np.sqrt(loss)

    @property
    def client_variance_snu(self) -> float:
        """Var(X_meas): loss before the amplifier keeps mode 1 coherent, so the closed form applies unchanged."""
        return float(cm.measured_variance_snu(self.gain, self.client_efficiency, self.client_electronic_noise_snu,
                                              self.inversion_factor))

    @property
    def returned_excess_noise_total_snu(self) -> float:
        """Honest-client excess noise summed over modes, referred to the server's input: t T_r 2 n_sp (1 - 1/G)."""
        k = float(cm.returned_excess_noise_total_snu(self.gain, self.inversion_factor))
        return self.processor_transmittance_per_pass * self.return_transmittance * k


# --- the client's time-bin processor (DECISIONS M) ------------------------------------------------

def givens_matrix(theta_rad, phi_rad, loss_per_pass_db: float = 0.0) -> np.ndarray:
    """The forward chain as a matrix A = sqrt(t) U [..., N, N], output 0 = the loop mode (first row conj(x_hat)).

    U is qslab.analysis.givens.givens_unitary (the convention is documented there). Loss per pass is mode
    independent (insertion loss of one traversal of the processor), so A A^dagger = t I; apply it
    with `apply_passive_map`.
    """
    t = db_to_linear(-_at_least("loss_per_pass_db", loss_per_pass_db, 0.0))
    return np.sqrt(t) * givens_unitary(theta_rad, phi_rad)


def inverse_givens_matrix(theta_rad, phi_rad, loss_per_pass_db: float = 0.0) -> np.ndarray:
    """The inverse chain (bins in reverse order, angles negated): sqrt(t) U^dagger."""
    forward = givens_matrix(theta_rad, phi_rad, 0.0)
    t = db_to_linear(-loss_per_pass_db)
    return np.sqrt(t) * np.conj(np.swapaxes(forward, -1, -2))


# --- mode-level operations (complex amplitudes, SNU) -----------------------------------------------

def vacuum_noise(shape, rng: np.random.Generator) -> np.ndarray:
    """Vacuum fluctuations: complex, variance 1/4 per real component."""
    shape = tuple(np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    return np.sqrt(VACUUM_COMPONENT_VARIANCE) * rng.standard_normal(shape + (2,)).view(np.complex128)[..., 0]


def thermal_noise(shape, rng: np.random.Generator, quadrature_variance_snu: float) -> np.ndarray:
    """A thermal mode with the given quadrature variance (1 = vacuum)."""
    return np.sqrt(quadrature_variance_snu) * vacuum_noise(shape, rng)


def coherent_state(alpha, rng: np.random.Generator) -> np.ndarray:
    """|alpha> as amplitude plus vacuum fluctuations."""
    alpha = np.asarray(alpha, dtype=np.complex128)
    return alpha + vacuum_noise(alpha.shape, rng)


def attenuate(modes, transmittance: float, rng: np.random.Generator) -> np.ndarray:
    """Loss: sqrt(T) a + sqrt(1 - T) v; means scale by sqrt(T), a vacuum stays a vacuum."""
    transmittance = _unit_interval("transmittance", transmittance)
    modes = np.asarray(modes, dtype=np.complex128)
    return np.sqrt(transmittance) * modes + np.sqrt(1.0 - transmittance) * vacuum_noise(modes.shape, rng)


def passive_noise_factor(matrix) -> np.ndarray:
    """L with L L^dagger = I - A A^dagger: the vacuum a lossy passive map A must add to stay physical."""
    matrix = np.asarray(matrix, dtype=np.complex128)
    n = matrix.shape[-1]
    if matrix.ndim < 2 or matrix.shape[-2] != n:
        raise ValueError(f"matrix must be square [..., N, N], got shape {matrix.shape}")
    deficit = np.eye(n) - matrix @ np.conj(np.swapaxes(matrix, -1, -2))
    values, vectors = np.linalg.eigh(deficit)
    if np.any(values < -1e-10):
        raise ValueError("matrix is not passive: I - A A^dagger has a negative eigenvalue (the map has gain)")
    return vectors * np.sqrt(np.clip(values, 0.0, None))[..., None, :]


def apply_passive_map(matrix, modes, rng: np.random.Generator) -> np.ndarray:
    """b = A a + L v, v vacuum: output covariance A Cov(a) A^dagger + (I - A A^dagger)/2 (complex)."""
    matrix = np.asarray(matrix, dtype=np.complex128)
    modes = np.asarray(modes, dtype=np.complex128)
    if modes.shape[-1] != matrix.shape[-1]:
        raise ValueError(f"modes last axis {modes.shape[-1]} must match the matrix size {matrix.shape[-1]}")
    factor = passive_noise_factor(matrix)
    noise = vacuum_noise(np.broadcast_shapes(modes.shape, matrix.shape[:-1]), rng)
    return np.einsum("...ij,...j->...i", matrix, modes) + np.einsum("...ij,...j->...i", factor, noise)


def amplify(mode, gain: float, idler) -> np.ndarray:
    """Phase-insensitive amplifier c = sqrt(G) b + sqrt(G - 1) v^dagger (the idler enters conjugated)."""
    gain = _at_least("gain", gain, 1.0)
    return np.sqrt(gain) * np.asarray(mode) + np.sqrt(gain - 1.0) * np.conj(idler)


def split_coupler(mode, gain: float, vacuum) -> tuple[np.ndarray, np.ndarray]:
    """(1 - 1/G):(1/G) coupler: d_meas = sqrt(1 - 1/G) c + sqrt(1/G) u, d_ret = sqrt(1/G) c - sqrt(1 - 1/G) u."""
    gain = _at_least("gain", gain, 1.0)
    keep, tap = np.sqrt(1.0 / gain), np.sqrt(1.0 - 1.0 / gain)
    mode = np.asarray(mode)
    return tap * mode + keep * vacuum, keep * mode - tap * vacuum


def quadrature_snu(modes, measure_p) -> np.ndarray:
    """Noise-free quadrature of a sampled amplitude: X = 2 Re a, P = 2 Im a (measure_p selects per element)."""
    modes = np.asarray(modes)
    return np.where(measure_p, 2.0 * modes.imag, 2.0 * modes.real)


def homodyne(modes, measure_p, rng: np.random.Generator, efficiency: float = 1.0,
             electronic_noise_snu: float = 0.0) -> np.ndarray:
    """Balanced homodyne: sqrt(eta) Q + N(0, 1 - eta + v_el) (detector loss vacuum and electronics combined)."""
    efficiency = _unit_interval("efficiency", efficiency)
    electronic_noise_snu = _at_least("electronic_noise_snu", electronic_noise_snu, 0.0)
    signal = quadrature_snu(modes, measure_p)
    return np.sqrt(efficiency) * signal + np.sqrt(1.0 - efficiency + electronic_noise_snu) * rng.standard_normal(
        signal.shape)


# --- reference model: explicit matrices, one image -------------------------------------------------

def simulate_rows_reference(symbols, x_hat, params: LinkParameters, rng: np.random.Generator, measure_p):
    """The whole chain for one image, mode by mode with explicit Givens matrices (slow; for checks).

    symbols [rows, N]; x_hat [N]; measure_p bool [shots, rows] (the server's quadrature per row and
    shot). Returns the client's outcomes [shots, rows] and the server's returned quadratures
    [shots, rows, N], all in SNU.
    """
    symbols, x_hat = _check_symbols_and_data(symbols, np.asarray(x_hat)[None])
    x_hat = x_hat[0]
    measure_p = np.asarray(measure_p, dtype=bool)
    if measure_p.ndim != 2 or measure_p.shape[1] != symbols.shape[0]:
        raise ValueError(f"measure_p must be [shots, rows={symbols.shape[0]}], got shape {measure_p.shape}")
    theta, phi = givens_angles(x_hat)
    loss_db = params.processor_loss_per_pass_db
    forward, inverse = givens_matrix(theta, phi, loss_db), inverse_givens_matrix(theta, phi, loss_db)
    shape = measure_p.shape + (symbols.shape[1],)

    sent = coherent_state(np.broadcast_to(symbols, shape), rng)
    at_client = attenuate(sent, params.forward_transmittance, rng)
    processed = apply_passive_map(forward, at_client, rng)
    idler = thermal_noise(shape[:-1], rng, 2.0 * params.inversion_factor - 1.0)
    amplified = amplify(processed[..., 0], params.gain, idler)
    to_detector, to_return = split_coupler(amplified, params.gain, vacuum_noise(shape[:-1], rng))
    x_meas = homodyne(to_detector, False, rng, params.client_efficiency, params.client_electronic_noise_snu)
    reinjected = processed.copy()
    reinjected[..., 0] = to_return
    restored = apply_passive_map(inverse, reinjected, rng)
    at_server = attenuate(restored, params.return_transmittance, rng)
    returned = homodyne(at_server, measure_p[..., None], rng, params.server_efficiency,
                        params.server_electronic_noise_snu)
    return x_meas, returned


# --- the secure layer: fast path + joint path ------------------------------------------------------

@dataclass(frozen=True)
class VerificationRecord:
    """What the server knows about the rows it verified in one call.

    row_indices [v]; measure_p bool [batch, v] (False = X, True = P, secret to the server);
    sent_symbols [v, N] (complex amplitudes at the server's output); returned_quadratures_snu
    [batch, v, N] (its homodyne outcomes, SNU of its own detector, its own phase reference).
    The returned quadratures are float32: each is a shot-noise-limited sample of unit variance, so
    float32's 6e-8 relative resolution is far below the noise, and drawing them in float32 halves the
    cost of verification (the estimators accumulate in float64).
    """

    row_indices: np.ndarray
    measure_p: np.ndarray
    sent_symbols: np.ndarray
    returned_quadratures_snu: np.ndarray
    attacker: object = None  # what a cheating client held (qslab.instruments.sim.faults_attacks.attacks.AttackerRecord), else None

    @property
    def sent_quadratures_snu(self) -> np.ndarray:
        """2 Re alpha or 2 Im alpha per verified (image, row, mode), aligned with the returned ones."""
        return quadrature_snu(self.sent_symbols[None], self.measure_p[..., None])

    def write_sent_quadratures_snu(self, out: np.ndarray) -> np.ndarray:
        """sent_quadratures_snu written into `out` (any float dtype, [batch, v, N] or flat) without temporaries."""
        view = out.reshape(self.returned_quadratures_snu.shape)
        np.copyto(view, 2.0 * self.sent_symbols.real)
        np.copyto(view, 2.0 * self.sent_symbols.imag, where=self.measure_p[..., None])
        return out


def _check_symbols(symbols) -> np.ndarray:
    symbols = np.asarray(symbols)
    if symbols.ndim != 2 or symbols.size == 0:
        raise ValueError(f"symbols must be a non-empty 2-D array [rows, modes], got shape {symbols.shape}")
    return np.ascontiguousarray(symbols, dtype=np.complex128)


def _check_symbols_and_data(symbols, x_hat) -> tuple[np.ndarray, np.ndarray]:
    symbols = _check_symbols(symbols)
    x_hat = np.asarray(x_hat)
    if x_hat.ndim != 2 or x_hat.shape[1] != symbols.shape[1] or x_hat.shape[0] == 0:
        raise ValueError(f"x_hat must be [batch, modes={symbols.shape[1]}], got shape {x_hat.shape}")
    x_hat = np.ascontiguousarray(x_hat, dtype=np.complex128)
    flat = x_hat.view(np.float64)
    bad = np.flatnonzero(np.abs(np.einsum("ij,ij->i", flat, flat) - 1.0) > 2.0 * UNIT_NORM_TOLERANCE)
    if bad.size:
        raise ValueError(f"x_hat rows must have unit norm (unit_vectors); rows {bad[:10].tolist()} do not")
    return symbols, x_hat


def _sqrtm_2x2(s11, s12, s22):
    """Symmetric square root of [[s11, s12], [s12, s22]] (PSD, nonzero), elementwise over arrays."""
    root_det = np.sqrt(np.clip(s11 * s22 - s12**2, 0.0, None))
    norm = np.sqrt(s11 + s22 + 2.0 * root_det)
    return (s11 + root_det) / norm, s12 / norm, (s22 + root_det) / norm


def _verified_rows(x_hat, x_basis, symbols, beta, params: LinkParameters, rng: np.random.Generator,
                   returned: np.ndarray, scratch: np.ndarray, signals: np.ndarray, measure_p=None):
    """Joint client measurement and server homodyne for the verified rows of one block (docs/PHYSICS.md 5).

    With k = sqrt(t) n + sqrt(1-t) m~ the processor-output vacuum written in the input basis, the
    returned mode is r_i = sqrt(t) (sqrt(t T_f) alpha_i + k_i + D x_i) + loss vacuum, D = d_ret - b_1,
    and b_1 = sqrt(t T_f) beta + x^dagger k. The server reads y_i = a Q(...) + independent noise,
    a = sqrt(eta_s T_r t); the measured quadrature of k_i and the independent noise are drawn as one
    normal w_i per mode, and what b_1 needs of k (its projection x^dagger k) is drawn conditionally
    on w, two normals per (image, row). The server picks X or P with probability 1/2 each.

    beta = x_hat^dagger alpha [batch, rows]; x_basis = float32 [batch, 2, N] (Re x_hat, Im x_hat).
    `returned` [batch, rows, N] (float32, C-contiguous) holds on entry w/sqrt(var_w), one standard
    normal per returned sample (drawn by the caller, see secure_products); it is overwritten with y
    in place. `scratch` is a work buffer of the same shape; signals = 2 a sqrt(t T_f) [Re alpha;
    Im alpha] [2 rows, N] (float32). measure_p (bool [batch, rows]): the server's given quadrature
    choices, or None to draw them here (the first draw of the block). Returns the client's
    outcomes [batch, rows] and the quadrature choices.
    """
    batch, n_modes = x_hat.shape
    n_rows = symbols.shape[0]
    gain, n_sp = params.gain, params.inversion_factor
    t_proc = params.processor_transmittance_per_pass
    root_loss = np.sqrt(params.forward_transmittance * t_proc)
    a = np.sqrt(params.server_efficiency * params.return_transmittance * t_proc)
    var_w = 1.0 + params.server_electronic_noise_snu
    f = (var_w - a * a) / var_w  # Var(independent part)/Var(w)

    if measure_p is None:
        measure_p = rng.random((batch, n_rows)) < 0.5
    xr, xi = x_hat.real, x_hat.imag
    # sum_i conj(x_i) w_i per (image, row): one float32 pass over the block (accumulated by BLAS)
    proj = np.matmul(returned, x_basis.transpose(0, 2, 1)).astype(np.float64)  # [batch, rows, 2]: sum w xr, sum w xi
    aa, bb, cc = np.einsum("ij,ij->i", xr, xr), np.einsum("ij,ij->i", xi, xi), np.einsum("ij,ij->i", xr, xi)
    r11, r12, r22 = _sqrtm_2x2(f * aa + bb, cc * (1.0 - f), f * bb + aa)
    z = rng.standard_normal((batch, n_rows, 2))
    cond_re = r11[:, None] * z[..., 0] + r12[:, None] * z[..., 1]
    cond_im = r12[:, None] * z[..., 0] + r22[:, None] * z[..., 1]
    rotation = np.where(measure_p, 1j, 1.0)  # e^{i theta}: the server's quadrature frame
    scale_w = a / np.sqrt(var_w)  # (a/var_w) sqrt(var_w): w = sqrt(var_w) * the stored normal
    k_proj = 0.5 * rotation * (scale_w * (proj[..., 0] - 1j * proj[..., 1]) + cond_re + 1j * cond_im)

    b1 = root_loss * beta + k_proj
    idler = thermal_noise((batch, n_rows), rng, 2.0 * n_sp - 1.0)
    c = amplify(b1, gain, idler)
    to_detector, to_return = split_coupler(c, gain, vacuum_noise((batch, n_rows), rng))
    x_meas = homodyne(to_detector, False, rng, params.client_efficiency, params.client_electronic_noise_snu)

    # y = sqrt(var_w) w + 2a Re(D e^{-i theta} x_i) + a sqrt(t T_f) Q(alpha_i), accumulated in place
    disturbance = (to_return - b1) / rotation
    coefficients = np.empty((batch, n_rows, 2), dtype=np.float32)
    coefficients[..., 0] = (2.0 * a) * disturbance.real
    coefficients[..., 1] = (-2.0 * a) * disturbance.imag
    if var_w != 1.0:
        returned *= np.float32(np.sqrt(var_w))
    # the signal row of each (image, row): X or P of alpha_row, gathered in one pass from [2 rows, N]
    np.take(signals, (np.arange(n_rows) + n_rows * measure_p).ravel(), axis=0, out=scratch.reshape(-1, n_modes))
    returned += scratch
    np.matmul(coefficients, x_basis, out=scratch)
    returned += scratch
    return x_meas, measure_p


def _unamplified_rows(x_hat, x_basis, symbols, beta, params: LinkParameters, rng: np.random.Generator,
                      returned: np.ndarray, scratch: np.ndarray, signals: np.ndarray, measure_p=None):
    """_verified_rows at gain 1 (the client's amplifier off, as the homodyne calibration has it): the same draws
    and the same bits, without the joint algebra that gain 1 cancels exactly.

    Why it is exact: at G = 1 the amplifier is c = 1 b_1 + 0 idler* and the coupler d_meas = 0 c + 1 u,
    d_ret = 1 c - 0 u, each product by 0 or 1 exact in floating point; so the client's detector reads the
    coupler's vacuum u alone (X = 2 Re u, one of its normals) and D = d_ret - b_1 is exactly 0, leaving
    y = sqrt(var_w) w + a sqrt(t T_f) Q(alpha). The conditional draw for x^dagger k and the idler only
    feed b_1: they are drawn (and dropped) to keep the stream's layout, as numpy's ziggurat takes a
    data-dependent number of words per normal and cannot be skipped by advancing the generator.
    tests/bench/test_unamplified_rows.py compares both routes bit for bit.
    """
    batch, n_rows = x_hat.shape[0], symbols.shape[0]
    if measure_p is None:
        measure_p = rng.random((batch, n_rows)) < 0.5
    normals = np.empty((batch, n_rows, 2))
    rng.standard_normal(out=normals)  # the conditional part of x^dagger k (enters b_1 only)
    rng.standard_normal(out=normals)  # the amplifier's idler (times sqrt(G - 1) = 0)
    rng.standard_normal(out=normals)  # the coupler's vacuum u: (Re u, Im u) = normals / 2
    efficiency = _unit_interval("client_efficiency", params.client_efficiency)
    electronic = _at_least("client_electronic_noise_snu", params.client_electronic_noise_snu, 0.0)
    x_meas = np.sqrt(efficiency) * normals[..., 0] + np.sqrt(1.0 - efficiency + electronic) * rng.standard_normal(
        (batch, n_rows))  # homodyne(): sqrt(eta) 2 Re u + N(0, 1 - eta + v_el)
    var_w = 1.0 + params.server_electronic_noise_snu
    if var_w != 1.0:
        returned *= np.float32(np.sqrt(var_w))
    np.take(signals, (np.arange(n_rows) + n_rows * measure_p).ravel(), axis=0, out=scratch.reshape(-1, signals.shape[1]))
    returned += scratch
    return x_meas, measure_p


def _verification_spans(batch: int, chunk_images: int, block: int) -> list[tuple[int, int]]:
    """Image ranges of the verification blocks: cache-sized blocks inside each fast-path chunk."""
    spans = []
    for start in range(0, batch, chunk_images):
        stop = min(start + chunk_images, batch)
        spans.extend((first, min(first + block, stop)) for first in range(start, stop, block))
    return spans


def _prepare_mean_symbols(symbols: np.ndarray, params: LinkParameters) -> np.ndarray:
    """float32 [2N, rows] with <X_meas> = x_flat @ this, x_flat the real packing of x_hat."""
    return np.ascontiguousarray((params.client_mean_per_re_beta * symbols).view(np.float64).T, dtype=np.float32)


def secure_products(symbols, x_hat, params: LinkParameters, rng: np.random.Generator,
                    verify_fraction: float = 0.01, chunk_images: int = DEFAULT_CHUNK_IMAGES, *,
                    rows=None, measure_p=None, attack=None):
    """The client's homodyne outcomes X_meas [batch, rows] (SNU) and the server's VerificationRecord.

    symbols [rows, N] from pack_weights; x_hat [batch, N] unit-norm rows from unit_vectors. Each row
    is verified with probability verify_fraction (the same rows for the whole batch); the server's
    quadrature is drawn per (image, verified row). Memory is bounded by processing chunk_images
    images at a time (beyond the outputs themselves); verified rows run in cache-sized blocks of
    images. Both block sizes are part of the random-stream layout.

    The server's choices may instead be given, as an instrument makes them (the bench's
    verification gate): ``rows`` (distinct row indices, int [v]) replaces the verify_fraction draw,
    which is then ignored; ``measure_p`` (bool [batch, v], or [v] for the whole batch; True = P)
    replaces the quadrature draw and needs ``rows``. Each draw that is given is skipped; the rest
    of the stream keeps the layout below, so with both None it is exactly that layout.

    Random-stream layout: from `rng`, in order: the verified rows; if any, one 256-bit entropy
    (4 x uint64) that seeds the NormalStream of the per-sample normals (blocks of
    random_streams.NORMAL_STREAM_BLOCK float32 normals, block k from its own spawned seed through FAST_SAMPLER; the
    returned samples take them in order, [image, row, mode] C order); then per chunk the fast-path noise,
    and per verification block (cache-sized, in image order) the per-(image, row) draws of
    _verified_rows. The fast-path noise comes from standard_normal_f32 (Box-Muller), the others from numpy's own
    samplers. Worker threads draw the stream's blocks ahead (random_streams.VERIFY_THREADS), but every block's
    values depend only on the seed, so a seed reproduces the outputs bit for bit whatever the thread count or
    timing. ``attack`` (an
    qslab.instruments.sim.faults_attacks.attacks.Attack acting on the returned light, or None) runs the verified rows
    through that module's complex-amplitude joint path instead, drawn from `rng` alone (no
    NormalStream); with None the layout above is untouched. LinkEngine shares
    one stream across its calls with the same rng (its entropy is drawn from rng at the stream's
    first use, right after that call's row draw) and also takes the fast-path noise from it, so
    that the workers draw while the rest of the network runs; its blocks come from SFC64 through
    random_streams.box_muller_32bit_f32 (LinkEngine.normal_sampler) instead of PCG64.
    """
    symbols, x_hat = _check_symbols_and_data(symbols, x_hat)
    return _secure_products(symbols, x_hat, None, _prepare_mean_symbols(symbols, params), params, rng,
                            verify_fraction, chunk_images, rows=rows, measure_p=measure_p, attack=attack)


def _server_choices(rows, measure_p, n_rows: int, batch: int):
    """The server's given verified rows (int [v]) and quadratures (bool [batch, v] or None), checked."""
    if rows is None:
        if measure_p is not None:
            raise ValueError("measure_p needs rows: the quadratures belong to given verified rows")
        return None, None
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"rows must be a 1-D array of row indices, got {rows.dtype} shape {rows.shape}")
    rows = rows.astype(np.intp)
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows or np.unique(rows).size != rows.size):
        raise ValueError(f"rows must be distinct row indices in [0, {n_rows}), got {rows[:10].tolist()}")
    if measure_p is None:
        return rows, None
    measure_p = np.asarray(measure_p)
    if measure_p.dtype != bool or measure_p.shape not in ((rows.size,), (batch, rows.size)):
        raise ValueError(f"measure_p must be bool [{batch}, {rows.size}] or [{rows.size}] (True = P), got "
                         f"{measure_p.dtype} shape {measure_p.shape}")
    return rows, np.broadcast_to(measure_p, (batch, rows.size))


def _client_means(x_flat32: np.ndarray, mean_symbols_t: np.ndarray, chunk_images: int) -> np.ndarray:
    """<X_meas> [batch, rows] float32: the fast path's noiseless outcomes, chunk by chunk as _secure_products
    computes them (the same float32 products, so the same bits)."""
    means = np.empty((x_flat32.shape[0], mean_symbols_t.shape[1]), dtype=np.float32)
    for start in range(0, x_flat32.shape[0], chunk_images):
        np.matmul(x_flat32[start:start + chunk_images], mean_symbols_t, out=means[start:start + chunk_images])
    return means


def _secure_products(symbols, x_hat, x_flat32, mean_symbols_t, params, rng, verify_fraction, chunk_images,
                     normals: NormalStream | None = None, rows=None, measure_p=None, attack=None, means=None):
    """secure_products on checked inputs; x_flat32 (float32 [batch, 2N] packing of x_hat) may be None; means: the
    batch's _client_means when the caller has them already (a LinkEngine that has seen these inputs before).

    normals: the stream of per-sample normals to use (shared across calls by LinkEngine), or None
    for a new one seeded from rng when this call verifies any row. rows, measure_p: the server's
    given choices (see secure_products), or None to draw them. attack: see secure_products.
    """
    attacked = attack is not None and attack.acts_on_returned_light
    verify_fraction = _finite("verify_fraction", verify_fraction)
    if not 0.0 <= verify_fraction <= 1.0:
        raise ValueError(f"verify_fraction must be in [0, 1], got {verify_fraction!r}")
    if int(chunk_images) < 1:
        raise ValueError(f"chunk_images must be >= 1, got {chunk_images!r}")
    chunk_images = int(chunk_images)
    batch, n_modes = x_hat.shape
    n_rows = symbols.shape[0]
    rows, given_p = _server_choices(rows, measure_p, n_rows, batch)
    if rows is None:
        rows = np.flatnonzero(rng.random(n_rows) < verify_fraction)
    sent = symbols[rows]
    std = np.float32(np.sqrt(params.client_variance_snu))

    x_meas = np.empty((batch, n_rows), dtype=np.float32) if means is None else means.copy()
    measure_p = np.empty((batch, rows.size), dtype=bool)
    returned = np.empty((batch, rows.size, n_modes), dtype=np.float32)
    spans, own_stream, held = [], False, []
    if rows.size:
        block = max(1, VERIFY_BLOCK_SAMPLES // (rows.size * n_modes))
        spans = _verification_spans(batch, chunk_images, block)
        if attacked:
            normals = None  # the attacked joint path draws from rng alone
        elif normals is None:
            blocks = -(-returned.size // streams.NORMAL_STREAM_BLOCK)
            normals = streams.new_normal_stream(rng, prefetch=min(streams.VERIFY_PREFETCH_BLOCKS, blocks),
                                                 total=returned.size, sampler=FAST_SAMPLER)
            own_stream = True
        if normals is not None:
            normals.prefetch()  # the workers draw while this thread runs the fast path
        scratch = np.empty((min(block, batch), rows.size, n_modes), dtype=np.float32)
        # Re and Im of beta for the verified rows, as real dot products: Im(conj(x) alpha) = x_r alpha_i - x_i alpha_r
        beta_columns = np.concatenate([sent.view(np.float64), (-1j * sent).view(np.float64)]).T
        gain_q = 2.0 * np.sqrt(params.server_efficiency * params.return_transmittance
                               * params.processor_transmittance_per_pass) * np.sqrt(
            params.forward_transmittance * params.processor_transmittance_per_pass)
        signals = np.concatenate([gain_q * sent.real, gain_q * sent.imag]).astype(np.float32)
        verified_rows = _unamplified_rows if params.gain == 1.0 else _verified_rows  # the same bits either way
    try:
        k = 0
        for start in range(0, batch, chunk_images):
            stop = min(start + chunk_images, batch)
            chunk = x_hat[start:stop]
            out = x_meas[start:stop]
            # <X_meas> = m Re(conj(x) . alpha), the real dot product of the packings, in float32: its
            # relative resolution (6e-8) is far below the shot noise of every outcome.
            if means is None:
                flat32 = chunk.view(np.float64).astype(np.float32) if x_flat32 is None else x_flat32[start:stop]
                np.matmul(flat32, mean_symbols_t, out=out)
            # idler, coupler, detector loss, electronics: one combined draw (from the shared stream under LinkEngine)
            noise = np.empty(out.shape, dtype=np.float32)
            if normals is not None and not own_stream:
                normals.fill(noise)
            else:
                standard_normal_f32(rng, noise)
            noise *= std
            out += noise
            if not rows.size:
                continue
            re_im = chunk.view(np.float64) @ beta_columns
            beta = re_im[:, :rows.size] + 1j * re_im[:, rows.size:]
            while k < len(spans) and spans[k][0] < stop:  # cache-sized blocks: the joint model is memory bound
                first, last = spans[k]
                if attacked:
                    x_meas[first:last, rows], measure_p[first:last], kept = attack.returned_rows(
                        x_hat[first:last], sent, beta[first - start:last - start], params, rng, returned[first:last],
                        None if given_p is None else given_p[first:last])
                    held.append(kept)
                    k += 1
                    continue
                normals.fill(returned[first:last])
                block_x = x_hat[first:last]
                basis = np.empty((last - first, 2, n_modes), dtype=np.float32)
                basis[:, 0] = block_x.real
                basis[:, 1] = block_x.imag
                x_meas[first:last, rows], measure_p[first:last] = verified_rows(
                    block_x, basis, sent, beta[first - start:last - start], params, rng, returned[first:last],
                    scratch[:last - first], signals, None if given_p is None else given_p[first:last])
                k += 1
    finally:
        if own_stream:
            normals.close()
    attacker = attack.held_record(held, returned.shape) if attacked else None
    return x_meas, VerificationRecord(rows, measure_p, sent, returned, attacker)


@dataclass(frozen=True)
class LayerOutput:
    """One secure layer over a batch: the client's outcomes, the server's record, and the scales to read them."""

    x_meas_snu: np.ndarray
    verification: VerificationRecord
    mean_per_re_beta: float
    scale: float

    def re_beta_estimate(self) -> np.ndarray:
        """Unbiased one-shot estimate of Re(beta) = s (w . x)/||x|| in sqrt(photons): X_meas / <X_meas>/Re(beta)."""
        if self.mean_per_re_beta == 0.0:
            raise ValueError("gain must be > 1 for the client to estimate the product (no signal at G = 1)")
        return self.x_meas_snu / self.mean_per_re_beta

    def dot_product_estimate(self) -> np.ndarray:
        """Unbiased estimate of w . x_hat (x_hat = x/||x||, real), in weight units: Re(beta)/s."""
        if self.scale == 0.0:
            raise ValueError("mu_photons must be > 0 for the client to estimate the product (no light sent)")
        return self.re_beta_estimate() / self.scale


@dataclass(frozen=True)
class PreparedInputs:
    """A batch's client-side encoding for one layer: x_hat, its float32 packing and (or None) <X_meas>."""

    x_hat: np.ndarray
    x_flat32: np.ndarray
    means: np.ndarray | None


class SecureLayer:
    """One layer's weights on the link: packs W once (per-layer scale for mu), then runs batches."""

    def __init__(self, weights, params: LinkParameters):
        self.params = params
        self.symbols, self.scale = pack_weights(weights, params.mu_photons)
        self.n_features = np.asarray(weights).shape[1]
        self._mean_symbols_t = _prepare_mean_symbols(self.symbols, params)

    def __call__(self, data, rng: np.random.Generator, verify_fraction: float = 0.01,
                 normals: NormalStream | None = None, prepared: PreparedInputs | None = None) -> LayerOutput:
        """data [batch, features] (any norm; the client normalises); normals: see secure_products; prepared: this
        layer's prepare(data), when the caller kept it (the same outputs, without encoding the data again)."""
        if prepared is None:
            prepared = self.prepare(data, with_means=False)
        x_meas, record = _secure_products(self.symbols, prepared.x_hat, prepared.x_flat32, self._mean_symbols_t,
                                          self.params, rng, verify_fraction, DEFAULT_CHUNK_IMAGES, normals,
                                          means=prepared.means)
        return LayerOutput(x_meas, record, self.params.client_mean_per_re_beta, self.scale)

    def prepare(self, data, with_means: bool = True) -> PreparedInputs:
        """What the layer computes from the data alone (no noise): the client's encoding and, with_means, <X_meas>."""
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != self.n_features:
            raise ValueError(f"data must be [batch, features={self.n_features}], got shape {data.shape}")
        _, x_hat = _check_symbols_and_data(self.symbols, unit_vectors(data))
        x_flat32 = x_hat.view(np.float64).astype(np.float32)  # the float32 packing, converted once
        means = _client_means(x_flat32, self._mean_symbols_t, DEFAULT_CHUNK_IMAGES) if with_means else None
        return PreparedInputs(x_hat, x_flat32, means)

    @classmethod
    def from_symbols(cls, symbols, params: LinkParameters) -> SecureLayer:
        """A layer of given complex symbols [rows, N] (as a modulator really sent them; scale 1), prepared once."""
        layer = cls.__new__(cls)
        layer.params, layer.scale = params, 1.0
        layer.symbols = _check_symbols(symbols)
        layer.n_features = 2 * layer.symbols.shape[1]
        layer._mean_symbols_t = _prepare_mean_symbols(layer.symbols, params)
        return layer

    def products(self, x_hat, rng: np.random.Generator, verify_fraction: float = 0.01, *, rows=None,
                 measure_p=None, attack=None):
        """secure_products(self.symbols, x_hat, ...) without preparing the symbols again: the same draws."""
        symbols, x_hat = _check_symbols_and_data(self.symbols, x_hat)
        return _secure_products(symbols, x_hat, None, self._mean_symbols_t, self.params, rng, verify_fraction,
                                DEFAULT_CHUNK_IMAGES, rows=rows, measure_p=measure_p, attack=attack)


class LinkEngine:
    """qslab.analysis.network layer engine driven by this model: estimates of x_hat . W^T in weight units.

    Keeps the last LayerOutput of every layer index in `outputs` (for the server's verification).
    Each layer's weights are packed once and reused while the same array object is passed for that
    layer index (do not modify a weight array in place between calls; pass a new array instead).
    Its shared stream draws its blocks with `normal_sampler` (random_streams.BLOCK_SAMPLERS): FAST_SAMPLER, as
    secure_products' own streams (the bench's acquisitions).
    """

    normal_sampler = FAST_SAMPLER

    def __init__(self, params: LinkParameters, verify_fraction: float = 0.01, first_layer_batches: int = 0):
        self.params = params
        self.verify_fraction = verify_fraction
        self.outputs: dict[int, LayerOutput] = {}
        # up to this many batches of first-layer inputs kept with their encoding and <X_meas> (PreparedInputs): a
        # simulation's seeds send the same images again (the outputs are the same bits; only the work is saved)
        self.first_layer_batches = int(first_layer_batches)
        self._first_inputs: dict[tuple, list[tuple[np.ndarray, Future]]] = {}  # of PreparedInputs
        self._first_kept = 0
        self._layers: dict[int, tuple[object, SecureLayer]] = {}
        self._normals_rng = None
        self._normals = None

    def __call__(self, layer_index, weights, x_hat, rng):
        layer = self._layer(layer_index, weights)
        if self._normals_rng is not rng:  # a new rng starts a new stream: a seed reproduces its run on its own
            if self._normals is not None:
                self._normals.close()
            self._normals_rng, self._normals = rng, None
        if self._normals is None and self.verify_fraction > 0.0:
            self._normals = streams.LazyNormalStream(rng, sampler=self.normal_sampler)
        prepared = self._kept_inputs(layer, x_hat) if layer_index == 0 and self.first_layer_batches else None
        output = layer(x_hat, rng, self.verify_fraction, self._normals, prepared)
        self.outputs[layer_index] = output
        return output.dot_product_estimate()

    def _layer(self, layer_index: int, weights) -> SecureLayer:
        """The layer's SecureLayer, packed at the first call with these weights (kept while the same array comes)."""
        cached = self._layers.get(layer_index)
        if cached is None or cached[0] is not weights:
            cached = (weights, SecureLayer(weights, self.params))
            self._layers[layer_index] = cached
            if layer_index == 0:  # kept <X_meas> belong to the previous weights
                self._first_inputs, self._first_kept = {}, 0
        return cached[1]

    def prepare_first_layer(self, weights, batches, submit: Callable[..., Future]) -> None:
        """Have `submit` (an executor's) make the first layer's PreparedInputs of `batches` ahead, in order, up to
        first_layer_batches: the thread that runs the layers then finds each one made, or waits for it, instead of
        making it between its products and faulting in its memory (~13 MB per 1000 images). The same arrays as made
        in passing, so the same bits, made under the caller's numpy error state (a context variable, so each task
        runs in a copy of the caller's context). Call from the thread that runs the layers, under the BLAS thread
        count they run under (the float32 products' bits follow it; simulate: one_blas_thread); keep the batch arrays
        unmodified."""
        layer = self._layer(0, weights)
        for data in batches[:max(self.first_layer_batches - self._first_kept, 0)]:
            self._keep(np.asarray(data), submit(contextvars.copy_context().run, layer.prepare, data))

    def _kept_inputs(self, layer: SecureLayer, data) -> PreparedInputs:
        """The first layer's PreparedInputs of these data: kept from an earlier call with equal data, or made (and
        kept while fewer than first_layer_batches are). The data array is kept by reference: do not modify it."""
        data = np.asarray(data)
        for kept, prepared in self._first_inputs.get(_data_key(data), ()):
            if kept is data or np.array_equal(kept, data):
                return prepared.result()
        prepared = Future()
        prepared.set_result(layer.prepare(data))
        if self._first_kept < self.first_layer_batches:
            self._keep(data, prepared)
        return prepared.result()

    def _keep(self, data: np.ndarray, prepared: Future) -> None:
        self._first_inputs.setdefault(_data_key(data), []).append((data, prepared))
        self._first_kept += 1


def _data_key(data: np.ndarray) -> tuple:
    """A cheap key that tells most batches apart (shape, dtype, first row); equal keys are compared in full."""
    return data.shape, data.dtype.str, data[:1].tobytes()
