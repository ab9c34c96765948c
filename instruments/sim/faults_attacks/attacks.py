"""A cheating client on the virtual bench: Gaussian operations on the light it returns to the server.

Why: the server's verification (analysis/verification.py) claims to catch a client that keeps or
measures part of the returned light, and the weight-leakage bound claims to cover whatever such a
client holds. Both claims are only testable if the bench can cheat, physically, and say what the
cheater ended up holding.

    attack = parse_attack("tap=0.05")        # or Tap(0.05), MeasureResend(0.05), Gain(3.0), InterceptResend()
    bench.state.set_attack(attack)           # every later acquisition returns attacked light; None disarms
    bench.state.last_capture.session.verification.attacker   # AttackerRecord: what the client held

Kinds (spec strings for ``qslab session --attack``):

==================  ==========================================================================================
``tap=F``           a beam splitter of transmission 1 - F at the client's output port (after its coupler and
                    inverse chain, before the return fibre); the client keeps the reflected light
                    (``AttackerRecord.kept_modes``). A uniform tap commutes with the passive inverse chain, so
                    "after the coupler" and "at the output" are the same attack up to the chain's own loss.
``measure=F``       each returned mode is, with probability F, homodyned by the client in X or P (its own
                    random choice, in the server's frame: the client's LO comes from the server, DECISIONS I)
                    and re-prepared as the coherent state whose measured quadrature is the outcome and whose
                    other quadrature is 0 (measure-and-resend: +1 SNU where the server reads the same
                    quadrature, the signal gone where it reads the other one)
``gain=G``          the client's amplifier runs at true linear gain G whatever it was set to (the session
                    declared less); the client gets more signal, the server more excess noise
``intercept``       heterodyne-and-resend of every returned mode (+2 SNU at the client's output);
                    ``intercept=homodyne`` is ``measure=1``
==================  ==========================================================================================

Physics: tap, measure and intercept act on the verified rows' returned modes in the joint path,
where secure_products hands them to `Attack.returned_rows`: it draws, from the caller's Generator,
every vacuum of docs/PHYSICS.md section 6 explicitly as a complex amplitude (both quadratures of
each returned mode at the client's output, jointly with the client's own outcome), applies the
attack, then the return fibre and the server's homodyne. That is exact Wigner sampling: homodyne
and heterodyne outcomes drawn from the Wigner samples have the right joint law with the modes
left behind. The fast path (unverified rows) only yields the client's outcomes, whose law these
three attacks do not change; the held light of unverified rows is not simulated. A gain attack
changes the link itself (`Attack.amplifier_gain`, read by BenchState.amplifier_gain), so both paths
see it. With no attack armed nothing here runs and the honest random stream is untouched.

What the attacker actually learns is computed independently of analysis/weight_leakage's closed
forms: `RoundTripModel` builds the covariance matrix of one row through the whole client lab
(server EPR halves, fibre, processor, amplifier, coupler, inverse chain, tap) and
`attacker_holevo_bits` takes the Holevo information of the held modes about the server's symbols
from symplectic spectra.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from qslab.analysis.gaussian import von_neumann_entropy_bits
from qslab.analysis.givens import givens_angles, givens_unitary
from qslab.analysis.verification import ChannelHypothesis
from qslab.instruments.sim.link.model import (LinkParameters, amplify, homodyne, quadrature_snu, split_coupler,
                                              thermal_noise, vacuum_noise)

HETERODYNE_RESEND_NOISE_SNU = 2.0  # heterodyne (1 vacuum unit) + coherent re-preparation (1 more)
HOMODYNE_RESEND_NOISE_SNU = 1.0    # the re-prepared coherent state's own vacuum, in the measured quadrature
SPEC_HELP = ("expected tap=F or measure=F (0 <= F <= 1), gain=G (the amplifier's true linear gain, G >= 1) or "
             "intercept[=heterodyne|homodyne]")


# --- what the attacker holds --------------------------------------------------------------------------

@dataclass(frozen=True)
class AttackerRecord:
    """What the cheating client held from the verified rows of one call, aligned with the server's
    returned_quadratures_snu [batch, v, N] (image, verified row, mode).

    kept_modes (tap): complex64 Wigner samples of the kept light, sqrt(photons) (X = 2 Re, P = 2 Im):
    the quantum state, sampled, not a measurement; its statistics against the weights are what the
    information computation needs. measured / measure_p / outcomes (measure, intercept): which modes
    the client measured, its quadrature (True = P; homodyne only) and the outcome: float32 SNU for
    homodyne, complex64 amplitude estimate (mean = the mode's mean amplitude) for heterodyne.
    """

    kind: str
    kept_modes: np.ndarray | None = None
    measured: np.ndarray | None = None
    measure_p: np.ndarray | None = None
    outcomes: np.ndarray | None = None

    @staticmethod
    def concatenate(records: list[AttackerRecord], kind: str) -> AttackerRecord:
        """The blocks of one call joined along the image axis."""
        def join(name):
            parts = [getattr(r, name) for r in records]
            return None if not parts or parts[0] is None else np.concatenate(parts)
        return AttackerRecord(kind, join("kept_modes"), join("measured"), join("measure_p"), join("outcomes"))


# --- the attacks -------------------------------------------------------------------------------------

class Attack:
    """A cheating client. Subclasses act on the returned modes (`act`) or on the link (`amplifier_gain`)."""

    kind: ClassVar[str] = ""
    acts_on_returned_light: ClassVar[bool] = True

    @property
    def spec(self) -> str:
        """The spec string that parse_attack turns back into this attack (for the session record)."""
        raise NotImplementedError

    def act(self, modes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, AttackerRecord]:
        """(modes sent on to the server, what the client keeps) from the complex returned modes [.., N]."""
        raise NotImplementedError

    def amplifier_gain(self, gain: float) -> float:
        """The switched-on amplifier's true gain when it is set to (and would honestly run at) `gain`."""
        return gain

    def link_parameters(self, link: LinkParameters) -> LinkParameters:
        """The link as the cheating client really runs it (the gain attack's amplifier; else unchanged)."""
        return link

    def expected_channel(self, link: LinkParameters, n_modes: int) -> ChannelHypothesis:
        """The (T, mean eps, spread) the server should see, referred as verification.py refers them.

        For planning (verification.samples_for_power); measure-and-resend is a mixture that the
        Gaussian hypothesis only approximates (its means are right, its shape is not).
        """
        raise NotImplementedError

    # -- the joint path with the attack (called by physics._secure_products per verification block) --
    def returned_rows(self, x_hat, symbols, beta, params: LinkParameters, rng: np.random.Generator,
                      out: np.ndarray, measure_p=None):
        """Client outcomes [b, v], the server's quadrature choices [b, v] and the AttackerRecord of one block;
        the server's homodyne outcomes are written into `out` [b, v, N]."""
        if measure_p is None:
            measure_p = rng.random(beta.shape) < 0.5
        x_meas, modes = returned_modes(x_hat, symbols, beta, params, rng)
        modes, held = self.act(modes, rng)
        out[...] = server_homodyne(modes, measure_p, params, rng)
        return x_meas, measure_p, held

    def held_record(self, blocks: list[AttackerRecord], shape) -> AttackerRecord:
        if not blocks:
            return self.act(np.zeros(shape, dtype=np.complex128), np.random.default_rng(0))[1]
        return AttackerRecord.concatenate(blocks, self.kind)


def _fraction(name: str, value) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return value


@dataclass(frozen=True)
class Tap(Attack):
    """Keep `fraction` of the returned light: a beam splitter of transmission 1 - F at the client's output."""

    fraction: float
    kind: ClassVar[str] = "tap"

    def __post_init__(self):
        object.__setattr__(self, "fraction", _fraction("tap fraction", self.fraction))

    @property
    def spec(self) -> str:
        return f"tap={self.fraction:g}"

    def act(self, modes, rng):
        vacuum = vacuum_noise(modes.shape, rng)
        through, kept = np.sqrt(1.0 - self.fraction), np.sqrt(self.fraction)
        sent_on = through * modes + kept * vacuum
        held = kept * modes - through * vacuum
        return sent_on, AttackerRecord(self.kind, kept_modes=held.astype(np.complex64))

    def expected_channel(self, link, n_modes):
        honest = declared_channel(link, n_modes)
        keep = 1.0 - self.fraction  # the honest noise is attenuated with the signal
        return ChannelHypothesis(keep * honest.transmittance, keep * honest.excess_noise_snu,
                                 keep**2 * honest.excess_noise_spread_snu2)


@dataclass(frozen=True)
class MeasureResend(Attack):
    """Homodyne `fraction` of the returned modes (random X/P per mode) and resend coherent states at the outcome."""

    fraction: float
    kind: ClassVar[str] = "measure"

    def __post_init__(self):
        object.__setattr__(self, "fraction", _fraction("measure fraction", self.fraction))

    @property
    def spec(self) -> str:
        return f"measure={self.fraction:g}"

    def act(self, modes, rng):
        measured = rng.random(modes.shape) < self.fraction
        chosen_p = rng.random(modes.shape) < 0.5
        outcomes = quadrature_snu(modes, chosen_p)  # the Wigner sample's quadrature: an exact homodyne draw
        resent = np.where(chosen_p, 0.5j * outcomes, 0.5 * outcomes) + vacuum_noise(modes.shape, rng)
        record = AttackerRecord(self.kind, measured=measured, measure_p=chosen_p & measured,
                                outcomes=np.where(measured, outcomes, 0.0).astype(np.float32))
        return np.where(measured, resent, modes), record

    def expected_channel(self, link, n_modes):
        """Pooled over samples: t falls by F/2 (the mismatched half reads mean 0); residual variance mixes
        eps + T_r (same quadrature), T' V_A (other quadrature) and eps (unmeasured), plus the fit's bias."""
        honest = declared_channel(link, n_modes)
        f, v_a = self.fraction, 2.0 * link.mu_photons
        t0 = np.sqrt(honest.transmittance)
        t1 = t0 * (1.0 - 0.5 * f)
        bias = (t0 - t1) ** 2 * v_a
        values = np.array([honest.excess_noise_snu + bias,
                           honest.excess_noise_snu + HOMODYNE_RESEND_NOISE_SNU * link.return_transmittance + bias,
                           t1**2 * v_a])
        weights = np.array([1.0 - f, 0.5 * f, 0.5 * f])
        mean = float(weights @ values)
        spread = float(weights @ values**2 - mean**2) + honest.excess_noise_spread_snu2
        return ChannelHypothesis(float(t1**2), mean, max(spread, 0.0))


@dataclass(frozen=True)
class InterceptResend(Attack):
    """Measure every returned mode (heterodyne, or homodyne in a random quadrature) and resend coherent states."""

    detection: str = "heterodyne"
    kind: ClassVar[str] = "intercept"

    def __post_init__(self):
        if self.detection not in ("heterodyne", "homodyne"):
            raise ValueError(f"intercept detection must be 'heterodyne' or 'homodyne', got {self.detection!r}")

    @property
    def spec(self) -> str:
        return "intercept" if self.detection == "heterodyne" else "intercept=homodyne"

    def act(self, modes, rng):
        if self.detection == "homodyne":
            sent_on, record = MeasureResend(1.0).act(modes, rng)
            return sent_on, replace(record, kind=self.kind)
        estimate = modes + vacuum_noise(modes.shape, rng)  # heterodyne: the Husimi sample, mean = the mode's mean
        resent = estimate + vacuum_noise(modes.shape, rng)
        return resent, AttackerRecord(self.kind, measured=np.ones(modes.shape, dtype=bool),
                                      outcomes=estimate.astype(np.complex64))

    def expected_channel(self, link, n_modes):
        if self.detection == "homodyne":
            return MeasureResend(1.0).expected_channel(link, n_modes)
        honest = declared_channel(link, n_modes)
        return ChannelHypothesis(honest.transmittance,
                                 honest.excess_noise_snu + HETERODYNE_RESEND_NOISE_SNU * link.return_transmittance,
                                 honest.excess_noise_spread_snu2)


@dataclass(frozen=True)
class Gain(Attack):
    """The amplifier runs at true linear gain `gain` (more than the session declared)."""

    gain: float
    kind: ClassVar[str] = "gain"
    acts_on_returned_light: ClassVar[bool] = False

    def __post_init__(self):
        gain = float(self.gain)
        if not (np.isfinite(gain) and gain >= 1.0):
            raise ValueError(f"gain must be a linear power gain >= 1, got {self.gain!r}")
        object.__setattr__(self, "gain", gain)

    @property
    def spec(self) -> str:
        return f"gain={self.gain:g}"

    def amplifier_gain(self, gain: float) -> float:
        return self.gain

    def link_parameters(self, link):
        figure = link.amplifier_noise_figure_db
        if figure is not None:  # the bench raises a noise figure below the quantum limit to it
            figure = max(figure, 10.0 * np.log10((2.0 * self.gain - 1.0) / self.gain) + 1e-9)
        return replace(link, gain=self.gain, amplifier_noise_figure_db=figure)

    def expected_channel(self, link, n_modes):
        return declared_channel(self.link_parameters(link), n_modes)


KINDS = {"tap": Tap, "measure": MeasureResend, "gain": Gain, "intercept": InterceptResend}


def parse_attack(spec: str) -> Attack:
    """``KIND=SIZE`` (``tap=0.05``, ``measure=0.05``, ``gain=3``, ``intercept``) -> an Attack, or one ValueError."""
    text = str(spec).strip()
    kind, has_size, size = (part.strip() for part in text.partition("="))
    kind = kind.lower()
    try:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        if kind == "intercept":
            return InterceptResend(size.lower() or "heterodyne")
        if not has_size or not size:
            raise ValueError(f"{kind} needs a size")
        value = float(size)
        if not np.isfinite(value):
            raise ValueError(f"size {size!r} is not finite")
        return KINDS[kind](value)
    except ValueError as error:
        raise ValueError(f"attack spec {text!r}: {error}; {SPEC_HELP}") from None


# --- the joint path on complex amplitudes ----------------------------------------------------------------

def returned_modes(x_hat, symbols, beta, params: LinkParameters, rng: np.random.Generator):
    """The client's outcomes [b, v] and the returned modes at its output port [b, v, N], complex, both quadratures.

    docs/PHYSICS.md 6 with every vacuum drawn: r_i = sqrt(t) (sqrt(t T_f) alpha_i + k_i + D x_i)
    + sqrt(1 - t) m'_i, with k the processor-output vacuum in the input basis (iid vacuum, U unitary),
    b_1 = sqrt(t T_f) beta + x^dagger k, D = d_ret - b_1, m' the inverse chain's loss vacuum. O(N) per row.
    """
    t = params.processor_transmittance_per_pass
    root_loss = np.sqrt(params.forward_transmittance * t)
    shape = beta.shape + (x_hat.shape[1],)
    k = vacuum_noise(shape, rng)
    b1 = root_loss * beta + np.einsum("bn,bvn->bv", np.conj(x_hat), k)
    idler = thermal_noise(beta.shape, rng, 2.0 * params.inversion_factor - 1.0)
    c = amplify(b1, params.gain, idler)
    to_detector, to_return = split_coupler(c, params.gain, vacuum_noise(beta.shape, rng))
    x_meas = homodyne(to_detector, False, rng, params.client_efficiency, params.client_electronic_noise_snu)
    disturbance = (to_return - b1)[..., None] * x_hat[:, None, :]
    modes = np.sqrt(t) * (root_loss * symbols[None] + k + disturbance) + np.sqrt(1.0 - t) * vacuum_noise(shape, rng)
    return x_meas, modes


def server_homodyne(modes, measure_p, params: LinkParameters, rng: np.random.Generator) -> np.ndarray:
    """The return fibre and the server's detector as one loss eta_s T_r, then its homodyne in X or P per row."""
    return homodyne(modes, np.asarray(measure_p)[..., None], rng,
                    params.server_efficiency * params.return_transmittance, params.server_electronic_noise_snu)


# --- what the server expects of an honest client ----------------------------------------------------------

def declared_channel(link: LinkParameters, n_modes: int) -> ChannelHypothesis:
    """The honest round trip of a declared link: T = T_f t^2 T_r, eps = t T_r 2 n_sp (1 - 1/G) / N per mode.

    Per-mode eps_i lies in [0, t T_r k] (eps_i = t T_r k |x_i|^2), which bounds the spread over samples.
    """
    total = link.returned_excess_noise_total_snu
    eps = total / n_modes
    return ChannelHypothesis(link.round_trip_transmittance, eps, max(eps * total - eps * eps, 0.0))


# --- brute force: the covariance matrix of one row through the client's lab ------------------------------

def _pairs(modes) -> np.ndarray:
    return np.ravel([[2 * m, 2 * m + 1] for m in np.atleast_1d(modes)]).astype(int)


class RoundTripModel:
    """Covariance matrix (SNU, xpxp) of the server's EPR halves A_i and everything a row's light becomes.

    The server's Gaussian modulation is its heterodyne on A_i of a two-mode squeezed pair of variance
    V = 2 mu + 1 (prepare-and-measure equivalence), so the Holevo information of any set of modes about
    the server's symbols is S(held) - S(held | heterodyne on A). Modes: A (0..N-1), B (the signal,
    N..2N-1), then `client_port` (the coupler's measured output, kept quantum: the most the client's
    homodyne can yield) and `kept` (the tap's reflected modes). B ends at the server's input.
    """

    def __init__(self, link: LinkParameters, x_hat, tap_fraction: float = 0.0):
        x = np.asarray(x_hat, dtype=np.complex128)
        self.n = n = x.size
        self.a_modes, self.b_modes = np.arange(n), np.arange(n, 2 * n)
        v = 2.0 * link.mu_photons + 1.0
        self.cov = self._epr_pairs(n, v)
        unitary = givens_unitary(*givens_angles(x / np.linalg.norm(x)))  # first row conj(x)
        t = link.processor_transmittance_per_pass
        self._loss(self.b_modes, link.forward_transmittance)
        self._passive(self.b_modes, unitary)
        self._loss(self.b_modes, t)
        self._amplify(self.b_modes[0], link.gain, link.inversion_factor)
        self.client_port = self._add_vacuum(1)[0]
        root_g = np.sqrt(1.0 / link.gain)
        self._mix(self.b_modes[0], self.client_port, [[root_g, -np.sqrt(1.0 - root_g**2)],
                                                      [np.sqrt(1.0 - root_g**2), root_g]])
        self._passive(self.b_modes, np.conj(unitary.T))
        self._loss(self.b_modes, t)
        f = float(tap_fraction)
        self.kept = self._add_vacuum(n)
        self._mix(self.b_modes, self.kept, [[np.sqrt(1.0 - f), np.sqrt(f)], [np.sqrt(f), -np.sqrt(1.0 - f)]])
        self._loss(self.b_modes, link.return_transmittance)
        self.variance = v

    @staticmethod
    def _epr_pairs(n: int, v: float) -> np.ndarray:
        c = np.sqrt(v * v - 1.0)
        cov = np.zeros((4 * n, 4 * n))
        z = np.diag([1.0, -1.0])
        for i in range(n):
            a, b = _pairs(i), _pairs(n + i)
            cov[np.ix_(a, a)] = cov[np.ix_(b, b)] = v * np.eye(2)
            cov[np.ix_(a, b)] = cov[np.ix_(b, a)] = c * z
        return cov

    def _apply(self, modes, x_block, y_block):
        """cov -> X cov X^T + Y with X, Y acting on `modes` only (rows, then columns: O(k n) per mode)."""
        idx = _pairs(modes)
        self.cov[idx, :] = x_block @ self.cov[idx, :]
        self.cov[:, idx] = self.cov[:, idx] @ x_block.T
        self.cov[np.ix_(idx, idx)] += y_block

    def _add_vacuum(self, count: int) -> np.ndarray:
        """`count` new vacuum modes; returns their indices."""
        size = self.cov.shape[0]
        grown = np.eye(size + 2 * count)
        grown[:size, :size] = self.cov
        self.cov = grown
        return np.arange(size // 2, size // 2 + count)

    def _loss(self, modes, transmittance):
        k = 2 * np.size(modes)
        self._apply(modes, np.sqrt(transmittance) * np.eye(k), (1.0 - transmittance) * np.eye(k))

    def _passive(self, modes, unitary):
        """b -> U b on the quadratures: per (j, k) the block [[Re U, -Im U], [Im U, Re U]]."""
        re, im = unitary.real, unitary.imag
        block = np.empty((2 * len(modes), 2 * len(modes)))
        block[0::2, 0::2], block[0::2, 1::2] = re, -im
        block[1::2, 0::2], block[1::2, 1::2] = im, re
        self._apply(modes, block, np.zeros_like(block))

    def _amplify(self, mode, gain, inversion_factor):
        """c = sqrt(G) b + sqrt(G - 1) v^dagger, v thermal of variance 2 n_sp - 1 (its output is not held)."""
        self._apply([mode], np.sqrt(gain) * np.eye(2), (gain - 1.0) * (2.0 * inversion_factor - 1.0) * np.eye(2))

    def _mix(self, first, second, matrix):
        """The same real orthogonal 2x2 mixing (beam splitter, coupler) of each pair first[j], second[j], on X and P."""
        first, second = np.atleast_1d(first), np.atleast_1d(second)
        block = np.kron(np.asarray(matrix, dtype=float), np.eye(2 * first.size))
        self._apply(np.concatenate([first, second]), block, np.zeros_like(block))

    def holevo_bits(self, held_modes) -> float:
        """chi = S(held) - S(held | heterodyne of every A_i): bits about the row's N symbols together."""
        held, server = _pairs(held_modes), _pairs(self.a_modes)
        gamma = self.cov[np.ix_(held, held)]
        cross = self.cov[np.ix_(held, server)]
        conditional = gamma - cross @ np.linalg.solve(self.cov[np.ix_(server, server)] + np.eye(server.size), cross.T)
        return von_neumann_entropy_bits(gamma) - von_neumann_entropy_bits(conditional)

    def server_channel(self) -> tuple[np.ndarray, np.ndarray]:
        """(T_i, eps_i) per mode at the server's input, read off the covariance matrix (eps output-referred)."""
        v = self.variance
        t = np.array([(self.cov[2 * a, 2 * b] / np.sqrt(v * v - 1.0)) ** 2 for a, b in zip(self.a_modes, self.b_modes)])
        var_b = np.array([self.cov[2 * b, 2 * b] for b in self.b_modes])
        return t, var_b - 1.0 - t * (v - 1.0)


def attacker_holevo_bits(link: LinkParameters, x_hat, tap_fraction: float, client_port: bool = True) -> float:
    """Bits a tapping client holds about one row's N symbols: the kept light (and its coupler's measured port).

    Divide by N for bits per complex mode (the unit of verify(...).chi_bits_per_mode).
    """
    model = RoundTripModel(link, x_hat, tap_fraction)
    held = list(model.kept) + ([model.client_port] if client_port else [])
    return model.holevo_bits(held)
