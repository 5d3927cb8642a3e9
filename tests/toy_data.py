"""A toy LeRobot dataset and tiny world-model checkpoints, shared by the world-model and policy tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rise.data import DatasetSpec, DatasetWriter
from rise.models.fit_dynamics import DynamicsTrainConfig, train_dynamics
from rise.models.fit_value import ValueFitConfig, fit_value

JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_pitch", "wrist_roll", "gripper")
SPEC = DatasetSpec(
    fps=30, robot_type="sim", joint_names=JOINTS, cameras=(("front", 16, 16), ("wrist", 16, 16))
)


def write_toy_dataset(root: Path, episodes: int = 10, length: int = 24) -> Path:
    """Episodes where a bright square moves with the waist action; every third episode is a perturbed
    rollout that fails (it goes dark at the end); the others are scripted demos."""
    rng = np.random.default_rng(0)
    with DatasetWriter(root, SPEC, codec="h264") as writer:
        for episode in range(episodes):
            success = episode % 3 != 2
            writer.start_episode("move the square")
            position = 2.0
            for t in range(length):
                action = np.zeros(7, np.float32)
                action[0] = rng.uniform(-1, 1)
                position = float(np.clip(position + action[0], 0, 11))
                front = np.full((16, 16, 3), 30 + 6 * t if success or t < 18 else 10, np.uint8)
                front[6:10, int(position) : int(position) + 4] = 250
                writer.add_frame(
                    state=action,
                    action=action,
                    images={"front": front, "wrist": front[::-1].copy()},
                    state_capture_ns=t,
                    image_capture_ns={"front": t, "wrist": t},
                )
            writer.end_episode(success=success, metadata={"expert": "scripted" if success else "perturbed"})
    return root


def tiny_checkpoints(dataset, root, steps: int = 2) -> tuple:
    """Train the tiny dynamics and value models for a few steps under ``root``; return their folders."""
    dynamics = train_dynamics(
        DynamicsTrainConfig(
            datasets=(str(dataset),), output=str(root / "dynamics"), model="tiny", steps=steps, batch_size=4
        ),
        progress=False,
    )
    value = fit_value(
        ValueFitConfig(
            datasets=(str(dataset),), output=str(root / "value"), model="tiny", steps=steps, batch_size=8
        ),
        progress=False,
    )
    return dynamics, value


def trainer_setup(tmp_path: Path) -> tuple[Path, Path]:
    """A toy dataset, tiny world-model checkpoints and a tiny warm-up policy under ``tmp_path/ckpt``
    and an experiment config pointing at them: what the trainer node needs. Returns (root, config)."""
    from rise.policy.warmup import WarmupConfig, warmup

    dataset = write_toy_dataset(tmp_path / "toy")
    root = tmp_path / "ckpt"
    _, value = tiny_checkpoints(dataset, root)
    warmup(WarmupConfig(datasets=(str(dataset),), output=str(root / "policy_warmup"), value=str(value),
                        model="tiny", steps=2, batch_size=8), progress=False)
    config = tmp_path / "exp.yaml"
    config.write_text(f"name: t\ndata_dir: {tmp_path}\ncheckpoint_dir: {root}\n"
                      f"output_dir: {tmp_path / 'out'}\ntask: toy\n")
    return root, config
