"""The station's whole-kind calibrations as a library: one table of kinds, typed options, one procedure per kind.

`qslab calibrate` (sequences/commands/calibrate.py) only parses and prints; a lab session
(sequences/session.py) and the benchmarks call the same functions. A kind runs on a connected
station, reads the records its prerequisites wrote (the table says which, and a run refuses
naming the first missing one), measures through the roles (calibration/), and returns results;
`record_kind` writes them only after the whole kind succeeded.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

HOMODYNE_POINTS = 2**21   # digitizer points per homodyne record
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationKind:
    """One kind of calibration: what it measures, which kinds must have a valid record before it runs, and the
    (instrument, parameter key) of the records that show it done."""

    name: str
    measures: str
    requires: tuple[str, ...]
    records: tuple[tuple[str, str], ...]
    bench_keys: tuple[str, ...]  # the estimates it reports under their dotted path in the config's [bench] table


_RECEIVER_QUANTITIES = ("efficiency", "electronic_noise_snu", "common_mode_rejection_db")
_MODULATOR_QUANTITIES = ("vpi_v", "bias_vpi_v", "bias_phase_rad", "extinction_ratio_db")

# The order is the order `qslab calibrate all` and a session run them: photons and amplifier (which need light
# through the modulators) before the modulator calibration, which leaves both modulators locked at null, ready
# for the protocol; the processor and the channel need every record before them.
KINDS = (
    CalibrationKind("homodyne", "both receivers' shot-noise scale, efficiency, electronic noise and CMRR", (),
                    (("client_receiver", "client_receiver.shot_noise_variance_v2"),
                     ("server_receiver", "server_receiver.shot_noise_variance_v2")),
                    tuple(f"{rx}.{q}" for rx in ("client_receiver", "server_receiver") for q in _RECEIVER_QUANTITIES)),
    CalibrationKind("photons", "photons per symbol at the server's output per watt on the monitor tap", (),
                    (("server_output", "server.photons_per_monitor_w"),), ("server.photons_per_symbol",)),
    CalibrationKind("amplifier", "the client amplifier's true gain and noise figure", ("homodyne",),
                    (("client_amplifier", "client_amplifier.gain"),),
                    ("client_amplifier.gain", "client_amplifier.gain_offset_db", "client_amplifier.noise_figure_db")),
    CalibrationKind("modulators", "the server modulators' V_pi, bias points, extinction ratios and IQ imbalance", (),
                    (("server_iq", "server_iq.vpi_v"), ("server_iq", "server_iq.iq_gain_imbalance")),
                    tuple(f"{m}.{q}" for m in ("server_iq", "server_carver") for q in _MODULATOR_QUANTITIES)
                    + ("server_iq.iq_gain_imbalance", "server_iq.iq_phase_error_rad", "bias_iq.bias_v",
                       "bias_carver.bias_v")),
    CalibrationKind("processor", "the client processor's V_pi, beam-splitter offset and loss per pass",
                    ("homodyne", "photons", "amplifier", "modulators"),
                    (("client_processor", "client_processor.beam_splitter_vpi_v"),),
                    tuple(f"client_processor.{q}" for q in ("beam_splitter_vpi_v", "phase_vpi_v",
                                                            "beam_splitter_theta_offset_rad", "loss_per_pass_db"))),
    CalibrationKind("channel", "the honest round trip's T and excess noise from public pilots, and the IQ skew",
                    ("homodyne", "photons", "amplifier", "modulators", "processor"),
                    (("link", "channel.transmittance"),), ("channel.transmittance", "server_iq.iq_skew_s")),
)
KIND_NAMES = tuple(k.name for k in KINDS)
_BY_NAME = {k.name: k for k in KINDS}


def kind(name: str) -> CalibrationKind:
    return _BY_NAME[name]


@dataclass(frozen=True)
class CalibrationOptions:
    """What a run needs besides the config's roles: the photons calibration's declared fixed attenuation (dB,
    and its one-sigma uncertainty) and its monitor meter channel, and the homodyne record length."""

    fixed_attenuation_db: float
    fixed_attenuation_uncertainty_db: float
    output_meter_channel: int
    homodyne_points: int = HOMODYNE_POINTS

    @classmethod
    def from_config(cls, config, **given) -> CalibrationOptions:
        """The config's [calibration] values, except those given (None: not given)."""
        c = config.calibration
        values = {f.name: getattr(c, f.name) for f in dataclasses.fields(cls) if hasattr(c, f.name)}
        return cls(**{**values, **{key: value for key, value in given.items() if value is not None}})


