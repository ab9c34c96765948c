"""AwgTimeBinProcessor.prepare_batch: the next batch's codes worked out ahead (while the session captures this one),
used by the load of that very batch at that calibration and limit, and by no other (a load of another batch in between
leaves them): every upload sends exactly the codes a load without preparation sends."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from qslab.analysis.encoding import unit_vectors
from qslab.instruments.optical import Limit, ProcessorCalibration
from qslab.instruments.optical.awg_channels import amplitude_for_volts_vpp
from qslab.instruments.optical.time_bin_processor import AwgTimeBinProcessor

CALIBRATION = ProcessorCalibration(3.2, 3.6, beam_splitter_theta_offset_rad=0.02)


class RecordingAwg(SimpleNamespace):
    """The AWG role's surface the processor uses; every load's segments and amplitudes kept."""

    def __init__(self, limit_vpp: float = 1.0):
        super().__init__(channels=(1, 2), amplitude_max=Limit(limit_vpp, "Vpp", "test"), loads=[])

    def amplitude_for_volts_vpp(self, volts) -> float:
        return amplitude_for_volts_vpp(volts)

    def check_amplitude_vpp(self, amplitude_vpp: float) -> None:
        self.amplitude_max.check_at_most("processor", "drive amplitude", amplitude_vpp)

    def load(self, segments, amplitudes_vpp, partial=True) -> None:
        self.loads.append(([(segment, [codes.copy() for codes in channels]) for segment, channels in segments],
                           list(amplitudes_vpp)))


def batch(seed: int) -> np.ndarray:
    return unit_vectors(np.random.default_rng(seed).uniform(0.0, 1.0, (5, 2 * 12)))


def sent(x_hat, prepared=None, calibration=CALIBRATION, awg=None) -> tuple[list, AwgTimeBinProcessor]:
    """The load_batch(x_hat) upload of a processor that prepared `prepared` first (None: nothing)."""
    processor = AwgTimeBinProcessor(awg or RecordingAwg(), CALIBRATION)
    if prepared is not None:
        processor.prepare_batch(prepared)
    processor.calibration = calibration
    processor.load_batch(x_hat, 16)
    return processor.awg.loads[-1], processor


def same_upload(a, b) -> bool:
    (segments_a, amplitudes_a), (segments_b, amplitudes_b) = a, b
    return amplitudes_a == amplitudes_b and all(
        sa == sb and all(np.array_equal(x, y) for x, y in zip(ca, cb))
        for (sa, ca), (sb, cb) in zip(segments_a, segments_b))


def test_a_prepared_batch_is_uploaded_as_without_preparation_and_its_codes_are_not_worked_out_again(monkeypatch):
    x_hat = batch(1)
    expected, _ = sent(x_hat)
    calls = []
    original = AwgTimeBinProcessor._batch_codes
    monkeypatch.setattr(AwgTimeBinProcessor, "_batch_codes", lambda self, x: calls.append(1) or original(self, x))
    got, processor = sent(x_hat.copy(), prepared=x_hat)
    assert same_upload(got, expected)
    assert len(calls) == 1  # the preparation's: the load took its codes
    processor.load_batch(x_hat, 16)  # used once: the same batch again works its codes out anew
    assert len(calls) == 2 and same_upload(processor.awg.loads[-1], expected)


def test_a_load_of_another_batch_in_between_leaves_the_prepared_codes_to_the_batch_they_were_made_for(monkeypatch):
    x_hat, layer_2 = batch(1), batch(2)
    expected, _ = sent(x_hat)
    calls = []
    original = AwgTimeBinProcessor._batch_codes
    monkeypatch.setattr(AwgTimeBinProcessor, "_batch_codes", lambda self, x: calls.append(1) or original(self, x))
    processor = AwgTimeBinProcessor(RecordingAwg(), CALIBRATION)
    processor.prepare_batch(x_hat)
    processor.load_batch(layer_2, 16)  # this batch's layer 2: codes of its own
    processor.load_batch(x_hat.copy(), 16)  # the next batch's layer 1: the prepared codes
    assert len(calls) == 2 and same_upload(processor.awg.loads[-1], expected)


def test_another_batch_a_new_calibration_or_a_changed_input_array_get_codes_of_their_own():
    x_hat, other = batch(1), batch(2)
    assert same_upload(sent(other, prepared=x_hat)[0], sent(other)[0])
    recalibrated = ProcessorCalibration(3.3, 3.6, beam_splitter_theta_offset_rad=0.02)
    assert same_upload(sent(x_hat, prepared=x_hat, calibration=recalibrated)[0],
                       sent(x_hat, calibration=recalibrated)[0])
    assert not same_upload(sent(x_hat, calibration=recalibrated)[0], sent(x_hat)[0])  # (the calibration matters)
    changed = x_hat.copy()
    processor = AwgTimeBinProcessor(RecordingAwg(), CALIBRATION)
    processor.prepare_batch(changed)
    changed[0, 0] *= -1  # the caller reuses its array: the preparation kept its own copy
    processor.load_batch(changed, 16)
    assert same_upload(processor.awg.loads[-1], sent(changed)[0])


def test_a_preparation_that_fails_leaves_the_load_to_fail_as_it_would():
    x_hat = batch(3)
    processor = AwgTimeBinProcessor(RecordingAwg(limit_vpp=0.05), CALIBRATION)  # below the AWG's least 0.075 Vpp
    with pytest.raises(Exception) as prepared:
        processor.prepare_batch(x_hat)
    with pytest.raises(type(prepared.value), match="drive amplitude"):
        processor.load_batch(x_hat, 16)
    assert processor.awg.loads == []
