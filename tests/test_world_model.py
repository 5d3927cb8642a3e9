"""The world model's training runs, evaluation and imagination environment (tiny configs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from std_msgs.msg import String
from std_srvs.srv import Trigger

from rise.imagination.world_model_env import ImaginationEnv, WorldModel
from rise.models.checkpoint import file_sha256, verify
from rise.models.episodes import load_episodes
from rise.models.fit_dynamics import DynamicsTrainConfig, latest_checkpoint, load_dynamics, train_dynamics
from rise.models.fit_value import ValueFitConfig, fit_value, load_value
from rise.nodes.qos import LATCHED
from rise.sim.env import SimEnv
from support import call_service, wait_for
from toy_data import JOINTS, tiny_checkpoints, write_toy_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy")


def test_dynamics_training_checkpoints_resumes_and_is_deterministic(dataset, tmp_path):
    common = dict(datasets=(str(dataset),), model="tiny", batch_size=4, checkpoint_every=2, seed=3)
    straight = train_dynamics(
        DynamicsTrainConfig(output=str(tmp_path / "a"), steps=6, **common), progress=False
    )
    train_dynamics(DynamicsTrainConfig(output=str(tmp_path / "b"), steps=4, **common), progress=False)
    resumed = train_dynamics(
        DynamicsTrainConfig(output=str(tmp_path / "b"), steps=6, **common), progress=False
    )
    assert straight.name == resumed.name == "step_000006"
    first = load_file(str(straight / "diffusion_pytorch_model.safetensors"))
    second = load_file(str(resumed / "diffusion_pytorch_model.safetensors"))
    assert all(torch.allclose(first[k], second[k], atol=1e-6) for k in first)  # resume == uninterrupted
    manifest = verify(straight, kind="dynamics")
    assert manifest.step == 6 and "loss" in manifest.metrics
    model, stats, _ = load_dynamics(straight, expected_sha256=manifest.sha256)
    assert stats.mean.shape == (7,)
    assert latest_checkpoint(tmp_path / "a") == straight


def test_value_training_and_world_model_evaluation_cli(dataset, tmp_path):
    folder = fit_value(
        ValueFitConfig(
            datasets=(str(dataset),),
            output=str(tmp_path / "ckpt" / "value"),
            model="tiny",
            steps=4,
            batch_size=8,
            progress_only_steps=2,
            checkpoint_every=2,
        ),
        progress=False,
    )
    model, manifest = load_value(folder)
    assert manifest.kind == "value" and manifest.step == 4
    train_dynamics(
        DynamicsTrainConfig(
            datasets=(str(dataset),),
            output=str(tmp_path / "ckpt" / "dynamics"),
            model="tiny",
            steps=2,
            batch_size=4,
            checkpoint_every=2,
        ),
        progress=False,
    )
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"name: t\ndata_dir: {tmp_path}\ncheckpoint_dir: {tmp_path / 'ckpt'}\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rise.cli",
            "eval-world-model",
            "--config",
            str(config),
            "--datasets",
            str(dataset),
            "--windows",
            "2",
            "--sampling-steps",
            "2",
            "--held-out-every",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "world_model_eval" / "report.json").read_text())
    for baseline in ("imagined", "copy_last", "shuffled_actions"):
        assert set(report["dynamics"][baseline]) == {"psnr", "ssim", "flow_epe"}
    assert report["value"]["episodes"] == 3 and "success_auc" in report["value"]
    assert (tmp_path / "out" / "world_model_eval" / "imagined_vs_real.mp4").stat().st_size > 0
    assert (tmp_path / "out" / "world_model_eval" / "value_traces.png").stat().st_size > 0


def check_env_interface(env, chunk: np.ndarray) -> None:
    """What rollout code relies on, for the simulator and the imagination alike."""
    observation, info = env.reset(seed=1)
    assert isinstance(info, dict)
    assert observation["state"].shape == (len(env.joint_names),) and observation["state"].dtype == np.float32
    assert set(observation["images"]) == {"front", "wrist"}
    assert all(image.dtype == np.uint8 and image.shape[-1] == 3 for image in observation["images"].values())
    observations, reward, terminated, truncated, info = env.step_chunk(chunk)
    assert 1 <= len(observations) <= len(chunk)
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert observations[-1]["time_s"] > observation["time_s"]
    assert env.control_period_s == pytest.approx(1 / 30)
    env.close()


def test_simulator_and_imagination_share_the_interface(dataset, tmp_path):
    dynamics_folder, value_folder = tiny_checkpoints(dataset, tmp_path)
    dynamics, stats, _ = load_dynamics(dynamics_folder)
    value, _ = load_value(value_folder)
    world_model = WorldModel(dynamics, stats, value, sampling_steps=2)
    episodes = load_episodes([dataset], (16, 16))
    imagination = ImaginationEnv(world_model, episodes, ("front", "wrist"), JOINTS)
    chunk = np.tile(np.array(episodes[0].actions[0]), (world_model.horizon, 1))
    check_env_interface(imagination, chunk)
    imagination.reset(seed=2)
    _, _, _, _, info = imagination.step_chunk(chunk)
    assert len(info["values"]) == world_model.horizon and info["imagined"]
    with SimEnv("pack") as sim:
        check_env_interface(sim, np.tile(np.array(sim.robot.arm.home), (8, 1)))


def test_imagination_starts_from_real_states(dataset, tmp_path):
    folder = train_dynamics(
        DynamicsTrainConfig(
            datasets=(str(dataset),), output=str(tmp_path / "d"), model="tiny", steps=1, batch_size=4
        ),
        progress=False,
    )
    dynamics, stats, _ = load_dynamics(folder)
    episodes = load_episodes([dataset], (16, 16))
    env = ImaginationEnv(
        WorldModel(dynamics, stats, None, sampling_steps=1), episodes, ("front", "wrist"), JOINTS
    )
    observation, info = env.reset(start=(3, 5))
    assert info["start"] == (3, 5)
    assert np.array_equal(observation["images"]["front"], episodes[3].images[5, 0])
    assert np.allclose(observation["state"], episodes[3].states[5])
    with pytest.raises(ValueError, match="actions must have shape"):
        env.step_chunk(np.zeros((2, 7)))


@pytest.mark.ros
def test_world_model_node_announces_imagines_and_refuses_bad_checkpoints(dataset, tmp_path, spawn, ros_node):
    node, executor = ros_node
    root = tmp_path / "ckpt"
    good, _ = tiny_checkpoints(dataset, root)
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"name: t\ndata_dir: {tmp_path}\ncheckpoint_dir: {root}\noutput_dir: {tmp_path / 'out'}\n"
    )
    spawn(
        [
            sys.executable,
            "-m",
            "rise.nodes.world_model_node",
            "--ros-args",
            "-p",
            f"experiment_config:={config}",
            "-p",
            f"imagine.dataset:={dataset}",
            "-p",
            "imagine.frame:=2",
            "-p",
            "sampling_steps:=2",
        ]
    )
    announcements: list[dict] = []
    node.create_subscription(
        String, "/rise/world_model/checkpoint", lambda m: announcements.append(json.loads(m.data)), LATCHED
    )

    def announced():
        executor.spin_once(timeout_sec=0.1)
        return announcements

    wait_for(announced, 60, "the world model's checkpoint announcement", step_s=0.0)
    assert announcements[-1]["dynamics"]["sha256"] == verify(good).sha256
    assert announcements[-1]["dynamics"]["step"] == 2 and "value" in announcements[-1]

    answer = call_service(node, executor, Trigger, "/rise/world_model/imagine", Trigger.Request(), 60)
    assert answer.success, answer.message
    preview = json.loads(answer.message)
    assert Path(preview["video"]).stat().st_size > 0 and len(preview["values"]) == 1 + 2 * 3

    # A corrupt newer checkpoint is refused; the loaded one stays (and still imagines).
    bad = root / "dynamics" / "step_000009"
    shutil.copytree(good, bad)
    weights = bad / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)
    pointer = {"folder": bad.name, "step": 9, "sha256": file_sha256(bad / "manifest.json")}
    (root / "dynamics" / "latest.json").write_text(json.dumps(pointer))
    answer = call_service(node, executor, Trigger, "/rise/world_model/reload", Trigger.Request(), 60)
    assert not answer.success and "sha256 mismatch" in answer.message
    assert call_service(node, executor, Trigger, "/rise/world_model/imagine", Trigger.Request(), 60).success
    assert announcements[-1]["dynamics"]["step"] == 2
