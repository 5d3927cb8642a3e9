"""Imagined rollouts for the improvement loop, against any environment with the simulator's
``reset`` / ``step_chunk`` interface (the learned imagination, or the simulator as an oracle).

A rollout starts from a real state; the rollout policy (the EMA learner) asks for the best bin and
proposes a chunk; the environment returns the next frames; A = mean V(next frames) - V(start);
the next chunk starts from the last imagined frame, at most ``feedback_steps`` times in a row.
Chunks whose world-model uncertainty (``info["uncertainty"]``: disagreement between samples)
passes ``uncertainty_threshold`` end the rollout and are not learned from.

Example::

    stats = RolloutStats()
    samples = run_rollouts(env, policy, value_model, count=16, feedback_steps=2, rng=rng, stats=stats)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from rise.models.episodes import resize_frames
from rise.models.value import preprocess_images
from rise.policy.policy_io import Policy


@dataclasses.dataclass
class RolloutStats:
    rollouts: int = 0
    chunks: int = 0
    cut: int = 0  # chunks dropped for uncertainty above the threshold
    advantages: list[float] = dataclasses.field(default_factory=list)
    uncertainties: list[float] = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        return {"rollouts": self.rollouts, "chunks": self.chunks, "cut": self.cut,
                "mean_advantage": float(np.mean(self.advantages)) if self.advantages else 0.0,
                "mean_uncertainty": float(np.mean(self.uncertainties)) if self.uncertainties else 0.0}


@torch.no_grad()
def observation_values(value_model, observations: Sequence[dict], cameras: Sequence[str]) -> np.ndarray:
    """V of each observation (frames resized to the value model's input)."""
    frames = np.stack([_frames(o, cameras) for o in observations])  # (T, V, h, w, 3)
    pixels = preprocess_images(frames, int(value_model.config.image_size))
    return value_model(pixels).float().cpu().numpy()


def _frames(observation: dict, cameras: Sequence[str]) -> np.ndarray:
    return np.stack([observation["images"][c] for c in cameras])


def run_rollouts(env, policy: Policy, value_model, *, count: int, feedback_steps: int,
                 rng: np.random.Generator, stats: RolloutStats, uncertainty_threshold: float | None = None,
                 policy_steps: int = 10) -> dict[str, np.ndarray] | None:
    """``count`` rollouts; returns their (images, states, actions, bins) samples, or None if none kept."""
    if feedback_steps < 0:
        raise ValueError(f"feedback_steps must be >= 0, got {feedback_steps}")
    cameras = policy.cameras
    if cameras is None:
        raise ValueError("the rollout policy needs its camera names (Policy.cameras)")
    kept: dict[str, list] = {"images": [], "states": [], "actions": [], "bins": []}
    for _ in range(count):
        observation, info = env.reset(seed=int(rng.integers(2**31)))
        start_value = info.get("value")
        if start_value is None:
            start_value = float(observation_values(value_model, [observation], cameras)[0])
        stats.rollouts += 1
        for _chunk in range(1 + feedback_steps):
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            chunk = policy.predict(_frames(observation, cameras), observation["state"], steps=policy_steps,
                                   generator=generator)
            observations, _, terminated, truncated, info = env.step_chunk(chunk)
            values = info.get("values")
            values = (np.asarray(values, np.float32)[:len(observations)] if values is not None
                      else observation_values(value_model, observations, cameras))
            uncertainty = float(info.get("uncertainty", 0.0))
            stats.uncertainties.append(uncertainty)
            if uncertainty_threshold is not None and uncertainty > uncertainty_threshold:
                stats.cut += 1
                break
            advantage = float(np.mean(values) - start_value)
            stats.chunks += 1
            stats.advantages.append(advantage)
            kept["images"].append(_frames(observation, cameras))
            kept["states"].append(np.asarray(observation["state"], np.float32))
            kept["actions"].append(chunk)
            kept["bins"].append(int(policy.bins.bin_of(advantage)))
            if terminated or truncated or not observations:
                break
            observation, start_value = observations[-1], float(values[-1])
    if not kept["bins"]:
        return None
    size = policy.config.image_size
    images = np.stack(kept["images"])
    if images.shape[2:4] != (size, size):
        flat = resize_frames(images.reshape(-1, *images.shape[2:]), (size, size))
        images = flat.reshape(*images.shape[:2], size, size, 3)
    return {"images": images, "states": np.stack(kept["states"]),
            "actions": np.stack(kept["actions"]).astype(np.float32),
            "bins": np.asarray(kept["bins"], np.int64)}


class ExpertStart:
    """The simulator as an oracle world model, started like the imagination: from a state a demo
    reaches (reset, then the scripted expert acts for a random number of ticks, 0 .. ``max_ticks``)."""

    def __init__(self, env, max_ticks: int = 240):
        self.env = env
        self.max_ticks = max_ticks
        self.joint_names = env.joint_names
        self.control_period_s = env.control_period_s

    def reset(self, seed: int | None = None) -> tuple[dict, dict]:
        rng = np.random.default_rng(seed)
        observation, info = self.env.reset(seed=seed)
        expert = self.env.task.expert(self.env, rng)
        for _ in range(int(rng.integers(0, self.max_ticks + 1))):
            observation, _, terminated, truncated, info = self.env.step(expert.act(self.env))
            if terminated or truncated:
                observation, info = self.env.reset(seed=seed)
                break
        return observation, info

    def step_chunk(self, actions: np.ndarray):
        return self.env.step_chunk(actions)

    def close(self) -> None:
        self.env.close()
