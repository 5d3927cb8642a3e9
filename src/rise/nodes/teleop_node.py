"""Teleop node: an operator device (keyboard, gamepad, leader arm) as arm commands and episode events.

Polls the device (parameter ``device``: ``keyboard`` | ``gamepad`` | ``leader_arm``) at the robot's
control rate and turns each :class:`~rise.hardware.teleop.TeleopCommand` into:

- a target pose (arm joints, then the gripper, in ``robot.arm.joint_names`` order) that starts
  from the latest ``/joint_states``; joint deltas and end-effector deltas (solved by IK on the
  URDF's tool point) accumulate onto it, a leader arm sets it absolutely, the gripper opening
  [0, 1] maps to [gripper.lower, gripper.upper], and it is clipped to the joint limits;
- ``/rise/teleop/command`` (trajectory_msgs/JointTrajectory): one point at the target,
  ``time_from_start`` one control period, header stamp zero (start now). Sent when the target
  changes and, while the operator is active, re-sent every ``command_timeout_s / 2`` so the arm
  bridge keeps following (it holds the arm after ``command_timeout_s`` without a command). The
  operator is active until ``idle_timeout_s`` after the last motion or gripper input (keyboard
  and gamepad: 5 s; leader arm: 0 s — a stale leader is never re-sent). Then nothing more is
  sent, the bridge holds the arm, and the next input starts again from ``/joint_states``;
- episode flags as asynchronous service calls (never waited on; a missing service is a warning):
  start -> ``/rise/recorder/start_episode`` (std_srvs/Trigger), stop -> ``/rise/recorder/
  stop_episode`` (std_srvs/SetBool, data = success), discard -> ``/rise/recorder/discard_episode``
  (Trigger), e-stop -> ``/rise/arm/estop`` (SetBool true; at most twice a second while held).

The leader arm's joint states come from ``leader_topic`` (default ``/leader/joint_states``) with
the follower's joint names. The keyboard needs the foreground of a terminal, so start it by hand in
its own terminal: ``ros2 run rise rise_teleop --ros-args -p device:=keyboard``. A device that
cannot be opened (or is lost) ends the node with one line on stderr and exit code 2.

Run: ``ros2 run rise rise_teleop --ros-args -p robot_config:=my_arm -p device:=gamepad``
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rise import paths
from rise.config import ArmConfig, ConfigError, RobotConfig
from rise.hardware.teleop import (
    GamepadTeleop,
    KeyboardTeleop,
    LeaderArmTeleop,
    TeleopCommand,
    TeleopDevice,
    TeleopDeviceError,
    TeleopDeviceMissing,
)
from rise.nodes.node_main import run_node
from rise.nodes.parameters import declare, declare_configs
from rise.nodes.qos import COMMAND, STATE
from rise.sim.scene import TCP_OFFSET_M

START, STOP, DISCARD = (f"/rise/recorder/{name}" for name in ("start_episode", "stop_episode",
                                                              "discard_episode"))
ESTOP = "/rise/arm/estop"
SERVICE_TYPES = {START: Trigger, STOP: SetBool, DISCARD: Trigger, ESTOP: SetBool}
DEVICES = ("keyboard", "gamepad", "leader_arm")
IDLE_TIMEOUT_S = {"keyboard": 5.0, "gamepad": 5.0, "leader_arm": 0.0}


# -- episode flags -> service calls -----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ServiceCall:
    service: str
    data: bool | None = None  # SetBool's data; None for a Trigger


def service_calls(command: TeleopCommand) -> list[ServiceCall]:
    """The service calls a command's flags ask for, e-stop first, a stop before a start."""
    calls = []
    if command.estop:
        calls.append(ServiceCall(ESTOP, True))
    if command.stop_episode_success or command.stop_episode_failure:
        calls.append(ServiceCall(STOP, bool(command.stop_episode_success)))
    if command.discard_episode:
        calls.append(ServiceCall(DISCARD))
    if command.start_episode:
        calls.append(ServiceCall(START))
    return calls


