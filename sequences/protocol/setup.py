"""Set-up of the secure link: limits checked, layers uploaded, the VOA set for mu, pilots, leakage nulled.

Everything here happens before the first batch (and again after an instrument reset): the sequence's
drives are checked against the declared limits, the pilots measure both LO phases, the carrier
leakage and the IQ skew (their fits: analysis/pilots.py), and each layer is uploaded at its own full
drive with its leakage nulled on the server's receiver and its mu measured on the monitor tap.
A part of SecureLink (secure_link.py): it reads and writes the state SecureLink.__init__ declares,
and takes its acquisitions with LinkAcquisition.run_layer.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from qslab.analysis.encoding import PILOT_SEED, mean_power, pilot_symbol_table, unit_vectors
from qslab.analysis.estimate import Estimate
from qslab.analysis.pilots import client_pilot_fit, iq_skew, server_offsets, server_pilot_fit
from qslab.analysis.session_results import CONFIDENCE_SIGMAS
from qslab.calibration.photons import MONITOR_AVERAGING_S
from qslab.instruments.optical.roles import AveragingPowerMeter
from qslab.sequences.protocol.errors import ProtocolError
from qslab.sequences.protocol.layers import Layer, PilotResult

log = logging.getLogger(__name__)

GATE_CODE = 100              # |code| > 32 gates a row (bench convention, instruments/sim/README.md): + X, - P
GATE_AMPLITUDE_VPP = 0.5
AWG_MEMORY_DIVIDER = 4       # 64 GSa/s / 4 = 16 samples per symbol at 1 GBd: the smallest segments the M8195A allows
FIELD_HEADROOM = 0.9         # largest child field used (the arcsine's slope grows without bound at 1)
MONITOR_READINGS = 5
# The meter's averaging time per monitor reading, set explicitly: a meter keeps whatever it was last set to (a
# calibration's 1 ms, the front panel's choice, the N774xA's power-on 0.1 s), and neither mu nor the time a check
# asks of the meter may depend on that (DECISIONS AE).
MU_AVERAGING_S = MONITOR_AVERAGING_S  # setting and measuring mu: as the photons calibration read the tap it scaled
CHECK_AVERAGING_S = 1e-3  # the health check after every batch (read_light): 10 readings, 10 ms of meter time per
# batch instead of 1 s; its additive noise (63 pW at 1 ms) is 0.4 % of the weakest reading (~16 nW on the bench),
# so the check's standard errors (0.25 % carrier ratio, 0.008 dB) stay 20x inside its 5 % and 0.2 dB tolerances
REFERENCE_AVERAGING_S = 0.1  # the check's reference after set-up, and a second look when a quick one is out of
# tolerance: it decides the finding and measures the cure (a laser set back to 0.001 dB instead of 0.01 dB)
PILOT_ROWS = 64
PILOT_PASSES = 2        # leakage-nulling passes before the measuring one
LAYER_NULLING_PASSES = 2  # per layer, with the server's receiver on all its rows
NULLING_SAMPLES = 200_000  # returned samples per layer-nulling acquisition
PILOT_IMAGES = 8


class LinkSetup:
    """Limits, uploads, attenuation, pilots and leakage nulling: the set-up part of SecureLink."""

    def check_limits(self) -> None:
        """The laser power, the gain, the gate and the processor's widest drives, before anything is sent.

        (Each layer's IQ drive is checked when its codes are computed, before its upload; each
        layer's VOA setting against the least attenuation before the shutter opens.)
        """
        self.laser.check_power_dbm(self.laser_power_dbm)
        self.amplifier.check_gain_db(self.set_gain_db())
        self.gate.check_amplitude_vpp(GATE_AMPLITUDE_VPP)
        self.iq.awg.check_amplitude_vpp(self.iq.full_scale_amplitude_vpp())
        # the data set theta in [0, pi/2] and |phi| <= pi: what the declared limit leaves out, said once per link
        for note in self.processor.reach():  # (LimitError when too much is out of reach)
            if note not in self.station_notes:
                self.station_notes.append(note)
                log.warning(note)

    def _imbalance_reach(self) -> float:
        """Largest child field per unit |field| after the imbalance compensation (AwgIQModulator.child_fields)."""
        g, delta = self.calibration.iq.iq_gain_imbalance, self.calibration.iq.iq_phase_error_rad
        return max(1.0 / (math.cos(delta) * (1.0 - 0.5 * g)), math.hypot(1.0, math.tan(delta)) / (1.0 + 0.5 * g))

    def set_gain_db(self) -> float:
        return 10.0 * math.log10(self.gain) - self.calibration.gain_offset_db

    def prepare(self, layer_symbols: list[np.ndarray], mu_photons: float) -> PilotResult:
        """Pilots first (VOA for mu, both LO phases, the carrier leakage, the honest channel), then every
        layer: rotated for the client's LO, the leakage nulled, each at its own full drive and VOA setting.

        Returns the pilot measurement (the session stores it as its channel calibration).
        """
        self.prepared_with = (list(layer_symbols), mu_photons)
        result = self.prepare_pilots(mu_photons, layer_symbols[0].shape[1], segment=len(layer_symbols) + 1)
        self._null_layers()
        return result

    def reapply(self) -> PilotResult:
        """The whole set-up again (after an instrument reset): nothing the link remembers having sent is trusted."""
        self._attenuation_db = float("nan")
        self._points = 0
        self.reset_ranges()
        return self.prepare(*self.prepared_with)

    def iq_skew_s(self) -> Estimate:
        """The IQ skew the pilots measured: the compensation applied plus what the last pilot pass still saw."""
        residual = self.pilot.skew_symbols
        return Estimate((self.skew_symbols + residual.value) / self.symbol_rate_hz,
                        residual.uncertainty / self.symbol_rate_hz, "s")

    def mu_photons(self) -> Estimate:
        """The largest measured mu over the layers (what the weight-leakage bound takes)."""
        return max((layer.mu_photons for layer in self.layers), key=lambda e: e.upper(CONFIDENCE_SIGMAS))

    def prepare_pilots(self, mu_photons: float, modes: int, segment: int = 1) -> PilotResult:
        """Light on at mu with public pilot rows; both LO phases and the carrier leakage measured, the leakage
        nulled (PILOT_PASSES), then one measuring pass: the honest channel (`qslab calibrate channel`)."""
        self.check_limits()
        for awg in (self.awg, self.client_awg):
            awg.stop()
            awg.configure(rate_divider=AWG_MEMORY_DIVIDER)
        # each AWG at its own clock: the client's may be of another family (its divider, its maximum rate)
        self.samples_per_symbol = self.iq.awg.samples_per_symbol(self.symbol_rate_hz)
        self.client_samples_per_symbol = self.client_awg.samples_per_symbol(self.symbol_rate_hz)
        self.gate_samples_per_symbol = self.gate.samples_per_symbol(self.symbol_rate_hz)
        pilot = self._upload(segment, pilot_symbol_table(PILOT_ROWS, modes, mu_photons))
        self.carver.awg.outputs_off()
        self.attenuator.close_shutter()
        self.laser.set_wavelength_m(self.config.protocol.wavelength_m)
        self.laser.set_power_dbm(self.laser_power_dbm)
        self.laser.on()
        self.lock_biases()  # dither locks need the light: after laser.on, each waited for
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
            pilot = self._upload(pilot.segment_id, pilot_symbol_table(PILOT_ROWS, modes, mu_photons), gate=False)
            self._attenuation_for(pilot, mu_photons)
            self._set_attenuation(pilot)
            self.attenuator.open_shutter()
            self.layers = [pilot]
        self.pilot = self._pilots(pilot)
        return self.pilot

    def _pilots(self, pilot: Layer) -> PilotResult:
        """Every pilot row gated; pilots and the client's pilot vectors are public, so both parties know beta.

        Server: y = t (own cos phi_s + other sin phi_s) + c_X or c_P (the carrier leakage in its frame);
        client: X = k Re(2 (beta + sigma l) e^{i phi_c}), sigma = sum conj(x_i), l the leakage field.
        """
        data = np.random.default_rng(PILOT_SEED).standard_normal((PILOT_IMAGES, 2 * pilot.modes))
        capture = self.run_layer(0, data, np.random.default_rng(PILOT_SEED + 1), verify_fraction=1.0)
        client_phase, client_gain, leakage_client = client_pilot_fit(unit_vectors(data), pilot.reference,
                                                                     capture.client_quadratures_snu)
        server_phase, leakage, sent, returned = server_pilot_fit(capture, pilot.reference[capture.verified_rows])
        return PilotResult(client_phase, server_phase, client_gain, leakage, leakage_client, sent, returned,
                           int(capture.verified_rows.size), iq_skew(capture, pilot.reference, server_phase))

    def _null_layers(self) -> None:
        """Every layer uploaded, rotated for the client's LO, its carrier leakage nulled and its mu measured;
        then the VOA at layer 1's setting."""
        layer_symbols, mu_photons = self.prepared_with
        self.layers = []
        for index, symbols in enumerate(layer_symbols):
            self._null_layer(index, symbols * np.exp(-1j * self.pilot.client_phase_rad), mu_photons)
        self._light_at(self.layers[0])

    def _null_layer(self, index: int, symbols: np.ndarray, mu_photons: float, start: complex | None = None,
                    passes: int = LAYER_NULLING_PASSES) -> Layer:
        """Upload one layer and null its own carrier leakage with the server's receiver (it knows its symbols):
        the leakage depends a little on the drive statistics, so the pilots' estimate is only the start."""
        leakage_field = self.leakage_field if start is None else start
        for attempt in range(passes + 1):
            self.attenuator.close_shutter()
            layer = self._upload(index + 1, symbols, leakage_field, gate=attempt in (0, passes))
            self._attenuation_for(layer, mu_photons)
            layer.reference = layer.reference * np.exp(1j * self.pilot.server_phase_rad)
            self.layers[index:] = [layer]
            if attempt == passes:
                return layer
            self._set_attenuation(layer)
            self.attenuator.open_shutter()
            images = max(1, -(-NULLING_SAMPLES // (layer.rows * layer.modes)), self._least_client_images(layer.modes))
            capture = self.run_layer(index, np.ones((images, 2 * layer.modes)), np.random.default_rng(index),
                                     verify_fraction=1.0)
            offset, _, amplitude = server_offsets(capture, layer.reference[capture.verified_rows])
            leakage_field = leakage_field + offset / (2.0 * amplitude) / layer.photons_per_field * np.exp(
                -1j * self.pilot.server_phase_rad)
        return layer

    def _least_client_images(self, modes: int) -> int:
        """Images whose processor segment (``modes`` bins each) the client's AWG plays at least (its shortest segment)."""
        return -(-self.client_awg.min_segment_samples() // (modes * self.client_samples_per_symbol))

    def _upload(self, segment: int, symbols: np.ndarray, leakage_field: complex | None = None,
                gate: bool = True) -> Layer:
        """One segment (I, Q and an empty gate) at its own full drive, the carrier leakage pre-compensated.

        ``gate=False``: the gate keeps what it holds, for a segment the last acquisition's gate already defines and
        the next acquisition loads the same again (a nulling pass between two acquisitions of the same rows): the
        monitor tap reads the modulators only, and the gate's samples (layer 1: millions) cross the socket twice
        less."""
        leakage_field = self.leakage_field if leakage_field is None else leakage_field
        photons_per_field = float(np.max(np.abs(symbols))) * self._imbalance_reach() / FIELD_HEADROOM
        fields = symbols / photons_per_field - leakage_field
        amplitude = self.iq.full_scale_amplitude_vpp()
        codes_i, codes_q = self.iq.drive_codes_at(fields, amplitude, self.skew_symbols)  # checks the AWG limit
        sps = self.samples_per_symbol
        self.iq.awg.load([(segment, [np.repeat(codes_i, sps), np.repeat(codes_q, sps)])], [amplitude, amplitude])
        if gate:
            self._load_gate(segment, np.zeros(0, dtype=int), np.zeros(0, bool), symbols.shape[1], symbols.shape[0])
        played = self.iq.played_fields(codes_i, codes_q, amplitude, self.skew_symbols) + leakage_field
        return Layer(segment, symbols.shape[0], symbols.shape[1], played, photons_per_field=photons_per_field,
                     leakage_field=complex(leakage_field))

    def _load_gate(self, segment: int, rows: np.ndarray, measure_p: np.ndarray, modes: int, n_rows: int | None = None):
        """The gate of ``segment``: GATE_CODE over each row in ``rows`` (negative: P measured), 0 elsewhere. One code
        per row, repeated over the row's samples (a layer 1 gate: 784 codes -> 9.8 M samples in 0.1 ms, against 1.3 ms
        for one code per symbol repeated per sample)."""
        n_rows = len(rows) if n_rows is None else n_rows
        codes = np.zeros(n_rows, dtype=np.int8)
        if rows.size and measure_p.size:
            codes[rows] = np.where(measure_p, -GATE_CODE, GATE_CODE)
        samples = np.repeat(codes, modes * (self.gate_samples_per_symbol or 1))
        self.gate.load([(segment, [samples])], [GATE_AMPLITUDE_VPP])

    def _light_at(self, layer: Layer) -> None:
        """The VOA changed behind a closed shutter: no light at an intermediate setting reaches the client."""
        self.attenuator.close_shutter()
        self._set_attenuation(layer)
        self.attenuator.open_shutter()

    def _attenuation_for(self, layer: Layer, mu_photons: float) -> None:
        """The layer's VOA setting for mu from the monitor tap while it plays (checked against the least
        attenuation), then its measured mu and reference symbols."""
        c = self.calibration
        monitor_w, monitor_u = self._monitor_while(layer, MU_AVERAGING_S)
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
        layer.photons_per_field = math.sqrt(mu / mean_power(layer.played))
        layer.reference = layer.played * layer.photons_per_field

    def _set_attenuation(self, layer: Layer) -> None:
        if layer.attenuation_db != self._attenuation_db or not self.attenuator.attenuation_db() > 0:
            self.attenuator.set_attenuation_db(layer.attenuation_db)
            self._attenuation_db = layer.attenuation_db

    def _monitor_while(self, layer: Layer, averaging_s: float) -> tuple[float, float]:
        self.awg.play_segment(layer.segment_id, self.gate)
        reading = self._monitor_w(averaging_s)
        self.awg.stop()
        return reading

    def _monitor_w(self, averaging_s: float) -> tuple[float, float]:
        """The monitor tap's mean power and its standard error from MONITOR_READINGS readings of ``averaging_s`` each
        (where the meter sets an averaging time), taken in one message where the meter allows (the same readings as
        one query each: the meter takes them one after the other)."""
        if isinstance(self.meter, AveragingPowerMeter):
            self.meter.use_averaging_time_s(averaging_s)
        readings = np.array(self.meter.read_powers_w(MONITOR_READINGS), dtype=float)
        return float(readings.mean()), float(readings.std(ddof=1) / math.sqrt(readings.size))

    def _mu_at(self, monitor_w: float, attenuation_db: float) -> float:
        c = self.calibration
        return monitor_w * c.photons_per_monitor_w.value * 10.0 ** (
            -c.attenuator_scale.value * (attenuation_db - c.photons_attenuation_db) / 10.0)

