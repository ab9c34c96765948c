"""One (batch, layer) acquisition: the gate and the drives played, both receivers digitized and read.

The digitizer's ranges are set for the expected signal, a clipped record is taken again with a
doubled range (CLIP_RETRIES), and every record ends with VACUUM_TAIL_SYMBOLS slots of vacuum: their
mean is each DC-coupled receiver's DC level (taken off), and they must otherwise look like the
receiver's calibration, else ReceiverError. A part of SecureLink (secure_link.py): it reads and writes
the state SecureLink.__init__ declares and plays what LinkSetup uploaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from qslab.analysis.blas_threads import one_blas_thread
from qslab.analysis.dsp import AdcRecord, clip_detail, count_clipped, count_clipped_record
from qslab.analysis.encoding import unit_vectors
from qslab.analysis.units import dbm_to_w
from qslab.analysis.workers import beside, one_thread
from qslab.instruments.optical.roles import together
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

    def run_plan(self, plan: LayerPlan, data: np.ndarray) -> LayerCapture:
        """run_layer with its plan drawn. BLAS runs on one thread meanwhile (qslab.analysis.blas_threads: the bench
        renders on the other core, on one BLAS thread too)."""
        with one_blas_thread():
            return self._run_plan(plan, data)[0]

    def run_layers(self, plans: list[LayerPlan], data: np.ndarray, between: Callable[[np.ndarray], np.ndarray],
                   next_data: np.ndarray | None = None, next_plan: LayerPlan | None = None) -> list[LayerCapture]:
        """A batch's layers in order (``plans``), the first on ``data``, each next one on ``between`` of the client's
        quadratures of the one before (the client's step between layers). ``next_data``, ``next_plan``: the next
        batch's data and layer-1 plan; the client's codes for them are worked out meanwhile (prepare_first_layer: while
        this batch's products leave a core free, not during the check), and the check after this batch starts both
        parties' set-ups of them (start_next_upload, start_next_server_set_up).

        The two parties' instruments work side by side, as in two labs: layer k+1's server set-up (gate, attenuation)
        is made on a worker while layer k's records are read, and its client upload starts as soon as the client's
        record of layer k is in, while the server's is read. A layer captured again (a clipped record) first waits
        for both and puts its own client data and attenuation back; a failure waits for both before it leaves, so
        that the cure finds the instruments idle."""
        captures = []
        with one_blas_thread():
            if next_data is not None:
                self.prepare_first_layer(next_data)
            try:
                for plan, following in zip(plans, [*plans[1:], None]):
                    capture, data = self._run_plan(plan, data, following, between)
                    captures.append(capture)
            finally:
                self.settle_ahead()
        self._next_first_layer, self._next_first_plan = next_data, next_plan
        return captures

    def settle_ahead(self) -> None:
        """Wait for the set-ups started ahead (run_layers, the check's start_next_*) and drop them, their errors with
        them: the layer they were for will not run as planned. Their errors, if any, are met again when the set-ups
        are made afresh. Whatever else talks to their instruments (a cure, a vacuum reading, the safe state) settles
        first."""
        for ahead in (self._server_ahead, self._client_ahead):
            if ahead is not None:
                ahead[1].exception()
        self._server_ahead = self._client_ahead = self._next_first_layer = self._next_first_plan = None

    def prepare_first_layer(self, data: np.ndarray) -> None:
        """Start working out the client's codes for layer 1 of data [B, features] (the next batch) on the client
        upload's worker, where that layer's upload will run after it (start_next_upload, or the layer's own run): the
        processor keeps them for that upload (AwgTimeBinProcessor.prepare_batch). An error here is met again, and
        raised, by the upload itself."""
        one_thread("qslab-client-upload").submit(lambda: self.processor.prepare_batch(unit_vectors(data)))

    def server_instruments(self) -> tuple[str, ...]:
        """The instruments the server's set-up (gate, attenuation) and the check's light reading talk to."""
        roles = self.config.roles
        return tuple(dict.fromkeys((roles.server_iq_modulator.awg, roles.server_receiver.lo_phase_awg,
                                    roles.server_attenuator.instrument, roles.server_power_meter.instrument)))

    def start_next_server_set_up(self) -> None:
        """The server's set-up of the next batch's layer-1 plan (run_layers' ``next_plan``), started now on its worker;
        that layer's run finds it under way. The check calls this once it has read the server's instruments back and
        the light (BatchGuard)."""
        plan, self._next_first_plan = self._next_first_plan, None
        if plan is not None:
            self._start_server_ahead(plan)

    def client_instruments(self) -> tuple[str, ...]:
        """The instruments the client's uploads talk to (its processor's AWG)."""
        return (self.config.roles.client_processor.awg,)

    def start_next_upload(self) -> None:
        """The client's upload of layer 1 of the next batch's data (run_layers' ``next_data``), started now on its
        worker; that layer's run finds it under way. The check after a batch calls this once it has read the
        client's instruments back (BatchGuard): the upload must not overwrite what they held during the batch before
        it is read, and runs while the server's instruments are checked."""
        data, self._next_first_layer = self._next_first_layer, None
        if data is not None:
            self._start_client_ahead(data, 0)

    def _run_plan(self, plan: LayerPlan, data: np.ndarray, following: LayerPlan | None = None,
                  between: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[LayerCapture, np.ndarray | None]:
        """One layer; with ``following``, also the next layer's set-ups started ahead (run_layers) and its data
        (``between`` of this layer's client quadratures), returned beside the capture."""
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
        # runs on the others (both made now, or started ahead while the layer before was read: run_layers)
        beside(self._client_upload(data, x_hat), lambda: self._server_set_up(plan))
        n_client, n_server = batch * layer.rows, batch * rows.size * layer.modes
        early: dict[str, np.ndarray] = {}

        def client_ready(record: AdcRecord, dc_v: float) -> None:
            early["client"] = client = self._client_quadratures(record, n_client, dc_v, (batch, layer.rows))
            early["next"] = following_data = between(client)
            self._start_client_ahead(following_data, following.index)

        (client_record, client_dc_v), (server_record, server_dc_v) = self._acquire(
            n_client, n_server, layer, x_hat, following, client_ready if following and between else None)
        client = early.get("client")
        if client is None:
            client = self._client_quadratures(client_record, n_client, client_dc_v, (batch, layer.rows))
        shape = (batch, rows.size, layer.modes)
        # the server's record, the larger, in quadratures while the next layer is set up and acquired (the client's
        # are needed at once: they are its input)
        returned = (one_thread("qslab-records").submit(_server_quadratures, self.server_rx, server_record, n_server,
                                                       server_dc_v, shape)
                    if rows.size else np.zeros(shape, dtype=np.float32))
        chosen = np.broadcast_to(measure_p, (batch, rows.size))
        reference = layer.reference[rows]
        sent = np.where(measure_p[:, None], 2.0 * reference.imag, 2.0 * reference.real)
        # in C order: astype keeps a broadcast's layout (image stride 4 bytes), which every flat read then copied
        sent_snu = np.broadcast_to(sent, shape).astype(np.float32, order="C")
        capture = LayerCapture(client, rows, np.array(chosen), sent_snu, returned)
        return capture, early.get("next")

    def _client_quadratures(self, record: AdcRecord, n_client: int, dc_v: float, shape: tuple[int, int]) -> np.ndarray:
        """The client's record in quadratures, float32 [B, rows]."""
        return self.client_rx.record_quadratures_snu(record, n_client, dc_v).reshape(shape).astype(np.float32)

    def _client_upload(self, data: np.ndarray, x_hat: np.ndarray) -> Future:
        """The client's upload of ``data`` (as ``x_hat``): the one started ahead for these very data (the same array,
        or, from the check before a batch, equal values), else one started now."""
        ahead, self._client_ahead = self._client_ahead, None
        if ahead is not None and (ahead[0] is data or np.array_equal(ahead[0], data)):
            return ahead[1]
        if ahead is not None:
            ahead[1].exception()  # another array's (its layer never ran): over before this one starts
        return self._upload_client(x_hat)

    def _start_client_ahead(self, data: np.ndarray, index: int) -> None:
        """The client's upload of layer ``index``'s ``data`` started now, ahead of that layer's run, when it fits the
        layer; else left to that layer's run, which refuses it."""
        x_hat = unit_vectors(data)
        if x_hat.shape[1] == self.layers[index].modes:
            self._client_ahead = (data, self._upload_client(x_hat))

    def _upload_client(self, x_hat: np.ndarray) -> Future:
        """The processor's load of ``x_hat`` on the client upload's worker (its codes worked out ahead there)."""
        return one_thread("qslab-client-upload").submit(self.processor.load_batch, x_hat,
                                                        self.client_samples_per_symbol, 1)

    def _server_set_up(self, plan: LayerPlan) -> None:
        """The server's set-up of ``plan``: the one started ahead for this very plan, or one drawn alike (its error
        raised here), else made now."""
        ahead, self._server_ahead = self._server_ahead, None
        if ahead is not None and (ahead[0] is plan or ahead[0].same_as(plan)):
            ahead[1].result()
            return
        if ahead is not None:
            ahead[1].exception()  # another plan's (its layer never ran): over before this one's starts
        self._set_up_server(plan)

    def _start_server_ahead(self, plan: LayerPlan) -> None:
        """_set_up_server of ``plan`` on the server set-up's worker (run_layers)."""
        self._server_ahead = (plan, one_thread("qslab-server-set-up").submit(self._set_up_server, plan))

    def _set_up_server(self, plan: LayerPlan) -> None:
        """The gate of ``plan``'s layer loaded with its rows while the layer's attenuation is set: two instruments,
        each on its own connection (the attenuator's move takes its own time). Returns once both are done; the gate's
        error first, then the attenuator's."""
        layer = self.layers[plan.index]
        beside(one_thread("qslab-attenuation").submit(self._set_attenuation, layer),
               lambda: self._load_gate(layer.segment_id, plan.rows, plan.measure_p, layer.modes, layer.rows))

    def _acquire(self, n_client: int, n_server: int, layer: Layer, x_hat: np.ndarray,
                 following: LayerPlan | None = None,
                 client_ready: Callable[[AdcRecord, float], None] | None = None) -> tuple[tuple[AdcRecord, float], ...]:
        """Digitize with both ranges wide enough; a clipped record is taken again with a doubled range. Returns per
        receiver (client, server) its record about the channel's centre and the record's DC level (its vacuum
        tail's mean, dsp.minus_tail_dc), which the quadratures take off.

        ``following``'s server set-up is started after each capture; ``client_ready(record, dc_v)`` is called once
        the client's record is read, unclipped and its vacuum tail as calibrated, before the server's is read
        (run_layers). A capture taken again first waits for what they started, loads this layer's client data
        (``x_hat``) again when the next layer's were sent, and sets this layer's attenuation back (the capture selects
        this layer's gate segment itself)."""
        sps = self.digitizer_sps
        data_symbols = max(n_client, n_server, 1) + 1  # + the detector's memory of the last symbol
        points = (data_symbols + VACUUM_TAIL_SYMBOLS) * sps
        if points != self._points:
            self.digitizer.configure(points=points)
            self._points = points
        self._set_ranges(layer, initial=not all(self.ranges_v.values()))
        client_holds_layer = True
        for attempt in range(CLIP_RETRIES + 1):
            if attempt:
                self.settle_ahead()
                if not client_holds_layer:
                    self.processor.load_batch(x_hat, self.client_samples_per_symbol, 1)
                    client_holds_layer = True
                self._set_attenuation(layer)
            self._capture(layer.segment_id, x_hat.shape[0])
            if following is not None:
                self._start_server_ahead(following)
            records, clipped, found = {}, [], {}
            for rx in (self.client_rx, self.server_rx):
                records[rx.name] = rx.read_record()
                if self._record_clipped(rx, records[rx.name]):
                    clipped.append(rx)
                elif not clipped:  # (as before: no tail is looked at once a record clipped)
                    found[rx.name] = self._tail(rx, records[rx.name], data_symbols * sps)
                    if rx is self.client_rx and client_ready is not None and found[rx.name][2] is None:
                        client_ready(records[rx.name], found[rx.name][1])
                        client_holds_layer = False
            if not clipped:
                for rx in (self.client_rx, self.server_rx):  # the client's tail first, as its data are read first
                    reading, _, problem = found[rx.name]
                    self.tails[rx.name] = reading
                    if problem is not None:
                        raise problem
                return tuple((records[name], found[name][1]) for name in ("client_receiver", "server_receiver"))
            widened = [rx for rx in clipped if self.widen_range(rx)] if attempt < CLIP_RETRIES else []
            if not widened:
                break
        detail = "; ".join(f"{rx.name} at {rx.range_v():.3g} V range: "
                           f"{clip_detail(records[rx.name].volts(), 0.5 * rx.range_v(), rx.adc_bits)}"
                           for rx in clipped)
        raise ProtocolError(f"the digitizer clips even at the widest range it took ({attempt} widening(s)): {detail}")

    def _tail(self, rx, record: AdcRecord, data_samples: int) -> tuple[VacuumReading, float, ReceiverError | None]:
        """(the vacuum tail's reading, the record's DC level: the tail's mean, as minus_tail_dc takes it, and what is
        wrong with the tail, if anything: _tail_problem)."""
        tail = record.volts(data_samples)
        dc_v = float(np.mean(tail))
        reading, problem = self._tail_problem(rx, np.subtract(tail, dc_v, out=tail))
        return reading, dc_v, problem

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
        try:
            # both parties' AWGs started in one round trip (each message sent, then both replies read), the layer's
            # segment (and its gate's) selected as it starts; stopped alike, the client's even when the layer's stop
            # failed, and both whatever failed before (stopping a stopped AWG is harmless)
            together(self.client_awg.run_sent, lambda: self.awg.play_segment_sent(segment, self.gate))
            self.digitizer.trigger()
            self.digitizer.wait()
        finally:
            together(self.awg.stop_sent, self.client_awg.stop_sent)

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

    def _tail_problem(self, rx, tail_v: np.ndarray) -> tuple[VacuumReading, ReceiverError | None]:
        """The vacuum after the data (``tail_v``: in volts, its DC taken off) must look like the calibration's:
        variance 1 + v_el, else the data are scaled by a changed LO or gain; and one DC level over the tail, else the
        receiver drifts within a record. Returns the reading and the ReceiverError naming what differs, or None."""
        reading = self._vacuum(rx, tail_v, VACUUM_TAIL_SYMBOLS)
        expected_snu = 1.0 + reading.electronic_noise_snu
        noise_db = 10.0 * math.log10(max(reading.variance_snu, 1e-12) / expected_snu)
        if abs(noise_db) > TAIL_NOISE_MAX_DB:
            return reading, ReceiverError(f"{rx.name}: the vacuum after its record has {noise_db:+.2f} dB of noise "
                                          f"against its calibration ({reading.variance_snu:.3g} vs {expected_snu:.3g} "
                                          f"SNU): its LO power or its gain changed", reading)
        half = self._vacuum(rx, tail_v, VACUUM_TAIL_SYMBOLS // 2)  # (the DC is off the whole tail)
        if abs(2.0 * half.mean_snu) > TAIL_DRIFT_MAX_SNU:  # first half minus second = twice the first's mean
            template = np.asarray(rx.calibration.template, dtype=np.float64)  # the DSP's filter has unit norm
            offset_v = half.mean_snu * math.sqrt(rx.calibration.shot_noise_variance_v2) * float(
                np.linalg.norm(template)) / max(abs(float(template.sum())), 1e-12)
            return reading, ReceiverError(f"{rx.name}: the DC level moves within a record ({2 * half.mean_snu:+.3g} "
                                          f"SNU, about {2 * offset_v:+.3g} V, between the halves of its vacuum tail): "
                                          f"a drifting receiver biases every quadrature", half)
        return reading, None

    @staticmethod
    def _vacuum(rx, samples_v: np.ndarray, symbols: int) -> VacuumReading:
        range_v = rx.range_v()
        quadratures = rx.quadratures_snu(samples_v, symbols).astype(np.float64)
        return VacuumReading(rx.name, float(quadratures.mean()), float(quadratures.var()),
                             rx.calibration.electronic_noise_snu, count_clipped(samples_v, 0.5 * range_v, rx.adc_bits),
                             range_v)

