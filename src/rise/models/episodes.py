"""Training data from LeRobot datasets: episodes in memory at model resolution, normalisation
statistics, (context, actions, future) windows, and task-centric batch sampling.

Alignment: frame ``t`` of an episode carries ``action[t]``, the command sent after that frame was
observed. A dynamics window at ``t`` is the context frames ``t-K+1 .. t``, the actions
``t .. t+H-1`` and the future frames ``t+1 .. t+H``.

Task-centric batching (the paper's): each batch draws many samples from few groups — tasks, or
scenes (episodes: one randomised layout each) — so the model must tell apart *different actions
in the same scene* instead of learning scene variety. :class:`GroupedBatchSampler` does that;
``groups_per_batch=None`` gives plain uniform batches for the ablation.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from rise.data import DatasetReader


@dataclasses.dataclass(frozen=True)
class EpisodeArrays:
    dataset: str  # the dataset folder's name (the task, for rise collect datasets)
    index: int
    task: str
    success: bool
    images: np.ndarray  # (T, V, h, w, 3) uint8, views in camera order
    states: np.ndarray  # (T, J) float32
    actions: np.ndarray  # (T, J) float32
    metadata: dict = dataclasses.field(default_factory=dict, compare=False)  # the episode's rise_metadata

    @property
    def is_demo(self) -> bool:
        """A demonstration (scripted expert or teleoperated), not a perturbed or policy rollout."""
        return self.metadata.get("expert", "scripted") in ("scripted", "teleop", "human")

    @property
    def length(self) -> int:
        return len(self.states)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 frames (..., H, W, 3) -> (..., h, w, 3) with area averaging (no aliasing).

    The one resizer of every model input: datasets for training, rollouts, and the frames a
    deployed policy or value model sees (:func:`rise.models.value.preprocess_images`), so the
    same camera frame becomes the same tensor in training and at deployment."""
    h, w = size
    if frames.shape[-3:-1] == (h, w):
        return frames
    flat = frames.reshape(-1, *frames.shape[-3:])
    resized = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in flat])
    return resized.reshape(*frames.shape[:-3], h, w, 3)


def load_episodes(roots: Sequence[str | Path], size: tuple[int, int], cameras: Sequence[str] | None = None,
                  max_episodes: int | None = None) -> list[EpisodeArrays]:
    """Every episode of the datasets at ``roots`` (or the first ``max_episodes`` of each)."""
    episodes = []
    for root in roots:
        reader = DatasetReader(Path(root))
        names = tuple(cameras) if cameras is not None else reader.spec.camera_names
        missing = [c for c in names if c not in reader.spec.camera_names]
        if missing:
            raise ValueError(f"{root}: no camera {missing}; the dataset has {reader.spec.camera_names}")
        count = reader.num_episodes if max_episodes is None else min(max_episodes, reader.num_episodes)
        for index in range(count):
            episode = reader.episode(index)
            views = np.stack([resize_frames(episode.images[c], size) for c in names], axis=1)
            episodes.append(EpisodeArrays(Path(root).name, index, episode.task, bool(episode.success), views,
                                          episode.states.astype(np.float32),
                                          episode.actions.astype(np.float32), dict(episode.metadata)))
    return episodes


@dataclasses.dataclass(frozen=True)
class NormStats:
    """Per-dimension mean and std; ``normalize(x) = (x - mean) / std``."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, min_std: float = 1e-3) -> NormStats:
        values = np.asarray(values, dtype=np.float64)
        return cls(values.mean(axis=0).astype(np.float32),
                   np.maximum(values.std(axis=0), min_std).astype(np.float32))

    def normalize(self, x):
        return (x - self._like(self.mean, x)) / self._like(self.std, x)

    def denormalize(self, x):
        return x * self._like(self.std, x) + self._like(self.mean, x)

    @staticmethod
    def _like(value: np.ndarray, x):
        return torch.as_tensor(value, dtype=x.dtype, device=x.device) if torch.is_tensor(x) else value

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> NormStats:
        return cls(np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> NormStats:
        return cls.from_dict(json.loads(Path(path).read_text()))


def to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., h, w, 3) -> float (..., 3, h, w) in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    return tensor.movedim(-1, -3)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (..., 3, h, w) in [-1, 1] -> uint8 (..., h, w, 3)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().movedim(-3, -1).cpu().numpy()


class WindowDataset(torch.utils.data.Dataset):
    """(context, actions, future) windows of ``context_frames`` K and ``horizon`` H."""

    def __init__(self, episodes: Sequence[EpisodeArrays], context_frames: int, horizon: int,
                 action_stats: NormStats, group_by: str = "episode"):
        if group_by not in ("episode", "task"):
            raise ValueError(f"group_by: expected 'episode' or 'task', got {group_by!r}")
        self.episodes = list(episodes)
        self.k, self.h = context_frames, horizon
        self.stats = action_stats
        self.index = [(e, t) for e, episode in enumerate(self.episodes)
                      for t in range(context_frames - 1, episode.length - horizon)]
        if not self.index:
            raise ValueError(f"no window of {context_frames} context + {horizon} future frames fits")
        self.groups = [self._group(self.episodes[e], group_by) for e, _ in self.index]

    @staticmethod
    def _group(episode: EpisodeArrays, group_by: str) -> str:
        detail = episode.index if group_by == "episode" else episode.task
        return f"{episode.dataset}/{detail}"

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        e, t = self.index[item]
        episode = self.episodes[e]
        context = episode.images[t - self.k + 1:t + 1]  # (K, V, h, w, 3)
        future = episode.images[t + 1:t + 1 + self.h]
        actions = self.stats.normalize(episode.actions[t:t + self.h])
        return {"context": to_unit_range(context).transpose(0, 1),  # (V, K, 3, h, w)
                "future": to_unit_range(future).transpose(0, 1),
                "actions": torch.from_numpy(np.asarray(actions, np.float32))}


class GroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of ``batch_size`` items drawn from ``groups_per_batch`` random groups (task-centric
    batching); ``groups_per_batch=None`` draws uniformly over all items. Deterministic per seed."""

    def __init__(self, groups: Sequence[str], batch_size: int, groups_per_batch: int | None,
                 batches_per_epoch: int, seed: int = 0):
        self.batch_size = batch_size
        self.groups_per_batch = groups_per_batch
        self.batches = batches_per_epoch
        self.seed = seed
        members: dict[str, list[int]] = {}
        for item, group in enumerate(groups):
            members.setdefault(group, []).append(item)
        self._members = [np.asarray(m) for m in members.values()]
        self._count = len(groups)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.batches):
            yield self.batch(step)

    def batch(self, step: int) -> list[int]:
        """The batch of training step ``step``: a function of (seed, step) only, so a resumed
        run draws exactly the batches the uninterrupted run would have."""
        rng = np.random.default_rng([self.seed, step])
        if self.groups_per_batch is None:
            return rng.integers(0, self._count, self.batch_size).tolist()
        chosen = rng.choice(len(self._members), min(self.groups_per_batch, len(self._members)), replace=False)
        pool = np.concatenate([self._members[g] for g in chosen])
        return rng.choice(pool, self.batch_size, replace=len(pool) < self.batch_size).tolist()
