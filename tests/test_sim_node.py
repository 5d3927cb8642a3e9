"""The simulator node behaves like a robot with a JointTrajectoryController and cameras."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rise.config import load_robot
from rise.nodes.qos import COMMAND, LATCHED, SENSOR
from rise.nodes.ros_image import from_image
from support import read_lines, spin_until, wait_for

pytestmark = pytest.mark.ros



@pytest.fixture
def sim(spawn):
    process = spawn([sys.executable, "-m", "rise.nodes.sim_node", "--ros-args", "-p", "task:=box_close"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return read_lines(process)


def test_sim_publishes_cameras_and_follows_a_trajectory(sim, ros_node):
    node, executor = ros_node
    robot = load_robot("sim")
    states: list[JointState] = []
    images: dict[str, list[Image]] = {name: [] for name in robot.camera_names}
    infos: list[CameraInfo] = []
    statuses: list[dict] = []
    node.create_subscription(JointState, "/joint_states", states.append, 10)
    for name in robot.camera_names:
        node.create_subscription(Image, f"/cameras/{name}/image_raw", images[name].append, SENSOR)
    node.create_subscription(CameraInfo, "/cameras/front/camera_info", infos.append, SENSOR)
    node.create_subscription(String, "/rise/sim/status", lambda m: statuses.append(json.loads(m.data)),
                             LATCHED)
    publisher = node.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", COMMAND)
    spin_until(executor, lambda: all(len(v) >= 3 for v in images.values()) and len(states) >= 3,
               30, "camera images and joint states")

    assert list(states[-1].name) == list(robot.arm.joint_names)
    frame = from_image(images["front"][-1])
    assert frame.shape == (96, 96, 3) and frame.std() > 5  # a rendered scene, not a blank image
    assert infos[-1].k[0] > 0 and infos[-1].width == 96
    assert statuses and statuses[-1]["task"] == "box_close"

    # Camera rate: ~30 Hz wall clock (loose bounds: a loaded 2-core machine).
    count, start = len(images["wrist"]), time.monotonic()
    spin_until(executor, lambda: time.monotonic() - start > 2.0, 5, "2 s of frames")
    rate = (len(images["wrist"]) - count) / (time.monotonic() - start)
    assert 15 < rate < 40, rate

    target = list(robot.arm.home)
    target[0] = 0.5  # waist
    trajectory = JointTrajectory(joint_names=list(robot.arm.joint_names))
    trajectory.points = [JointTrajectoryPoint(positions=target, time_from_start=Duration(sec=1))]
    wait_for(lambda: publisher.get_subscription_count() > 0, 15, "the sim to subscribe")
    publisher.publish(trajectory)
    spin_until(executor, lambda: abs(states[-1].position[0] - 0.5) < 0.02, 15, "the waist to reach 0.5")

    # A malformed trajectory is refused; the arm keeps holding.
    bad = JointTrajectory(joint_names=["waist", "nonexistent"])
    bad.points = [JointTrajectoryPoint(positions=[1.0, 0.0], time_from_start=Duration(sec=1))]
    publisher.publish(bad)
    wait_for(lambda: any("trajectory refused: unknown joints ['nonexistent']" in line for line in sim),
             10, "the refusal in the sim's log")
    start = time.monotonic()
    spin_until(executor, lambda: time.monotonic() - start > 1.0, 5, "1 s")
    assert abs(states[-1].position[0] - 0.5) < 0.02
