"""The policy node in-process: 30 Hz commands once enabled, hot swaps without a missed control tick,
refused checkpoints that leave the commands flowing, rollback and enable services."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from rise.config import load_robot
from rise.nodes.policy_node import PolicyNode
from rise.nodes.qos import COMMAND, LATCHED, SENSOR, STATE
from rise.nodes.ros_image import to_image
from support import call_service, spin_until
from test_policy_runtime import flip_a_byte, save_policy

pytestmark = pytest.mark.ros
ROBOT = load_robot("sim")
NAMES = list(ROBOT.arm.joint_names)
RATE_HZ = 30.0


@contextlib.contextmanager
def running_policy_node(ros_node, tmp_path, experiment_extra: str = ""):
    """PolicyNode on its own executor thread (as in its own process), started with checkpoint A;
    the test node publishes camera frames and joint states at 15 Hz. Yields (node, executor,
    checkpoint root, sha256 of A, received commands, received statuses). ``experiment_extra``:
    more lines of the experiment YAML."""
    node, executor = ros_node
    root = tmp_path / "checkpoints"
    sha_a = save_policy(root / "policy" / "a", seed=0)
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(f"name: t\ncheckpoint_dir: {root}\ndata_dir: {tmp_path}\noutput_dir: {tmp_path}\n"
                          + experiment_extra)
    cameras = {c: node.create_publisher(Image, f"/cameras/{c}/image_raw", SENSOR) for c in ROBOT.camera_names}
    joints = node.create_publisher(JointState, "/joint_states", STATE)
    rng = np.random.default_rng(0)

    def publish_observation():
        stamp = node.get_clock().now().to_msg()
        for camera, publisher in cameras.items():
            publisher.publish(to_image(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), stamp, camera))
        joints.publish(JointState(name=NAMES, position=list(map(float, ROBOT.arm.home))))

    node.create_timer(1 / 15, publish_observation)
    commands: list[tuple[float, JointTrajectory]] = []
    statuses: list[dict] = []
    node.create_subscription(JointTrajectory, "/rise/policy/command",
                             lambda m: commands.append((time.monotonic(), m)), COMMAND)
    node.create_subscription(String, "/rise/policy/status", lambda m: statuses.append(json.loads(m.data)),
                             LATCHED)
    policy = PolicyNode(context=node.context, parameter_overrides=[
        Parameter("experiment_config", value=str(experiment)),
        Parameter("checkpoint", value=str(root / "policy" / "a")),
        Parameter("flow_steps", value=2),
        Parameter("control_rate_hz", value=RATE_HZ),
    ])
    policy_executor = SingleThreadedExecutor(context=node.context)
    policy_executor.add_node(policy)
    thread = threading.Thread(target=policy_executor.spin, daemon=True)
    thread.start()
    try:
        spin_until(executor, lambda: statuses and statuses[-1]["active_sha256"] == sha_a, 20,
                   "the initial checkpoint to be live")
        yield node, executor, root, sha_a, commands, statuses
    finally:
        policy_executor.shutdown()
        thread.join(10)
        policy.destroy_node()


@pytest.fixture
def policy_node(ros_node, tmp_path):
    """:func:`running_policy_node` with the default experiment."""
    with running_policy_node(ros_node, tmp_path) as running:
        yield running


def spin_for(executor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)


def announce(publisher, folder, sha256: str, iteration: int) -> None:
    publisher.publish(String(data=json.dumps({"path": str(folder), "sha256": sha256, "iteration": iteration,
                                              "metrics": {"success": 0.5}})))


def test_policy_node_commands_swaps_refuses_and_rolls_back(policy_node):
    node, executor, root, sha_a, commands, statuses = policy_node

    # Loaded but disabled: nothing is published.
    spin_for(executor, 0.5)
    assert not commands and statuses[-1]["enabled"] is False

    # Enabled: ~30 Hz short trajectories in the robot's joint order, one point per control period.
    assert call_service(node, executor, SetBool, "/rise/policy/enable", SetBool.Request(data=True)).success
    spin_until(executor, lambda: len(commands) >= 5, 20, "commands after enable")
    first = len(commands)
    spin_for(executor, 2.0)
    times = [t for t, _ in commands[first:]]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 0.8 * RATE_HZ < rate < 1.2 * RATE_HZ, f"{rate:.1f} Hz"
    message = commands[-1][1]
    assert list(message.joint_names) == NAMES and len(message.points) >= 1
    offsets = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in message.points]
    np.testing.assert_allclose(offsets, np.arange(1, len(offsets) + 1) / RATE_HZ, atol=1e-6)
    assert all(np.all(np.isfinite(p.positions)) and len(p.positions) == len(NAMES) for p in message.points)

    # A good new checkpoint (relative to the checkpoint root) goes live without a missed tick.
    sha_b = save_policy(root / "policy" / "b", seed=1, step=2)
    announcer = node.create_publisher(String, "/rise/policy/checkpoint", LATCHED)
    spin_until(executor, lambda: announcer.get_subscription_count() > 0, 15, "the policy's checkpoint topic")
    before = statuses[-1]
    sent = len(commands)
    announce(announcer, "policy/b", sha_b, 2)
    status = spin_until(executor, lambda: statuses[-1]["active_sha256"] == sha_b and statuses[-1], 20,
                        "checkpoint B to go live")
    assert status["previous_sha256"] == sha_a and status["last_swap_ms"] > 0 and status["active_step"] == 2
    assert status["missed_ticks"] == before["missed_ticks"], (before, status)
    assert status["ticks"] > before["ticks"] and len(commands) > sent
    gaps = np.diff([t for t, _ in commands[sent - 1:]])
    assert gaps.max() < 3 / RATE_HZ, f"commands paused {gaps.max() * 1e3:.0f} ms during the swap"

    # A corrupt checkpoint is refused with the reason; B stays live and commands keep flowing.
    sha_c = save_policy(root / "policy" / "c", seed=2, step=3)
    flip_a_byte(root / "policy" / "c")
    announce(announcer, root / "policy" / "c", sha_c, 3)
    status = spin_until(executor, lambda: statuses[-1]["last_refusal"] and statuses[-1], 20,
                        "the refusal in the status")
    assert "model.safetensors: sha256 mismatch" in status["last_refusal"]
    assert status["active_sha256"] == sha_b
    sent = len(commands)
    spin_for(executor, 0.5)
    assert len(commands) >= sent + 8

    # Rollback returns to A; with no older policy a second rollback fails clearly.
    answer = call_service(node, executor, Trigger, "/rise/policy/rollback", Trigger.Request())
    assert answer.success and sha_a in answer.message
    spin_until(executor, lambda: statuses[-1]["active_sha256"] == sha_a, 10, "A live again")
    answer = call_service(node, executor, Trigger, "/rise/policy/rollback", Trigger.Request())
    assert not answer.success and "no previous policy" in answer.message

    # Disabled: commands stop.
    assert call_service(node, executor, SetBool, "/rise/policy/enable", SetBool.Request(data=False)).success
    spin_for(executor, 0.2)
    sent = len(commands)
    spin_for(executor, 0.5)
    assert len(commands) == sent and statuses[-1]["enabled"] is False
