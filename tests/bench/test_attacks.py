"""A cheating client on the bench (instruments/sim/faults_attacks/attacks.py): the physics of each attack, whether the
server's verification catches it, and whether the weight-leakage bound covers what the cheater holds.

Most tests run the link model at the bench's own parameters (BenchState.link_parameters: fibres,
processor loss, a 4 dB noise-figure amplifier at G = 1.3, the receivers' efficiencies and
electronic noise) on the shipped network's layer-1 symbols (784 rows of N = 392 modes at mu = 6) and
MNIST images, with the server knowing its detector and the declared link exactly (declared_channel).
Two tests run a whole session through the instruments with the attack armed after the channel record:
measure=0.05 and tap=0.05 abort it (the session's honest null is the pilots' amplitude sqrt(eta_s T),
measured on the same detector).

Sample sizes, from verification.samples_for_power (false alarm 1e-3, power 0.99, N = 392):
a 5 % tap needs 7.1e3 verified samples (18 rows of one image), a 5 % measure-and-resend 2.5e3 (7
rows), intercept-resend 76; the tests verify 40 rows of 4 images (6.3e4 samples; a session of 20
images at verify_fraction 0.05 gathers 3e5). A gain attack only raises the excess noise by
t T_r (k(G) - k(1.3)) / N per mode: at N = 392 it needs 3.6e7 samples even at G = 100, so it is
tested on a 16-mode layer (1e5 samples at G = 10).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from patient import patient_config_file

from qslab.analysis import mnist
from qslab.analysis.encoding import pack_weights, unit_vectors
from qslab.analysis.gaussian import entropy_photons_bits
from qslab.analysis.network import load_weights
from qslab.analysis.verification import ServerDetector, samples_for_power, verify
from qslab.instruments.sim.bench import BenchState
from qslab.instruments.sim.faults_attacks import attacks as at
from qslab.instruments.sim.link.model import LinkParameters, secure_products

MU = 6.0
FALSE_ALARM = 1e-3
VERIFIED_ROWS, IMAGES = 40, 4
Z = 5.0  # moment checks: tolerance in standard errors


def bench_link(gain: float = 1.3, mu: float = MU, attack=None) -> LinkParameters:
    """The bench's link at a set gain, with the receivers' electronic noise (the renderer adds it on the bench)."""
    state = BenchState()
    state.amplifier.enabled = True
    state.amplifier.gain_db = 10.0 * np.log10(gain)
    if attack is not None:
        state.set_attack(attack)
    p = state.params
    return replace(state.link_parameters(mu_photons=mu),
                   client_electronic_noise_snu=p.client_receiver.electronic_noise_snu,
                   server_electronic_noise_snu=p.server_receiver.electronic_noise_snu)


BENCH = bench_link()


@pytest.fixture(scope="module")
def layer():
    """Layer-1 symbols of the shipped network at mu, and four MNIST test images as unit vectors."""
    weights, _ = load_weights()
    symbols, _ = pack_weights(weights[0], MU)
    images, _ = mnist.load_mnist("test")
    return symbols, unit_vectors(mnist.preprocess(images[:IMAGES].reshape(IMAGES, -1)))


def detector(link: LinkParameters) -> ServerDetector:
    return ServerDetector(link.server_efficiency, link.server_electronic_noise_snu)


def run_and_verify(symbols, x_hat, link, seed, attack=None, declared=BENCH, rows=VERIFIED_ROWS, alternative=None):
    """The server verifies `rows` random rows of every image against the declared honest link."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(symbols.shape[0], rows, replace=False))
    _, record = secure_products(symbols, x_hat, link, rng, rows=chosen, attack=attack)
    result = verify(record.sent_quadratures_snu.ravel(), record.returned_quadratures_snu.ravel(), link.mu_photons,
                    at.declared_channel(declared, symbols.shape[1]), detector(declared), false_alarm=FALSE_ALARM,
                    alternative=alternative)
    return result, record


def _close(measured, expected, standard_error, what):
    measured, expected = np.asarray(measured), np.asarray(expected)
    assert np.all(np.abs(measured - expected) <= Z * np.asarray(standard_error)), (
        f"{what}: measured {measured}, expected {expected}")


