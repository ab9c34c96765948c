"""The server's and the client's steps of secure layers on the station (docs/ARCHITECTURE.md, "One secure layer").

Server: weight rows -> complex symbols (two weights per mode, per-layer scale for mu) -> IQ drive
codes (arcsine predistortion from the modulator records) -> one AWG segment per layer, played row
after row; the VOA set for mu from the photons record and the monitor tap; per batch, its LO phase
modulator's channel gates the rows it verifies and picks X or P for each (its secret).
Client: data -> Givens angles -> processor codes, one block of N bins per image of the batch; the
amplifier at the gain of the amplifier record.
One digitizer acquisition per (batch, layer) reads both receivers: channel 1 the client's outcome
per (image, row), channel 2 the server's samples of its gated rows; the receivers' DSP (the same
code a replay runs) turns them into SNU.

The server verifies against the fields its calibrated modulator model predicts for the codes it
actually played (AwgIQModulator.played_fields), scaled to the mu it measured: the AWG's 8-bit
rounding is then not mistaken for excess noise of the client.

Faults: every acquisition ends with VACUUM_TAIL_SYMBOLS slots of vacuum, whose mean is each DC-coupled
receiver's DC level (taken off the record) and which must otherwise look like the receivers'
calibration (variance 1 + v_el, one DC level throughout), else ReceiverError: data scaled by a
changed LO or gain, or on a drifting DC level, are never used. A clipped record is taken again with wider ranges. For
the session's checks between batches (sequences/session_guard.py) the link reads the monitor tap
(read_light) and the receivers' vacuum (read_vacuum), and applies the cures: relock_biases + renull,
set_laser_power_dbm + remeasure_mu, reapply_instrument after a reset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qslab.analysis.encoding import PILOT_SEED, pilot_symbol_table, unit_vectors
from qslab.analysis.estimate import Estimate
from qslab.analysis.session_results import CONFIDENCE_SIGMAS
from qslab.analysis.units import dbm_to_w
from qslab.instruments.optical import ModulatorCalibration, ProcessorCalibration
from qslab.sequences.station_calibration import StationCalibration

GATE_CODE = 100              # |code| > 32 gates a row (bench convention, instruments/sim/README.md): + X, - P
GATE_AMPLITUDE_VPP = 0.5
AWG_MEMORY_DIVIDER = 4       # 64 GSa/s / 4 = 16 samples per symbol at 1 GBd: the smallest segments the M8195A allows
FIELD_HEADROOM = 0.9         # largest child field used (the arcsine's slope grows without bound at 1)
MONITOR_READINGS = 5
CLIP_RETRIES = 6           # range doublings tried on a clipped record (0.2 V -> the digitizer's widest)
VACUUM_SYMBOLS = 16_384      # per receiver in a vacuum check: its variance to ~1 %, its mean to ~0.01 SNU
VACUUM_TAIL_SYMBOLS = 8_192  # vacuum slots after every acquisition's data: its mean to 0.01 SNU, variance to 1.6 %
TAIL_DRIFT_MAX_SNU = 0.1     # the DC level's change between the tail's halves beyond this: a drifting receiver (4.5 sigma)
TAIL_NOISE_MAX_DB = 0.5      # tail variance off 1 + v_el by more: the LO power or the receiver's gain moved (7 sigma)
SIGMA_RANGE = 7.0            # half the digitizer range covers this many noise sigmas plus the largest signal


class ProtocolError(RuntimeError):
    """A secure-layer step that cannot go on: the message says which step and why."""


class ReceiverError(ProtocolError):
    """A receiver's record is not what its calibration describes (an offset, more or less noise): its data
    would be wrong, so they are not used. ``reading``: the VacuumReading that showed it."""

    def __init__(self, message: str, reading):
        super().__init__(message)
        self.reading = reading


# --- the server's symbols ---------------------------------------------------------------------------

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
class LayerCapture:
    """One (batch, layer) acquisition, as the parties hold it."""

    client_quadratures_snu: np.ndarray   # [B, rows] float32
    verified_rows: np.ndarray            # [v]
    measure_p: np.ndarray                # [B, v] bool
    sent_snu: np.ndarray                 # [B, v, modes] float32: the server's reference quadratures
    returned_snu: np.ndarray             # [B, v, modes] float32


PILOT_ROWS = 64
PILOT_PASSES = 2        # leakage-nulling passes before the measuring one
LAYER_NULLING_PASSES = 2  # per layer, with the server's receiver on all its rows
NULLING_SAMPLES = 200_000  # returned samples per layer-nulling acquisition
PILOT_IMAGES = 8


def _quadrature_pair(capture, alpha: np.ndarray):
    """The sent quadrature the server measured (own) and the other one, signed so that a returned phase phi
    gives y = t (own cos phi + other sin phi); and the P flags, broadcast like the returned samples."""
    p = np.broadcast_to(capture.measure_p[..., None], capture.returned_snu.shape)
    own = np.where(p, 2.0 * alpha.imag, 2.0 * alpha.real)
    other = np.where(p, 2.0 * alpha.real, -2.0 * alpha.imag)
    return own, other, p


def server_offsets(capture, alpha: np.ndarray) -> tuple[complex, tuple[float, float], float]:
    """Least squares y = ts own + tc other + c_X [X] + c_P [P]: the offsets (c_X + i c_P, the carrier leakage in
    the server's LO frame), (ts, tc) and the amplitude hypot(ts, tc)."""
    own, other, p = _quadrature_pair(capture, alpha)
    flags = p.ravel()
    design = np.stack([own.ravel(), other.ravel(), ~flags, flags], axis=1).astype(np.float64)
    (ts, tc, c_x, c_p), *_ = np.linalg.lstsq(design, capture.returned_snu.ravel().astype(np.float64), rcond=None)
    return complex(c_x, c_p), (float(ts), float(tc)), float(math.hypot(ts, tc))


def iq_skew(capture, reference: np.ndarray, server_phase_rad: float) -> Estimate:
    """The Q drive's delay behind the I drive, in symbol periods, from the server's receiver on known rows.

    A Q child late by s adds i s (Q_{k-1} - Q_k) to symbol k (early: i |s| (Q_{k+1} - Q_k)). The receiver's
    own memory of the previous symbol (its bandwidth) acts on both quadratures alike, so it is fitted
    jointly: X rows (which see I at the server's LO phase near 0 or pi) pin it down, P rows then show
    the skew on top. Least squares over the inner modes of every gated row (the outer ones' optical
    neighbours are in other rows): y = a sig_k + b sig_{k-1} + d_prev z(Q_{k-1}) + d_next z(Q_{k+1}) +
    d_now z(Q_k) + c_X + c_P; s = (d_prev - d_next)/a (d_now absorbs a residual Q gain).
    """
    rows = capture.verified_rows
    alpha = reference[rows]                                  # [v, N], played order within a row
    p = np.broadcast_to(capture.measure_p[..., None], capture.returned_snu.shape)[..., 1:-1]
    rotation = complex(math.cos(server_phase_rad), math.sin(server_phase_rad))

    def signal(field):   # 2 Re(field e^{i phi}) on X rows, 2 Im on P rows, broadcast over images
        rotated = field * rotation
        return np.where(p, 2.0 * rotated.imag, 2.0 * rotated.real)

    def skew_term(q):    # the same quadrature of i q
        return signal(1j * q)

    before, now, after = alpha[:, :-2], alpha[:, 1:-1], alpha[:, 2:]
    y = capture.returned_snu[..., 1:-1].astype(np.float64)
    columns = [signal(now), signal(before), skew_term(before.imag), skew_term(after.imag), skew_term(now.imag), ~p, p]
    design = np.stack(np.broadcast_arrays(*columns), axis=-1).reshape(-1, len(columns)).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, y.ravel(), rcond=None)
    residual = y.ravel() - design @ coef
    covariance = np.linalg.inv(design.T @ design) * float(residual @ residual) / (y.size - len(columns))
    skew = (coef[2] - coef[3]) / coef[0]
    gradient = np.zeros(len(columns))
    gradient[[0, 2, 3]] = -skew / coef[0], 1.0 / coef[0], -1.0 / coef[0]
    return Estimate(float(skew), float(math.sqrt(gradient @ covariance @ gradient)))


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


