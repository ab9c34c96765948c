"""One (batch, layer) acquisition: the gate and the drives played, both receivers digitized and read.

The digitizer's ranges are set for the expected signal, a clipped record is taken again with a
doubled range (CLIP_RETRIES), and every record ends with VACUUM_TAIL_SYMBOLS slots of vacuum: their
mean is each DC-coupled receiver's DC level (taken off), and they must otherwise look like the
receiver's calibration, else ReceiverError. A part of SecureLink (secure_link.py): it reads and writes
the state SecureLink.__init__ declares and plays what LinkSetup uploaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from qslab.analysis.blas_threads import one_blas_thread
from qslab.analysis.dsp import AdcRecord, clip_detail, count_clipped, count_clipped_record
from qslab.analysis.encoding import unit_vectors
from qslab.analysis.units import dbm_to_w
from qslab.analysis.workers import one_thread
from qslab.sequences.protocol.errors import ProtocolError, ReceiverError
from qslab.sequences.protocol.layers import Layer, LayerCapture, LayerPlan

CLIP_RETRIES = 6           # range doublings tried on a clipped record (0.2 V -> the digitizer's widest)
VACUUM_TAIL_SYMBOLS = 8_192  # vacuum slots after every acquisition's data: its mean to 0.01 SNU, variance to 1.6 %
TAIL_DRIFT_MAX_SNU = 0.1     # the DC level's change between the tail's halves beyond this: a drifting receiver (4.5 sigma)
TAIL_NOISE_MAX_DB = 0.5      # tail variance off 1 + v_el by more: the LO power or the receiver's gain moved (7 sigma)
SIGMA_RANGE = 7.0            # half the digitizer range covers this many noise sigmas plus the largest signal


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


def _server_quadratures(receiver, record: AdcRecord, n_symbols: int, dc_v: float, shape: tuple[int, ...]) -> np.ndarray:
    """The server record's quadratures as float32 [B, v, modes], on one BLAS thread as the acquisition's own."""
    with one_blas_thread():
        return receiver.record_quadratures_snu(record, n_symbols, dc_v).reshape(shape).astype(np.float32)


class LinkAcquisition:
    """Run a layer for a batch and read both receivers: the acquisition part of SecureLink."""

    def run_layer(self, index: int, data: np.ndarray, rng: np.random.Generator,
                  verify_fraction: float | None = None) -> LayerCapture:
        """Secure products of one layer for a batch: data [B, features] real, any norm; its verified rows drawn from
        ``rng`` (plan_layer)."""
        return self.run_plan(self.plan_layer(index, rng, verify_fraction), data)

    def plan_layer(self, index: int, rng: np.random.Generator, verify_fraction: float | None = None) -> LayerPlan:
        """Layer ``index``'s verified rows (each with probability ``verify_fraction``, default the link's) and the
        quadrature measured on each, drawn from ``rng``: a batch draws its layers' plans in layer order."""
        fraction = self.verify_fraction if verify_fraction is None else verify_fraction
        rows = np.flatnonzero(rng.random(self.layers[index].rows) < fraction)
        return LayerPlan(index, rows, rng.random(rows.size) < 0.5)

    def run_plan(self, plan: LayerPlan, data: np.ndarray, following: LayerPlan | None = None) -> LayerCapture:
        """run_layer with its plan drawn. ``following``: the plan of the layer the caller runs next, whose server
        set-up (gate, attenuation) is then made on a worker while this layer's records are read (the server's AWG and
        the attenuator are idle then), and waited for by that layer's run_plan. BLAS runs on one thread meanwhile
        (qslab.analysis.blas_threads: the bench renders on the other core, on one BLAS thread too)."""
        with one_blas_thread():
            return self._run_plan(plan, data, following)

    def settle_server_ahead(self) -> None:
        """Wait for a server set-up started ahead (run_plan's ``following``) and drop it, its error with it: called
        when the layer it was for will not run (the batch failed), so that nothing else talks to the server's AWG or
        the attenuator while it does. Its error, if any, is met again when the set-up is made afresh."""
        ahead, self._server_ahead = self._server_ahead, None
        if ahead is not None:
            ahead[1].exception()

    def prepare_first_layer(self, data: np.ndarray) -> None:
        """Start working out the client's codes for layer 1 of data [B, features] (the next batch) on the client
        upload's worker, where that layer's upload will run after it: the processor keeps them for that upload
        (AwgTimeBinProcessor.prepare_batch). An error here is met again, and raised, by the upload itself."""
        one_thread("qslab-client-upload").submit(lambda: self.processor.prepare_batch(unit_vectors(data)))

    def _run_plan(self, plan: LayerPlan, data: np.ndarray, following: LayerPlan | None) -> LayerCapture:
        layer = self.layers[plan.index]
        if layer.reference is None:
            raise ProtocolError(f"layer {plan.index + 1} has no measured mu yet (prepare() first)")
        x_hat = unit_vectors(data)
        if x_hat.shape[1] != layer.modes:
            raise ProtocolError(f"layer {plan.index + 1}: the data have {x_hat.shape[1]} modes, the weights "
                                f"{layer.modes}")
        batch, rows, measure_p = x_hat.shape[0], plan.rows, plan.measure_p
        if not self._attenuator_fastest:  # the layers' moves wait |change| / speed: at 10 dB/s, 1.2 s per 12 dB
            self.attenuator.use_fastest_transitions()
            self._attenuator_fastest = True
        # each load stops its AWG first (AwgChannels.load), and selects its segment; the layer's own segment is selected
        # as it starts (_capture). The client's processor is loaded on its own connection while the server's set-up
        # runs on the others (started by the capture)
        loading = one_thread("qslab-client-upload").submit(self.processor.load_batch, x_hat,
                                                           self.client_samples_per_symbol, 1)
        try:
            self._server_set_up(plan)
        finally:
            failed = loading.exception()  # waits: whatever happened here, the client's upload is over
        if failed is not None:
            raise failed
        n_client, n_server = batch * layer.rows, batch * rows.size * layer.modes
        (client_record, client_dc_v), (server_record, server_dc_v) = self._acquire(n_client, n_server, layer, batch,
                                                                                   following)
        client = self.client_rx.record_quadratures_snu(client_record, n_client, client_dc_v).reshape(batch, layer.rows)
        shape = (batch, rows.size, layer.modes)
        # the server's record, the larger, in quadratures while the next layer is set up and acquired (the client's
        # are needed at once: they are its input)
        returned = (one_thread("qslab-records").submit(_server_quadratures, self.server_rx, server_record, n_server,
                                                       server_dc_v, shape)
                    if rows.size else np.zeros(shape, dtype=np.float32))
        chosen = np.broadcast_to(measure_p, (batch, rows.size))
        reference = layer.reference[rows]
        sent = np.where(measure_p[:, None], 2.0 * reference.imag, 2.0 * reference.real)
        return LayerCapture(client.astype(np.float32), rows, np.array(chosen),
                            np.broadcast_to(sent, shape).astype(np.float32), returned)

    def _server_set_up(self, plan: LayerPlan) -> None:
        """The layer's gate loaded and its attenuation set: taken from the set-up started ahead for this very plan
        (its error raised here), else made now."""
        ahead, self._server_ahead = self._server_ahead, None
        if ahead is not None and ahead[0] is plan:
            ahead[1].result()
            return
        if ahead is not None:
            ahead[1].exception()  # another plan's (its layer never ran): over before this one's starts
        layer = self.layers[plan.index]
        self._load_gate(layer.segment_id, plan.rows, plan.measure_p, layer.modes, layer.rows)
        self._set_attenuation(layer)

    def _start_server_ahead(self, plan: LayerPlan) -> None:
        """_server_set_up of ``plan`` on the server set-up's worker (run_plan's ``following``)."""
        layer = self.layers[plan.index]

        def set_up() -> None:
            self._load_gate(layer.segment_id, plan.rows, plan.measure_p, layer.modes, layer.rows)
            self._set_attenuation(layer)

        self._server_ahead = (plan, one_thread("qslab-server-set-up").submit(set_up))

    def _acquire(self, n_client: int, n_server: int, layer: Layer, images: int,
                 following: LayerPlan | None = None) -> tuple[tuple[AdcRecord, float], ...]:
        """Digitize with both ranges wide enough; a clipped record is taken again with a doubled range. Returns per
        receiver (client, server) its record about the channel's centre and the record's DC level (its vacuum
        tail's mean, dsp.minus_tail_dc), which the quadratures take off. ``following``'s server set-up is started
        after each capture, while the records are read; a capture taken again first waits for it and sets this
        layer's attenuation back (the capture selects this layer's gate segment itself)."""
        sps = self.digitizer_sps
        data_symbols = max(n_client, n_server, 1) + 1  # + the detector's memory of the last symbol
        points = (data_symbols + VACUUM_TAIL_SYMBOLS) * sps
        if points != self._points:
            self.digitizer.configure(points=points)
            self._points = points
        self._set_ranges(layer, initial=not all(self.ranges_v.values()))
        for attempt in range(CLIP_RETRIES + 1):
            if attempt:
                self.settle_server_ahead()
                self._set_attenuation(layer)
            self._capture(layer.segment_id, images)
            if following is not None:
                self._start_server_ahead(following)
            records = {rx.name: rx.read_record() for rx in (self.client_rx, self.server_rx)}
            clipped = [rx for rx in (self.client_rx, self.server_rx) if self._record_clipped(rx, records[rx.name])]
            if not clipped:
                tails = {name: record.volts(data_symbols * sps) for name, record in records.items()}
                dc_v = {name: float(np.mean(tail)) for name, tail in tails.items()}  # as minus_tail_dc takes it
                self._check_tails({name: np.subtract(tail, dc_v[name], out=tail) for name, tail in tails.items()})
                return tuple((records[name], dc_v[name]) for name in ("client_receiver", "server_receiver"))
            widened = [rx for rx in clipped if self.widen_range(rx)] if attempt < CLIP_RETRIES else []
            if not widened:
                break
        detail = "; ".join(f"{rx.name} at {rx.range_v():.3g} V range: "
                           f"{clip_detail(records[rx.name].volts(), 0.5 * rx.range_v(), rx.adc_bits)}"
                           for rx in clipped)
        raise ProtocolError(f"the digitizer clips even at the widest range it took ({attempt} widening(s)): {detail}")

    def _capture(self, segment: int, images: int) -> None:
        """The layer played for one acquisition only: the client's processor and the server's AWG started right
        before the trigger, both stopped as soon as the digitizer has its record (before it is read). Why: the
        leakage figures count one pass of the weights and of the client's data per acquisition, and light that kept
        coming while the station reads and computes would carry both again (the client's data on the returned light,
        which a curious server can measure, even on the carrier of a stopped server AWG). Each capture adds its
        ``images`` to ``images_played[segment]``, the passes the session's query count may not hold, and calls
        ``before_light`` (the session notes its counts where a kill cannot lose them) before any of it is sent."""
        self.images_played[segment] += images
        if self.before_light is not None:
            self.before_light()
        self.client_awg.run()
        self.awg.play_segment(segment, self.gate)  # the layer's segment (and its gate's) selected and started
        try:
            self.digitizer.trigger()
            self.digitizer.wait()
        finally:
            try:
                self.awg.stop()
            finally:
                self.client_awg.stop()  # even when the layer's stop failed

    def widen_range(self, rx) -> bool:
        """Double a receiver's digitizer range; False when the digitizer kept the old one (at its widest)."""
        before_v = rx.range_v()
        rx.set_range_v(2.0 * before_v)
        after_v = rx.range_v()
        self.ranges_v[rx.name] = after_v
        if after_v > before_v:
            self.events.append(f"{rx.name}: digitizer range widened {before_v:.3g} -> {after_v:.3g} V (clipping)")
        return after_v > before_v

    def reset_ranges(self) -> None:
        """The next acquisition sets the digitizer ranges for the signal again (wider ones were for a fault)."""
        self.ranges_v = dict.fromkeys(self.ranges_v, 0.0)

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

    @staticmethod
    def _read_trace(rx) -> np.ndarray:
        """A receiver's record in volts about the channel's centre (its offset: the receiver's DC level), as the
        clipping checks take them. An unreadable reply is the digitizer's InstrumentFault (the batch may be
        taken again)."""
        return rx.read_samples_v() - rx.offset_v()

    @staticmethod
    def _record_clipped(rx, record: AdcRecord) -> bool:
        return count_clipped_record(record, 0.5 * rx.range_v(), rx.adc_bits) > 0

    def _check_tails(self, tails: dict[str, np.ndarray]) -> None:
        """The vacuum after the data (``tails``: in volts, its DC taken off) must look like the calibration's:
        variance 1 + v_el, else the data are scaled by a changed LO or gain; and one DC level over the tail, else the
        receiver drifts within a record. ReceiverError names the first receiver."""
        for rx in (self.client_rx, self.server_rx):
            reading = self._vacuum(rx, tails[rx.name], VACUUM_TAIL_SYMBOLS)
            self.tails[rx.name] = reading
            expected_snu = 1.0 + reading.electronic_noise_snu
            noise_db = 10.0 * math.log10(max(reading.variance_snu, 1e-12) / expected_snu)
            if abs(noise_db) > TAIL_NOISE_MAX_DB:
                raise ReceiverError(f"{rx.name}: the vacuum after its record has {noise_db:+.2f} dB of noise against "
                                    f"its calibration ({reading.variance_snu:.3g} vs {expected_snu:.3g} SNU): its LO "
                                    f"power or its gain changed", reading)
            half = self._vacuum(rx, tails[rx.name], VACUUM_TAIL_SYMBOLS // 2)  # (the DC is off the whole tail)
            if abs(2.0 * half.mean_snu) > TAIL_DRIFT_MAX_SNU:  # first half minus second = twice the first's mean
                template = np.asarray(rx.calibration.template, dtype=np.float64)  # the DSP's filter has unit norm
                offset_v = half.mean_snu * math.sqrt(rx.calibration.shot_noise_variance_v2) * float(
                    np.linalg.norm(template)) / max(abs(float(template.sum())), 1e-12)
                raise ReceiverError(f"{rx.name}: the DC level moves within a record ({2 * half.mean_snu:+.3g} SNU, about "
                                    f"{2 * offset_v:+.3g} V, between the halves of its vacuum tail): a drifting "
                                    f"receiver biases every quadrature", half)

    @staticmethod
    def _vacuum(rx, samples_v: np.ndarray, symbols: int) -> VacuumReading:
        range_v = rx.range_v()
        quadratures = rx.quadratures_snu(samples_v, symbols).astype(np.float64)
        return VacuumReading(rx.name, float(quadratures.mean()), float(quadratures.var()),
                             rx.calibration.electronic_noise_snu, count_clipped(samples_v, 0.5 * range_v, rx.adc_bits),
                             range_v)

