"""What the protocol takes from the calibration records: StationCalibration, loaded once per session or run.

Every calibrated number is kept as the record's Estimate (one sigma); the only widening, the server
detector's k-sigma half-widths, is made by qslab.analysis.measured_values.server_detector, the same
function the results use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qslab.analysis.estimate import Estimate
from qslab.analysis.measured_values import server_detector
from qslab.analysis.session_results import CONFIDENCE_SIGMAS
from qslab.analysis.verification import ServerDetector
from qslab.calibration.homodyne import receiver_calibration
from qslab.calibration.records import CorruptRecord, RecordStore
from qslab.instruments.optical import ModulatorCalibration, ProcessorCalibration
from qslab.sequences.calibrations import KINDS, kind


@dataclass(frozen=True)
class StationCalibration:
    """Everything the protocol reads from records, and the records' ids and values (for the recording)."""

    client_receiver: object          # ReceiverCalibration
    server_receiver: object
    server_detector: ServerDetector  # at CONFIDENCE_SIGMAS (its uncertainties are k-sigma half-widths)
    client_efficiency: Estimate
    server_efficiency: Estimate
    server_electronic_noise_snu: Estimate  # at the operating LO power
    iq: ModulatorCalibration
    photons_per_monitor_w: Estimate  # at the photons record's attenuation
    attenuator_scale: Estimate       # dB of output per dB of set attenuation
    photons_attenuation_db: float
    gain: Estimate                   # true G at the protocol's set gain
    gain_offset_db: float            # true minus set gain
    transmittance: Estimate | None   # the honest round trip, from a channel record (None before it exists)
    excess_noise: Estimate | None = None  # the honest link's excess noise (pilots), SNU
    amplitude_transmittance: Estimate | None = None  # sqrt(eta_s T) on the server detector's scale (pilots)
    noise_figure_db: Estimate | None = None  # the client amplifier's (amplifier record)
    processor: ProcessorCalibration | None = None  # the client processor's record (None: the config's datasheet values)
    records: dict = field(default_factory=dict)   # "kind/instrument/id" -> record_summary
    server_shot_noise_v2: Estimate | None = None  # the server detector's shot-noise unit (its uncertainty scales T, eps)
    processor_loss_per_pass_db: Estimate | None = None  # the client processor's (processor record; data leakage)

    def with_channel(self, record) -> StationCalibration:
        """This calibration with the honest link of a channel record (T, eps, sqrt(eta_s T)) and its summary."""
        from dataclasses import replace

        check_plausible(record)

        return replace(self, transmittance=record.estimate("channel.transmittance"),
                       excess_noise=record.estimate("channel.excess_noise_snu"),
                       amplitude_transmittance=record.estimate("channel.amplitude_transmittance"),
                       records={**self.records, f"{record.kind}/{record.instrument}/{record.id}": record_summary(record)})


def record_summary(record) -> dict:
    return {"id": record.id, "kind": record.kind, "instrument": record.instrument,
            "created_utc": record.created.isoformat(),
            "parameters": {k: {"value": e.value, "uncertainty": e.uncertainty, "unit": e.unit}
                           for k, e in record.parameters.items()}}


class ImplausibleRecord(CorruptRecord):
    """A record whose value no working station measures (zero or negative where the physics needs > 0): used, it
    would end in a math domain error or a wrong operating point, so the session refuses it by name."""


# parameter-key suffix -> (lowest, highest or None, whether the lowest is excluded, what is expected)
PLAUSIBLE = {
    "shot_noise_variance_v2": (0.0, None, True, "> 0 V^2"),
    "photons_per_monitor_w": (0.0, None, True, "> 0 photons per W at the monitor"),
    "photons_per_symbol": (0.0, None, True, "> 0 photons per mode"),
    "attenuator_scale": (0.0, None, True, "> 0 dB per set dB"),
    "vpi_v": (0.0, None, True, "> 0 V"),
    "vpi_at_awg_v": (0.0, None, True, "> 0 V"),
    "extinction_ratio_db": (0.0, None, True, "> 0 dB"),
    "efficiency": (0.0, 1.0, True, "in (0, 1]"),
    "client_amplifier.gain": (1.0, None, False, ">= 1 (linear power gain)"),
    "electronic_noise_snu_at_operating_lo": (0.0, None, False, ">= 0 SNU"),
    "channel.transmittance": (0.0, None, True, "> 0"),
}


