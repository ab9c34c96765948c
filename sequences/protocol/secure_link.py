"""SecureLink: the station's roles and the state the set-up, the acquisitions and the health checks share.

The three concerns are parts of one class (setup.py, acquisition.py, health.py): they act on the same
roles and the same remembered state (the layers uploaded, the ranges set, the pilots' result), which
is declared here, in one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from qslab.instruments.optical import ModulatorCalibration, ProcessorCalibration
from qslab.sequences.protocol.acquisition import LinkAcquisition, VacuumReading
from qslab.sequences.protocol.health import LinkHealth
from qslab.sequences.protocol.layers import Layer, LayerPlan, PilotResult
from qslab.sequences.protocol.setup import LinkSetup
from qslab.sequences.station_calibration import StationCalibration


class SecureLink(LinkSetup, LinkAcquisition, LinkHealth):
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
        self.samples_per_symbol = 0         # AWG samples per symbol of the server's IQ drives, the client's processor
        self.client_samples_per_symbol = 0  # and the verification gate: each AWG's own (the families' clocks differ)
        self.gate_samples_per_symbol = 0
        self.digitizer_sps = calibration.client_receiver.samples_per_symbol
        self.ranges_v = {"client_receiver": 0.0, "server_receiver": 0.0}
        self._points = 0
        self.leakage_field = 0j
        self.skew_symbols = 0.0          # the IQ skew the drives pre-compensate, in symbol periods (pilots)
        self._attenuation_db = float("nan")
        self._attenuator_fastest = False  # its transition speed set to the top of its range (run_layer, once)
        self._server_ahead: tuple[LayerPlan, Future] | None = None  # the next layer's server set-up (run_layers)
        self._client_ahead: tuple[np.ndarray, Future] | None = None  # the next layer's client upload (run_layers)
        self._next_first_layer: np.ndarray | None = None  # the next batch's data and layer-1 plan, not yet set up
        self._next_first_plan: LayerPlan | None = None    # (run_layers; the check starts their set-ups)
        self.pilot: PilotResult | None = None
        self.prepared_with: tuple[list[np.ndarray], float] | None = None  # prepare's arguments, for a re-apply
        self.station_notes: list[str] = []  # what the station cannot do, one line each (check_limits)
        self.events: list[str] = []      # what the link cured on its own (a wider range), for the session's report
        self.tails: dict[str, VacuumReading] = {}  # each receiver's vacuum after the latest acquisition's data
        # segment -> images its layer was played to (every capture: the set-up's nulling, batches taken again and
        # ranges widened included; LinkAcquisition._capture)
        self.images_played: Counter[int] = Counter()
        self.before_light: Callable[[], None] | None = None  # called by each capture once it is counted


    def weight_images_played(self) -> tuple[int, ...]:
        """Per layer (in order), the images this link has played its weights to so far (images_played)."""
        return tuple(self.images_played[layer.segment_id] for layer in self.layers)