class EpisodeActions:
    """Sends a command's flags through rclpy-style clients (``service_is_ready``, ``call_async``,
    ``srv_type``) without waiting: an unavailable service is reported, never waited for."""

    def __init__(self, clients: Mapping[str, object], warn: Callable[[str], None],
                 info: Callable[[str], None], estop_repeat_s: float = 0.5):
        self._clients = clients
        self._warn, self._info = warn, info
        self._estop_repeat_s = estop_repeat_s
        self._last_estop_s = -np.inf

    def handle(self, command: TeleopCommand, now_s: float) -> list[ServiceCall]:
        """Call the services for ``command``'s flags; returns the calls sent."""
        sent = []
        for call in service_calls(command):
            if call.service == ESTOP:
                if now_s - self._last_estop_s < self._estop_repeat_s:
                    continue  # a held e-stop button: the bridge latches, no need to flood it
                self._last_estop_s = now_s
            client = self._clients[call.service]
            if not client.service_is_ready():
                who = "arm bridge" if call.service == ESTOP else "recorder"
                self._warn(f"{call.service} is not available (is the {who} running?); request dropped")
                continue
            request = client.srv_type.Request()
            if call.data is not None:
                request.data = call.data
            future = client.call_async(request)
            future.add_done_callback(functools.partial(self._on_done, call))
            sent.append(call)
        return sent

    def _on_done(self, call: ServiceCall, future) -> None:
        response = future.result()
        name = call.service if call.data is None else f"{call.service}({call.data})"
        if response is None:
            self._warn(f"{name}: no response")
        elif response.success:
            self._info(f"{name}: {response.message or 'ok'}")
        else:
            self._warn(f"{name} refused: {response.message}")


# -- the target pose --------------------------------------------------------------------------
class TargetError(ValueError):
    """A command that cannot become a target (no joint state yet, pose out of reach)."""


def rotation_from_vector(rotation_vector: np.ndarray) -> np.ndarray:
    """The rotation matrix of an axis-angle vector [rad] (Rodrigues)."""
    angle = float(np.linalg.norm(rotation_vector))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = np.asarray(rotation_vector) / angle
    skew = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * skew + (1.0 - np.cos(angle)) * skew @ skew


def arm_kinematics(robot: RobotConfig):
    """IK of the URDF's tool point (``gripper_base_link`` + TCP_OFFSET_M along its x axis)."""
    import mujoco

    from rise.sim.kinematics import ArmKinematics
    from rise.sim.scene import GRIPPER_BODY, TCP_SITE

    spec = mujoco.MjSpec.from_file(str(paths.resolve(robot.urdf)))
    body = spec.body(GRIPPER_BODY)
    if body is None:
        raise ValueError(f"the URDF has no link {GRIPPER_BODY!r} to put the tool point on")
    body.add_site(name=TCP_SITE, pos=[TCP_OFFSET_M, 0.0, 0.0])
    return ArmKinematics(spec.compile(), tuple(j.name for j in robot.arm.joints))