def check_plausible(record) -> None:
    """ImplausibleRecord naming the record, key and value when a value it holds is outside PLAUSIBLE."""
    for key, estimate in record.parameters.items():
        rule = next((rule for suffix, rule in PLAUSIBLE.items() if key == suffix or key.endswith(f".{suffix}")
                     or key.endswith(f"_{suffix}")), None)
        if rule is None:
            continue
        low, high, open_low, expected = rule
        value = estimate.value
        if (value <= low if open_low else value < low) or (high is not None and value > high):
            raise ImplausibleRecord(f"calibration record {record.id}: {key} = {value:g}, expected {expected}: no "
                                    f"working station measures this; run `qslab calibrate {record.kind}` again")


def load_station_calibration(store: RecordStore, iq_driver_gain: float, channel: bool = True,
                             processor: bool = True) -> StationCalibration:
    """The latest valid records the protocol needs (RecordError naming the first missing or stale one): those of
    the kinds a channel calibration requires (sequences/calibrations.py), and the channel's own unless
    ``channel`` is False. ``processor=False``: without the processor record (its own calibration runs on the
    datasheet values)."""
    needed = [k for k in KINDS if k.name in kind("channel").requires and (processor or k.name != "processor")]
    found = {(instrument, key): store.require_parameter(k.name, instrument, key)
             for k in needed for instrument, key in k.records}
    client_rec = found[("client_receiver", "client_receiver.shot_noise_variance_v2")]
    server_rec = found[("server_receiver", "server_receiver.shot_noise_variance_v2")]
    photons = found[("server_output", "server.photons_per_monitor_w")]
    amplifier = found[("client_amplifier", "client_amplifier.gain")]
    vpi_rec = found[("server_iq", "server_iq.vpi_v")]
    imbalance = found[("server_iq", "server_iq.iq_gain_imbalance")]
    channel_rec = store.require_parameter("channel", "link", "channel.transmittance") if channel else None
    eta = server_rec.estimate("server_receiver.efficiency")
    v_el = server_rec.estimate("server_receiver.electronic_noise_snu_at_operating_lo")
    extinction = store.require_parameter("modulators", "server_iq", "server_iq.extinction_ratio_db")
    iq = ModulatorCalibration(vpi_v=vpi_rec.estimate("server_iq.vpi_v").value, driver_gain=iq_driver_gain,
                              iq_gain_imbalance=imbalance.estimate("server_iq.iq_gain_imbalance").value,
                              iq_phase_error_rad=imbalance.estimate("server_iq.iq_phase_error_rad").value,
                              extinction_ratio_db=extinction.estimate("server_iq.extinction_ratio_db").value,
                              record_id=vpi_rec.id)
    processor_rec = found.get(("client_processor", "client_processor.beam_splitter_vpi_v"))
    used = [client_rec, server_rec, photons, amplifier, vpi_rec, imbalance, extinction] + [
        r for r in (channel_rec, processor_rec) if r is not None]
    for record in used:
        check_plausible(record)
    return StationCalibration(
        client_receiver=receiver_calibration(client_rec), server_receiver=receiver_calibration(server_rec),
        server_detector=server_detector(eta, v_el, CONFIDENCE_SIGMAS),
        client_efficiency=client_rec.estimate("client_receiver.efficiency"),
        server_efficiency=eta, server_electronic_noise_snu=v_el, iq=iq,
        server_shot_noise_v2=server_rec.estimate("server_receiver.shot_noise_variance_v2"),
        photons_per_monitor_w=photons.estimate("server.photons_per_monitor_w"),
        attenuator_scale=photons.estimate("server.attenuator_scale"),
        photons_attenuation_db=float(photons.conditions["attenuation_db"]),
        gain=amplifier.estimate("client_amplifier.gain"),
        gain_offset_db=amplifier.estimate("client_amplifier.gain_offset_db").value,
        noise_figure_db=amplifier.estimate("client_amplifier.noise_figure_db"),
        transmittance=channel_rec.estimate("channel.transmittance") if channel_rec else None,
        processor=processor_calibration(processor_rec) if processor_rec else None,
        processor_loss_per_pass_db=(processor_rec.estimate("client_processor.loss_per_pass_db")
                                    if processor_rec and "client_processor.loss_per_pass_db" in processor_rec.parameters
                                    else None),
        records={f"{r.kind}/{r.instrument}/{r.id}": record_summary(r) for r in used})


def processor_calibration(record) -> ProcessorCalibration:
    """The processor's modulators from its record: V_pi at the AWG, i.e. per unit driver gain (the datasheet
    gains only convert it to volts at the modulators)."""
    value = record.estimate
    return ProcessorCalibration(
        beam_splitter_vpi_v=value("client_processor.beam_splitter_vpi_at_awg_v").value,
        phase_vpi_v=value("client_processor.phase_vpi_at_awg_v").value,
        beam_splitter_theta_offset_rad=value("client_processor.beam_splitter_theta_offset_rad").value,
        record_id=record.id)
