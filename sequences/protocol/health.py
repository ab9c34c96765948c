"""Health between batches, and the cures (sequences/session_guard.py decides which).

The readings, both with the shutter closed: the monitor tap with layer 1 playing and with the modulators at
their bias points (read_light), both receivers' vacuum (read_vacuum). The cures: both bias
loops locked afresh and the leakage nulled again (relock_biases, renull), a new laser set-point and
mu measured again (set_laser_power_dbm, remeasure_mu), an instrument's share of the set-up after a
reset (reapply_instrument). A part of SecureLink (secure_link.py): it uses LinkSetup's uploads and
attenuation and LinkAcquisition's vacuum readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qslab.analysis.dsp import minus_tail_dc
from qslab.instruments.optical.bias_controller import BiasLockError
from qslab.sequences.protocol.acquisition import VacuumReading
from qslab.sequences.protocol.errors import ProtocolError
from qslab.sequences.protocol.setup import CHECK_AVERAGING_S

VACUUM_SYMBOLS = 16_384      # per receiver in a vacuum check: its variance to ~1 %, its mean to ~0.01 SNU


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


class LinkHealth:
    """Readings and cures between batches: the health part of SecureLink."""

    def read_light(self, averaging_s: float = CHECK_AVERAGING_S) -> LightReading:
        """The monitor tap while layer 1 plays, then with the AWG stopped (the modulators at their bias points);
        each of the readings averages ``averaging_s`` (the check after every batch: CHECK_AVERAGING_S).

        Behind a closed shutter, as the set-up reads the tap: the tap comes before the attenuator, so the readings
        are the same, and no layer reaches the client outside an acquisition (its weight leakage is counted per
        acquisition). The shutter is opened again only when the readings were taken (a failure leaves it closed)."""
        self.attenuator.close_shutter()
        playing_w, _ = self._monitor_while(self.layers[0], averaging_s)
        carrier_w, _ = self._monitor_w(averaging_s)
        self.attenuator.open_shutter()
        return LightReading(playing_w, carrier_w)

    def read_vacuum(self, symbols: int = VACUUM_SYMBOLS) -> dict[str, VacuumReading]:
        """Both receivers with the shutter closed (AWGs stopped): one acquisition of vacuum each. The shutter
        is opened again only when the readings were taken (a failure leaves it closed). The set-ups started ahead end
        first (settle_ahead): both AWGs are stopped here."""
        self.settle_ahead()
        self.awg.stop()
        self.client_awg.stop()
        self.attenuator.close_shutter()
        points = (symbols + 1) * self.digitizer_sps
        if points != self._points:
            self.digitizer.configure(points=points)
            self._points = points
        self.digitizer.trigger()
        self.digitizer.wait()
        readings = {rx.name: self._vacuum(rx, minus_tail_dc(self._read_trace(rx), 0), symbols)
                    for rx in (self.client_rx, self.server_rx)}
        self.attenuator.open_shutter()
        return readings

    def relock_biases(self) -> None:
        """Both bias loops locked afresh (a new lock at the same point): the cure of a drifted bias point."""
        self.lock_biases()

    def lock_biases(self) -> None:
        """The carver at peak (rect symbols back to back: it passes CW), then the IQ children at null, each waited
        for: the IQ's loop sees the light the carver passes, so the carver must hold its point first. The IQ's
        parent phase has no loop (DECISIONS T): the pilots measure its effect. ProtocolError naming the loop that did
        not lock."""
        try:
            self.carver.lock_bias("peak")
            self.iq.lock_bias()
        except BiasLockError as error:
            raise ProtocolError(f"locking the bias loops: {error}") from error

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
            self._attenuator_fastest = False  # a reset took its transition speed back to the default
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

