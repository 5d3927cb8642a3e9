"""parse_trajectory: the whole-command check the arm bridge runs on every JointTrajectory.

Hand cases for each kind of bad command, and property tests: arbitrary fields (as plain lists and
as real trajectory_msgs messages) either give finite targets that the follower can follow, or a
CommandError / TrajectoryError with a message; never another exception.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from hypothesis import given, settings
from hypothesis import strategies as st
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rise.config import load_robot
from rise.hardware.safety import CommandError, SafetyFilter
from rise.hardware.trajectory import (
    SPEED_MARGIN,
    TrajectoryError,
    TrajectoryFollower,
    parse_trajectory,
)
from rise.nodes.arm_bridge_node import parse_command

ROBOT = load_robot("sim")
NAMES = list(ROBOT.arm.joint_names)
HOME = list(ROBOT.arm.home)
SAFETY = SafetyFilter(ROBOT.arm, ROBOT.control_rate_hz)
VMAX = np.array([j.max_velocity for j in ROBOT.arm.all_joints])


def moved(joint: str, by: float) -> list[float]:
    out = list(HOME)
    out[NAMES.index(joint)] += by
    return out


def test_a_single_point_far_from_the_pose_is_accepted():
    """What teleop sends: one point; the jump from the current pose is the rate limiter's job."""
    trajectory = parse_trajectory(SAFETY, NAMES, [0.0], [moved("waist", 2.5)])
    assert trajectory.times_s.tolist() == [0.0]
    assert trajectory.positions.tolist() == [moved("waist", 2.5)]
    with pytest.raises(ValueError):
        trajectory.positions[0, 0] = 1.0  # read-only


def test_names_in_any_order_map_to_joint_order_with_velocities():
    order = list(reversed(NAMES))
    point = [HOME[NAMES.index(n)] for n in order]
    speeds = [0.15 if n == "gripper" else 2.9 for n in order]  # just under each joint's limit
    trajectory = parse_trajectory(SAFETY, order, [0.5, 1.0], [point, point], [speeds, []], [[], []])
    np.testing.assert_array_equal(trajectory.positions, [HOME, HOME])


def test_a_trajectory_within_the_speed_margin_is_accepted():
    step = 0.9 * SPEED_MARGIN * VMAX[0] * 0.1  # just under the margin over 0.1 s
    trajectory = parse_trajectory(SAFETY, NAMES, [0.1, 0.2], [moved("waist", 0), moved("waist", step)])
    assert trajectory.positions[1, 0] == pytest.approx(HOME[0] + step)


