"""In sim through the embedded runner: commands reach the arm through the safety filter.

A plain rclpy node (this test) sends JointTrajectory messages as the policy would (deploy
mode); the arm
follows, an out-of-limit target is clipped and what was sent is published, and an e-stop holds
the arm from the next control tick on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rise.config import load_robot
from rise.nodes.qos import COMMAND, LATCHED
from support import call_service, read_lines, spin_until, wait_for

pytestmark = pytest.mark.ros
ROBOT = load_robot("sim")
NAMES = list(ROBOT.arm.joint_names)


def trajectory(positions, seconds: float) -> JointTrajectory:
    message = JointTrajectory(joint_names=NAMES)
    whole, fraction = divmod(seconds, 1.0)
    duration = Duration(sec=int(whole), nanosec=int(fraction * 1e9))
    message.points = [JointTrajectoryPoint(positions=list(positions), time_from_start=duration)]
    return message


@pytest.fixture
def stack(spawn, ros_node):
    node, executor = ros_node
    process = spawn([sys.executable, "-m", "rise.cli", "up", "--robot", "sim", "--mode", "deploy"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = read_lines(process)

    def up():
        return call_service(node, executor, Trigger, "/rise/monitor/status", Trigger.Request()).success

    wait_for(up, 60, "sim, arm_bridge and monitor alive")
    return node, executor, lines


def test_commands_pass_the_safety_filter_and_estop_holds(stack):
    node, executor, lines = stack
    states: list[JointState] = []
    sent: list[tuple[float, JointTrajectory]] = []
    status: list[dict] = []
    node.create_subscription(JointState, "/joint_states", states.append, 10)
    node.create_subscription(JointTrajectory, "/rise/arm/command_sent",
                             lambda m: sent.append((time.monotonic(), m)), COMMAND)
    node.create_subscription(String, "/rise/arm/status", lambda m: status.append(json.loads(m.data)), LATCHED)
    teleop = node.create_publisher(JointTrajectory, "/rise/policy/command", COMMAND)

    # The bridge publishes its status once it knows the arm's pose; a command sent before that
    # would be refused as a first command without a measured pose.
    spin_until(executor, lambda: states and status and teleop.get_subscription_count() > 0, 30,
               "joint states and the bridge's status")
    home = np.array(states[-1].position)

    # 1. The arm follows a trajectory from a plain rclpy node.
    goal = home.copy()
    goal[0] = 0.6
    teleop.publish(trajectory(goal, 1.0))
    spin_until(executor, lambda: abs(states[-1].position[0] - 0.6) < 0.03, 20, "the waist to reach 0.6")

    # 2. A target outside the joint limits is clipped; what was sent is published.
    far = np.array(states[-1].position)
    far[1] = 5.0  # shoulder upper limit: 1.9
    teleop.publish(trajectory(far, 1.0))
    upper = ROBOT.arm.joints[1].upper
    spin_until(executor, lambda: sent and abs(sent[-1][1].points[0].positions[1] - upper) < 1e-9, 20,
               "the clipped shoulder command")
    assert max(m.points[0].positions[1] for _, m in sent) <= upper + 1e-12
    spin_until(executor, lambda: any(s["clipped"] for s in status), 5, "the bridge's status to say clipped")

    # 3. E-stop while moving: the command holds from the next control tick on.
    moving = np.array(states[-1].position)
    moving[0] = -0.6
    teleop.publish(trajectory(moving, 2.0))
    spin_until(executor, lambda: len(sent) > 5 and abs(sent[-1][1].points[0].positions[0] -
                                            sent[-2][1].points[0].positions[0]) > 1e-4, 10, "motion")
    response = call_service(node, executor, SetBool, "/rise/arm/estop", SetBool.Request(data=True))
    assert response.success
    stopped_at = time.monotonic()
    spin_until(executor, lambda: time.monotonic() - stopped_at > 1.0, 5, "1 s of e-stopped ticks")
    after = [m.points[0].positions for t, m in sent if t > stopped_at]
    assert len(after) >= 20, "the bridge keeps publishing what it sends while e-stopped"
    assert all(np.allclose(p, after[0]) for p in after), "commands changed after the e-stop"
    period = 1.0 / ROBOT.control_rate_hz
    first_hold = next(t for t, m in sent
                      if t > stopped_at - period and np.allclose(m.points[0].positions, after[0]))
    assert first_hold - stopped_at <= period + 0.02  # (subscriber-side time: a loose tick)
    # Latching: new commands do not move the arm until released.
    teleop.publish(trajectory(home, 1.0))
    spin_until(executor, lambda: time.monotonic() - stopped_at > 1.5, 5, "0.5 s more")
    assert np.allclose(sent[-1][1].points[0].positions, after[0])
    assert status[-1]["estop"] is True
    assert any("e-stop engaged" in line for line in lines)
