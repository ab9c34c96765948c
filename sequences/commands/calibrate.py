"""Run calibrations on the station of a config (the virtual bench by default), write records and figures.

    qslab calibrate {modulators,homodyne,photons,channel,amplifier,processor,all} [--config FILE] [--json]

Each procedure (calibration/) measures through the roles, fits, and returns estimates with
uncertainties; each result becomes one immutable record in the calibration directory
(--calibration-dir, else $QSLAB_CALIBRATION_DIR, else qslab-output/calibration) with its PNG
beside it under figures/. A failed calibration prints one line naming it and why (exit 1) and
writes no record; the station always closes with lasers off, shutters closed, amplifier off.
A kind whose procedure does not exist yet is refused with one line (exit 2); `all` runs the
implemented kinds and names the skipped ones on stderr. With --json the last stdout line is
{"parameters": {KEY: {"value", "uncertainty", "record"}}, "derived": {...same...}, "records": [ids]}
where KEY is the dotted path of the same quantity under the config's [bench] table.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np

HELP = "calibrate the station (modulators, homodyne, photons, channel, amplifier, processor, all): records + figures"
KINDS = ("modulators", "homodyne", "photons", "channel", "amplifier", "processor")
# `all` runs photons and amplifier (which need light through the modulators) before the modulator
# calibration, which leaves both modulators locked at null, ready for the protocol
ALL_ORDER = ("homodyne", "photons", "amplifier", "modulators", "processor", "channel")
# the estimates each kind reports under their [bench] dotted path; the others go to "derived"
BENCH_KEYS = {
    "photons": ("server.photons_per_symbol",),
    "homodyne": tuple(f"{rx}.{q}" for rx in ("client_receiver", "server_receiver")
                      for q in ("efficiency", "electronic_noise_snu", "common_mode_rejection_db")),
    "amplifier": ("client_amplifier.gain", "client_amplifier.gain_offset_db", "client_amplifier.noise_figure_db"),
    "modulators": tuple(f"{m}.{q}" for m in ("server_iq", "server_carver")
                        for q in ("vpi_v", "bias_vpi_v", "bias_phase_rad", "extinction_ratio_db"))
                  + ("server_iq.iq_gain_imbalance", "server_iq.iq_phase_error_rad", "bias_iq.bias_v", "bias_carver.bias_v"),
    "channel": ("channel.transmittance", "server_iq.iq_skew_s"),
    "processor": tuple(f"client_processor.{q}" for q in ("beam_splitter_vpi_v", "phase_vpi_v",
                                                         "beam_splitter_theta_offset_rad", "loss_per_pass_db")),
}


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number

    parser.add_argument("kind", choices=KINDS + ("all",), help="which calibration to run")
    parser.add_argument("--config", metavar="FILE", default="lab_config.toml",
                        help="station config (default: lab_config.toml in the current directory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")
    parser.add_argument("--calibration-dir", metavar="DIR", default=None,
                        help="record directory (default: $QSLAB_CALIBRATION_DIR, else the config's "
                             "[calibration] directory, qslab-output/calibration)")
    parser.add_argument("--fixed-attenuation-db", type=number("fixed-attenuation-db", 0.0, unit="dB"), default=None,
                        help="declared fixed attenuation between the VOA-output meter and the server output, dB "
                             "(characterised separately; default [calibration] fixed_attenuation_db)")
    parser.add_argument("--fixed-attenuation-uncertainty-db", type=number("fixed-attenuation-uncertainty-db", 0.0,
                                                                          unit="dB"), default=None,
                        help="its one-sigma uncertainty, dB (default [calibration] fixed_attenuation_uncertainty_db)")
    parser.add_argument("--output-meter-channel", type=number("output-meter-channel", 1, 4, integer=True),
                        default=None, help="channel of the monitor power meter that reads the VOA output "
                                           "(default [calibration] output_meter_channel)")
    parser.add_argument("--points", type=number("points", 1024, 50_000_000, integer=True), default=2**21,
                        help="digitizer points per homodyne record (default 2097152)")


class InfiniiumDigitizer:
    """qslab.calibration.homodyne.Digitizer over the Infiniium driver and the receivers' channels."""

    def __init__(self, driver, receivers):
        self.driver, self.receivers = driver, list(receivers)

    def configure(self, *, points: int, sample_rate_hz: float, ranges_v: dict[str, float]) -> float:
        self.driver.acquire_points(int(points))
        self.driver.sample_rate(sample_rate_hz)
        for rx in self.receivers:
            rx.channel.range(ranges_v[rx.name])
        self.driver.auto_digitize(False)
        return float(self.driver.sample_rate())

    def acquire(self) -> dict[str, np.ndarray]:
        self.driver.digitize()
        return {rx.name: rx.read_samples_v() for rx in self.receivers}

    def set_offsets(self, offsets_v: dict[str, float]) -> None:
        for rx in self.receivers:
            if rx.name in offsets_v:
                rx.channel.offset(float(offsets_v[rx.name]))