# --- specs and arming ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, attack", [
    ("tap=0.05", at.Tap(0.05)), (" Measure = 0.1 ", at.MeasureResend(0.1)), ("gain=3", at.Gain(3.0)),
    ("intercept", at.InterceptResend()), ("intercept=homodyne", at.InterceptResend("homodyne")),
])
def test_specs_parse_and_print_back(spec, attack):
    assert at.parse_attack(spec) == attack
    assert at.parse_attack(attack.spec) == attack


@pytest.mark.parametrize("spec", ["tap", "tap=", "tap=1.5", "measure=-0.1", "gain=0.5", "gain=nan", "tap=abc",
                                  "intercept=photon", "listen=0.1", ""])
def test_bad_specs_get_one_clear_error(spec):
    with pytest.raises(ValueError) as caught:
        at.parse_attack(spec)
    message = str(caught.value)
    assert message.startswith(f"attack spec {spec.strip()!r}:") and "tap=F" in message and "\n" not in message


def test_arming_on_the_bench_sets_the_true_gain_and_disarming_restores_it():
    state = BenchState()
    state.amplifier.enabled = True
    honest = state.amplifier_gain()
    state.set_attack("gain=4")
    assert state.amplifier_gain() == 4.0 and state.link_parameters(1.0).gain == 4.0
    assert state.truth("client_amplifier.gain") == 4.0
    state.set_attack(None)
    assert state.amplifier_gain() == honest
    state.set_attack(at.Tap(0.1))
    assert state.attack == at.Tap(0.1) and state.amplifier_gain() == honest


def test_no_attack_and_a_gain_attack_leave_the_random_stream_untouched(layer):
    """The physics draws exactly the honest stream unless an attack acts on the returned light."""
    symbols, x_hat = layer
    honest = secure_products(symbols, x_hat, BENCH, np.random.default_rng(3), 0.05)
    for attack in (None, at.Gain(3.0)):
        other = secure_products(symbols, x_hat, BENCH, np.random.default_rng(3), 0.05, attack=attack)
        assert np.array_equal(honest[0], other[0])
        assert np.array_equal(honest[1].returned_quadratures_snu, other[1].returned_quadratures_snu)
        assert other[1].attacker is None


# --- the physics of each attack -------------------------------------------------------------------------

