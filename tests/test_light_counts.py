"""sequences/light_counts.py on a stand-in link: what each count adds, a failed take, where a resume starts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qslab.sequences.light_counts import LightCounts


class Link:
    """Two layers whose captures the test plays by hand (SecureLink.weight_images_played's duck)."""

    def __init__(self):
        self.played = [0, 0]

    def weight_images_played(self) -> tuple[int, ...]:
        return tuple(self.played)

    def capture(self, layer: int, images: int) -> None:
        self.played[layer] += images


def test_the_set_up_counts_for_the_weights_only_and_every_take_for_both():
    link = Link()
    counts = LightCounts(link, (100, 110), (40, 40))  # what the file held before this run
    link.capture(0, 3)
    link.capture(1, 52)  # the set-up's nulling: no client data
    assert counts.weights() == (103, 162) and counts.data() == (40, 40)
    assert counts.weights(10) == (113, 172)  # the cap's projection: one more take of 10 images

    def take():
        link.capture(0, 10)
        assert counts.data() == (50, 40)  # mid-take, as noted before the next capture's light
        link.capture(1, 10)
        link.capture(1, 10)  # a range widened: the layer captured again
        return "recorded"

    assert counts.take(take) == "recorded"
    assert counts.weights() == (113, 182) and counts.data() == (50, 60)

    def failing():
        link.capture(0, 10)
        raise TimeoutError("the digitizer did not answer")

    with pytest.raises(TimeoutError):
        counts.take(failing)
    assert counts.weights() == (123, 182) and counts.data() == (60, 60)  # its light went out all the same


def test_a_file_that_does_not_count_stays_uncounted():
    counts = LightCounts(Link(), None, None)
    assert counts.weights() is None and counts.data() is None
    noted = []
    counts.note_in(SimpleNamespace(note_sent=noted.append))
    assert noted == []


def test_a_resume_starts_from_the_writers_counts():
    """The writer's counts already hold a killed writer's note where it is more (tests/test_recording.py)."""
    writer = SimpleNamespace(weight_images_sent=(130, 160), data_images_sent=(50, 40))
    counts = LightCounts.resuming(Link(), writer)
    assert (counts.weights_before, counts.data_before) == ((130, 160), (50, 40))
    noted_now = []
    counts.note_in(SimpleNamespace(note_sent=noted_now.append))
    assert noted_now == [{"weight_images_sent": (130, 160), "data_images_sent": (50, 40)}]