def test_a_chunk_may_close_the_gripper_in_one_step():
    """Open -> closed between two points 1/30 s apart is a normal policy chunk; the rate limit slows it."""
    trajectory = parse_trajectory(SAFETY, NAMES, [1 / 30, 2 / 30], [HOME, moved("gripper", -0.04)])
    assert trajectory.positions[1, -1] == pytest.approx(HOME[-1] - 0.04)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(names=[*NAMES[:-1], "wrist_yaw"]), CommandError, "point 0: unknown joint 'wrist_yaw'"),
    (dict(names=NAMES[:-1], positions=[HOME[:-1]]), CommandError, "point 0: missing joints: gripper"),
    (dict(names=[*NAMES[:-1], "waist"]), CommandError, "point 0: duplicate joint 'waist'"),
    (dict(positions=[[math.nan, *HOME[1:]]]), CommandError, "point 0: waist: position nan is not finite"),
    (dict(positions=[HOME, [*HOME[:-1], math.inf]], times_s=[1, 2]), CommandError,
     "point 1: gripper: position inf is not finite"),
    (dict(positions=[HOME[:-1]]), CommandError, "point 0: got 7 joint names and 6 positions"),
    (dict(positions=[], times_s=[]), TrajectoryError, "no points"),
    (dict(times_s=[1.0, 2.0]), TrajectoryError, r"time_from_start: got 2 values for 1 \(point 0\)"),
    (dict(times_s=[math.nan]), TrajectoryError, "time_from_start: point 0: nan is not a finite number"),
    (dict(times_s=[-1.0]), TrajectoryError, "point 0: time_from_start -1 s is negative"),
    (dict(positions=[HOME, HOME], times_s=[1.0, 1.0]), TrajectoryError,
     "point 1: time_from_start 1 s is not after point 0's 1 s"),
    (dict(positions=[HOME] * 3, times_s=[1.0, 2.0, 1.5]), TrajectoryError,
     "point 2: time_from_start 1.5 s is not after point 1's 2 s"),
    (dict(velocities=[[0.0] * 6]), TrajectoryError, r"point 0: velocities: got 6 values for 7 \(waist"),
    (dict(velocities=[[0.0] * 6 + [math.nan]]), TrajectoryError,
     "point 0: velocities: gripper: nan is not a finite number"),
    (dict(velocities=[[0.0], [0.0]]), TrajectoryError, "velocities: got 2 entries for 1 points"),
    (dict(velocities=[[0.0, 3.5, 0, 0, 0, 0, 0]]), TrajectoryError,
     "point 0: shoulder velocity 3.5 rad/s above its limit 3 rad/s"),
    (dict(velocities=[[0.0] * 6 + [-0.3]]), TrajectoryError,
     "point 0: gripper velocity -0.3 m/s above its limit 0.2 m/s"),
    (dict(accelerations=[[0.0] * 6 + [math.inf]]), TrajectoryError,
     "point 0: accelerations: gripper: inf is not a finite number"),
    (dict(accelerations=[[1.0] * 8]), TrajectoryError, "point 0: accelerations: got 8 values for 7"),
    (dict(positions=[HOME, moved("elbow", 1.6)], times_s=[0.0, 0.1]), TrajectoryError,
     r"point 1: elbow moves 1.6 rad in 0.1 s after point 0 \(16 rad/s; limit 3 rad/s, refused above 5x\)"),
    (dict(positions=[HOME, moved("waist", 1e-3)], times_s=[0.0, 1e-300]), TrajectoryError,
     "point 1: waist moves 0.001 rad in 1e-300 s"),
    (dict(positions=[moved("waist", 1e308), moved("waist", -1e308)], times_s=[0, 1]), TrajectoryError,
     r"point 1: waist moves inf rad"),
    (dict(positions="abc"), TrajectoryError, "points: expected a sequence, got str"),
    (dict(times_s=None), TrajectoryError, "time_from_start: expected a sequence, got NoneType"),
])
def test_bad_commands_are_refused_naming_why(kwargs, error, message):
    arguments = dict(names=NAMES, times_s=[1.0], positions=[HOME], velocities=(), accelerations=())
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        parse_trajectory(SAFETY, **arguments)


def duration(t) -> Duration:
    whole = math.floor(t)
    return Duration(sec=int(whole), nanosec=min(int(round((t - whole) * 1e9)), 999_999_999))


def message_of(names, times_s, positions, velocities=None) -> JointTrajectory:
    message = JointTrajectory(joint_names=list(names))
    for i, (t, point) in enumerate(zip(times_s, positions, strict=True)):
        message.points.append(JointTrajectoryPoint(positions=point, time_from_start=duration(t),
                                                   velocities=velocities[i] if velocities else []))
    return message


def test_the_node_parses_ros_messages_the_same_way():
    trajectory = parse_command(SAFETY, message_of(NAMES, [0.5, 1.25], [HOME, moved("waist", 0.5)]))
    assert trajectory.times_s.tolist() == [0.5, 1.25]
    with pytest.raises(TrajectoryError, match="point 0: shoulder velocity 9 rad/s"):
        parse_command(SAFETY, message_of(NAMES, [0.5], [HOME], [[0, 9, 0, 0, 0, 0, 0]]))
    with pytest.raises(TrajectoryError, match="no points"):
        parse_command(SAFETY, JointTrajectory(joint_names=NAMES))
    huge = JointTrajectory(joint_names=NAMES, points=[JointTrajectoryPoint(
        positions=HOME, time_from_start=Duration(sec=2**31 - 1, nanosec=2**32 - 1))])
    assert parse_command(SAFETY, huge).times_s[0] == pytest.approx(2**31 + 3.29, abs=0.01)
    negative = JointTrajectory(joint_names=NAMES, points=[JointTrajectoryPoint(
        positions=HOME, time_from_start=Duration(sec=-2**31, nanosec=0))])
    with pytest.raises(TrajectoryError, match="negative"):
        parse_command(SAFETY, negative)


# --- properties ------------------------------------------------------------------------------

def _follow(trajectory, now_s: float = 100.0) -> None:
    """What the node does with an accepted command: the follower's targets stay finite."""
    follower = TrajectoryFollower(NAMES, np.array(HOME))
    follower.set(NAMES, trajectory.times_s, trajectory.positions, 0.0, now_s)
    for t in (now_s, now_s + 0.01, now_s + trajectory.times_s[-1] / 2, now_s + trajectory.times_s[-1] + 1):
        assert np.all(np.isfinite(follower.sample(t)))


