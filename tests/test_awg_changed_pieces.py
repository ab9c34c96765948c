"""The changed granules of an AWG segment (AwgChannels' partial reload) against the plain route: a granule differs
when any of its samples does (row-wise any over the samples)."""

from __future__ import annotations

import numpy as np

from qslab.instruments.optical.awg_channels import _differing_granules, changed_pieces


def test_the_differing_granules_are_those_with_any_changed_sample():
    rng = np.random.default_rng(1)
    for _ in range(200):
        size = 256 * int(rng.integers(1, 120))
        before = rng.integers(-3, 3, size).astype(np.int8)
        after = before.copy()
        after[rng.integers(0, size, int(rng.integers(0, 40)))] += 1
        for granularity in (16, 64, 256):
            expected = np.flatnonzero((before != after).reshape(-1, granularity).any(axis=1))
            found = _differing_granules(before, after, granularity)
            assert found.dtype == expected.dtype
            np.testing.assert_array_equal(found, expected)


def test_changed_pieces_rebuild_the_new_segment():
    rng = np.random.default_rng(2)
    before = np.repeat(rng.integers(-100, 100, 4096).astype(np.int8), 16)
    after = before.copy()
    after[1000:1300], after[40_000] = 5, -5
    rebuilt = before.copy()
    for offset, piece in changed_pieces(before, after, 64):
        assert offset % 64 == 0
        rebuilt[offset:offset + piece.size] = piece
    np.testing.assert_array_equal(rebuilt, after)


def test_a_mostly_changed_segment_is_not_listed_piece_by_piece():
    """max_samples: None exactly when the pieces (runs joined across short gaps) would hold more samples."""
    rng = np.random.default_rng(3)
    for _ in range(100):
        before = rng.integers(-3, 3, 256 * 64).astype(np.int8)
        after = before.copy()
        after[rng.integers(0, before.size, int(rng.integers(1, 400)))] += 1
        pieces = changed_pieces(before, after, 64)
        held = sum(piece.size for _, piece in pieces)
        limit = int(rng.integers(0, before.size))
        limited = changed_pieces(before, after, 64, max_samples=limit)
        assert (limited is None) == (held > limit)
        if limited is not None:
            assert [(o, p.tobytes()) for o, p in limited] == [(o, p.tobytes()) for o, p in pieces]