class TeleopTarget:
    """The commanded pose (arm joints, then gripper, in ``arm.joint_names`` order), within limits.

    It starts from the measured pose and accumulates commands; :meth:`reset` makes the next
    command start from the measured pose again. ``kinematics`` (an ArmKinematics over the arm
    joints) is needed only for end-effector deltas. No ROS: pure numpy (and MuJoCo for IK).
    """

    def __init__(self, arm: ArmConfig, kinematics=None, ik_tolerance: float = 5e-3):
        self.names = arm.joint_names
        self.lower = np.array([j.lower for j in arm.all_joints])
        self.upper = np.array([j.upper for j in arm.all_joints])
        self._arm = len(arm.joints)
        self._kinematics = kinematics
        self._ik_tolerance = ik_tolerance
        self.measured: np.ndarray | None = None
        self.positions: np.ndarray | None = None  # None: start from the measured pose

    def update_measured(self, names: Sequence[str], positions: Sequence[float]) -> bool:
        """Take a joint state (any order, extra joints ignored); False if it lacks a joint."""
        index = {name: i for i, name in enumerate(names)}
        if len(names) != len(positions) or not all(name in index for name in self.names):
            return False
        measured = np.array([positions[index[name]] for name in self.names], dtype=float)
        if not np.all(np.isfinite(measured)):
            return False
        self.measured = measured
        return True

    def reset(self) -> None:
        self.positions = None

    def apply(self, command: TeleopCommand) -> bool:
        """Apply the command's motion and gripper; True when the target changed."""
        if not command.has_motion and command.gripper is None:
            return False
        base = self.positions if self.positions is not None else self.measured
        if base is None:
            raise TargetError("no /joint_states yet: the target starts from the measured pose")
        new = base.copy()
        for name in ("joint_delta", "absolute_joints"):
            values = getattr(command, name)
            if values is not None and len(values) != self._arm:
                raise TargetError(f"{name}: expected {self._arm} arm joints, got {len(values)}")
        if command.joint_delta is not None:
            new[:self._arm] += command.joint_delta
        elif command.absolute_joints is not None:
            new[:self._arm] = command.absolute_joints
        elif command.ee_delta is not None:
            new[:self._arm] = self._solve_ee(new[:self._arm], command.ee_delta)
        if command.gripper is not None:
            new[self._arm] = self.lower[-1] + command.gripper * (self.upper[-1] - self.lower[-1])
        new = np.clip(new, self.lower, self.upper)
        changed = self.positions is None or not np.array_equal(new, self.positions)
        self.positions = new
        return changed

    def _solve_ee(self, q: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """Joints that move the tool by ``delta`` (base frame: dx dy dz, droll dpitch dyaw)."""
        if self._kinematics is None:
            raise TargetError("end-effector motion is unavailable (no kinematics for this robot)")
        q = np.clip(q, self.lower[:self._arm], self.upper[:self._arm])
        position, rotation = self._kinematics.forward(q)
        goal = rotation_from_vector(delta[3:]) @ rotation
        solution, error = self._kinematics.solve(q, position + delta[:3], goal)
        if error > self._ik_tolerance:
            raise TargetError(f"end-effector target out of reach (IK error {error:.4f})")
        return solution


# -- devices ----------------------------------------------------------------------------------
def make_device(name: str, robot: RobotConfig, leader_timeout_s: float) -> TeleopDevice:
    """The teleop device ``name`` (not opened yet) for ``robot``'s arm joints."""
    arm_joints = [joint.name for joint in robot.arm.joints]
    if name == "keyboard":
        return KeyboardTeleop(num_joints=len(arm_joints))
    if name == "gamepad":
        return GamepadTeleop(num_joints=len(arm_joints))
    gripper = robot.arm.gripper
    return LeaderArmTeleop(arm_joints, gripper_joint=gripper.name, gripper_closed=gripper.lower,
                           gripper_open=gripper.upper, timeout_s=leader_timeout_s)


def key_map(device: str) -> str:
    """The device's key / button map: the first literal block of its module docstring."""
    from rise.hardware.teleop import gamepad, keyboard

    module = {"keyboard": keyboard, "gamepad": gamepad}.get(device)
    lines = (module.__doc__ or "").splitlines() if module else []
    start = next((i for i, line in enumerate(lines) if line.rstrip().endswith("::")), None)
    if start is None:
        return ""
    block = []
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break
        block.append(line)
    return "\n".join(block).strip("\n")


# -- the node ---------------------------------------------------------------------------------
class TeleopNode(Node):
    def __init__(self):
        super().__init__("teleop")
        self.robot, _ = declare_configs(self)
        device = declare(self, "device", "gamepad", f"teleop device: {' | '.join(DEVICES)}")
        if device not in DEVICES:
            raise ConfigError("parameter", "device", f"expected one of {list(DEVICES)}, got {device!r}")
        leader_topic = declare(self, "leader_topic", "/leader/joint_states",
                               "leader_arm: the leader's sensor_msgs/JointState topic")
        leader_timeout_s = declare(self, "leader_timeout_s", 0.1,
                                   "leader_arm: leader data older than this is stale [s]")
        self._idle_timeout_s = declare(
            self, "idle_timeout_s", IDLE_TIMEOUT_S[device], "the target is re-sent until this "
            "long after the last operator input; then the next input starts from /joint_states [s]")
        self._device_name = device
        arm = self.robot.arm
        self._period_s = 1.0 / self.robot.control_rate_hz
        self._resend_s = arm.safety.command_timeout_s / 2
        self._last_input_s = -np.inf
        self._last_sent_s = -np.inf
        self.target = TeleopTarget(arm, self._kinematics() if device != "leader_arm" else None)
        self.device = make_device(device, self.robot, leader_timeout_s)
        self._commands = self.create_publisher(JointTrajectory, "/rise/teleop/command", COMMAND)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, STATE)
        if device == "leader_arm":
            self.create_subscription(JointState, leader_topic, self._on_leader, STATE)
        clients = {name: self.create_client(srv, name) for name, srv in SERVICE_TYPES.items()}
        logger = self.get_logger()
        self.actions = EpisodeActions(clients, logger.warning, logger.info)
        self.device.open()  # TeleopDeviceError: main() reports it in one line, exit 1 or 2
        self.create_timer(self._period_s, self._tick)
        keys = key_map(device)
        where = f" from {leader_topic}" if device == "leader_arm" else ""
        logger.info(f"teleop: {device}{where} -> /rise/teleop/command at "
                    f"{self.robot.control_rate_hz:g} Hz" + (f"; keys:\n{keys}" if keys else ""))

    def _kinematics(self):
        try:
            return arm_kinematics(self.robot)
        except (ValueError, OSError) as error:
            self.get_logger().warning(f"end-effector mode unavailable: {error}")
            return None

    def _on_joint_state(self, message: JointState) -> None:
        if not self.target.update_measured(message.name, message.position):
            self.get_logger().warning(f"/joint_states ignored: expected finite positions of "
                                      f"{list(self.target.names)}", throttle_duration_sec=5.0)

    def _on_leader(self, message: JointState) -> None:
        try:
            rejected = self.device.update_leader(message.name, message.position, time.monotonic())
        except ValueError as error:
            self.get_logger().warning(f"leader joint state ignored: {error}", throttle_duration_sec=1.0)
            return
        if rejected:
            self.get_logger().warning(f"leader joints {list(rejected)} not finite: ignored",
                                      throttle_duration_sec=1.0)

    def _tick(self) -> None:
        now = time.monotonic()
        command = self.device.poll(now)
        self.actions.handle(command, now)
        changed = False
        if command.has_motion or command.gripper is not None:
            self._last_input_s = now
            try:
                changed = self.target.apply(command)
            except TargetError as error:
                self.get_logger().warning(str(error), throttle_duration_sec=1.0)
        if now - self._last_input_s > self._idle_timeout_s:
            self.target.reset()  # idle: the bridge holds the arm; restart from /joint_states
            return
        if self.target.positions is not None and (changed or now - self._last_sent_s >= self._resend_s):
            self._publish(self.target.positions)
            self._last_sent_s = now

    def _publish(self, positions: np.ndarray) -> None:
        message = JointTrajectory(joint_names=list(self.target.names))  # stamp 0: start now
        nanoseconds = int(self._period_s * 1e9)
        duration = Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)
        message.points = [JointTrajectoryPoint(positions=positions.tolist(), time_from_start=duration)]
        self._commands.publish(message)

    def destroy_node(self):
        self.device.close()  # restores the terminal (keyboard) or releases the gamepad
        return super().destroy_node()


def main(args=None) -> int:
    try:
        return run_node(TeleopNode, args)
    except TeleopDeviceMissing as error:  # exit 1: a respawn retries (the pad may be plugged in)
        print(f"error: teleop device: {error}", file=sys.stderr)
        return 1
    except TeleopDeviceError as error:  # exit 2: retrying cannot help (not a terminal, no pygame)
        print(f"error: teleop device: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
