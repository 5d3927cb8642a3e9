"""Advantage labels for the policy: chunk and per-frame advantages, bins, and episode labels
(hand-computed cases)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rise.policy.advantage import (
    AdvantageBins,
    chunk_advantage,
    episode_advantages,
    label_episode,
)


def test_chunk_advantage_is_mean_of_next_values_minus_start():
    assert chunk_advantage([0.2, 0.4], 0.1) == pytest.approx(0.2)
    assert chunk_advantage(np.array([0.5]), 0.5) == pytest.approx(0.0)
    assert chunk_advantage([0.0, -0.3, -0.6], 0.0) == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="next_values"):
        chunk_advantage([], 0.0)
    with pytest.raises(ValueError, match="finite"):
        chunk_advantage([float("nan")], 0.0)


def test_episode_advantages_truncate_at_the_end_and_last_frame_is_zero():
    values = np.array([0.0, 0.2, 0.6, 0.7])
    # t0: mean(0.2, 0.6) - 0; t1: mean(0.6, 0.7) - 0.2; t2: only 0.7 is left; t3: nothing after it.
    np.testing.assert_allclose(episode_advantages(values, horizon=2), [0.4, 0.45, 0.1, 0.0])
    np.testing.assert_allclose(episode_advantages(values, horizon=1), [0.2, 0.4, 0.1, 0.0])
    # A horizon longer than the episode averages everything that is left.
    np.testing.assert_allclose(episode_advantages(values, horizon=10),
                               [0.5, 0.65 - 0.2, 0.1, 0.0])
    per_frame = episode_advantages(values, 2)
    for t in range(3):
        assert per_frame[t] == pytest.approx(chunk_advantage(values[t + 1:t + 3], values[t]))
    assert episode_advantages(np.array([0.3]), 4).tolist() == [0.0]
    assert episode_advantages(np.zeros(0), 4).shape == (0,)


def test_episode_advantages_refuse_bad_input():
    with pytest.raises(ValueError, match="horizon"):
        episode_advantages(np.zeros(3), 0)
    with pytest.raises(ValueError, match="values must be 1-D"):
        episode_advantages(np.zeros((3, 2)), 2)
    with pytest.raises(ValueError, match="values must be finite"):
        episode_advantages(np.array([0.0, np.inf]), 2)


def test_uniform_bins():
    bins = AdvantageBins.uniform(num_bins=4, low=-1.0, high=1.0)
    assert bins.edges == (-1.0, -0.5, 0.0, 0.5, 1.0)
    assert (bins.num_bins, bins.best, bins.unknown) == (4, 3, 4)
    default = AdvantageBins.uniform()
    assert (default.num_bins, default.edges[0], default.edges[-1]) == (10, -1.0, 1.0)
    np.testing.assert_allclose(np.diff(default.edges), 0.2)
    with pytest.raises(ValueError, match="num_bins"):
        AdvantageBins.uniform(num_bins=0)
    with pytest.raises(ValueError, match="high"):
        AdvantageBins.uniform(low=1.0, high=1.0)


def test_bin_of_edges_out_of_range_and_arrays():
    bins = AdvantageBins.uniform(num_bins=4, low=-1.0, high=1.0)
    # [-1, -0.5) -> 0, [-0.5, 0) -> 1, [0, 0.5) -> 2, [0.5, 1] -> 3; an inner edge belongs to the bin above.
    advantages = (-1.0, -0.75, -0.5, -0.01, 0.0, 0.49, 0.5, 1.0)
    assert [bins.bin_of(a) for a in advantages] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert isinstance(bins.bin_of(0.2), int)
    assert bins.bin_of(-7.0) == 0 and bins.bin_of(3.0) == 3
    labels = bins.bin_of(np.array([[-2.0, 0.1], [0.6, 2.0]]))
    assert labels.dtype == np.int64 and labels.tolist() == [[0, 2], [3, 3]]
    assert bins.bin_of([-0.6, 0.25]).tolist() == [0, 2]
    with pytest.raises(ValueError, match="NaN"):
        bins.bin_of(float("nan"))


def test_bad_edges_are_refused_naming_edges():
    with pytest.raises(ValueError, match="edges must be strictly increasing"):
        AdvantageBins((0.0, 0.5, 0.5, 1.0))
    with pytest.raises(ValueError, match="edges must be strictly increasing"):
        AdvantageBins((1.0, 0.0))
    with pytest.raises(ValueError, match="edges"):
        AdvantageBins((0.0,))
    with pytest.raises(ValueError, match="edges must be finite"):
        AdvantageBins((0.0, float("inf")))


def test_bins_json_round_trip():
    bins = AdvantageBins(np.array([-2.0, -0.1, 0.1, 2.0]))
    assert bins.edges == (-2.0, -0.1, 0.1, 2.0)
    again = AdvantageBins.from_dict(json.loads(json.dumps(bins.to_dict())))
    assert again == bins and again.num_bins == 3
    with pytest.raises(ValueError, match="edges"):
        AdvantageBins.from_dict({"edges": ["a", "b"]})
    with pytest.raises(ValueError, match="edges"):
        AdvantageBins.from_dict({"bins": [0, 1]})
    with pytest.raises(ValueError, match="format"):
        AdvantageBins.from_dict({"format": "other", "edges": [0.0, 1.0]})


def test_label_episode_bins_each_frame_and_demos_get_the_best_bin():
    bins = AdvantageBins.uniform(num_bins=4, low=-1.0, high=1.0)
    values = np.array([0.0, 0.2, 0.6, 0.7, -0.5])
    # advantages with horizon 1: 0.2, 0.4, 0.1, -1.2, 0 (last frame)
    labels = label_episode(values, horizon=1, bins=bins, demo=False)
    assert labels.dtype == np.int64 and labels.tolist() == [2, 2, 2, 0, 2]
    demo = label_episode(values, horizon=1, bins=bins, demo=True)
    assert demo.dtype == np.int64 and demo.tolist() == [3] * 5