def _modulators_entry():
    try:
        from qslab.calibration import modulators
    except Exception:  # noqa: BLE001 - absent or broken: the kind is not available
        return None
    return getattr(modulators, "calibrate_station", None)


def implemented(kind: str) -> bool:
    return kind in ("photons", "homodyne", "amplifier", "channel", "processor") or (kind == "modulators"
                                                                      and _modulators_entry() is not None)


def run_kind(kind: str, station, args, figure_dir: Path) -> tuple[list, list[str]]:
    """(results, instrument names used) of one kind on a connected station."""
    config = station.config
    protocol = config.protocol
    if kind == "photons":
        from qslab.calibration.photons import PhotonSettings, calibrate_photons
        from qslab.calibration.result import Estimate
        from qslab.instruments.optical import N774xPowerMeter

        role = config.roles.server_power_meter
        if config.instruments[role.instrument].driver == "thorlabs_pm100d":
            raise _Refused("photons needs an N774x monitor meter with a channel on the VOA output")
        output_meter = N774xPowerMeter(getattr(station.driver(role.instrument), f"ch{args.output_meter_channel}"),
                                       name="voa_output_meter")
        settings = PhotonSettings(protocol.symbol_rate_hz, protocol.wavelength_m,
                                  Estimate(args.fixed_attenuation_db, args.fixed_attenuation_uncertainty_db, "dB"),
                                  target_photons=protocol.mu_photons)
        result = calibrate_photons(station.laser(), station.attenuator(), station.power_meter(), output_meter,
                                   settings, str(figure_dir / "photons-server_output.png"))
        used = [config.roles.server_laser.instrument, config.roles.server_attenuator.instrument, role.instrument]
        return [result], used
    if kind == "homodyne":
        from qslab.calibration.homodyne import HomodyneSettings, calibrate_homodyne
        from qslab.sequences.station import RECEIVERS

        receivers = [station.receiver(name) for name in RECEIVERS]
        digitizer = InfiniiumDigitizer(station.driver(config.roles.client_receiver.digitizer), receivers)
        settings = HomodyneSettings(protocol.symbol_rate_hz, protocol.wavelength_m, points=int(args.points))
        results = calibrate_homodyne(station.laser(), station.attenuator(), station.amplifier(), digitizer,
                                     receivers, settings, str(figure_dir))
        used = [config.roles.server_laser.instrument, config.roles.server_attenuator.instrument,
                config.roles.client_amplifier.instrument, config.roles.client_receiver.digitizer]
        return results, used
    if kind == "amplifier":
        from qslab.calibration.amplifier import AmplifierSettings, calibrate_amplifier
        from qslab.calibration.records import RecordError, RecordStore

        try:  # the noise figure needs the client receiver's efficiency: a valid homodyne record
            homodyne = RecordStore(args.calibration_dir).require("homodyne", "client_receiver")
        except RecordError as error:
            raise _Refused(f"calibration 'amplifier' cannot run: {error}") from None
        receiver = station.receiver("client_receiver")
        digitizer = InfiniiumDigitizer(station.driver(config.roles.client_receiver.digitizer), [receiver])
        settings = AmplifierSettings(protocol.symbol_rate_hz, protocol.gain,
                                     homodyne.estimate("client_receiver.efficiency"),
                                     wavelength_m=protocol.wavelength_m)
        result = calibrate_amplifier(station.laser(), station.attenuator(), station.amplifier(), digitizer,
                                     receiver, settings, str(figure_dir / "amplifier-client_amplifier.png"))
        result = _with_condition(result, "homodyne_record", homodyne.id)
        used = [config.roles.server_laser.instrument, config.roles.server_attenuator.instrument,
                config.roles.client_amplifier.instrument, config.roles.client_receiver.digitizer]
        return [result], used
    if kind == "modulators":
        from qslab.calibration.homodyne import receiver_calibration
        from qslab.calibration.records import RecordError, RecordStore

        try:  # the client receiver's DC level (a homodyne record) centres the RF captures; without one they centre
            record = RecordStore(args.calibration_dir).require("homodyne", "client_receiver")  # on their own means
            calibration = receiver_calibration(record)
        except RecordError:
            calibration = None
        return (list(_modulators_entry()(station, figure_dir, receiver_calibration=calibration)),
                sorted(station.connections))
    if kind == "channel":
        return [_channel(station, args, figure_dir)], sorted(station.connections)
    if kind == "processor":
        return [_processor(station, args, figure_dir)], sorted(station.connections)
    raise _Refused(f"calibration {kind!r} is not implemented yet")


