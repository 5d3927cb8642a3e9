"""Feature statistics in LeRobot's shape: per-feature min/max/mean/std/count.

Per episode, :func:`array_stats` (state, action, index and stamp columns) and :class:`ImageStats`
(running per-channel image stats in [0, 1]) produce a :data:`Stats` dict; :func:`aggregate_stats`
pools episodes into dataset stats. :func:`stats_to_row` / :func:`stats_from_row` store per-episode
stats as ``stats/<feature>/<stat>`` columns of ``meta/episodes``; :func:`stats_to_json` gives the
plain lists of ``meta/stats.json``. Pure numpy: no files, no encoders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Stats = dict[str, dict[str, np.ndarray]]  # feature -> {"min", "max", "mean", "std", "count"}

_STATS_PIXELS = 4096  # image stats use about this many pixels per frame (strided subsample)


def array_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """min/max/mean/std over frames of a (T,) or (T, D) array; scalars get shape (1,) like LeRobot."""
    data = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return {"min": data.min(axis=0), "max": data.max(axis=0), "mean": data.mean(axis=0),
            "std": data.std(axis=0), "count": np.array([len(data)], dtype=np.int64)}


class ImageStats:
    """Running per-channel min/max/mean/std of an image stream, in [0, 1] like LeRobot."""

    def __init__(self):
        self.frames = 0
        self._pixels = 0
        self._sum = np.zeros(3)
        self._sum_sq = np.zeros(3)
        self._min = np.full(3, np.inf)
        self._max = np.full(3, -np.inf)

    def update(self, image: np.ndarray) -> None:
        """Add a strided subsample of one frame."""
        step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / _STATS_PIXELS)))
        pixels = image[::step, ::step].reshape(-1, 3).astype(np.float64) / 255.0
        self.frames += 1
        self._pixels += len(pixels)
        self._sum += pixels.sum(axis=0)
        self._sum_sq += np.square(pixels).sum(axis=0)
        self._min = np.minimum(self._min, pixels.min(axis=0))
        self._max = np.maximum(self._max, pixels.max(axis=0))

    def stats(self) -> dict[str, np.ndarray]:
        """Stats with LeRobot's image shape (3, 1, 1); count = frames."""
        mean = self._sum / self._pixels
        std = np.sqrt(np.maximum(self._sum_sq / self._pixels - np.square(mean), 0.0))
        return {"min": self._min.reshape(3, 1, 1), "max": self._max.reshape(3, 1, 1),
                "mean": mean.reshape(3, 1, 1), "std": std.reshape(3, 1, 1),
                "count": np.array([self.frames], dtype=np.int64)}


def aggregate_stats(parts: Sequence[Stats]) -> Stats:
    """Combine per-episode stats into dataset stats (count-weighted mean and pooled variance)."""
    out: Stats = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        items = [part[key] for part in parts if key in part]
        counts = np.array([float(item["count"][0]) for item in items])
        weights = counts.reshape((-1,) + (1,) * np.ndim(items[0]["mean"])) / counts.sum()
        means = np.stack([item["mean"] for item in items])
        variances = np.stack([np.square(item["std"]) for item in items])
        mean = (weights * means).sum(axis=0)
        variance = (weights * (variances + np.square(means - mean))).sum(axis=0)
        out[key] = {"min": np.min(np.stack([item["min"] for item in items]), axis=0),
                    "max": np.max(np.stack([item["max"] for item in items]), axis=0),
                    "mean": mean, "std": np.sqrt(variance),
                    "count": np.array([int(counts.sum())], dtype=np.int64)}
    return out


def stats_to_row(stats: Stats) -> dict[str, list]:
    """Per-episode stats as episodes-metadata columns ``stats/<feature>/<stat>`` (LeRobot's names)."""
    return {f"stats/{key}/{name}": np.asarray(value).tolist()
            for key, item in stats.items() for name, value in item.items()}


def stats_from_row(row: Mapping[str, Any]) -> Stats:
    """Inverse of :func:`stats_to_row`."""
    stats: Stats = {}
    for column, value in row.items():
        if column.startswith("stats/"):
            key, name = column[len("stats/"):].rsplit("/", 1)
            stats.setdefault(key, {})[name] = np.asarray(value)
    return stats


def stats_to_json(stats: Stats) -> dict[str, dict[str, list]]:
    """Stats as the plain lists of ``stats.json``."""
    return {key: {name: np.asarray(value).tolist() for name, value in item.items()}
            for key, item in stats.items()}
