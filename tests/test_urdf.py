"""The robot description agrees with the robot config, for ROS tools and for MuJoCo alike."""

from __future__ import annotations

import math

import mujoco
import pytest

from rise import paths
from rise.config import load_robot
from rise.robot_description import read_joints


@pytest.fixture(scope="module")
def robot():
    return load_robot("sim")


def test_urdf_joints_match_the_config(robot):
    joints = read_joints(paths.resolve(robot.urdf))
    actuated = [j.name for j in joints.values() if j.actuated]
    assert actuated == list(robot.arm.joint_names)
    assert len(robot.arm.joints) == 6
    for configured in robot.arm.all_joints:
        described = joints[configured.name]
        assert described.lower == pytest.approx(configured.lower)
        assert described.upper == pytest.approx(configured.upper)
        assert described.velocity >= configured.max_velocity
    assert joints["gripper"].type == "prismatic"
    assert joints["gripper_mirror"].mimic == "gripper"


def test_mujoco_loads_the_urdf_with_the_same_joints(robot):
    model = mujoco.MjModel.from_xml_path(str(paths.resolve(robot.urdf)))
    names = [model.joint(i).name for i in range(model.njnt)]
    assert names[: len(robot.arm.joint_names)] == list(robot.arm.joint_names)
    for joint in robot.arm.all_joints:
        lower, upper = model.joint(joint.name).range
        assert math.isclose(lower, joint.lower) and math.isclose(upper, joint.upper)
    data = mujoco.MjData(model)
    mujoco.mj_step(model, data)  # the description simulates