class _Refused(Exception):
    pass


def _lit_pilots(station, args, kind: str, *, processor: bool):
    """(calibration, link, pilots): the session's own pilot step on the records it needs (homodyne, photons,
    amplifier, modulators, and the processor's unless ``processor`` is False), or one line naming the missing one."""
    from qslab.calibration.modulators import DRIVER_GAINS
    from qslab.calibration.records import RecordError, RecordStore
    from qslab.sequences.protocol import SecureLink, load_station_calibration

    protocol = station.config.protocol
    try:
        calibration = load_station_calibration(RecordStore(args.calibration_dir), DRIVER_GAINS["server_iq"],
                                               channel=False, processor=processor)
    except RecordError as error:
        raise _Refused(f"calibration {kind!r} cannot run: {error}") from None
    link = SecureLink(station, calibration, gain=protocol.gain, laser_power_dbm=station.config.session.laser_power_dbm,
                      verify_fraction=protocol.verify_fraction)
    return calibration, link, link.prepare_pilots(protocol.mu_photons, protocol.modes)


def _channel(station, args, figure_dir: Path):
    """T and eps of the honest round trip from public pilot symbols (calibration/channel.py)."""
    from qslab.calibration.channel import channel_result

    protocol = station.config.protocol
    calibration, link, pilot = _lit_pilots(station, args, "channel", processor=True)
    return channel_result(pilot.sent_snu, pilot.returned_snu, calibration.server_detector,
                          conditions={"gain": protocol.gain, "mu_photons": link.layers[0].mu_photons.value,
                                      "pilot_rows": pilot.rows, "client_lo_phase_rad": pilot.client_phase_rad,
                                      "server_lo_phase_rad": pilot.server_phase_rad,
                                      "client_gain_snu": pilot.client_gain_snu,
                                      "records": sorted(calibration.records)},
                          figure_path=str(figure_dir / "channel-link.png"), iq_skew_s=link.iq_skew_s())


PROCESSOR_IMAGES = 128     # designed client vectors: 128 x 64 pilot rows = 8192 outcomes
PROCESSOR_SEED = 20240806  # the designed vectors (the client's own choice; recorded)


def _processor(station, args, figure_dir: Path):
    """The client processor's V_pi, offset and loss per pass, and the photon cross-check (calibration/processor.py):
    the session's pilots on the server's side, designed vectors on the client's, one acquisition."""
    from qslab.analysis.dsp import temporal_mode_efficiency
    from qslab.calibration.channel import channel_result
    from qslab.calibration.processor import (BANDWIDTH_TOLERANCE, CrossCheckInputs, design_vectors, fit_processor,
                                      processor_result)
    from qslab.calibration.result import Estimate

    config, protocol = station.config, station.config.protocol
    calibration, link, pilot = _lit_pilots(station, args, "processor", processor=False)
    server = channel_result(pilot.sent_snu, pilot.returned_snu, calibration.server_detector, conditions={})
    rng = np.random.default_rng(PROCESSOR_SEED)
    x_hat = design_vectors(PROCESSOR_IMAGES, protocol.modes, rng)
    data = np.stack([x_hat.real, x_hat.imag], axis=-1).reshape(x_hat.shape[0], -1)
    capture = link.run_layer(0, data, rng, verify_fraction=0.0)
    volts_bs, volts_ph = link.processor.played_volts(x_hat)
    datasheet = link.processor.calibration
    slopes = (0.5 * np.pi * datasheet.beam_splitter_driver_gain / datasheet.beam_splitter_vpi_v,
              np.pi * datasheet.phase_driver_gain / datasheet.phase_vpi_v)
    pilots = link.layers[0].reference
    fit = fit_processor(capture.client_quadratures_snu, volts_bs, volts_ph, pilots,
                        beam_splitter_rad_per_v=slopes[0], phase_rad_per_v=slopes[1])

    def mode_efficiency(name: str) -> Estimate:
        rx, bandwidth_hz = getattr(calibration, name), getattr(config.roles, name).detector.bandwidth_hz
        value, wider = (temporal_mode_efficiency(b, 1, rx.samples_per_symbol * protocol.symbol_rate_hz, rx.template,
                                                 rx.samples_per_symbol, rx.offset_samples)
                        for b in (bandwidth_hz, bandwidth_hz * (1 + BANDWIDTH_TOLERANCE)))
        return Estimate(value, abs(wider - value))

    c = config.calibration
    inputs = CrossCheckInputs(
        server_amplitude=server.parameters["channel.amplitude_transmittance"],
        client_efficiency=calibration.client_efficiency,
        server_efficiency=calibration.server_efficiency,
        gain=calibration.gain, client_mode_efficiency=mode_efficiency("client_receiver"),
        server_mode_efficiency=mode_efficiency("server_receiver"),
        forward_transmittance=Estimate(c.forward_transmittance, c.forward_transmittance_uncertainty),
        return_transmittance=Estimate(c.return_transmittance, c.return_transmittance_uncertainty),
        photons_per_symbol=link.layers[0].mu_photons)
    raw = {"outcomes_snu": capture.client_quadratures_snu, "volts_beam_splitter": volts_bs.astype(np.float32),
           "volts_phase": volts_ph.astype(np.float32), "pilots": pilots.astype(np.complex64)}
    conditions = {"gain": protocol.gain, "images": PROCESSOR_IMAGES, "pilot_rows": int(pilots.shape[0]),
                  "seed": PROCESSOR_SEED, "datasheet_rad_per_v": list(slopes),
                  "mode_efficiency_model": "first-order (RC) detector at the datasheet bandwidth, +-10 %",
                  "records": sorted(calibration.records)}
    return processor_result(fit, inputs, driver_gains=(datasheet.beam_splitter_driver_gain,
                                                       datasheet.phase_driver_gain),
                            raw=raw, conditions=conditions, figure_path=str(figure_dir / "processor-client_processor.png"))


