"""``rise evaluate``: a policy checkpoint's success rate in the simulator (headless, no ROS).

Each episode resets the task with its own seed and runs the policy closed loop: it proposes a
chunk from the current frames and joint state (asking for the best advantage bin), the first
``execute`` steps of the chunk are run, and so on until success, failure or the task's step
limit. Episodes are spread over ``workers`` processes, or Ray actors with ``ray_address``
(:mod:`rise.policy.fanout`); each episode depends only on its seed. Reported: success rate with
its 95 % Wilson interval, the mean sub-goal score out of 10, and the first ``videos`` episodes as
mp4.

Example::

    result = evaluate_policy("rise_runs/checkpoints/policy/step_000600", "box_close", episodes=20)
    print(result["success_rate"], result["wilson_95"])
    result = evaluate_policy(folder, "box_close", episodes=20, workers=4, ray_address="local")  # Ray
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from rise.models.checkpoint import read_checkpoint
from rise.models.evaluate import write_side_by_side
from rise.policy.fanout import Fanout, folder_files, load_shipped
from rise.policy.policy_io import FILES, Policy
from rise.policy.rollouts import load_verified_policy


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default); (0, 1) for no trials."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def run_episode(policy: Policy, env, seed: int, execute: int, flow_steps: int = 10,
                record: bool = False, max_ticks: int | None = None) -> dict:
    """One closed-loop episode; returns success, score, ticks (and frames when ``record``).
    ``max_ticks`` ends it early (before the task's own limit: for quick tests)."""
    observation, info = env.reset(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    frames = []
    terminated = truncated = False
    while not (terminated or truncated):
        images = np.stack([observation["images"][c] for c in policy.cameras])
        chunk = policy.predict(images, observation["state"], steps=flow_steps, generator=generator)
        steps = execute if max_ticks is None else max(1, min(execute, max_ticks - env.tick))
        observations, _, terminated, truncated, info = env.step_chunk(chunk[:steps])
        truncated = truncated or (max_ticks is not None and env.tick >= max_ticks)
        if record:
            frames += [np.stack([o["images"][c] for c in policy.cameras]) for o in observations]
        observation = observations[-1]
    return {"seed": seed, "success": bool(info["success"]), "score": int(info["score"]), "ticks": env.tick,
            "frames": np.stack(frames) if record else None}


def load_policy(source: str | Path | dict[str, bytes]) -> Policy:
    """A policy from its folder, or from the folder's shipped bytes (:func:`~rise.policy.fanout.folder_files`:
    written to a temporary folder, verified against its manifest, loaded)."""
    return Policy.load(source) if not isinstance(source, dict) else load_shipped(source, load_verified_policy)


class _Evaluator:
    """One worker's policy and simulator, built once."""

    def __init__(self, source: str | dict[str, bytes], task: str):
        from rise.sim.env import SimEnv

        self.policy = load_policy(source)
        self.env = SimEnv(task)

    def close(self) -> None:
        self.env.close()


def _run_shard(worker: _Evaluator, settings: tuple, seeds: list[int]) -> list[dict]:
    execute, flow_steps, record_seeds, max_ticks = settings
    return [run_episode(worker.policy, worker.env, seed, execute, flow_steps, seed in record_seeds, max_ticks)
            for seed in seeds]


def evaluate_policy(folder: str | Path, task: str, episodes: int = 20, *, seed: int = 1000, workers: int = 1,
                    execute: int | None = None, flow_steps: int = 10, videos: int = 2,
                    output: Path | None = None, ray_address: str | None = None,
                    max_ticks: int | None = None) -> dict:
    """Run ``episodes`` episodes of the policy at ``folder`` on ``task``; a summary dict.

    ``workers`` > 1 spreads the episodes over processes; ``ray_address`` (``"local"`` or a cluster
    address, see :mod:`rise.policy.fanout`) over that many Ray actors instead, which get the
    checkpoint's files (bytes, verified on arrival), so the folder need not be on their machines.
    Episodes are deterministic per seed: the results do not depend on how they are spread.
    ``max_ticks`` cuts every episode at that many control ticks (tests; None: the task's limit).
    """
    if episodes < 1 or workers < 1:
        raise ValueError(f"episodes and workers must be >= 1, got {episodes} and {workers}")
    if max_ticks is not None and max_ticks < 1:
        raise ValueError(f"max_ticks must be >= 1, got {max_ticks}")
    checkpoint = read_checkpoint(folder, kind="policy", keep=FILES)
    manifest, policy = checkpoint.manifest, Policy.load(checkpoint)
    if policy.cameras is None:
        raise ValueError(f"{folder}: the policy does not name its cameras")
    execute = execute or max(1, policy.config.horizon // 2)
    seeds = [seed + i for i in range(episodes)]
    record = set(seeds[:videos]) if output is not None else set()
    workers = min(workers, episodes)
    source = folder_files(folder) if ray_address is not None else str(folder)
    started = time.monotonic()
    with Fanout(workers, ray_address, setup=_Evaluator, setup_args=(source, task)) as fanout:
        shards = fanout.map(_run_shard, [seeds[i::workers] for i in range(workers)],
                            shared=(execute, flow_steps, record, max_ticks))
    results = [r for shard in shards for r in shard]
    results.sort(key=lambda r: r["seed"])
    successes = sum(r["success"] for r in results)
    low, high = wilson_interval(successes, len(results))
    if output is not None:
        output = Path(output)
        for r in results:
            if r["frames"] is not None:
                write_side_by_side(output / f"{task}_seed{r['seed']}.mp4", [(r["frames"],)], scale=1, fps=30)
    return {"policy": str(folder), "policy_step": manifest.step, "task": task, "episodes": len(results),
            "successes": successes, "success_rate": successes / len(results), "wilson_95": [low, high],
            "mean_score": float(np.mean([r["score"] for r in results])), "execute": execute,
            "seconds": round(time.monotonic() - started, 1),
            "per_episode": [{k: r[k] for k in ("seed", "success", "score", "ticks")} for r in results]}
