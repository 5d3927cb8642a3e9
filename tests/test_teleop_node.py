"""The teleop node: flags -> services, the target pose (deltas, IK, limits), a leader arm end to end,
and a clear exit when the keyboard has no terminal."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import termios
import time
import types

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from rise.config import load_robot
from rise.hardware.teleop import TeleopCommand, TeleopMode
from rise.nodes.qos import COMMAND, STATE
from rise.nodes.teleop_node import (
    DISCARD,
    ESTOP,
    SERVICE_TYPES,
    START,
    STOP,
    EpisodeActions,
    ServiceCall,
    TargetError,
    TeleopTarget,
    arm_kinematics,
    key_map,
    rotation_from_vector,
    service_calls,
)
from support import read_lines, spin_until, wait_for

ROBOT = load_robot("sim")
HOME = np.array(ROBOT.arm.home)
EE = TeleopMode.END_EFFECTOR



# -- flags -> service calls (fakes) -----------------------------------------------------------
class FakeClient:
    def __init__(self, srv_type, ready=True):
        self.srv_type, self.ready, self.requests, self.futures = srv_type, ready, [], []

    def service_is_ready(self):
        return self.ready

    def call_async(self, request):
        future = types.SimpleNamespace(callbacks=[], add_done_callback=None)
        future.add_done_callback = future.callbacks.append
        self.requests.append(request)
        self.futures.append(future)
        return future


def fake_actions(ready=True):
    clients = {name: FakeClient(srv, ready) for name, srv in SERVICE_TYPES.items()}
    log: list[tuple[str, str]] = []
    actions = EpisodeActions(clients, lambda m: log.append(("warn", m)), lambda m: log.append(("info", m)))
    return actions, clients, log


def test_flags_map_to_service_calls_estop_first_stop_before_start():
    assert service_calls(TeleopCommand()) == []
    every = TeleopCommand(start_episode=True, stop_episode_success=True, discard_episode=True, estop=True)
    assert service_calls(every) == [ServiceCall(ESTOP, True), ServiceCall(STOP, True),
                                    ServiceCall(DISCARD), ServiceCall(START)]
    assert service_calls(TeleopCommand(stop_episode_failure=True)) == [ServiceCall(STOP, False)]


def test_episode_actions_call_asynchronously_and_report_the_answer():
    actions, clients, log = fake_actions()
    assert actions.handle(TeleopCommand(start_episode=True), 0.0) == [ServiceCall(START)]
    assert isinstance(clients[START].requests[0], Trigger.Request)
    actions.handle(TeleopCommand(stop_episode_failure=True), 0.1)
    request = clients[STOP].requests[0]
    assert isinstance(request, SetBool.Request) and request.data is False
    future = clients[STOP].futures[0]
    future.result = lambda: SetBool.Response(success=False, message="no episode running")
    future.callbacks[0](future)
    assert log == [("warn", f"{STOP}(False) refused: no episode running")]


def test_a_held_estop_is_sent_twice_a_second_and_missing_services_only_warn():
    actions, clients, _ = fake_actions()
    for tick in range(30):  # 1 s held at 30 Hz
        actions.handle(TeleopCommand(estop=True), tick / 30)
    assert [r.data for r in clients[ESTOP].requests] == [True, True]
    actions, clients, log = fake_actions(ready=False)
    assert actions.handle(TeleopCommand(discard_episode=True), 0.0) == []
    assert not clients[DISCARD].requests
    assert log == [("warn", f"{DISCARD} is not available (is the recorder running?); request dropped")]


@pytest.mark.ros
def test_episode_actions_reach_a_fake_recorder(ros_node):
    node, executor = ros_node
    received = []

    def on_start(_request, response):
        received.append("start")
        response.success, response.message = True, "episode 0 started"
        return response

    node.create_service(Trigger, START, on_start)
    clients = {name: node.create_client(srv, name) for name, srv in SERVICE_TYPES.items()}
    log: list[str] = []
    actions = EpisodeActions(clients, log.append, log.append)
    wait_for(lambda: clients[START].service_is_ready(), 15, "the fake recorder's service")
    actions.handle(TeleopCommand(start_episode=True), 0.0)
    spin_until(executor, lambda: received and log, 10, "the start_episode call and its answer")
    assert log == [f"{START}: episode 0 started"]


# -- the target pose --------------------------------------------------------------------------
def test_target_starts_from_joint_states_accumulates_and_clips():
    target = TeleopTarget(ROBOT.arm)
    with pytest.raises(TargetError, match="no /joint_states yet"):
        target.apply(TeleopCommand(joint_delta=np.full(6, 0.1)))
    assert not target.update_measured(["waist"], [0.0])  # incomplete joint states are ignored
    assert target.update_measured(list(reversed(ROBOT.arm.joint_names)), list(reversed(HOME)))
    delta = np.array([0.1, 0, 0, 0, 0, 0])
    assert target.apply(TeleopCommand(joint_delta=delta))
    assert target.apply(TeleopCommand(joint_delta=delta))
    np.testing.assert_allclose(target.positions, HOME + np.r_[0.2, np.zeros(6)])
    for _ in range(40):
        target.apply(TeleopCommand(joint_delta=delta))
    assert target.positions[0] == 2.9  # the waist's upper limit
    assert not target.apply(TeleopCommand(joint_delta=delta))  # clipped: nothing changed
    assert target.apply(TeleopCommand(gripper=0.25))
    assert target.positions[-1] == pytest.approx(0.01)  # 0.25 of [0, 0.04] m
    target.reset()
    target.apply(TeleopCommand(absolute_joints=[0.1, 0.2, 0.3, 0.4, 0.5, 9.0]))
    np.testing.assert_allclose(target.positions, [0.1, 0.2, 0.3, 0.4, 0.5, 2.9, 0.04])
    with pytest.raises(TargetError, match="expected 6 arm joints"):
        target.apply(TeleopCommand(joint_delta=np.zeros(5)))


def test_end_effector_deltas_move_the_tool_point_through_ik():
    kinematics = arm_kinematics(ROBOT)
    target = TeleopTarget(ROBOT.arm, kinematics)
    target.update_measured(ROBOT.arm.joint_names, HOME)
    position, rotation = kinematics.forward(HOME[:6])
    for _ in range(5):
        target.apply(TeleopCommand(mode=EE, ee_delta=[0.01, 0, -0.005, 0, 0, 0.02]))
    new_position, new_rotation = kinematics.forward(target.positions[:6])
    np.testing.assert_allclose(new_position - position, [0.05, 0, -0.025], atol=1e-3)
    np.testing.assert_allclose(new_rotation, rotation_from_vector(np.array([0, 0, 0.1])) @ rotation,
                               atol=2e-3)
    assert target.positions[-1] == HOME[-1]  # the gripper did not move
    before = target.positions.copy()
    with pytest.raises(TargetError, match="out of reach"):
        target.apply(TeleopCommand(mode=EE, ee_delta=[2.0, 0, 0, 0, 0, 0]))
    np.testing.assert_array_equal(target.positions, before)


def test_key_maps_come_from_the_device_docs():
    assert "toggle joint / end-effector mode" in key_map("keyboard")
    assert "e-stop" in key_map("gamepad")
    assert key_map("leader_arm") == ""


# -- the node ---------------------------------------------------------------------------------
@pytest.mark.ros
def test_leader_arm_commands_follow_the_leader_and_stop_when_it_goes_stale(spawn, ros_node):
    spawn([sys.executable, "-m", "rise.nodes.teleop_node", "--ros-args", "-p", "device:=leader_arm"])
    node, executor = ros_node
    names = list(ROBOT.arm.joint_names)
    leader = {"pose": HOME + np.r_[0.1, -0.1, 0.05, 0.0, 0.0, 0.2, -0.01], "on": True}
    states = node.create_publisher(JointState, "/joint_states", STATE)
    leader_states = node.create_publisher(JointState, "/leader/joint_states", STATE)

    def publish():
        states.publish(JointState(name=names, position=HOME.tolist()))
        if leader["on"]:
            leader_states.publish(JointState(name=names, position=leader["pose"].tolist()))

    node.create_timer(0.02, publish)
    commands: list[tuple[float, JointTrajectory]] = []
    node.create_subscription(JointTrajectory, "/rise/teleop/command",
                             lambda m: commands.append((time.monotonic(), m)), COMMAND)

    def follows() -> bool:
        return bool(commands) and np.allclose(commands[-1][1].points[0].positions, leader["pose"])

    spin_until(executor, follows, 30, "a command at the leader's pose")
    message = commands[-1][1]
    assert list(message.joint_names) == names and len(message.points) == 1
    assert message.points[0].time_from_start.nanosec == pytest.approx(1e9 / 30, abs=1)

    # A still leader: the unchanged target is re-sent every command_timeout_s / 2, not every tick.
    start = time.monotonic()
    spin_until(executor, lambda: time.monotonic() - start > 2.0, 5, "2 s of a still leader")
    still = [t for t, _ in commands if t > start + 0.5]  # after moves still in flight
    assert 3 <= len(still) <= 10, len(still)

    leader["pose"] = HOME + np.r_[-0.2, 0.0, 0.0, 0.1, 0.0, 0.0, -0.04]
    spin_until(executor, follows, 10, "commands to follow the leader's new pose")

    leader["on"] = False  # the leader stops: its data goes stale after 0.1 s
    start = time.monotonic()
    spin_until(executor, lambda: time.monotonic() - start > 2.0, 5, "2 s without the leader")
    late = [t for t, _ in commands if t > start + 0.3]
    assert late == [], f"{len(late)} commands from a stale leader"


@pytest.mark.ros
def test_keyboard_without_a_terminal_exits_2_with_one_line():
    result = subprocess.run([sys.executable, "-m", "rise.nodes.teleop_node", "--ros-args",
                             "-p", "device:=keyboard"], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a TTY" in errors[0], result.stderr


@pytest.mark.ros
def test_keyboard_on_a_terminal_moves_the_target_and_starts_an_episode(spawn, ros_node):
    master, slave = pty.openpty()
    try:
        saved = termios.tcgetattr(slave)
        process = spawn([sys.executable, "-m", "rise.nodes.teleop_node", "--ros-args", "-p",
                         "device:=keyboard"], stdin=slave, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
        lines = read_lines(process)
        node, executor = ros_node
        states = node.create_publisher(JointState, "/joint_states", STATE)
        node.create_timer(0.02, lambda: states.publish(JointState(name=list(ROBOT.arm.joint_names),
                                                                  position=HOME.tolist())))
        started: list[bool] = []

        def on_start(_request, response):
            started.append(True)
            response.success = True
            return response

        node.create_service(Trigger, START, on_start)
        commands: list[JointTrajectory] = []
        node.create_subscription(JointTrajectory, "/rise/teleop/command", commands.append, COMMAND)

        def type_until(key: bytes, done, what: str):
            """Press ``key`` once a second until ``done()`` (the node may still be discovering)."""
            pressed = [0.0]

            def step():
                if time.monotonic() - pressed[0] > 1.0:
                    os.write(master, key)
                    pressed[0] = time.monotonic()
                return done()

            spin_until(executor, step, 20, what)

        type_until(b"w", lambda: commands, "a command after pressing w (joint 1 +)")
        waist = commands[-1].points[0].positions[0]
        assert waist > 0 and waist / 0.02 == pytest.approx(round(waist / 0.02))  # 0.02 rad per press
        np.testing.assert_allclose(commands[-1].points[0].positions[1:], HOME[1:])
        type_until(b" ", lambda: started, "start_episode at the fake recorder after pressing space")
        assert any("toggle joint / end-effector mode" in line for line in lines)  # the key map

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert termios.tcgetattr(slave) == saved  # the terminal's settings are restored
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.ros
def test_a_missing_gamepad_exits_1_so_a_respawn_retries_it(tmp_path):
    try:
        result = subprocess.run([sys.executable, "-m", "rise.nodes.teleop_node", "--ros-args", "-p",
                                 "device:=gamepad"], stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("a gamepad is connected here: the node ran")
    if "no gamepad at index" not in result.stderr:
        pytest.skip(f"a gamepad is connected here (exit {result.returncode})")
    assert result.returncode == 1, result.stderr  # not 2: the runner and launch restart it
    assert "Traceback" not in result.stderr
