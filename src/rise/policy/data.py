"""Policy training data: (observation, action chunk, advantage bin) samples from real episodes
(labelled with the frozen value model) and from imagined rollouts, drawn as batches by step number.

Labels (the RECAP recipe): for frame t of a real episode, A_t = mean V(t+1 .. t+H) - V(t) with
the value model; the advantages of all non-demo frames set the bin range (their 2nd..98th
percentile, unless the range is given), cut into ``num_bins`` uniform bins; demonstrations get the
best bin. A share ``unknown_fraction`` of training samples is shown the "unknown" bin, so the
policy can also act without one.

Example::

    labels = label_episodes(episodes, value_model, horizon=8, num_bins=10)
    offline = OfflineSamples(episodes, labels.bins_per_episode, horizon=8)
    batch = offline.draw(np.random.default_rng(0), 32)      # numpy arrays
    tensors = to_tensors(batch, state_stats, action_stats)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from rise.models.episodes import EpisodeArrays, NormStats, resize_frames, to_unit_range
from rise.models.evaluate import episode_values
from rise.policy.advantage import AdvantageBins, episode_advantages


@dataclasses.dataclass(frozen=True)
class Labels:
    """Advantage labels of a list of episodes."""

    bins: AdvantageBins
    values_per_episode: list[np.ndarray]  # V(t) of every frame
    advantages_per_episode: list[np.ndarray]  # A_t of every frame
    bins_per_episode: list[np.ndarray]  # bin index of every frame (demos: the best bin)

    def histogram(self) -> list[int]:
        """How many frames fall in each bin (unknown not counted)."""
        every = np.concatenate(self.bins_per_episode)
        return np.bincount(every, minlength=self.bins.num_bins)[:self.bins.num_bins].tolist()


def advantage_range(advantages: Sequence[np.ndarray], low_q: float = 2.0, high_q: float = 98.0
                    ) -> tuple[float, float]:
    """The (low, high) percentiles of the advantages; a tiny symmetric range when they are all equal."""
    every = np.concatenate([np.asarray(a, np.float64) for a in advantages]) if advantages else np.zeros(1)
    low, high = np.percentile(every, [low_q, high_q])
    if high - low < 1e-6:
        low, high = low - 1e-3, high + 1e-3
    return float(low), float(high)


def episode_values_at(value_model, episodes: Sequence[EpisodeArrays]) -> list[np.ndarray]:
    """V of every frame of each episode (frames are resized to the value model's input size)."""
    size = int(value_model.config.image_size)
    values = []
    for episode in episodes:
        if episode.images.shape[2:4] != (size, size):
            flat = episode.images.reshape(-1, *episode.images.shape[2:])
            resized = resize_frames(flat, (size, size)).reshape(*episode.images.shape[:2], size, size, 3)
            episode = dataclasses.replace(episode, images=resized)
        values.append(episode_values(value_model, episode))
    return values


def label_episodes(episodes: Sequence[EpisodeArrays], value_model, horizon: int, num_bins: int = 10,
                   value_range: tuple[float, float] | None = None,
                   bins: AdvantageBins | None = None) -> Labels:
    """Advantage bins of every frame of ``episodes`` (demos: the best bin). The bins are ``bins``
    when given, else ``num_bins`` uniform bins over ``value_range`` (None: the advantages' range)."""
    values = episode_values_at(value_model, episodes)
    advantages = [episode_advantages(v, horizon) for v in values]
    if bins is None:
        learned_from = [a for a, e in zip(advantages, episodes, strict=True) if not e.is_demo] or advantages
        low, high = value_range if value_range is not None else advantage_range(learned_from)
        bins = AdvantageBins.uniform(num_bins, low, high)
    labelled = [np.full(e.length, bins.best, np.int64) if e.is_demo else np.asarray(bins.bin_of(a), np.int64)
                for e, a in zip(episodes, advantages, strict=True)]
    return Labels(bins, values, advantages, labelled)


def action_chunk(actions: np.ndarray, t: int, horizon: int) -> np.ndarray:
    """actions[t : t + H], padded with the last action past the episode end (the arm holds)."""
    chunk = actions[t:t + horizon]
    if len(chunk) < horizon:
        chunk = np.concatenate([chunk, np.repeat(actions[-1:], horizon - len(chunk), axis=0)])
    return chunk


class OfflineSamples:
    """Every frame of the real episodes with its label; draws batches without copying the dataset."""

    def __init__(self, episodes: Sequence[EpisodeArrays], bins_per_episode: Sequence[np.ndarray],
                 horizon: int):
        if not episodes:
            raise ValueError("no episodes to train the policy on")
        self.episodes = list(episodes)
        self.bins = list(bins_per_episode)
        self.horizon = horizon
        self.index = np.asarray([(e, t) for e, ep in enumerate(self.episodes) for t in range(ep.length)])

    def __len__(self) -> int:
        return len(self.index)

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        picks = self.index[rng.integers(0, len(self.index), n)]
        return {"images": np.stack([self.episodes[e].images[t] for e, t in picks]),
                "states": np.stack([self.episodes[e].states[t] for e, t in picks]),
                "actions": np.stack([action_chunk(self.episodes[e].actions, t, self.horizon)
                                     for e, t in picks]),
                "bins": np.asarray([self.bins[e][t] for e, t in picks], np.int64)}


class SampleBuffer:
    """Imagined (observation, chunk, bin) samples, kept as arrays (at most ``capacity``, oldest first out)."""

    KEYS = ("images", "states", "actions", "bins")

    def __init__(self, capacity: int = 50_000):
        self.capacity = capacity
        self.arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return 0 if self.arrays is None else len(self.arrays["bins"])

    def add(self, samples: dict[str, np.ndarray]) -> None:
        if self.arrays is None:
            self.arrays = {k: np.asarray(samples[k]) for k in self.KEYS}
        else:
            self.arrays = {k: np.concatenate([self.arrays[k], samples[k]])[-self.capacity:]
                           for k in self.KEYS}

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        if self.arrays is None:
            raise ValueError("the imagined-sample buffer is empty")
        picks = rng.integers(0, len(self), n)
        return {k: v[picks] for k, v in self.arrays.items()}


def mixed_batch(rng: np.random.Generator, batch_size: int, offline: OfflineSamples,
                imagined: SampleBuffer | None, offline_ratio: float) -> dict[str, np.ndarray]:
    """A batch with round(offline_ratio * batch_size) offline samples and the rest imagined."""
    if imagined is None or len(imagined) == 0:
        return offline.draw(rng, batch_size)
    n_offline = int(round(offline_ratio * batch_size))
    parts = [p for p in (offline.draw(rng, n_offline) if n_offline else None,
                         imagined.draw(rng, batch_size - n_offline) if n_offline < batch_size else None) if p]
    return {k: np.concatenate([p[k] for p in parts]) for k in SampleBuffer.KEYS}


def to_tensors(batch: dict[str, np.ndarray], state_stats: NormStats, action_stats: NormStats,
               image_size: int, rng: np.random.Generator | None = None, unknown_fraction: float = 0.0,
               unknown_bin: int | None = None) -> dict[str, torch.Tensor]:
    """Model inputs: images (B, V, 3, S, S) in [-1, 1], normalised state and actions, bins (some
    replaced by ``unknown_bin`` with probability ``unknown_fraction``)."""
    images = to_unit_range(resize_frames(batch["images"], (image_size, image_size)))
    bins = batch["bins"].copy()
    if unknown_fraction > 0 and rng is not None and unknown_bin is not None:
        bins[rng.random(len(bins)) < unknown_fraction] = unknown_bin
    return {"images": images,
            "state": torch.as_tensor(state_stats.normalize(batch["states"].astype(np.float32))),
            "actions": torch.as_tensor(action_stats.normalize(batch["actions"].astype(np.float32))),
            "bins": torch.as_tensor(bins)}