class CalibrationRefused(Exception):
    """A kind that cannot run on this station or store (a missing prerequisite record, an unsuitable meter)."""


def missing_records(store, kinds) -> dict:
    """Kind -> the RecordError of its first missing or stale record, for the given kinds (in table order).
    A damaged record (CorruptRecord) is raised: running the calibration again would not repair it."""
    from qslab.calibration.records import CorruptRecord, RecordError

    missing = {}
    for k in (k for k in KINDS if k.name in kinds):
        for instrument, key in k.records:
            try:
                store.require_parameter(k.name, instrument, key)
            except CorruptRecord:
                raise
            except RecordError as error:
                missing.setdefault(k.name, error)
    return missing


def check_prerequisites(store, name: str) -> None:
    """CalibrationRefused naming the first record a prerequisite kind has not (validly) written."""
    from qslab.calibration.records import RecordError

    for required in (k for k in KINDS if k.name in kind(name).requires):
        for instrument, key in required.records:
            try:
                store.require_parameter(required.name, instrument, key)
            except RecordError as error:
                raise CalibrationRefused(f"calibration {name!r} cannot run: {error}") from None


def record_kind(name: str, station, store, options: CalibrationOptions, figure_dir: Path, code_version=None) -> list:
    """Run one kind and write its records (all of them, only after the whole kind succeeded). Each record's
    conditions carry the kind's cost (calibration/instrument_cost.py): round trips and instrument seconds.
    ``code_version`` (records.CodeVersion; None: read here, once for the kind's records) is what they name as
    the code that made them: two git calls per reading, so ``ensure`` reads it once for every kind it runs."""
    from qslab.analysis.blas_threads import one_blas_thread
    from qslab.calibration.instrument_cost import COST_KEY, CostMeter
    from qslab.calibration.records import CodeVersion

    identities = {n: ",".join(c.identity.as_dict().values()) for n, c in station.connections.items()}
    meter = CostMeter(station)
    wall_s, cpu_s = time.perf_counter(), time.process_time()
    with meter.measuring(), one_blas_thread():  # thousands of short products: a second BLAS thread only waits
        results, used = run_kind(name, station, store, options, figure_dir)
    cost = {**meter.cost.as_dict(), "of": f"the whole {name!r} calibration ({len(results)} record(s))"}
    code_version = code_version or CodeVersion.current()
    written = [store.write(_with_condition(result, COST_KEY, cost),
                           instruments={n: identities[n] for n in used if n in identities}, code_version=code_version)
               for result in results]
    log_kind_time(name, time.perf_counter() - wall_s, time.process_time() - cpu_s, meter.cost)
    return written


def log_kind_time(name: str, wall_s: float, cpu_s: float, cost) -> None:
    """One log line per kind: where a session's calibration time went (benchmarks/bench_session_fresh.py reads it)."""
    trips = "not counted" if cost.round_trips is None else f"{cost.round_trips} round trips"
    asked = "" if cost.instrument_s is None else f", {cost.instrument_s:.2f} instrument s asked"
    log.info("calibration %s took %.3f s wall, %.3f s CPU (this process, an embedded bench's threads included); "
             "%s%s", name, wall_s, cpu_s, trips, asked)


