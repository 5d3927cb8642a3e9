"""Collect episodes in the simulator with the scripted expert, through the recorder code path.

Example::

    report = collect("pack", episodes=20, root=Path("rise_runs/data/pack"))
    print(report.expert_success_rate, report.dropped)

Every control tick the command sent, the joint state and each camera's frame go through the same
:class:`~rise.data.recorder.Recorder` as the ROS recorder node uses, stamped with simulation
time. ``failing_fraction`` of the episodes use a :class:`~rise.sim.perturb.PerturbedExpert`
(noise, fumbles) to give the value model failures; the rest are clean demonstrations.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rise.config import RobotConfig, load_robot
from rise.data.lerobot_format import DatasetSpec
from rise.data.recorder import COMMAND_STREAM, STATE_STREAM, Recorder
from rise.data.writer import DatasetWriter
from rise.sim.env import SimEnv
from rise.sim.perturb import PerturbedExpert


@dataclasses.dataclass(frozen=True)
class CollectReport:
    root: Path
    episodes: int
    expert_episodes: int
    expert_successes: int
    perturbed_episodes: int
    perturbed_successes: int
    frames: int
    dropped: int
    late: int
    wall_s: float

    @property
    def expert_success_rate(self) -> float:
        return self.expert_successes / max(self.expert_episodes, 1)


def dataset_spec(robot: RobotConfig) -> DatasetSpec:
    cameras = tuple((c.name, c.height, c.width) for c in robot.cameras)
    return DatasetSpec(fps=robot.control_rate_hz, robot_type=robot.name, joint_names=robot.arm.joint_names,
                       cameras=cameras)


def collect(task: str, episodes: int, root: Path, *, robot: RobotConfig | None = None, seed: int = 0,
            failing_fraction: float = 0.0, codec: str = "libsvtav1", progress: bool = True,
            min_free_disk_mb: float = 0.0) -> CollectReport:
    """Record ``episodes`` episodes of ``task`` into the LeRobot dataset at ``root`` (appends).

    A write error or less than ``min_free_disk_mb`` of free disk space ends the collection with
    :class:`~rise.data.writer.DatasetWriteError`; the episodes saved before it stay in the dataset.
    """
    robot = robot or load_robot("sim")
    rng = np.random.default_rng(seed)
    period_ns = int(round(1e9 / robot.control_rate_hz))
    counts = dict(expert=0, expert_ok=0, perturbed=0, perturbed_ok=0, frames=0, dropped=0, late=0)
    started = time.monotonic()
    with (SimEnv(task, robot) as env,
          DatasetWriter(root, dataset_spec(robot), codec=codec, min_free_disk_mb=min_free_disk_mb) as writer):
        recorder = Recorder(writer, tolerance_ns=period_ns // 4)
        bar = tqdm(range(episodes), desc=f"collect {task}", unit="episode", disable=not progress)
        clock_ns = 0
        for index in bar:
            episode_seed = seed * 100_003 + index
            perturbed = rng.random() < failing_fraction
            observation, _ = env.reset(seed=episode_seed)
            expert = env.task.expert(env, np.random.default_rng(episode_seed))
            if perturbed:
                expert = PerturbedExpert(expert, np.random.default_rng(episode_seed + 1),
                                         max_ticks=env.task.max_steps)
            recorder.start_episode(env.task.instruction)
            while True:
                action = expert.act(env)
                recorder.on_sample(COMMAND_STREAM, clock_ns, action)
                recorder.on_sample(STATE_STREAM, clock_ns, observation["state"])
                for camera, image in observation["images"].items():
                    recorder.on_sample(camera, clock_ns, image)
                observation, _, terminated, truncated, info = env.step(action)
                clock_ns += period_ns
                if terminated or truncated:
                    break
            report = recorder.stop_episode(bool(info["success"]), metadata={
                "seed": episode_seed, "expert": "perturbed" if perturbed else "scripted",
                "score": int(info["score"]), "task_name": env.task.name})
            kind = "perturbed" if perturbed else "expert"
            counts[kind] += 1
            counts[f"{kind}_ok"] += bool(info["success"])
            counts["frames"] += report.frames
            counts["dropped"] += report.dropped
            counts["late"] += report.late
            bar.set_postfix(expert=f"{counts['expert_ok']}/{counts['expert']}",
                            perturbed=f"{counts['perturbed_ok']}/{counts['perturbed']}")
            clock_ns += 10 * period_ns  # a gap between episodes
    return CollectReport(root, episodes, counts["expert"], counts["expert_ok"], counts["perturbed"],
                         counts["perturbed_ok"], counts["frames"], counts["dropped"], counts["late"],
                         time.monotonic() - started)