_junk = st.one_of(st.floats(), st.integers(-10**400, 10**400), st.text(max_size=2), st.none(),
                  st.booleans(), st.lists(st.floats(), max_size=2), st.complex_numbers())
_bad_name = st.one_of(st.text(max_size=6), st.integers(), st.none())
_MUTATIONS = ["none", "none", "name", "position", "time", "velocity", "acceleration", "drop", "speed"]


@st.composite
def _commands(draw, value=_junk, name=_bad_name):
    """A valid command (1-4 points, names in any order, under the speed limits, velocities and
    accelerations sometimes given) with at most one field broken: (names, times, positions,
    velocities, accelerations)."""
    n = draw(st.integers(1, 4))
    names = draw(st.permutations(NAMES))
    limit = np.array([VMAX[NAMES.index(j)] for j in names])
    times = np.cumsum(draw(st.lists(st.floats(0.2, 2.0), min_size=n, max_size=n))).tolist()
    unit = st.lists(st.floats(-1, 1), min_size=7, max_size=7)
    home = [HOME[NAMES.index(j)] for j in names]
    positions = [(np.array(home) + 0.1 * np.array(draw(unit)) * limit).tolist() for _ in range(n)]
    velocities = [(np.array(draw(unit)) * limit).tolist() for _ in range(n)] if draw(st.booleans()) else []
    accelerations = [draw(unit) for _ in range(n)] if draw(st.booleans()) else []
    kind, i, k = draw(st.sampled_from(_MUTATIONS)), draw(st.integers(0, n - 1)), draw(st.integers(0, 6))
    rows = {"position": positions, "velocity": velocities, "acceleration": accelerations}
    if kind == "name":
        names[k] = draw(st.one_of(name, st.sampled_from(NAMES)))
    elif kind in rows and rows[kind]:
        rows[kind][i][k] = draw(value)
    elif kind == "time":
        times[i] = draw(value)
    elif kind == "drop":
        draw(st.sampled_from([positions[i], times, *velocities, *accelerations])).pop()
    elif kind == "speed" and n > 1:
        positions[i][k] += draw(st.floats(-1e3, 1e3))
    return names, times, positions, velocities, accelerations


@settings(max_examples=400, deadline=None)
@given(command=st.one_of(_commands(), st.tuples(
    st.lists(st.one_of(st.sampled_from(NAMES), _junk), max_size=8), st.lists(_junk, max_size=3),
    st.lists(st.lists(_junk, max_size=8), max_size=3), st.lists(st.lists(_junk, max_size=8), max_size=3),
    st.one_of(st.lists(_junk, max_size=3), _junk))))
def test_arbitrary_fields_give_finite_targets_or_a_command_error(command):
    names, times_s, positions, velocities, accelerations = command
    try:
        trajectory = parse_trajectory(SAFETY, names, times_s, positions, velocities, accelerations)
    except (CommandError, TrajectoryError) as error:
        assert str(error)
        return
    assert trajectory.positions.shape == (len(positions), len(NAMES))
    assert np.all(np.isfinite(trajectory.positions)) and np.all(np.isfinite(trajectory.times_s))
    assert trajectory.times_s[0] >= 0 and np.all(np.diff(trajectory.times_s) > 0)
    with np.errstate(over="ignore"):
        speeds = np.abs(np.diff(trajectory.positions, axis=0)) / np.diff(trajectory.times_s)[:, None]
    assert np.all(speeds[:, :-1] <= SPEED_MARGIN * VMAX[:-1])  # the gripper is exempt
    _follow(trajectory)


@settings(max_examples=300, deadline=None)
@given(command=_commands(value=st.floats(width=64), name=st.text(max_size=6)),
       raw=st.tuples(st.integers(-2**31, 2**31 - 1), st.integers(0, 2**32 - 1)),
       broken_time=st.booleans())
def test_arbitrary_ros_messages_give_finite_targets_or_a_command_error(command, raw, broken_time):
    names, times_s, positions, velocities, accelerations = command
    points = [JointTrajectoryPoint(positions=p) for p in positions]
    for field, rows in (("velocities", velocities), ("accelerations", accelerations)):
        for point, row in zip(points, rows, strict=False):
            setattr(point, field, row)
    for point, t in zip(points, times_s, strict=False):
        point.time_from_start = Duration(sec=raw[0], nanosec=raw[1]) \
            if broken_time or not math.isfinite(t) else duration(t)
    try:
        trajectory = parse_command(SAFETY, JointTrajectory(joint_names=names, points=points))
    except (CommandError, TrajectoryError) as error:
        assert str(error)
        return
    assert np.all(np.isfinite(trajectory.positions))
    _follow(trajectory)