def ensure(station, store, options: CalibrationOptions, figure_dir: Path, kinds, report=None, before=None,
           progress: bool = False) -> list:
    """Run (in table order) each of ``kinds`` whose record is missing or stale; report(error) says which first.
    ``before(kind)`` is called before each kind runs (a session stops there on a signal). Returns the records
    written. Orphaned ``.writing-*`` files of a write that was killed are removed first. The figures are drawn in a
    second process while the next kind measures (calibration/figures.py); all are on disk when this returns."""
    from qslab.calibration import figures
    from qslab.calibration.records import CodeVersion

    remove_orphans(store)
    missing = missing_records(store, kinds)
    for error in missing.values():
        if report is not None:
            report(error)
    written = []
    if not missing:
        return written
    code_version = CodeVersion.current()  # the code this process imported: the same for every record it writes
    with figures.background():
        for k in kinds_progress([k for k in KIND_NAMES if k in missing], progress):
            if before is not None:
                before(k)
            written.extend(record_kind(k, station, store, options, figure_dir, code_version))
    return written


def kinds_progress(kinds: list[str], progress: bool):
    """The kinds, one by one, behind a progress bar (stderr) that names the kind running: each takes seconds."""
    with tqdm(total=len(kinds), desc="calibrations", unit="kind", disable=not progress or not kinds) as bar:
        for k in kinds:
            bar.set_postfix_str(k)
            yield k
            bar.update(1)


def run_kind(name: str, station, store, options: CalibrationOptions, figure_dir: Path) -> tuple[list, list[str]]:
    """(results, instrument names used) of one kind on a connected station; nothing is written. What the station
    cannot do (a declared limit, a bias loop that does not lock) is one CalibrationError naming the kind."""
    from qslab.calibration.result import CalibrationError
    from qslab.instruments.optical import LimitError
    from qslab.instruments.optical.bias_controller import BiasLockError
    from qslab.sequences.protocol.errors import ProtocolError

    try:
        return _run_kind(name, station, store, options, figure_dir)
    except (LimitError, BiasLockError, ProtocolError) as error:
        raise CalibrationError(name, str(error)) from error


