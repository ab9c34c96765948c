"""Session mode: a whole layer on the server's AWG, a batch of images on the client's processor AWG, the
server's verification gate on AWG channel 4, and one digitizer acquisition of both receivers, through
the real drivers over the bench."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from qslab.analysis import dsp
from qslab.analysis.givens import complex_unit_vector, givens_angles, unit_vector_from_angles
from qslab.instruments.optical import (AwgChannels, AwgIQModulator, AwgTimeBinProcessor, Limit, ModulatorCalibration,
                                 ProcessorCalibration)
from qslab.instruments.optical.awg_channels import amplitude_for_volts_vpp, volts_to_codes
from qslab.instruments.optical.bias_controller import MbxBiasController
from qslab.instruments.sim import bench as bench_module
from qslab.instruments.sim.link import receivers
from qslab.instruments.sim.link import waveform as wf
from qslab.instruments.sim.bench_parameters import defaults_table
from qslab.instruments.sim.link.receivers import session_points
from qslab.instruments.sim.server import Bench

ROWS, BINS, IMAGES = 6, 8, 3           # R rows of N bins (bench.client_processor.bins_per_row = N), B images
GATE = {1: +100, 3: -100, 4: +100}     # row -> channel-4 code: + X, - P; the other rows are not verified
SCOPE_SPS = 4
Z = 5.0                                # tolerance in standard errors
LIMIT = Limit(1.0, "Vpp", "test")
TEST_TIME_SCALE = 0.01                 # real s per instrument s, as tests/bench/conftest.py
SEED = 20240806                        # each test draws its layer and images from its own Generator


@pytest.fixture
def bench() -> Iterator[Bench]:
    """The default bench with a short processor row (the conftest's `connect` uses this one), its clock at the
    conftest's TEST_TIME_SCALE (the bias locks wait in instrument seconds)."""
    table = {**defaults_table(), "time_scale": TEST_TIME_SCALE}
    table["client_processor"]["bins_per_row"] = BINS
    with Bench.from_table(table) as served:
        yield served


class Lab:
    """The instruments a session drives, set up by hand: light, amplifier, the layer, the gate, the images."""

    def __init__(self, bench: Bench, connect):
        self.bench, self.params = bench, bench.params
        self.laser, self.attenuator = connect("laser"), connect("attenuator")
        self.awg, self.client_awg, self.amplifier = connect("awg"), connect("client_awg"), connect("amplifier")
        self.scope = connect("digitizer", silence_pyvisapy_warning=True)
        cable = self.params.trigger  # records start at the server AWG's marker, as the station sets it up
        self.scope.set_edge_trigger(cable.digitizer_input, 0.5 * (cable.marker_low_v + cable.marker_high_v))
        self.bias_loops = [(MbxBiasController(connect("bias_carver")), "peak"),  # carver drive off: peak passes CW
                           (MbxBiasController(connect("bias_iq")), "null")]
        truth = self.params.server_iq
        self.iq = AwgIQModulator(AwgChannels(self.awg, (1, 2), amplitude_max=LIMIT, name="iq"),
                                 ModulatorCalibration(truth.vpi_v, truth.driver_gain, truth.iq_gain_imbalance,
                                                      truth.iq_phase_error_rad))
        self.gate = AwgChannels(self.awg, (self.params.server_receiver.awg_channel,), amplitude_max=LIMIT, name="gate")
        c = self.params.client_processor
        self.processor = AwgTimeBinProcessor(
            AwgChannels(self.client_awg, (c.awg_channel_beam_splitter, c.awg_channel_phase), amplitude_max=LIMIT,
                        name="processor"),
            ProcessorCalibration(c.beam_splitter_vpi_v, c.phase_vpi_v, c.beam_splitter_driver_gain,
                                 c.phase_driver_gain, c.beam_splitter_theta_offset_rad))
        self.sps = 64  # AWG samples per symbol at 64 GSa/s and 1 GBd

    def light(self, attenuation_db: float = 5.0, gain: float = 1.3) -> None:
        self.laser.port1.power_dbm(10.0)
        self.laser.port1.output_enabled(True)
        for loop, point in self.bias_loops:  # dither locks need the light: after it is on, each waited for
            loop.lock(point)
            loop.wait_locked(20.0)
        self.attenuator.att1.attenuation_db(attenuation_db)
        self.attenuator.att1.shutter_open(True)
        self.amplifier.gain_db(10 * np.log10(gain))
        self.amplifier.output_enabled(True)

    def layer(self, fields: np.ndarray, segment: int = 1, gate: dict[int, int] | None = None) -> None:
        """Rows x N complex fields (the server's symbols up to scale) and the gate codes, one segment each."""
        self.iq.load(fields.ravel(), self.sps, segment)
        codes = np.zeros(fields.shape, dtype=np.int8)
        for row, code in (GATE if gate is None else gate).items():
            codes[row] = code
        self.gate.load([(segment, [np.repeat(codes.ravel(), self.sps)])], [0.5])

    def images(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """Load one block of N bins per image (a common amplitude per channel); returns the codes played."""
        volts = [np.concatenate(v) for v in zip(*(self.processor.drive_v(row) for row in data))]
        amplitudes = tuple(amplitude_for_volts_vpp(v) for v in volts)
        codes = [volts_to_codes(v, a) for v, a in zip(volts, amplitudes)]
        self.processor.awg.load([(1, [np.repeat(c, self.sps) for c in codes])], list(amplitudes))
        played = tuple(self.processor.awg.channel(n).amplitude_vpp() for n in self.processor.awg.channels)
        return codes[0], codes[1], played  # the amplitudes as set (6 decimals)

    def digitize(self, points: int, range_v: float = 0.4):
        self.scope.acquire_points(points)
        self.scope.sample_rate(SCOPE_SPS * self.params.server.symbol_rate_hz)
        self.scope.ch1.range(range_v)
        self.scope.ch2.range(range_v)
        self.scope.auto_digitize(False)
        self.scope.digitize()
        return self.bench.state.last_capture


@pytest.fixture
def lab(bench, connect) -> Lab:
    return Lab(bench, connect)


def _layer_fields(rng: np.random.Generator) -> np.ndarray:
    return 0.7 * (rng.uniform(-1, 1, (ROWS, BINS)) + 1j * rng.uniform(-1, 1, (ROWS, BINS))) / np.sqrt(2)


def _run(lab: Lab, images: int = IMAGES, seed: int = SEED):
    rng = np.random.default_rng(seed)
    lab.light()
    lab.layer(_layer_fields(rng))
    data = rng.uniform(0, 1, (images, 2 * BINS))  # non-negative, like pixels and ReLU outputs
    played = lab.images(data)
    lab.awg.run()
    lab.client_awg.run()
    return data, played


def _predicted_mf(quadratures: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """sum_j taps[j] X_{k - j + 1}: the matched filter's noise-free view of known slot quadratures (zero before)."""
    padded = np.concatenate([quadratures, [0.0]])
    out = np.zeros(quadratures.size)
    for j, tap in enumerate(taps[:quadratures.size + 1]):
        shift = j - 1
        if shift < 0:
            out += tap * padded[1:]
        else:
            out[shift:] += tap * quadratures[:quadratures.size - shift]
    return out


def _dsp_residual(trace: np.ndarray, channel, truth: np.ndarray, dc_v: float) -> tuple[np.ndarray, float]:
    """qslab.analysis.dsp on a channel's trace (less the receiver's true DC level) minus what the known slot
    quadratures predict, and its std bound."""
    response = wf.matched_filter_response(channel.config)
    y = dsp.quadratures_snu(trace - dc_v, response.template, SCOPE_SPS, response.offset_samples,
                            response.shot_noise_variance_v2, n_symbols=truth.size)
    # other temporal modes, electronic noise, the unknown vacuum slot after the last one, half an ADC step
    variance = 1.0 + response.electronic_noise_snu - np.sum(response.taps[1:] ** 2)
    lsb_snu = channel.config.volts_per_code / np.sqrt(response.shot_noise_variance_v2)
    return y - _predicted_mf(truth, response.taps), float(np.sqrt(variance + SCOPE_SPS * lsb_snu**2 / 12))


def _played_angles(lab: Lab, played, images: int) -> tuple[np.ndarray, np.ndarray]:
    """The processor's angles per (image, bin) from the codes played, through its true transfer (written out)."""
    (bs_codes, ph_codes, (bs_vpp, ph_vpp)), c = played, lab.params.client_processor
    theta = np.pi * c.beam_splitter_driver_gain * bs_vpp / 2 * bs_codes / 127 / (2 * c.beam_splitter_vpi_v)
    phi = np.pi * c.phase_driver_gain * ph_vpp / 2 * ph_codes / 127 / c.phase_vpi_v
    return theta.reshape(images, BINS), phi.reshape(images, BINS)


def test_one_acquisition_is_the_layer_for_every_image(lab):
    data, played = _run(lab)
    (_, _, (bs_vpp, ph_vpp)), c = played, lab.params.client_processor
    server_rows = sum(1 for code in GATE.values() if abs(code) > 32)
    points = session_points(IMAGES * ROWS, IMAGES * server_rows * BINS, SCOPE_SPS)
    record = lab.digitize(points)
    session = record.session
    assert session is not None and record.error is None
    assert (session.images, session.rows, session.bins_per_row) == (IMAGES, ROWS, BINS)
    assert session.points_required == points and record.channels[1].words.size == points

    # (a) the processor's vector: exactly what its true transfer makes of the codes played ...
    theta, phi = _played_angles(lab, played, IMAGES)
    np.testing.assert_allclose(session.x_hat, unit_vector_from_angles(theta, phi), rtol=0, atol=1e-12)
    # ... and the data's unit vector within the AWG's 8-bit steps: half a code step in each angle, first order
    # ||dx|| <= sum_k |d theta_k| + sum_k |x_k| |d phi_k| <= N d_theta + sqrt(N) d_phi (PHYSICS.md, qslab.analysis.givens)
    d_theta = 0.5 * np.pi * c.beam_splitter_driver_gain * (bs_vpp / 254) / (2 * c.beam_splitter_vpi_v)
    d_phi = 0.5 * np.pi * c.phase_driver_gain * (ph_vpp / 254) / c.phase_vpi_v
    wanted = np.stack([complex_unit_vector(row) for row in data])
    ideal_theta, ideal_phi = givens_angles(wanted)
    assert np.max(np.abs(theta - ideal_theta)) <= d_theta * (1 + 1e-9)
    assert np.max(np.abs(np.angle(np.exp(1j * (phi - ideal_phi))))) <= d_phi * (1 + 1e-9)
    errors = np.linalg.norm(session.x_hat - wanted, axis=1)
    assert np.all(errors <= BINS * d_theta + np.sqrt(BINS) * d_phi)
    assert np.all(np.linalg.norm(session.x_hat - wanted[::-1], axis=1)[[0, 2]] > 10 * errors[[0, 2]])  # images differ

    # (c) the gate: rows and quadratures as encoded on channel 4, the same for every image
    np.testing.assert_array_equal(session.verified_rows, sorted(GATE))
    np.testing.assert_array_equal(session.measure_p, [GATE[r] < 0 for r in sorted(GATE)])
    np.testing.assert_array_equal(session.verification.row_indices, session.verified_rows)
    assert np.all(session.verification.measure_p == session.measure_p)
    np.testing.assert_array_equal(session.sent_symbols, lab.bench.state.symbols().reshape(ROWS, BINS))

    # (b) the receivers' channels carry the outcomes in (image, row) and (image, verified row, mode) order
    client_v, server_v = lab.scope.ch1.trace(), lab.scope.ch2.trace()
    assert record.channels[1].clipped_samples == 0 and record.channels[2].clipped_samples == 0
    dc_v = {name: receivers.dc_level_v(lab.params.get(name), lab.bench.state.lo_power_w(name))
            for name in receivers.RECEIVERS}  # the DC-coupled outputs' level (checked in test_receiver_dc.py)
    for trace, channel, truth, dc in ((client_v, record.channels[1], session.client_quadratures_snu,
                                       dc_v["client_receiver"]),
                                      (server_v, record.channels[2], session.returned_quadratures_snu,
                                       dc_v["server_receiver"])):
        residual, std = _dsp_residual(trace, channel, truth.ravel().astype(np.float64), dc)
        assert np.std(truth) > 10 * std  # the signal stands far out of what the matched filter adds
        assert np.max(np.abs(residual)) < Z * std
        assert np.max(np.abs(_dsp_residual(trace, channel, truth[::-1].ravel().astype(np.float64), dc)[0])) > Z * std
    # after the outcomes the channels carry the receivers' vacuum (no signal)
    tail = dsp.quadratures_snu(client_v - dc_v["client_receiver"], wf.matched_filter_response(record.channels[1].config).template, SCOPE_SPS,
                               0, 1.0)[IMAGES * ROWS + 2:]
    assert tail.size > 20 and np.std(tail) < 0.2 * np.std(session.client_quadratures_snu)


@pytest.mark.parametrize("untriggered", ["sweep AUTO", "source CHAN3", "level above the marker", "slope NEG",
                                         "AWG stopped"])
def test_without_the_trigger_on_the_awg_marker_the_outcomes_are_not_found(lab, untriggered):
    """Issue 15 item 1: a record starts at the marker of the server AWG only with the trigger set up for it;
    otherwise at a random point of the stream, and the client's outcomes are nowhere the DSP looks."""
    _run(lab)
    points = session_points(IMAGES * ROWS, IMAGES * 3 * BINS, SCOPE_SPS)
    dc_v = receivers.dc_level_v(lab.params.client_receiver, lab.bench.state.lo_power_w("client_receiver"))

    def worst_residual() -> float:
        record = lab.digitize(points)
        truth = record.session.client_quadratures_snu.ravel().astype(np.float64)
        residual, std = _dsp_residual(lab.scope.ch1.trace(), record.channels[1], truth, dc_v)
        return float(np.max(np.abs(residual)) / std)

    assert worst_residual() < Z    # triggered: every outcome where it belongs
    emulator = lab.bench.instruments["digitizer"].emulator
    assert emulator.triggered_by_marker()
    spoil = {"sweep AUTO": ":TRIG:SWE AUTO", "source CHAN3": ":TRIG:EDGE:SOUR CHAN3",
             "level above the marker": f":TRIG:LEV AUX,{lab.params.trigger.marker_high_v + 0.1}",
             "slope NEG": ":TRIG:EDGE:SLOP NEG"}
    if untriggered == "AWG stopped":
        lab.awg.stop()   # no marker edge
    else:
        assert lab.scope.ask(f"{spoil[untriggered]};*OPC?") == "1"  # (the answer: the emulator has taken it)
    assert not emulator.triggered_by_marker()
    if untriggered == "AWG stopped":
        return  # a stopped server AWG plays no layer: there is no session record to misplace
    assert worst_residual() > 10 * Z   # the record started elsewhere in the stream


def test_statistics_of_many_acquisitions_match_the_closed_forms(lab):
    """Monte-Carlo (fixed seed): client means and variance, round trip and excess noise of the returned modes.

    The references come from the instruments' settings, not from the record: x_hat from the codes the
    client's AWG plays, alpha from the server's output, the quadratures from the gate's codes."""
    images = 24
    _, played = _run(lab, images)
    x_hat = unit_vector_from_angles(*_played_angles(lab, played, images))
    symbols = np.array(lab.bench.state.symbols()).reshape(ROWS, BINS)
    link = lab.bench.state.link_parameters(mu_photons=float(np.mean(np.abs(symbols) ** 2)))
    emulator = lab.bench.instruments["digitizer"].emulator
    emulator.points, emulator.sample_rate_hz = 64, SCOPE_SPS * lab.params.server.symbol_rate_hz  # truths only
    client, returned = [], []
    for _ in range(60):
        session = emulator.digitize().session
        client.append(session.client_quadratures_snu)
        returned.append(session.returned_quadratures_snu)
    client, returned = np.array(client, dtype=np.float64), np.array(returned, dtype=np.float64)
    shots = client.shape[0]

    # client: mean per (image, row) = m Re(beta), beta = x_hat^dagger alpha; variance = the closed form
    re_beta = (np.conj(x_hat) @ symbols.T).real  # [B, R]
    slope = np.sum(client.mean(0) * re_beta) / np.sum(re_beta**2)
    variance = link.client_variance_snu
    assert slope == pytest.approx(link.client_mean_per_re_beta, abs=Z * np.sqrt(variance / shots / np.sum(re_beta**2)))
    residual = client - link.client_mean_per_re_beta * re_beta
    assert np.var(residual) == pytest.approx(variance, rel=Z * np.sqrt(2 / residual.size))
    assert abs(np.mean(residual)) < Z * np.sqrt(variance / residual.size)

    # returned: y = sqrt(eta_s T) q + noise, q the sent quadrature the gate chose; sum over modes of the excess
    # variance = eta_s eps_total (sum_i |x_i|^2 = 1), i.e. N (mean(residual^2) - 1)
    verified = np.array(sorted(GATE))
    sent = 2.0 * np.where(np.array([GATE[r] < 0 for r in verified])[:, None], symbols[verified].imag,
                          symbols[verified].real)  # [v, N]
    q = np.broadcast_to(sent, returned.shape)
    gain = np.sum(returned * q) / np.sum(q**2)
    amplitude = np.sqrt(link.server_efficiency * link.round_trip_transmittance)
    residual = returned - amplitude * q
    spread = np.sqrt(np.mean(residual**2))
    assert gain == pytest.approx(amplitude, abs=Z * spread / np.sqrt(np.sum(q**2)))
    excess = BINS * (np.mean(residual**2) - 1.0)
    expected = link.server_efficiency * link.returned_excess_noise_total_snu
    assert expected > 0.3
    assert excess == pytest.approx(expected, abs=Z * BINS * np.sqrt(2 / residual.size) * spread**2)
    # the excess lies where the data are: per mode it follows |x_i|^2 (per image)
    per_mode = np.mean(residual**2, axis=(0, 2)) - 1.0  # [B, N]
    weights = np.abs(x_hat) ** 2
    fit = np.sum(per_mode * weights) / np.sum(weights**2)
    assert fit == pytest.approx(expected, rel=0.25)


def test_settings_the_session_cannot_use_are_reported_by_the_digitizer(lab):
    _run(lab)
    lab.client_awg.stop()
    lab.processor.awg.load([(1, [np.zeros(20 * lab.sps, dtype=np.int8)] * 2)], [0.5, 0.5])  # 20 bins: not 8-bin rows
    lab.client_awg.run()
    record = lab.digitize(256)
    assert record.session is None and "20 time bins" in record.error
    assert not np.any(record.channels[1].words)
    error = lab.scope.ask(":SYST:ERR? STR")
    assert error.startswith('-221,"Settings conflict;the client\'s processor segment holds 20 time bins')
    lab.client_awg.stop()
    lab.images(np.random.default_rng(SEED).uniform(0, 1, (4, 2 * BINS)))
    lab.client_awg.run()
    lab.scope.write(":ACQ:AVER:COUN 4;:ACQ:AVER 1")
    record = lab.digitize(256)
    assert record.session is None and "averaging" in lab.scope.ask(":SYST:ERR? STR")
    lab.scope.write(":ACQ:AVER 0")
    assert lab.digitize(256).session.images == 4
    assert lab.scope.ask(":SYST:ERR? STR").startswith("0")


def test_without_the_client_awg_or_with_a_partial_row_it_is_a_single_symbol_acquisition(lab):
    _run(lab)
    lab.client_awg.stop()
    record = lab.digitize(64 * SCOPE_SPS)
    assert record.session is None and record.client_quadratures_snu.shape == (1, 64)
    # the gate still picks the server's quadrature (per symbol), and blanks the symbols it does not capture
    period = ROWS * BINS
    index = np.arange(64) % period
    gated = np.zeros(period, dtype=int)
    gated[[r * BINS for r in GATE]] = list(GATE.values())  # only the rows' first symbols carry the code here
    lab.awg.stop()
    codes = np.zeros((ROWS, BINS), dtype=np.int8)
    codes.ravel()[[r * BINS for r in GATE]] = list(GATE.values())
    lab.gate.load([(1, [np.repeat(codes.ravel(), lab.sps)])], [0.5])
    lab.awg.run()
    record = lab.digitize(64 * SCOPE_SPS)
    np.testing.assert_array_equal(record.server_measure_p[0], gated[index] < 0)
    blank = gated[index] == 0
    sent = record.sent_symbols
    chosen = np.where(record.server_measure_p[0], sent.imag, sent.real)
    link = record.link
    y = record.server_quadratures_snu[0]
    amplitude = 2 * np.sqrt(link.server_efficiency * link.round_trip_transmittance)
    assert np.std(y[blank]) < 1.5 and np.max(np.abs(y[~blank] - amplitude * chosen[~blank])) < 6
    assert np.std(amplitude * chosen[blank]) > 5  # so the blanked slots would stand out if they were not vacuum


def test_switching_layers_reuses_each_layers_modulation(lab, monkeypatch):
    calls = []
    original = bench_module._modulate
    monkeypatch.setattr(bench_module, "_modulate", lambda *args: calls.append(1) or original(*args))
    lab.light()
    calls.clear()  # the bias locks evaluated the static light the loops see
    rng = np.random.default_rng(SEED)
    lab.layer(_layer_fields(rng), segment=1)
    lab.layer(_layer_fields(rng), segment=2)
    lab.awg.run()
    state = lab.bench.state
    modulations = []
    for segment in (1, 2, 1, 2):
        for number in (1, 2, 4):
            getattr(lab.awg, f"ch{number}").select_segment(segment)
        modulations.append(state.modulation())
    assert len(calls) == 2 and modulations[0] is modulations[2] and modulations[1] is modulations[3]
    assert not np.allclose(modulations[0].symbol_fields, modulations[1].symbol_fields)
    lab.awg.stop()
    lab.layer(_layer_fields(rng), segment=2, gate={0: -100})  # new data on segment 2 (and its gate)
    lab.awg.run()
    assert state.modulation() is not modulations[1] and len(calls) == 3
    lab.awg.stop()
    lab.gate.load([(2, [np.full(ROWS * BINS * lab.sps, 100, dtype=np.int8)])], [0.5])  # only the gate changes
    lab.awg.run()
    state.modulation()
    assert len(calls) == 3


def test_an_overranged_digitizer_input_clips_the_session_record(lab):
    """The fault bench's overrange condition reaches the session renderer too (faults.adc_input_v)."""
    _run(lab)
    assert lab.digitize(512).channels[2].clipped_samples == 0
    lab.bench.inject("overrange@digitizer:after=0,ch=2")
    record = lab.digitize(512)
    assert record.session is not None and record.channels[1].clipped_samples == 0
    assert record.channels[2].clipped_samples == 512 and np.all(record.channels[2].words == 511 * 64)


def test_rendering_into_a_given_buffer_is_the_same_record():
    """digitized_words(out=...) (the Infiniium renders into its reply buffer) gives the very words of the default
    path, for a record that ends inside a symbol slot."""
    config = wf.WaveformConfig(samples_per_symbol=8, symbol_rate_hz=1e9, detector_bandwidth_hz=1.6e9,
                               electronic_noise_snu=0.05, shot_noise_rms_v=0.003, adc_bits=10, adc_full_scale_v=0.1)
    quadratures = np.random.default_rng(1).standard_normal(70_000).astype(np.float32)
    points = 8 * 80_001 + 3
    expected, clipped = wf.digitized_words(quadratures, points, config, np.random.Generator(np.random.SFC64(5)),
                                           code_scale=64, offset_v=0.002)
    out = np.full(points, 99, dtype=np.int16)
    words, clipped_out = wf.digitized_words(quadratures, points, config, np.random.Generator(np.random.SFC64(5)),
                                            code_scale=64, offset_v=0.002, out=out)
    assert words is out and clipped_out == clipped
    np.testing.assert_array_equal(out, expected)


def test_a_session_record_goes_out_as_rendered_and_reads_back_exactly(lab):
    """The Infiniium renders a session record's words into its :WAV:DATA? reply (streamed #0 block, WORD, LSB
    first): the trace the driver reads is those words in volts, and a non-streamed (definite) block carries the
    same words."""
    _run(lab)
    server_rows = sum(1 for code in GATE.values() if abs(code) > 32)
    record = lab.digitize(session_points(IMAGES * ROWS, IMAGES * server_rows * BINS, SCOPE_SPS))
    for number in (1, 2):
        channel = record.channels[number]
        volts = lab.scope.read_trace_v(getattr(lab.scope, f"ch{number}"))
        np.testing.assert_array_equal(np.rint((volts - channel.y_origin_v) / channel.y_increment_v), channel.words)
    lab.scope.write(":WAV:STR OFF;:WAV:SOUR CHAN2")
    lab.scope.write(":WAV:DATA?")
    header = lab.scope.visa_handle.read_bytes(2)
    length = int(lab.scope.visa_handle.read_bytes(int(header[1:2])))
    block = lab.scope.visa_handle.read_bytes(length + 1)
    assert block[-1:] == b"\n" and block[:-1] == record.channels[2].words.astype("<i2").tobytes()