def _with_condition(result, key: str, value):
    from dataclasses import replace

    return replace(result, conditions={**result.conditions, key: value})


def run(args) -> int:
    from qslab.calibration.records import RecordStore
    from qslab.calibration.result import CalibrationError
    from qslab.sequences.commands.cli_io import UsageError, print_json_last
    from qslab.sequences.config import ConfigError, load_config
    from qslab.sequences.station import LabStation, StationError

    kinds = list(ALL_ORDER) if args.kind == "all" else [args.kind]
    missing = [k for k in kinds if not implemented(k)]
    if args.kind != "all" and missing:
        raise UsageError(f"calibration {args.kind!r} is not implemented yet")
    kinds = [k for k in kinds if k not in missing]
    if missing:
        print(f"qslab calibrate: skipped (not implemented yet): {', '.join(missing)}", file=sys.stderr)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    _defaults_from_config(args, config)
    store = RecordStore(args.calibration_dir)
    figure_dir = store.directory / "figures" / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    figure_dir.mkdir(parents=True, exist_ok=True)
    records, failure = [], None
    station = LabStation(config)
    try:
        with station:
            identities = {name: ",".join(c.identity.as_dict().values()) for name, c in station.connections.items()}
            for kind in kinds:
                try:
                    results, used = run_kind(kind, station, args, figure_dir)
                except (CalibrationError, _Refused) as error:
                    failure = str(error)
                    break
                for result in results:  # written only after the whole kind succeeded
                    records.append(store.write(result, instruments={n: identities[n] for n in used if n in identities}))
    except StationError as error:
        print(f"qslab calibrate: error: {error}", file=sys.stderr)
        return 1
    safe = station.safe_state.as_dict() if station.safe_state else {"safe": False}
    print(format_table(records))
    if failure:
        print(f"qslab calibrate: error: {failure} (no record written for it)", file=sys.stderr)
    if not safe["safe"]:
        print(f"qslab calibrate: error: the station did not read back safe: {safe}", file=sys.stderr)
    if args.json:
        print_json_last(json_payload(records))
    return 1 if failure or not safe["safe"] else 0


def _defaults_from_config(args, config) -> None:
    """Options not given on the command line come from the config's [calibration] table."""
    import os

    from qslab.calibration.records import DIRECTORY_ENV

    c = config.calibration
    if args.calibration_dir is None:
        args.calibration_dir = os.environ.get(DIRECTORY_ENV) or c.directory
    for option in ("fixed_attenuation_db", "fixed_attenuation_uncertainty_db", "output_meter_channel"):
        if getattr(args, option) is None:
            setattr(args, option, getattr(c, option))


def json_payload(records) -> dict:
    primary, derived = {}, {}
    for record in records:
        bench_keys = BENCH_KEYS.get(record.kind, ())
        for key, estimate in record.parameters.items():
            entry = {"value": estimate.value, "uncertainty": estimate.uncertainty, "unit": estimate.unit,
                     "record": record.id}
            (primary if key in bench_keys else derived)[key] = entry
    return {"parameters": primary, "derived": derived, "records": [r.id for r in records]}


def format_table(records) -> str:
    rows = [(r.id, key, f"{e.value:.6g} +- {e.uncertainty:.2g} {e.unit}".rstrip())
            for r in records for key, e in r.parameters.items()]
    if not rows:
        return "no calibration record written"
    header = ("record", "parameter", "value +- 1 sigma")
    width = [max(len(row[k]) for row in [header, *rows]) for k in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in [header, *rows]]
    directory = records[0].path.parent
    return "\n".join(lines + [f"{len(records)} record(s) written to {directory}"])
