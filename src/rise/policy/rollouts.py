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
    samples = run_rollouts(env, policy, value_model, seeds=[11, 12], feedback_steps=2, stats=stats)

:class:`RolloutWorkers` runs them over processes or Ray actors, with the same samples per seed.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from rise.models.checkpoint import read_checkpoint
from rise.models.episodes import resize_frames
from rise.models.value import preprocess_images
from rise.policy.fanout import Fanout, folder_files, load_shipped
from rise.policy.policy_io import FILES, Policy


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


def rollout_seeds(rng: np.random.Generator, count: int) -> list[int]:
    """The seeds of ``count`` rollouts, drawn up front (they do not depend on how rollouts are split)."""
    return [int(s) for s in rng.integers(2**31, size=count)]


@torch.no_grad()
def observation_values(value_model, observations: Sequence[dict], cameras: Sequence[str]) -> np.ndarray:
    """V of each observation (frames resized to the value model's input)."""
    frames = np.stack([_frames(o, cameras) for o in observations])  # (T, V, h, w, 3)
    pixels = preprocess_images(frames, int(value_model.config.image_size))
    return value_model(pixels).float().cpu().numpy()


def _frames(observation: dict, cameras: Sequence[str]) -> np.ndarray:
    return np.stack([observation["images"][c] for c in cameras])


def run_rollouts(env, policy: Policy, value_model, *, feedback_steps: int, stats: RolloutStats,
                 count: int | None = None, rng: np.random.Generator | None = None,
                 seeds: Sequence[int] | None = None, uncertainty_threshold: float | None = None,
                 policy_steps: int = 10) -> dict[str, np.ndarray] | None:
    """One rollout per seed (or ``count`` seeds drawn from ``rng``); returns their (images, states,
    actions, bins) samples, or None if none kept. A rollout depends only on its seed (the start
    state and every chunk's noise come from it), so a set of seeds can be split across workers."""
    if feedback_steps < 0:
        raise ValueError(f"feedback_steps must be >= 0, got {feedback_steps}")
    if seeds is None:
        if count is None or rng is None:
            raise ValueError("give the rollouts' seeds, or count and rng to draw them")
        seeds = rollout_seeds(rng, count)
    cameras = policy.cameras
    if cameras is None:
        raise ValueError("the rollout policy needs its camera names (Policy.cameras)")
    kept: dict[str, list] = {"images": [], "states": [], "actions": [], "bins": []}
    for seed in seeds:
        chunk_rng = np.random.default_rng([int(seed), 1])  # apart from the environment's own use of seed
        observation, info = env.reset(seed=int(seed))
        start_value = info.get("value")
        if start_value is None:
            start_value = float(observation_values(value_model, [observation], cameras)[0])
        stats.rollouts += 1
        for _chunk in range(1 + feedback_steps):
            generator = torch.Generator().manual_seed(int(chunk_rng.integers(2**31)))
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


def merge_stats(stats: RolloutStats, parts: Sequence[RolloutStats]) -> RolloutStats:
    """Add the counts and lists of ``parts`` (in order) to ``stats``."""
    for part in parts:
        stats.rollouts += part.rollouts
        stats.chunks += part.chunks
        stats.cut += part.cut
        stats.advantages += part.advantages
        stats.uncertainties += part.uncertainties
    return stats


def policy_files(policy: Policy) -> dict[str, bytes]:
    """The policy as checkpoint bytes (its files and a manifest), to ship to rollout workers."""
    with tempfile.TemporaryDirectory(prefix="rise-policy-") as tmp:
        return folder_files(policy.save(Path(tmp) / "policy", step=0))


class RolloutWorkers:
    """Rollouts fanned out over ``workers`` processes, or Ray actors with ``ray_address`` (see
    :mod:`rise.policy.fanout`). Each worker calls ``build(*build_args)`` once for its (environment,
    value model); :meth:`run` ships the current policy's files and splits the seeds into one
    contiguous block per worker. The samples are those of :func:`run_rollouts` over all the seeds in
    one process: each rollout depends on its seed only.

    Example::

        with RolloutWorkers(build_world, (task,), workers=2, ray_address="local") as workers:
            samples = workers.run(policy, seeds, feedback_steps=2, stats=stats)
    """

    def __init__(self, build: Callable, build_args: tuple = (), *, workers: int = 1,
                 ray_address: str | None = None):
        self.fanout = Fanout(workers, ray_address, setup=build, setup_args=build_args)

    def run(self, policy: Policy, seeds: Sequence[int], *, feedback_steps: int, stats: RolloutStats,
            uncertainty_threshold: float | None = None,
            policy_steps: int = 10) -> dict[str, np.ndarray] | None:
        """:func:`run_rollouts` of ``policy`` over ``seeds`` on the workers; adds to ``stats``."""
        seeds = [int(s) for s in seeds]
        if not seeds:
            return None
        blocks = [b.tolist() for b in np.array_split(seeds, min(self.fanout.workers, len(seeds)))]
        shipped = policy if self.fanout.mode == "inline" else policy_files(policy)
        settings = {"feedback_steps": feedback_steps, "uncertainty_threshold": uncertainty_threshold,
                    "policy_steps": policy_steps}
        parts = self.fanout.map(_rollout_block, blocks, shared=(shipped, settings))
        merge_stats(stats, [part_stats for _, part_stats in parts])
        kept = [samples for samples, _ in parts if samples is not None]
        if not kept:
            return None
        return {k: np.concatenate([samples[k] for samples in kept]) for k in kept[0]}

    def close(self) -> None:
        self.fanout.close()

    def __enter__(self) -> RolloutWorkers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rollout_block(world: tuple, shared: tuple, seeds: list[int]) -> tuple[dict | None, RolloutStats]:
    env, value_model = world
    shipped, settings = shared
    if isinstance(shipped, dict):
        shipped = load_shipped(shipped, load_verified_policy)
    stats = RolloutStats()
    samples = run_rollouts(env, shipped, value_model, seeds=seeds, stats=stats, **settings)
    return samples, stats


def load_verified_policy(folder: Path) -> Policy:
    """:meth:`Policy.load` from the bytes that were checked against the folder's manifest."""
    return Policy.load(read_checkpoint(folder, kind="policy", keep=FILES))


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
