"""Bad teleop commands at the arm bridge: each is refused with the reason, the arm holds, nothing crashes.

One bridge process for all cases; this test plays the arm (its /joint_states echo what the bridge
sent). After a good command has been followed and the arm is holding, each kind of bad
JointTrajectory goes to /rise/teleop/command: the bridge must log why, show it in
/rise/arm/status (``refused``, ``refusals``), keep sending the same position, stay alive, and
still follow the good command that comes after all of them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from fault_log import record
from rise.config import load_robot
from rise.nodes.qos import COMMAND, LATCHED, STATE
from support import read_lines, spin_until

pytestmark = [pytest.mark.ros, pytest.mark.faults]
ROBOT = load_robot("sim")
NAMES = list(ROBOT.arm.joint_names)
HOLD_S = 0.25  # how long each bad command's hold is watched


def command(points, names=NAMES) -> JointTrajectory:
    """``points``: (positions, time_from_start [s] or a Duration, velocities, accelerations)."""
    message = JointTrajectory(joint_names=list(names))
    for positions, t, *rates in points:
        velocities, accelerations = (*rates, [], [])[:2]
        duration = t if isinstance(t, Duration) else Duration(sec=int(t), nanosec=int(t % 1 * 1e9))
        message.points.append(JointTrajectoryPoint(positions=list(positions), time_from_start=duration,
                                                   velocities=velocities, accelerations=accelerations))
    return message


def bad_commands(pose: np.ndarray) -> list[tuple[str, JointTrajectory, str]]:
    """(fault name, message, text the refusal must contain), all near ``pose``."""
    near = pose + 0.05 * (np.arange(len(NAMES)) == 0)
    nan, inf = near.copy(), near.copy()
    nan[2], inf[0] = math.nan, -math.inf
    far = near.copy()
    far[1] += 1.0
    return [
        ("bad command: unknown joint name", command([(near, 0.2)], [*NAMES[:-1], "wrist_yaw"]),
         "unknown joint 'wrist_yaw'"),
        ("bad command: missing joint (partial)", command([(near[:-1], 0.2)], NAMES[:-1]),
         "missing joints: gripper"),
        ("bad command: duplicate joint name", command([(near, 0.2)], [*NAMES[:-1], NAMES[0]]),
         f"duplicate joint '{NAMES[0]}'"),
        ("bad command: NaN position", command([(nan, 0.2)]), f"{NAMES[2]}: position nan is not finite"),
        ("bad command: inf position", command([(inf, 0.2)]), f"{NAMES[0]}: position -inf is not finite"),
        ("bad command: positions length mismatch", command([(near[:-1], 0.2)]),
         f"got {len(NAMES)} joint names and {len(NAMES) - 1} positions"),
        ("bad command: empty point list", command([]), "no points"),
        ("bad command: non-increasing time_from_start", command([(near, 0.5), (near, 0.5)]),
         "point 1: time_from_start 0.5 s is not after point 0's 0.5 s"),
        ("bad command: negative time_from_start", command([(near, Duration(sec=-5))]),
         "point 0: time_from_start -5 s is negative"),
        ("bad command: NaN velocity", command([(near, 0.2, [math.nan] * len(NAMES))]),
         f"point 0: velocities: {NAMES[0]}: nan is not a finite number"),
        ("bad command: velocity above the limit", command([(near, 0.2, [50.0] + [0.0] * 6)]),
         f"point 0: {NAMES[0]} velocity 50 rad/s above its limit"),
        ("bad command: wrong-length accelerations", command([(near, 0.2, [], [0.0] * 3)]),
         "point 0: accelerations: got 3 values for 7"),
        ("bad command: absurd implied speed", command([(near, 0.1), (far, 0.15)]),
         f"point 1: {NAMES[1]} moves 1 rad in 0.05 s after point 0 (20 rad/s; limit 3 rad/s"),
    ]


def test_bad_commands_are_refused_and_the_arm_holds(spawn, ros_node):
    node, executor = ros_node
    process = spawn([sys.executable, "-m", "rise.nodes.arm_bridge_node", "--ros-args", "-p",
                     "source:=teleop"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = read_lines(process)
    pose = np.array(ROBOT.arm.home, dtype=float)
    sent: list[tuple[float, np.ndarray]] = []
    status: list[dict] = []

    def on_sent(message: JointTrajectory) -> None:
        nonlocal pose
        pose = np.array(message.points[0].positions)  # the arm follows at once
        sent.append((time.monotonic(), pose))

    joint_states = node.create_publisher(JointState, "/joint_states", STATE)
    node.create_timer(1 / ROBOT.control_rate_hz,
                      lambda: joint_states.publish(JointState(name=NAMES, position=pose.tolist())))
    node.create_subscription(JointTrajectory, "/rise/arm/command_sent", on_sent, COMMAND)
    node.create_subscription(String, "/rise/arm/status", lambda m: status.append(json.loads(m.data)), LATCHED)
    teleop = node.create_publisher(JointTrajectory, "/rise/teleop/command", COMMAND)
    spin_until(executor, lambda: status and teleop.get_subscription_count() > 0, 60,
               "the bridge's status (it knows the arm's pose)")

    def follow(target: np.ndarray, what: str) -> np.ndarray:
        """Send a good command; returns the position the bridge then holds."""
        teleop.publish(command([(target, 0.3)]))
        spin_until(executor, lambda: np.allclose(pose, target, atol=1e-9), 10, what)
        count = len(sent)
        spin_until(executor, lambda: len(sent) > count + 3, 5, f"{what}: a hold")
        assert all(np.array_equal(p, pose) for _, p in sent[count:])
        return pose

    start = pose.copy()
    start[0] += 0.1
    start = follow(start, "the first good command to be followed")
    def refused(fault: str, message: JointTrajectory, why: str) -> None:
        """Send a bad command; the bridge says why, keeps sending ``start`` and stays alive."""
        before = status[-1]["refusals"]
        published = time.monotonic()
        teleop.publish(message)
        spin_until(executor, lambda: status[-1]["refusals"] > before, 5, f"{fault}: a refusal in the status")
        spin_until(executor, lambda: time.monotonic() - published > HOLD_S, 5, f"{fault}: {HOLD_S} s")
        assert why in status[-1]["refused"], (fault, status[-1])
        after = [p for t, p in sent if t > published]
        assert len(after) >= 3, f"{fault}: the bridge stopped sending"
        assert all(np.array_equal(p, start) for p in after), f"{fault}: the arm moved"
        assert process.poll() is None, f"{fault}: the bridge died:\n" + "\n".join(lines[-20:])
        spin_until(executor, lambda: any("teleop command refused" in x and why in x for x in lines), 5,
                   f"{fault}: the refusal in the bridge's log")
        record(fault, "refused, arm held", data_lost=0, recovery_s=None)

    for fault, message, why in bad_commands(start):
        refused(fault, message, why)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)

    goal = start.copy()
    goal[0] -= 0.1
    recovered = time.monotonic()
    follow(goal, "a good command after the bad ones to be followed")
    assert status[-1]["refusals"] == len(bad_commands(start))
    record("bad command: good command after the bad ones", "followed",
           recovery_s=time.monotonic() - recovered)
