"""The imagination environment: the simulator's interface, backed by the learned world model.

``reset`` starts from a real state sampled from the dataset (its last K frames of every view);
``step_chunk(actions)`` asks the dynamics model for the H future frames of every view and the
value model for V of each imagined frame. With ``uncertainty_samples`` > 1 it draws that many
samples of the chunk (different noise) and reports their disagreement (mean per-pixel std, in
[-1, 1] pixel units) as ``info["uncertainty"]``; the first sample is the one returned.
Rollout code written against :class:`SimEnv` (``reset`` / ``step_chunk`` / ``joint_names`` /
``control_period_s`` / ``close``) runs unchanged on either — with the simulator as an oracle world
model, or with the learned one.

Joint state: the dynamics model predicts images, not joints. The arm is position controlled,
so after a chunk the imagined joint state is the chunk's last commanded target.

Example::

    env = ImaginationEnv(world_model, episodes)
    observation, info = env.reset(seed=0)
    observations, reward, terminated, truncated, info = env.step_chunk(actions)  # (H, J)
    info["values"]  # V of each imagined frame
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from rise.models.episodes import EpisodeArrays, NormStats, to_uint8, to_unit_range
from rise.models.flow_matching import sample


@dataclasses.dataclass
class WorldModel:
    """The two parts of the compositional world model, ready for inference."""

    dynamics: torch.nn.Module
    action_stats: NormStats
    value: torch.nn.Module | None = None
    sampling_steps: int = 10
    instruction: str | None = None

    @property
    def context_frames(self) -> int:
        return int(self.dynamics.config.context_frames)

    @property
    def horizon(self) -> int:
        return int(self.dynamics.config.horizon)

    @torch.no_grad()
    def imagine(self, context: torch.Tensor, actions: np.ndarray, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """context (B, V, K, 3, h, w) in [-1, 1], actions (B, H, J) absolute -> (B, V, H, 3, h, w)."""
        normalised = self.action_stats.normalize(torch.as_tensor(np.asarray(actions), dtype=torch.float32))
        return sample(self.dynamics, context, normalised, steps=self.sampling_steps, generator=generator)

    @torch.no_grad()
    def values(self, frames: torch.Tensor) -> np.ndarray:
        """frames (B, V, T, 3, h, w) -> V (B, T); zeros without a value model."""
        b, v, t = frames.shape[:3]
        if self.value is None:
            return np.zeros((b, t), np.float32)
        flat = frames.transpose(1, 2).reshape(b * t, v, *frames.shape[3:])
        instructions = None if self.instruction is None else [self.instruction] * (b * t)
        out = self.value(flat, instructions) if instructions is not None else self.value(flat)
        return out.reshape(b, t).float().cpu().numpy()


class ImaginationEnv:
    """One imagined rollout at a time, with the simulator's reset / step_chunk interface."""

    def __init__(self, world_model: WorldModel, episodes: Sequence[EpisodeArrays],
                 camera_names: Sequence[str], joint_names: Sequence[str], control_rate_hz: float = 30.0,
                 max_chunks: int = 20, uncertainty_samples: int = 1):
        if uncertainty_samples < 1:
            raise ValueError(f"uncertainty_samples must be >= 1, got {uncertainty_samples}")
        if not episodes:
            raise ValueError("the imagination environment needs dataset episodes to start from")
        self.world_model = world_model
        self.episodes = list(episodes)
        self.camera_names = tuple(camera_names)
        self.joint_names = tuple(joint_names)
        self.control_period_s = 1.0 / control_rate_hz
        self.max_chunks = max_chunks
        self.uncertainty_samples = uncertainty_samples
        k = world_model.context_frames
        self._starts = [(e, t) for e, ep in enumerate(self.episodes) for t in range(k - 1, ep.length)]
        self._rng = np.random.default_rng()
        self._generator = torch.Generator()
        self._context: torch.Tensor | None = None
        self._state = np.zeros(len(self.joint_names), np.float32)
        self._chunks = 0
        self._time_s = 0.0
        self.start: tuple[int, int] | None = None

    def reset(self, seed: int | None = None, start: tuple[int, int] | None = None) -> tuple[dict, dict]:
        """Start from a real state: ``start`` = (episode, frame), or one drawn at random."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._generator.manual_seed(seed)
        if start is None:
            start = self._starts[int(self._rng.integers(len(self._starts)))]
        e, t = start
        episode = self.episodes[e]
        k = self.world_model.context_frames
        if not k - 1 <= t < episode.length:
            raise ValueError(f"start frame {t} of episode {e}: needs {k - 1} <= frame < {episode.length}")
        self._context = to_unit_range(episode.images[t - k + 1:t + 1]).transpose(0, 1).unsqueeze(0)
        self._state = episode.states[t].copy()
        self._chunks, self._time_s, self.start = 0, 0.0, (e, t)
        value = float(self.world_model.values(self._context[:, :, -1:])[0, 0])
        return self._observation(self._context[0, :, -1]), {"value": value, "start": self.start,
                                                              "task": episode.task}

    def step_chunk(self, actions: np.ndarray) -> tuple[list[dict], float, bool, bool, dict]:
        """Imagine an action chunk (H, J); returns (observations, reward, terminated, truncated, info)."""
        if self._context is None:
            raise RuntimeError("call reset() first")
        actions = np.asarray(actions, dtype=np.float32)
        h = self.world_model.horizon
        if actions.shape != (h, len(self.joint_names)):
            raise ValueError(f"actions must have shape ({h}, {len(self.joint_names)}), got {actions.shape}")
        n = self.uncertainty_samples
        samples = self.world_model.imagine(self._context.expand(n, *self._context.shape[1:]),
                                           np.repeat(actions[None], n, axis=0), self._generator)
        future = samples[:1]  # (1, V, H, ...); the others only measure the disagreement
        uncertainty = float(samples.std(dim=0).mean()) if n > 1 else 0.0
        values = self.world_model.values(future)[0]
        k = self.world_model.context_frames
        self._context = torch.cat([self._context, future], dim=2)[:, :, -k:]
        observations = []
        for i in range(h):
            self._time_s += self.control_period_s
            observations.append(self._observation(future[0, :, i], actions[i]))
        self._state = actions[-1].copy()
        self._chunks += 1
        truncated = self._chunks >= self.max_chunks
        return observations, 0.0, False, truncated, {"values": values.tolist(), "imagined": True,
                                                      "chunks": self._chunks, "uncertainty": uncertainty}

    def _observation(self, frames: torch.Tensor, state: np.ndarray | None = None) -> dict:
        images = to_uint8(frames)  # (V, h, w, 3)
        return {"state": (self._state if state is None else state).astype(np.float32),
                "images": {name: images[i] for i, name in enumerate(self.camera_names)},
                "time_s": self._time_s}

    def close(self) -> None:
        self._context = None

    def __enter__(self) -> ImaginationEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