def _one_row(link, attack, shots=120_000, n_modes=6, seed=11):
    """One row of n_modes, unequal |x_i|, `shots` repetitions: client outcomes, server samples, the record."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n_modes) + 1j * rng.standard_normal(n_modes)) * np.linspace(0.3, 1.5, n_modes)
    x /= np.linalg.norm(x)
    alpha = 1.2 * (rng.standard_normal((1, n_modes)) + 1j * rng.standard_normal((1, n_modes)))
    x_meas, record = secure_products(alpha, np.broadcast_to(x, (shots, n_modes)), link, rng, 1.0, attack=attack)
    return x, alpha[0], x_meas[:, 0], record


def _honest_moments(link, x, alpha, measure_p):
    """Server sample means and variances of an honest client (docs/PHYSICS.md 5), written out here."""
    t = link.processor_transmittance_per_pass
    k = 2.0 * link.inversion_factor * (1.0 - 1.0 / link.gain)
    q = 2.0 * (alpha.imag if measure_p else alpha.real)
    mean = np.sqrt(link.server_efficiency * link.round_trip_transmittance) * q
    excess = link.server_efficiency * link.return_transmittance * t * k * np.abs(x) ** 2
    variance = 1.0 + link.server_electronic_noise_snu + excess
    return mean, variance


@pytest.mark.parametrize("fraction", [0.0, 0.3])
def test_tap_attenuates_signal_and_noise_and_the_kept_light_follows_the_model(fraction):
    x, alpha, x_meas, record = _one_row(BENCH, at.Tap(fraction))
    y, p = record.returned_quadratures_snu[:, 0], record.measure_p[:, 0]
    kept = record.attacker.kept_modes[:, 0]
    assert record.attacker.kind == "tap" and kept.shape == y.shape
    honest = _honest_moments(BENCH, x, alpha, False)
    keep, var0 = 1.0 - fraction, 1.0 + BENCH.server_electronic_noise_snu
    sel = ~p
    _close(y[sel].mean(0), np.sqrt(keep) * honest[0], np.sqrt(honest[1] / sel.sum()), "tapped server means")
    expected_var = var0 + keep * (honest[1] - var0)
    _close(y[sel].var(0), expected_var, expected_var * np.sqrt(2.0 / sel.sum()), "tapped server variances")
    # the kept light: mean sqrt(F t^2 T_f) alpha, variance 1 + F t k |x_i|^2, as the covariance-matrix model says
    model = at.RoundTripModel(BENCH, x, fraction)
    kept_idx = np.ravel([[2 * m, 2 * m + 1] for m in model.kept])
    kept_var = np.diag(model.cov)[kept_idx][0::2]
    t_tap = fraction * BENCH.forward_transmittance * BENCH.processor_transmittance_per_pass**2
    _close(2 * kept.real.mean(0), 2 * np.sqrt(t_tap) * alpha.real, np.sqrt(kept_var / y.shape[0]), "kept means")
    conditional = kept_var - t_tap * (model.variance - 1.0)  # the model's variance includes the modulation
    _close((2 * kept.real).var(0), conditional, conditional * np.sqrt(2.0 / y.shape[0]), "kept variances")
    _close((2 * kept.imag).var(0), conditional, conditional * np.sqrt(2.0 / y.shape[0]), "kept P variances")


def test_the_covariance_model_agrees_with_the_declared_link_and_the_pure_loss_identity():
    x = np.exp(1j * np.arange(5)) * np.linspace(0.2, 1.0, 5)
    x /= np.linalg.norm(x)
    transmittance, eps = at.RoundTripModel(BENCH, x, 0.1).server_channel()
    assert np.allclose(transmittance, 0.9 * BENCH.round_trip_transmittance, rtol=1e-12)
    assert np.allclose(eps, 0.9 * BENCH.returned_excess_noise_total_snu * np.abs(x) ** 2, rtol=1e-9, atol=1e-12)
    lossless = LinkParameters(mu_photons=3.0, gain=1.0)  # no amplifier: the tap holds a pure-loss environment
    for fraction in (0.05, 0.4):
        bits = at.attacker_holevo_bits(lossless, x, fraction) / x.size
        assert bits == pytest.approx(entropy_photons_bits(fraction * 3.0), rel=1e-9)  # g((1 - T) mu)


def test_measure_and_resend_adds_a_vacuum_unit_or_erases_the_signal():
    x, alpha, _, record = _one_row(BENCH, at.MeasureResend(0.5), shots=160_000)
    measured, client_p = record.attacker.measured[:, 0], record.attacker.measure_p[:, 0]
    y, server_p = record.returned_quadratures_snu[:, 0], record.measure_p[:, 0][:, None]
    assert abs(measured.mean() - 0.5) < 0.01 and not np.any(client_p & ~measured)
    mean, var = _honest_moments(BENCH, x, alpha, False)
    a2 = BENCH.server_efficiency * BENCH.return_transmittance
    for name, sel in (("untouched", ~measured), ("same quadrature", measured & (client_p == server_p))):
        rows = sel & ~server_p  # server read X
        for i in range(x.size):
            samples = y[rows[:, i], i]
            extra = 0.0 if name == "untouched" else a2 * at.HOMODYNE_RESEND_NOISE_SNU
            _close(samples.mean(), mean[i], np.sqrt(var[i] / samples.size), f"{name} mean {i}")
            _close(samples.var(), var[i] + extra, (var[i] + extra) * np.sqrt(2.0 / samples.size), f"{name} var {i}")
    other = measured & (client_p != server_p) & ~server_p
    for i in range(x.size):  # the server reads the quadrature the client did not keep: vacuum, mean 0
        samples = y[other[:, i], i]
        _close(samples.mean(), 0.0, np.sqrt(1.05 / samples.size), f"erased mean {i}")


def test_intercept_resend_adds_two_vacuum_units_and_keeps_the_means():
    x, alpha, _, record = _one_row(BENCH, at.InterceptResend())
    y, p = record.returned_quadratures_snu[:, 0], record.measure_p[:, 0]
    mean, var = _honest_moments(BENCH, x, alpha, False)
    expected = var + 2.0 * BENCH.server_efficiency * BENCH.return_transmittance
    _close(y[~p].mean(0), mean, np.sqrt(expected / (~p).sum()), "intercepted means")
    _close(y[~p].var(0), expected, expected * np.sqrt(2.0 / (~p).sum()), "intercepted variances")
    estimates = record.attacker.outcomes[:, 0]
    _close(estimates.real.mean(0), np.sqrt(BENCH.forward_transmittance) * BENCH.processor_transmittance_per_pass
           * alpha.real, np.full(x.size, np.sqrt(1.0 / y.shape[0])), "heterodyne estimates")


# --- the server's verification --------------------------------------------------------------------------

@pytest.mark.parametrize("attack", [at.Tap(0.05), at.MeasureResend(0.05), at.InterceptResend(),
                                    at.InterceptResend("homodyne")], ids=lambda a: a.spec)
def test_verification_flags_a_cheating_client_with_a_modest_sample(layer, attack):
    symbols, x_hat = layer
    n_modes = symbols.shape[1]
    alternative = attack.expected_channel(BENCH, n_modes)
    needed = samples_for_power(at.declared_channel(BENCH, n_modes), alternative, MU, detector(BENCH), FALSE_ALARM, 0.99)
    assert needed <= 8_000  # ~20 verified rows of one image; the run below verifies 8x that
    result, record = run_and_verify(symbols, x_hat, BENCH, seed=21, attack=attack, alternative=alternative)
    assert result.n_samples == IMAGES * VERIFIED_ROWS * n_modes >= 8 * needed
    assert result.false_alarm_probability <= FALSE_ALARM * (1 + 1e-9)
    assert result.detection_power > 0.999
    assert not result.accepted
    assert record.attacker.kind == attack.kind


def test_verification_flags_an_honest_client_at_most_at_its_false_alarm_rate(layer):
    """Each test flags an honest client with probability FALSE_ALARM (1e-3): in 20 seeds one false alarm is
    expected 2 % of the time, two or more 1.9e-4 of the time (binomial tail), so at most one is allowed."""
    symbols, x_hat = layer
    results = [run_and_verify(symbols, x_hat, BENCH, seed)[0] for seed in range(20)]
    flagged = [(r.transmittance_hat, r.residual_variance_snu, r.variance_threshold_snu)
               for r in results if not r.accepted]
    assert len(flagged) <= 1, flagged
    t_hat = np.array([r.transmittance_hat for r in results])
    assert abs(t_hat.mean() - BENCH.round_trip_transmittance) < 4 * t_hat.std(ddof=1) / np.sqrt(t_hat.size)


def test_verification_flags_a_gain_attack_where_its_noise_is_resolvable():
    """Gain 10 instead of 1.3 adds t T_r (k(10) - k(1.3)) = 0.56 SNU spread over the N modes of a row."""
    n_modes, rows, images = 16, 800, 16
    declared, cheat = bench_link(1.3), at.Gain(10.0)
    assert bench_link(1.3, attack=cheat) == cheat.link_parameters(declared)  # the bench arms what the model runs
    planned = {n: samples_for_power(at.declared_channel(declared, n), cheat.expected_channel(declared, n), MU,
                                    detector(declared), FALSE_ALARM, 0.99) for n in (n_modes, 392)}
    assert planned[n_modes] < 1.2e5 and planned[392] > 3e7  # m grows as N^2: the reason for a 16-mode layer
    rng = np.random.default_rng(5)
    symbols, _ = pack_weights(rng.standard_normal((rows, 2 * n_modes)), MU)
    x_hat = unit_vectors(np.abs(rng.standard_normal((images, 2 * n_modes))))
    result, _ = run_and_verify(symbols, x_hat, cheat.link_parameters(declared), seed=6, declared=declared, rows=rows)
    assert result.n_samples >= planned[n_modes]
    assert not result.accepted
    honest, _ = run_and_verify(symbols, x_hat, declared, seed=6, declared=declared, rows=rows)
    assert honest.accepted


# --- the bound against what the attacker actually holds -------------------------------------------------

IDEAL = LinkParameters(mu_photons=MU, gain=1.3)


@settings(max_examples=40, deadline=None)
@given(fraction=st.floats(0.0, 0.3), mu=st.floats(0.5, 8.0), gain=st.sampled_from([1.0, 1.3, 2.0]),
       cheat_gain=st.sampled_from([None, 4.0]), lossy=st.booleans(), seed=st.integers(0, 2**16))
def test_the_reported_bound_covers_what_the_attacker_holds(fraction, mu, gain, cheat_gain, lossy, seed):
    """chi_E at the verified limits (T_min, eps_max) >= the Holevo information of the tapped light plus the
    client's own measured port (kept quantum), from the brute-force covariance matrix, per mode."""
    declared = replace(bench_link(gain, mu) if lossy else IDEAL, mu_photons=mu, gain=gain)
    actual = declared if cheat_gain is None else at.Gain(cheat_gain).link_parameters(declared)
    n_modes, rows, images = 8, 400, 16
    rng = np.random.default_rng(seed)
    symbols, _ = pack_weights(rng.standard_normal((rows, 2 * n_modes)), mu)
    x = (rng.standard_normal(n_modes) + 1j * rng.standard_normal(n_modes)) * rng.uniform(0.1, 1.0, n_modes)
    x /= np.linalg.norm(x)
    actual = replace(actual, mu_photons=float(np.mean(np.abs(symbols) ** 2)))
    result, _ = run_and_verify(symbols, np.broadcast_to(x, (images, n_modes)), actual, seed, attack=at.Tap(fraction),
                               declared=actual, rows=rows)
    held_bits = at.attacker_holevo_bits(actual, x, fraction) / n_modes
    assert result.chi_bits_per_mode >= held_bits, (result.transmittance_min, result.excess_noise_max_snu, held_bits)