@dataclass(frozen=True)
class LightReading:
    """The monitor tap with layer 1 playing and with the modulators at their bias points (AWG stopped).

    Why both: the laser's power scales them alike, a drifted IQ bias moves the carrier against the
    modulated light, so their ratio tells a bias drift from a change of the laser.
    """

    playing_w: float
    carrier_w: float

    @property
    def carrier_ratio(self) -> float:
        return self.carrier_w / self.playing_w if self.playing_w > 0 else math.inf


@dataclass(frozen=True)
class VacuumReading:
    """One receiver's record with the shutter closed: no signal, so mean 0, and a variance (shot noise, the
    amplifier's own noise, v_el) that stays what it was at set-up while its LO power and its gain do."""

    receiver: str
    mean_snu: float
    variance_snu: float
    electronic_noise_snu: float
    clipped: int
    range_v: float

    @property
    def optical_noise_snu(self) -> float:
        """The variance above the electronic noise: proportional to the LO power (a share of the laser)."""
        return self.variance_snu - self.electronic_noise_snu


class SecureLink:
    """The station's roles driven as the protocol's two parties (one object: the bench's single process)."""

    def __init__(self, station, calibration: StationCalibration, *, gain: float, laser_power_dbm: float,
                 verify_fraction: float):
        config = station.config
        self.station, self.calibration, self.config = station, calibration, config
        self.gain, self.laser_power_dbm, self.verify_fraction = gain, laser_power_dbm, verify_fraction
        self.symbol_rate_hz = config.protocol.symbol_rate_hz
        self.laser = station.laser()
        self.attenuator = station.attenuator()
        self.meter = station.power_meter()
        self.amplifier = station.amplifier()
        self.iq = station.iq_modulator(calibration.iq)
        self.carver = station.pulse_carver(ModulatorCalibration(1.0))
        self.gate = station.lo_phase_gate()
        p = config.roles.client_processor
        self.processor = station.time_bin_processor(calibration.processor or ProcessorCalibration(
            p.beam_splitter_vpi_v, p.phase_vpi_v, p.beam_splitter_driver_gain, p.phase_driver_gain))
        self.client_rx = station.receiver("client_receiver", calibration.client_receiver)
        self.server_rx = station.receiver("server_receiver", calibration.server_receiver)
        self.digitizer = station.digitizer(config.roles.client_receiver.digitizer)  # reads both receivers
        self.awg = self.iq.awg                 # run/stop act on the AWG that plays these channels
        self.client_awg = self.processor.awg
        self.layers: list[Layer] = []
        self.samples_per_symbol = 0
        self.digitizer_sps = calibration.client_receiver.samples_per_symbol
        self.ranges_v = {"client_receiver": 0.0, "server_receiver": 0.0}
        self._points = 0
        self.leakage_field = 0j
        self.skew_symbols = 0.0          # the IQ skew the drives pre-compensate, in symbol periods (pilots)
        self._attenuation_db = float("nan")
        self.pilot: PilotResult | None = None
        self.prepared_with: tuple[list[np.ndarray], float] | None = None  # prepare's arguments, for a re-apply
        self.events: list[str] = []      # what the link cured on its own (a wider range), for the session's report
        self.tails: dict[str, VacuumReading] = {}  # each receiver's vacuum after the latest acquisition's data

    # -- pre-flight: everything the sequence will send, checked against the limits -------------------
    def check_limits(self) -> None:
        """The laser power, the gain, the gate and the processor's widest drives, before anything is sent.

        (Each layer's IQ drive is checked when its codes are computed, before its upload; each
        layer's VOA setting against the least attenuation before the shutter opens.)
        """
        self.laser.check_power_dbm(self.laser_power_dbm)
        self.amplifier.check_gain_db(self.set_gain_db())
        self.gate.check_amplitude_vpp(GATE_AMPLITUDE_VPP)
        self.iq.awg.check_amplitude_vpp(self.iq.full_scale_amplitude_vpp())
        c = self.processor.calibration  # the data set theta in [0, pi/2] and |phi| <= pi: the widest drives
        for peak_v in (c.beam_splitter_vpi_v / c.beam_splitter_driver_gain, c.phase_vpi_v / c.phase_driver_gain):
            self.processor.awg.check_amplitude_vpp(2.0 * peak_v)

    def _imbalance_reach(self) -> float:
        """Largest child field per unit |field| after the imbalance compensation (AwgIQModulator.child_fields)."""
        g, delta = self.calibration.iq.iq_gain_imbalance, self.calibration.iq.iq_phase_error_rad
        return max(1.0 / (math.cos(delta) * (1.0 - 0.5 * g)), math.hypot(1.0, math.tan(delta)) / (1.0 + 0.5 * g))

    def set_gain_db(self) -> float:
        return 10.0 * math.log10(self.gain) - self.calibration.gain_offset_db

    # -- set-up --------------------------------------------------------------------------------------
    def prepare(self, layer_symbols: list[np.ndarray], mu_photons: float) -> PilotResult:
        """Pilots first (VOA for mu, both LO phases, the carrier leakage, the honest channel), then every
        layer: rotated for the client's LO, the leakage nulled, each at its own full drive and VOA setting.

        Returns the pilot measurement (the session stores it as its channel calibration).
        """
        self.prepared_with = (list(layer_symbols), mu_photons)
        result = self.prepare_pilots(mu_photons, layer_symbols[0].shape[1], segment=len(layer_symbols) + 1)
        self._null_layers()
        return result

    def iq_skew_s(self) -> Estimate:
        """The IQ skew the pilots measured: the compensation applied plus what the last pilot pass still saw."""
        residual = self.pilot.skew_symbols
        return Estimate((self.skew_symbols + residual.value) / self.symbol_rate_hz,
                        residual.uncertainty / self.symbol_rate_hz, "s")

    def _null_layers(self) -> None:
        """Every layer uploaded, rotated for the client's LO, its carrier leakage nulled and its mu measured;
        then the VOA at layer 1's setting."""
        layer_symbols, mu_photons = self.prepared_with
        self.layers = []
        for index, symbols in enumerate(layer_symbols):
            self._null_layer(index, symbols * np.exp(-1j * self.pilot.client_phase_rad), mu_photons)
        self._light_at(self.layers[0])

    def _light_at(self, layer: Layer) -> None:
        """The VOA changed behind a closed shutter: no light at an intermediate setting reaches the client."""
        self.attenuator.close_shutter()
        self._set_attenuation(layer)
        self.attenuator.open_shutter()

    def prepare_pilots(self, mu_photons: float, modes: int, segment: int = 1) -> PilotResult:
        """Light on at mu with public pilot rows; both LO phases and the carrier leakage measured, the leakage
        nulled (PILOT_PASSES), then one measuring pass: the honest channel (`qslab calibrate channel`)."""
        self.check_limits()
        for awg in (self.awg, self.client_awg):
            awg.stop()
            awg.configure(rate_divider=AWG_MEMORY_DIVIDER)
        self.samples_per_symbol = self.iq.awg.samples_per_symbol(self.symbol_rate_hz)
        pilot = self._upload(segment, pilot_symbol_table(PILOT_ROWS, modes, mu_photons))
        self.carver.awg.outputs_off()
        self.carver.lock_bias("peak")  # rect symbols back to back: the carver passes CW
        self.iq.lock_bias()
        self.attenuator.close_shutter()
        self.laser.set_wavelength_m(self.config.protocol.wavelength_m)
        self.laser.set_power_dbm(self.laser_power_dbm)
        self.laser.on()
        self.amplifier.set_gain_db(self.set_gain_db())
        self.amplifier.on()
        self._attenuation_for(pilot, mu_photons)
        self.digitizer.configure(sample_rate_hz=self.digitizer_sps * self.symbol_rate_hz)
        self.digitizer.arm()
        self._set_attenuation(pilot)
        self.attenuator.open_shutter()
        self.layers = [pilot]
        for _ in range(PILOT_PASSES):  # the leakage depends a little on the drives: null it iteratively
            result = self._pilots(pilot)
            self.leakage_field += result.leakage_photons_sqrt / pilot.photons_per_field
            self.skew_symbols += result.skew_symbols.value
            self.attenuator.close_shutter()
            pilot = self._upload(pilot.segment_id, pilot_symbol_table(PILOT_ROWS, modes, mu_photons))
            self._attenuation_for(pilot, mu_photons)
            self._set_attenuation(pilot)
            self.attenuator.open_shutter()
            self.layers = [pilot]
        self.pilot = self._pilots(pilot)
        return self.pilot

    def _null_layer(self, index: int, symbols: np.ndarray, mu_photons: float, start: complex | None = None,
                    passes: int = LAYER_NULLING_PASSES) -> Layer:
        """Upload one layer and null its own carrier leakage with the server's receiver (it knows its symbols):
        the leakage depends a little on the drive statistics, so the pilots' estimate is only the start."""
        leakage_field = self.leakage_field if start is None else start
        for attempt in range(passes + 1):
            self.attenuator.close_shutter()
            layer = self._upload(index + 1, symbols, leakage_field)
            self._attenuation_for(layer, mu_photons)
            layer.reference = layer.reference * np.exp(1j * self.pilot.server_phase_rad)
            self.layers[index:] = [layer]
            if attempt == passes:
                return layer
            self._set_attenuation(layer)
            self.attenuator.open_shutter()
            images = max(1, -(-NULLING_SAMPLES // (layer.rows * layer.modes)))
            capture = self.run_layer(index, np.ones((images, 2 * layer.modes)), np.random.default_rng(index),
                                     verify_fraction=1.0)
            offset, _, amplitude = server_offsets(capture, layer.reference[capture.verified_rows])
            leakage_field = leakage_field + offset / (2.0 * amplitude) / layer.photons_per_field * np.exp(
                -1j * self.pilot.server_phase_rad)
        return layer

    def _upload(self, segment: int, symbols: np.ndarray, leakage_field: complex | None = None) -> Layer:
        """One segment (I, Q and an empty gate) at its own full drive, the carrier leakage pre-compensated."""
        leakage_field = self.leakage_field if leakage_field is None else leakage_field
        photons_per_field = float(np.max(np.abs(symbols))) * self._imbalance_reach() / FIELD_HEADROOM
        fields = symbols / photons_per_field - leakage_field
        amplitude = self.iq.full_scale_amplitude_vpp()
        codes_i, codes_q = self.iq.drive_codes_at(fields, amplitude, self.skew_symbols)  # checks the AWG limit
        sps = self.samples_per_symbol
        self.awg.stop()
        self.iq.awg.load([(segment, [np.repeat(codes_i, sps), np.repeat(codes_q, sps)])], [amplitude, amplitude])
        self._load_gate(segment, np.zeros(0, dtype=int), np.zeros(0, bool), symbols.shape[1], symbols.shape[0])
        played = self.iq.played_fields(codes_i, codes_q, amplitude, self.skew_symbols) + leakage_field
        return Layer(segment, symbols.shape[0], symbols.shape[1], played, photons_per_field=photons_per_field,
                     leakage_field=complex(leakage_field))

    def _pilots(self, pilot: Layer) -> PilotResult:
        """Every pilot row gated; pilots and the client's pilot vectors are public, so both parties know beta.

        Server: y = t (own cos phi_s + other sin phi_s) + c_X or c_P (the carrier leakage in its frame);
        client: X = k Re(2 (beta + sigma l) e^{i phi_c}), sigma = sum conj(x_i), l the leakage field.
        """
        data = np.random.default_rng(PILOT_SEED).standard_normal((PILOT_IMAGES, 2 * pilot.modes))
        capture = self.run_layer(0, data, np.random.default_rng(PILOT_SEED + 1), verify_fraction=1.0)
        x_hat = unit_vectors(data)
        beta = (np.conj(x_hat) @ pilot.reference.T).ravel()  # [images x rows], sqrt(photons) at the server's output
        sigma = np.repeat(np.conj(x_hat).sum(axis=1), pilot.rows)
        measured = capture.client_quadratures_snu.ravel().astype(np.float64)
        design = np.stack([2 * beta.real, -2 * beta.imag, 2 * sigma.real, -2 * sigma.imag], axis=1)
        (a, b, a2, b2), *_ = np.linalg.lstsq(design, measured, rcond=None)
        client_phase, client_gain = math.atan2(b, a), math.hypot(a, b)
        offset, (ts, tc), amplitude = server_offsets(capture, pilot.reference[capture.verified_rows])
        c_x, c_p = offset.real, offset.imag
        server_phase = math.atan2(tc, ts)
        leakage = (c_x + 1j * c_p) / (2.0 * amplitude) * np.exp(-1j * server_phase)
        own, other, p = _quadrature_pair(capture, pilot.reference[capture.verified_rows])
        rotated = np.cos(server_phase) * own + np.sin(server_phase) * other
        return PilotResult(client_phase, server_phase, client_gain, complex(leakage),
                           complex((a2 + 1j * b2) / (a + 1j * b)), rotated.astype(np.float32),
                           capture.returned_snu - (np.where(p, c_p, c_x)).astype(np.float32),
                           int(capture.verified_rows.size), iq_skew(capture, pilot.reference, server_phase))

    def _attenuation_for(self, layer: Layer, mu_photons: float) -> None:
        """The layer's VOA setting for mu from the monitor tap while it plays (checked against the least
        attenuation), then its measured mu and reference symbols."""
        c = self.calibration
        monitor_w, monitor_u = self._monitor_while(layer)
        if not monitor_w > 0.0:
            raise ProtocolError("setting mu: the monitor tap reads no light (laser off, or modulators at null?)")
        base = self._mu_at(monitor_w, c.photons_attenuation_db)
        attenuation_db = c.photons_attenuation_db + 10.0 * math.log10(base / mu_photons) / c.attenuator_scale.value
        self.attenuator.check_attenuation_db(attenuation_db)  # the declared least attenuation bounds mu
        layer.attenuation_db = attenuation_db
        mu = self._mu_at(monitor_w, attenuation_db)
        relative = math.sqrt((c.photons_per_monitor_w.uncertainty / c.photons_per_monitor_w.value) ** 2
                             + (monitor_u / monitor_w) ** 2
                             + (math.log(10) / 10 * c.attenuator_scale.uncertainty
                                * (attenuation_db - c.photons_attenuation_db)) ** 2)
        layer.mu_photons = Estimate(mu, mu * relative, "photons")
        layer.photons_per_field = math.sqrt(mu / float(np.mean(np.abs(layer.played) ** 2)))
        layer.reference = layer.played * layer.photons_per_field

    def _set_attenuation(self, layer: Layer) -> None:
        if layer.attenuation_db != self._attenuation_db or not self.attenuator.attenuation_db() > 0:
            self.attenuator.set_attenuation_db(layer.attenuation_db)
            self._attenuation_db = layer.attenuation_db

    def _monitor_while(self, layer: Layer) -> tuple[float, float]:
        self.awg.stop()
        self._select(layer)
        self.awg.run()
        reading = self._monitor_w()
        self.awg.stop()
        return reading

    def _select(self, layer: Layer) -> None:
        self.iq.awg.select(layer.segment_id)
        self.gate.select(layer.segment_id)

    def _monitor_w(self) -> tuple[float, float]:
        readings = np.array([self.meter.read_power_w() for _ in range(MONITOR_READINGS)])
        return float(readings.mean()), float(readings.std(ddof=1) / math.sqrt(readings.size))

    def _mu_at(self, monitor_w: float, attenuation_db: float) -> float:
        c = self.calibration
        return monitor_w * c.photons_per_monitor_w.value * 10.0 ** (
            -c.attenuator_scale.value * (attenuation_db - c.photons_attenuation_db) / 10.0)

    # -- one (batch, layer) ------------------------------------------------------------------------
    def _load_gate(self, segment: int, rows: np.ndarray, measure_p: np.ndarray, modes: int, n_rows: int | None = None):
        n_rows = len(rows) if n_rows is None else n_rows
        codes = np.zeros((n_rows, modes), dtype=np.int8)
        if rows.size and measure_p.size:
            codes[rows] = np.where(measure_p, -GATE_CODE, GATE_CODE)[:, None]
        self.gate.load([(segment, [np.repeat(codes.ravel(), self.samples_per_symbol or 1)])], [GATE_AMPLITUDE_VPP])

    def run_layer(self, index: int, data: np.ndarray, rng: np.random.Generator,
                  verify_fraction: float | None = None) -> LayerCapture:
        """Secure products of one layer for a batch: data [B, features] real, any norm."""
        layer = self.layers[index]
        if layer.reference is None:
            raise ProtocolError(f"layer {index + 1} has no measured mu yet (prepare() first)")
        x_hat = unit_vectors(data)
        if x_hat.shape[1] != layer.modes:
            raise ProtocolError(f"layer {index + 1}: the data have {x_hat.shape[1]} modes, the weights {layer.modes}")
        batch = x_hat.shape[0]
        fraction = self.verify_fraction if verify_fraction is None else verify_fraction
        rows = np.flatnonzero(rng.random(layer.rows) < fraction)
        measure_p = rng.random(rows.size) < 0.5
        self.awg.stop()
        self.client_awg.stop()
        self._load_gate(layer.segment_id, rows, measure_p, layer.modes, layer.rows)
        self._select(layer)
        self._set_attenuation(layer)
        self.processor.load_batch(x_hat, self.samples_per_symbol, 1)
        self.client_awg.run()
        self.awg.run()
        n_client, n_server = batch * layer.rows, batch * rows.size * layer.modes
        client_v, server_v = self._acquire(n_client, n_server, layer)
        client = self.client_rx.quadratures_snu(client_v, n_client).reshape(batch, layer.rows)
        returned = (self.server_rx.quadratures_snu(server_v, n_server).reshape(batch, rows.size, layer.modes)
                    if rows.size else np.zeros((batch, 0, layer.modes)))
        chosen = np.broadcast_to(measure_p, (batch, rows.size))
        reference = layer.reference[rows]
        sent = np.where(measure_p[:, None], 2.0 * reference.imag, 2.0 * reference.real)
        return LayerCapture(client.astype(np.float32), rows, np.array(chosen),
                            np.broadcast_to(sent, returned.shape).astype(np.float32), returned.astype(np.float32))

    def _acquire(self, n_client: int, n_server: int, layer: Layer) -> tuple[np.ndarray, np.ndarray]:
        """Digitize with both ranges wide enough; a clipped record is taken again with a doubled range."""
        sps = self.digitizer_sps
        data_symbols = max(n_client, n_server, 1) + 1  # + the detector's memory of the last symbol
        points = (data_symbols + VACUUM_TAIL_SYMBOLS) * sps
        if points != self._points:
            self.digitizer.configure(points=points)
            self._points = points
        self._set_ranges(layer, initial=not all(self.ranges_v.values()))
        for attempt in range(CLIP_RETRIES + 1):
            self.digitizer.trigger()
            self.digitizer.wait()
            records = {rx.name: self._read_trace(rx) for rx in (self.client_rx, self.server_rx)}
            clipped = [rx for rx in (self.client_rx, self.server_rx) if self._clipped(rx, records[rx.name])]
            if not clipped:
                records = {name: _minus_tail_dc(v, data_symbols * sps) for name, v in records.items()}
                self._check_tails(records, data_symbols * sps)
                return records["client_receiver"], records["server_receiver"]
            widened = [rx for rx in clipped if self.widen_range(rx)] if attempt < CLIP_RETRIES else []
            if not widened:
                break
        detail = "; ".join(f"{rx.name} at {rx.range_v():.3g} V range: "
                           f"{_clip_detail(records[rx.name], 0.5 * rx.range_v(), rx.adc_bits)}"
                           for rx in clipped)
        raise ProtocolError(f"the digitizer clips even at the widest range it took ({attempt} widening(s)): {detail}")

    def widen_range(self, rx) -> bool:
        """Double a receiver's digitizer range; False when the digitizer kept the old one (at its widest)."""
        before_v = rx.range_v()
        rx.set_range_v(2.0 * before_v)
        after_v = rx.range_v()
        self.ranges_v[rx.name] = after_v
        if after_v > before_v:
            self.events.append(f"{rx.name}: digitizer range widened {before_v:.3g} -> {after_v:.3g} V (clipping)")
        return after_v > before_v

    @staticmethod
    def _read_trace(rx) -> np.ndarray:
        """A receiver's record in volts about the channel's centre (its offset: the receiver's DC level), as the
        clipping checks take them. An unreadable reply is the digitizer's InstrumentFault (the batch may be
        taken again)."""
        return rx.read_samples_v() - rx.offset_v()

    def _check_tails(self, records: dict[str, np.ndarray], start: int) -> None:
        """The vacuum after the data (its DC taken off) must look like the calibration's: variance 1 + v_el, else
        the data are scaled by a changed LO or gain; and one DC level over the tail, else the receiver drifts
        within a record. ReceiverError names the first receiver."""
        for rx in (self.client_rx, self.server_rx):
            reading = self._vacuum(rx, records[rx.name][start:], VACUUM_TAIL_SYMBOLS)
            self.tails[rx.name] = reading
            expected_snu = 1.0 + reading.electronic_noise_snu
            noise_db = 10.0 * math.log10(max(reading.variance_snu, 1e-12) / expected_snu)
            if abs(noise_db) > TAIL_NOISE_MAX_DB:
                raise ReceiverError(f"{rx.name}: the vacuum after its record has {noise_db:+.2f} dB of noise against "
                                    f"its calibration ({reading.variance_snu:.3g} vs {expected_snu:.3g} SNU): its LO "
                                    f"power or its gain changed", reading)
            half = self._vacuum(rx, records[rx.name][start:], VACUUM_TAIL_SYMBOLS // 2)  # (the DC is off the whole tail)
            if abs(2.0 * half.mean_snu) > TAIL_DRIFT_MAX_SNU:  # first half minus second = twice the first's mean
                template = np.asarray(rx.calibration.template, dtype=np.float64)  # the DSP's filter has unit norm
                offset_v = half.mean_snu * math.sqrt(rx.calibration.shot_noise_variance_v2) * float(
                    np.linalg.norm(template)) / max(abs(float(template.sum())), 1e-12)
                raise ReceiverError(f"{rx.name}: the DC level moves within a record ({2 * half.mean_snu:+.3g} SNU, about "
                                    f"{2 * offset_v:+.3g} V, between the halves of its vacuum tail): a drifting "
                                    f"receiver biases every quadrature", half)

    @staticmethod
    def _clipped(rx, samples_v: np.ndarray) -> bool:
        from qslab.analysis.dsp import count_clipped

        return count_clipped(samples_v, 0.5 * rx.range_v(), rx.adc_bits) > 0

    def _set_ranges(self, layer: Layer, initial: bool) -> None:
        """Half range = shot-noise rms per sample x (SIGMA_RANGE + the largest expected signal per sample)."""
        if not initial:
            return
        mu = layer.mu_photons.value
        sps = self.digitizer_sps
        signal_snu = {"client_receiver": 2.0 * math.sqrt(self.gain) * math.sqrt(mu) * 4.0,
                      "server_receiver": 2.0 * math.sqrt(mu) * 4.0}
        for rx in (self.client_rx, self.server_rx):
            rms_v = math.sqrt(rx.calibration.shot_noise_variance_v2)
            half = rms_v * (SIGMA_RANGE + signal_snu[rx.name] / math.sqrt(sps))
            lo_w = rx.lo_fraction * float(dbm_to_w(self.laser_power_dbm))  # centred on the DC-coupled output's
            rx.set_offset_v(rx.calibration.dc_level_v(lo_w))              # level (_read_trace takes it off)
            self.ranges_v[rx.name] = 2.0 * half
            rx.set_range_v(2.0 * half)

    def mu_photons(self) -> Estimate:
        """The largest measured mu over the layers (what the weight-leakage bound takes)."""
        return max((layer.mu_photons for layer in self.layers), key=lambda e: e.upper(CONFIDENCE_SIGMAS))

    # -- health between batches, and the cures (sequences/session_guard.py decides) --------------------
    def read_light(self) -> LightReading:
        """The monitor tap while layer 1 plays, then with the AWG stopped (the modulators at their bias points)."""
        playing_w, _ = self._monitor_while(self.layers[0])
        carrier_w, _ = self._monitor_w()
        return LightReading(playing_w, carrier_w)

    def read_vacuum(self, symbols: int = VACUUM_SYMBOLS) -> dict[str, VacuumReading]:
        """Both receivers with the shutter closed (AWGs stopped): one acquisition of vacuum each. The shutter
        is opened again only when the readings were taken (a failure leaves it closed)."""
        self.awg.stop()
        self.client_awg.stop()
        self.attenuator.close_shutter()
        points = (symbols + 1) * self.digitizer_sps
        if points != self._points:
            self.digitizer.configure(points=points)
            self._points = points
        self.digitizer.trigger()
        self.digitizer.wait()
        readings = {rx.name: self._vacuum(rx, _minus_tail_dc(self._read_trace(rx), 0), symbols)
                    for rx in (self.client_rx, self.server_rx)}
        self.attenuator.open_shutter()
        return readings

    @staticmethod
    def _vacuum(rx, samples_v: np.ndarray, symbols: int) -> VacuumReading:
        from qslab.analysis.dsp import count_clipped

        range_v = rx.range_v()
        quadratures = rx.quadratures_snu(samples_v, symbols).astype(np.float64)
        return VacuumReading(rx.name, float(quadratures.mean()), float(quadratures.var()),
                             rx.calibration.electronic_noise_snu, count_clipped(samples_v, 0.5 * range_v, rx.adc_bits),
                             range_v)

    def relock_biases(self) -> None:
        """Both bias loops locked afresh (a new lock at the same point): the cure of a drifted bias point."""
        self.carver.lock_bias("peak")
        self.iq.lock_bias()

    def renull(self, passes: int = 1) -> None:
        """Every layer's carrier leakage nulled again from its last estimate, and its mu measured (after a
        re-lock the leakage moves by the lock's residual: one pass takes it back down)."""
        layer_symbols, mu_photons = self.prepared_with
        starts = [layer.leakage_field for layer in self.layers]
        for index, symbols in enumerate(layer_symbols):
            self._null_layer(index, symbols * np.exp(-1j * self.pilot.client_phase_rad), mu_photons,
                             start=starts[index], passes=passes)
        self._light_at(self.layers[0])

    def reapply_instrument(self, name: str) -> str:
        """After instrument `name` was reset: its share of the set-up again, or the whole set-up for an AWG or the
        digitizer (their segments and acquisition settings are gone). Returns what was done."""
        roles = self.config.roles
        if name == roles.server_laser.instrument:
            self.attenuator.close_shutter()
            self.laser.set_wavelength_m(self.config.protocol.wavelength_m)
            self.laser.set_power_dbm(self.laser_power_dbm)
            self.laser.on()
            self._light_at(self.layers[0])
            return f"laser set up again ({self.laser_power_dbm:g} dBm, output on)"
        if name == roles.client_amplifier.instrument:
            self.amplifier.set_gain_db(self.set_gain_db())
            self.amplifier.on()
            return "amplifier's gain set and its output on again"
        if name == roles.server_attenuator.instrument:
            self._attenuation_db = float("nan")
            self._light_at(self.layers[0])
            return "attenuation set and shutter opened again"
        if name in (roles.server_iq_modulator.bias_controller, roles.pulse_carver.bias_controller):
            self.relock_biases()
            self.renull()
            return "bias loops locked again, carrier leakage re-nulled, mu re-measured"
        if name == roles.server_power_meter.instrument:
            return "nothing to set again (the session only reads the monitor)"
        if name == roles.client_receiver.digitizer:
            self.digitizer.restore()
        self.reapply()
        return "the whole set-up applied again (pilots, leakage nulling, mu)"

    def set_laser_power_dbm(self, power_dbm: float) -> None:
        """A new laser set-point (checked against the declared limits first, LimitError otherwise)."""
        self.laser.set_power_dbm(power_dbm)
        self.laser_power_dbm = power_dbm

    def remeasure_mu(self) -> None:
        """Each layer's VOA setting for mu from the monitor tap again (the light before the VOA changed)."""
        _, mu_photons = self.prepared_with
        self.attenuator.close_shutter()
        for layer in self.layers:
            self._attenuation_for(layer, mu_photons)
            layer.reference = layer.reference * np.exp(1j * self.pilot.server_phase_rad)
        self._light_at(self.layers[0])

    def reset_ranges(self) -> None:
        """The next acquisition sets the digitizer ranges for the signal again (wider ones were for a fault)."""
        self.ranges_v = dict.fromkeys(self.ranges_v, 0.0)

    def reapply(self) -> PilotResult:
        """The whole set-up again (after an instrument reset): nothing the link remembers having sent is trusted."""
        self._attenuation_db = float("nan")
        self._points = 0
        self.reset_ranges()
        return self.prepare(*self.prepared_with)


def _minus_tail_dc(samples_v: np.ndarray, start: int) -> np.ndarray:
    """The record less the mean of its vacuum tail (from sample ``start``): a DC-coupled receiver sits on its LO's
    unbalanced share (its CMRR), which follows the LO power, so each record's own vacuum gives its DC level
    (the digitizer is centred on the level the homodyne record predicts; this takes off what the LO's drift
    moved since). The whole tail: its mean's noise adds 1/tail symbols of a SNU^2 to every quadrature."""
    return samples_v - float(np.mean(samples_v[start:]))


def _clip_detail(samples_v: np.ndarray, full_scale_v: float, adc_bits: int | None) -> str:
    """How a record clips: on one rail only (a constant offset beyond the range) or on both (too much signal)."""
    from qslab.analysis.dsp import adc_rails_v

    bits = adc_bits or 16
    low_v, high_v = adc_rails_v(full_scale_v, bits)
    half_lsb_v = 0.5 * full_scale_v / 2 ** (bits - 1)  # as qslab.analysis.dsp.count_clipped counts them
    high = int(np.count_nonzero(samples_v >= high_v - half_lsb_v))
    low = int(np.count_nonzero(samples_v <= low_v + half_lsb_v))
    share = (high + low) / max(samples_v.size, 1)
    if low == 0 or high == 0:
        rail = "upper" if high else "lower"
        return (f"{100 * share:.3g} % of the samples on the {rail} rail, a constant input beyond its "
                f"+-{full_scale_v:.3g} V full scale (an unbalanced or saturated receiver)")
    return f"{100 * share:.3g} % of the samples on the rails (more signal or noise than the range holds)"