def _run_kind(name: str, station, store, options: CalibrationOptions, figure_dir: Path) -> tuple[list, list[str]]:
    check_prerequisites(store, name)
    config = station.config
    protocol = config.protocol
    if name == "photons":
        from qslab.analysis.estimate import Estimate
        from qslab.calibration.photons import PhotonSettings, calibrate_photons

        role = config.roles.server_power_meter
        if config.instruments[role.instrument].spec.units < options.output_meter_channel:
            raise CalibrationRefused(f"photons needs a meter channel {options.output_meter_channel} on the VOA output; "
                                     f"{role.instrument} has {config.instruments[role.instrument].spec.units}")
        output_meter = station.power_meter_channel(role.instrument, options.output_meter_channel, "voa_output_meter")
        settings = PhotonSettings(protocol.symbol_rate_hz, protocol.wavelength_m,
                                  Estimate(options.fixed_attenuation_db, options.fixed_attenuation_uncertainty_db, "dB"),
                                  target_photons=protocol.mu_photons)
        result = calibrate_photons(station.laser(), station.attenuator(), station.power_meter(), output_meter,
                                   settings, str(figure_dir / "photons-server_output.png"))
        used = [config.roles.server_laser.instrument, config.roles.server_attenuator.instrument, role.instrument]
        return [result], used
    if name == "homodyne":
        from qslab.calibration.homodyne import HomodyneSettings, calibrate_homodyne
        from qslab.instruments.optical.homodyne_receiver import ReceiverDigitizer
        from qslab.sequences.station import RECEIVERS

        receivers = [station.receiver(rx) for rx in RECEIVERS]
        digitizer = ReceiverDigitizer(station.digitizer(config.roles.client_receiver.digitizer), receivers)
        settings = HomodyneSettings(protocol.symbol_rate_hz, protocol.wavelength_m, points=int(options.homodyne_points))
        results = calibrate_homodyne(station.laser(), station.attenuator(), station.amplifier(), digitizer,
                                     receivers, settings, str(figure_dir))
        used = [config.roles.server_laser.instrument, config.roles.server_attenuator.instrument,
                config.roles.client_amplifier.instrument, config.roles.client_receiver.digitizer]
        return results, used
    if name == "amplifier":
        from qslab.calibration.amplifier import AmplifierSettings, calibrate_amplifier
        from qslab.instruments.optical.homodyne_receiver import ReceiverDigitizer

        homodyne = store.require("homodyne", "client_receiver")  # the noise figure needs its efficiency
        receiver = station.receiver("client_receiver")
        digitizer = ReceiverDigitizer(station.digitizer(config.roles.client_receiver.digitizer), [receiver])
        settings = AmplifierSettings(protocol.symbol_rate_hz, protocol.gain,
                                     homodyne.estimate("client_receiver.efficiency"),
                                     wavelength_m=protocol.wavelength_m)
        result = calibrate_amplifier(station.laser(), station.attenuator(), station.amplifier(), digitizer,
                                     receiver, settings, str(figure_dir / "amplifier-client_amplifier.png"))
        result = _with_condition(result, "homodyne_record", homodyne.id)
        used = [config.roles.server_laser.instrument, config.roles.server_attenuator.instrument,
                config.roles.client_amplifier.instrument, config.roles.client_receiver.digitizer]
        return [result], used
    if name == "modulators":
        from qslab.calibration.homodyne import receiver_calibration
        from qslab.calibration.modulators import calibrate_station
        from qslab.calibration.records import RecordError

        try:  # the client receiver's DC level (a homodyne record) centres the RF captures; without one they centre
            record = store.require("homodyne", "client_receiver")  # on their own means
            calibration = receiver_calibration(record)
        except RecordError:
            calibration = None
        return list(calibrate_station(station, figure_dir, receiver_calibration=calibration)), sorted(station.connections)
    if name == "channel":
        return [_channel(station, store, figure_dir)], sorted(station.connections)
    if name == "processor":
        return [_processor(station, store, figure_dir)], sorted(station.connections)
    raise ValueError(f"no calibration kind {name!r}; expected one of {', '.join(KIND_NAMES)}")


def _lit_pilots(station, store, name: str, *, processor: bool):
    """(calibration, link, pilots): the session's own pilot step on the records it needs (homodyne, photons,
    amplifier, modulators, and the processor's unless ``processor`` is False), or one line naming the missing one."""
    from qslab.calibration.modulators import DRIVER_GAINS
    from qslab.calibration.records import RecordError
    from qslab.sequences.protocol import SecureLink
    from qslab.sequences.station_calibration import load_station_calibration

    protocol = station.config.protocol
    try:
        calibration = load_station_calibration(store, DRIVER_GAINS["server_iq"], channel=False, processor=processor)
    except RecordError as error:
        raise CalibrationRefused(f"calibration {name!r} cannot run: {error}") from None
    link = SecureLink(station, calibration, gain=protocol.gain, laser_power_dbm=station.config.session.laser_power_dbm,
                      verify_fraction=protocol.verify_fraction)
    return calibration, link, link.prepare_pilots(protocol.mu_photons, protocol.modes)


def _channel(station, store, figure_dir: Path):
    """T and eps of the honest round trip from public pilot symbols (calibration/channel.py)."""
    from qslab.calibration.channel import channel_result

    protocol = station.config.protocol
    calibration, link, pilot = _lit_pilots(station, store, "channel", processor=True)
    return channel_result(pilot.sent_snu, pilot.returned_snu, calibration.server_detector,
                          conditions={"gain": protocol.gain, "mu_photons": link.layers[0].mu_photons.value,
                                      "pilot_rows": pilot.rows, "client_lo_phase_rad": pilot.client_phase_rad,
                                      "server_lo_phase_rad": pilot.server_phase_rad,
                                      "client_gain_snu": pilot.client_gain_snu,
                                      "records": sorted(calibration.records),
                                      "station_notes": list(link.station_notes)},
                          figure_path=str(figure_dir / "channel-link.png"), iq_skew_s=link.iq_skew_s())