# --- a whole session through the instruments ---------------------------------------------------------------

CONFIG = patient_config_file()  # lab_config.toml with patient timeouts: an embedded bench on a loaded host
SESSION = dict(images=2, mu=MU, gain=1.3, seed=4, batch_images=2, verify_fraction=0.2, failure_probability=1e-10,
               laser_power_dbm=10.0, exact_leakage_images=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory, calibrated_store_at):
    """The bench's calibration records (tests/conftest.py: made once per run, here a writable copy)."""
    from qslab.calibration.records import RecordStore

    return RecordStore(calibrated_store_at(tmp_path_factory.mktemp("records")))


def cheating_session(spec: str, store, out_dir, monkeypatch):
    """A session whose client cheats from the channel record on (it behaves during the calibrations):
    the bench state it cheated on, and the results (or the SessionAborted raised)."""
    from qslab.sequences import session as session_module
    from qslab.sequences.config import load_config
    from qslab.sequences.session import SessionAborted, SessionSettings, run_session

    armed = {}
    original = session_module.record_channel

    def record_then_cheat(link, store_, station, figure_dir):
        record_id = original(link, store_, station, figure_dir)
        armed["state"] = station.bench.state
        station.bench.state.set_attack(spec)
        return record_id

    monkeypatch.setattr(session_module, "record_channel", record_then_cheat)
    try:
        outcome = run_session(load_config(CONFIG), SessionSettings(**SESSION), out_dir=out_dir, store=store,
                              progress=False, embedded_bench=True)
    except SessionAborted as aborted:
        outcome = aborted
    return armed["state"], outcome


def test_a_session_aborts_when_the_client_starts_measuring_returned_modes(store, tmp_path, monkeypatch):
    """measure=0.05 is caught on the first batch; the bench recorded what the client measured."""
    state, outcome = cheating_session("measure=0.05", store, tmp_path, monkeypatch)
    assert isinstance(outcome, RuntimeError) and "verification failed after 2 images" in str(outcome)
    held = state.last_capture.session.verification.attacker
    assert held.kind == "measure" and 0.03 < held.measured.mean() < 0.07


def test_a_session_aborts_when_the_client_taps_five_percent(store, tmp_path, monkeypatch):
    state, outcome = cheating_session("tap=0.05", store, tmp_path, monkeypatch)
    assert state.last_capture.session.verification.attacker.kept_modes.size > 0
    assert isinstance(outcome, RuntimeError), outcome["verification"]