PROCESSOR_IMAGES = 128     # designed client vectors: 128 x 64 pilot rows = 8192 outcomes
PROCESSOR_SEED = 20240806  # the designed vectors (the client's own choice; recorded)


def _processor(station, store, figure_dir: Path):
    """The client processor's V_pi, offset and loss per pass, and the photon cross-check (calibration/processor.py):
    the session's pilots on the server's side, designed vectors on the client's, one acquisition."""
    from qslab.analysis.dsp import temporal_mode_efficiency
    from qslab.analysis.estimate import Estimate
    from qslab.calibration.channel import channel_result
    from qslab.calibration.processor import (BANDWIDTH_TOLERANCE, CrossCheckInputs, design_vectors, fit_processor,
                                             processor_result)

    config, protocol = station.config, station.config.protocol
    calibration, link, pilot = _lit_pilots(station, store, "processor", processor=False)
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
                  "records": sorted(calibration.records), "station_notes": list(link.station_notes)}
    return processor_result(fit, inputs, driver_gains=(datasheet.beam_splitter_driver_gain,
                                                       datasheet.phase_driver_gain),
                            raw=raw, conditions=conditions, figure_path=str(figure_dir / "processor-client_processor.png"))


def _with_condition(result, key: str, value):
    return dataclasses.replace(result, conditions={**result.conditions, key: value})


# --- housekeeping of the record directory --------------------------------------------------------------

ORPHAN_AGE_S = 600.0           # a record is written in well under a second: a .writing-* file this old is orphaned
SUPERSEDED_AGE_S = 3600.0      # a superseded channel record younger than this may still be about to be read


def remove_orphans(store, now_s: float | None = None) -> list[Path]:
    """Delete the ``.writing-*`` temporaries a killed ``RecordStore.write`` left (older than ORPHAN_AGE_S, so a
    write under way in another process is never touched); returns what was removed."""
    import time

    now_s = time.time() if now_s is None else now_s
    removed = []
    for temp in sorted(Path(store.directory).glob(".writing-*")) if Path(store.directory).is_dir() else []:
        try:
            if temp.is_file() and now_s - temp.stat().st_mtime > ORPHAN_AGE_S:
                temp.unlink()
                removed.append(temp)
        except OSError:  # gone meanwhile, or not ours to remove: left alone
            continue
    return removed


def referenced_records(session_dir: Path) -> set[str] | None:
    """Record ids the session files in ``session_dir`` name in /meta/calibrations_json (None when one cannot be
    read: then nothing may be pruned). Only the one text is read, not the whole file."""
    import json

    import h5py

    ids: set[str] = set()
    for path in sorted(Path(session_dir).glob("*.h5")) if Path(session_dir).is_dir() else []:
        try:
            with h5py.File(path, "r", locking=False) as file:
                records = json.loads(bytes(file["meta/calibrations_json"][()]).decode("utf-8")).get("records", {})
            ids.update(str(summary.get("id")) for summary in records.values() if isinstance(summary, dict))
        except Exception:  # noqa: BLE001 - an unreadable or live file: keep every record
            return None
    return ids


def prune_channel_records(store, session_dir: Path, now_s: float | None = None) -> list[str]:
    """Delete channel records (1.5 MB each, one per session) that a newer one supersedes, that are older than
    SUPERSEDED_AGE_S and that no session file in ``session_dir`` references; returns the ids removed."""
    import time

    now_s = time.time() if now_s is None else now_s
    channel = kind("channel")
    records = store.records("channel", channel.records[0][0])
    if len(records) < 2:
        return []
    referenced = referenced_records(session_dir)
    if referenced is None:
        return []
    removed = []
    for record in records[:-1]:  # the newest is never superseded
        if record.id in referenced or now_s - record.created.timestamp() < SUPERSEDED_AGE_S:
            continue
        try:
            record.path.unlink()
            removed.append(record.id)
        except OSError:
            continue
    return removed
