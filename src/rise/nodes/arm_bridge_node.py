"""Arm bridge node: the one path from command sources to the arm, through the safety filter.

Subscribes to ``/rise/teleop/command`` and ``/rise/policy/command`` (trajectory_msgs/JointTrajectory)
and follows the selected source's trajectory in time; every control tick the target goes through
:class:`rise.hardware.safety.SafetyFilter` (joint limits, per-tick change and velocity limit, no
jump at activation, command timeout -> hold, latching e-stop) and the result is sent to
``/<controller>/joint_trajectory`` and published on ``/rise/arm/command_sent`` — what was really
sent, clipped or held, never silently dropped. A command is checked whole before any of it is
followed (:func:`rise.hardware.trajectory.parse_trajectory`: joint names, NaN/inf, times, velocities,
implied speed); a refused one is logged with the reason and changes nothing (the arm keeps following
the last accepted command, or holds).

- ``/rise/arm/estop`` (std_srvs/SetBool): true engages (latching), false releases.
- ``/rise/arm/select_source`` (std_msgs/String, ``teleop`` or ``policy``); also the ``source``
  parameter. The active source, e-stop and last reasons: ``/rise/arm/status`` (String, JSON, latched;
  ``refused`` is the last refused command's reason, ``refusals`` how many were refused so far).

Run: ``ros2 run rise rise_arm_bridge --ros-args -p source:=teleop``
"""

from __future__ import annotations

import json
import time
from collections import deque

import numpy as np
from builtin_interfaces.msg import Duration
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rise.hardware.safety import CommandError, FilterResult, MeasurementError, SafetyFilter
from rise.hardware.trajectory import Trajectory, TrajectoryError, TrajectoryFollower, parse_trajectory
from rise.nodes.node_main import run_node
from rise.nodes.parameters import declare, declare_configs
from rise.nodes.qos import COMMAND, LATCHED, STATE

SOURCES = ("teleop", "policy")
REFUSAL_LOGS_PER_S = 5  # a source flooding bad commands: the status still shows each refusal


def trajectory_times(message: JointTrajectory) -> list[float]:
    return [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in message.points]


def parse_command(safety: SafetyFilter, message: JointTrajectory) -> Trajectory:
    """The checked trajectory of a command; CommandError or TrajectoryError says why not."""
    points = message.points
    return parse_trajectory(safety, message.joint_names, trajectory_times(message),
                            [p.positions for p in points], [p.velocities for p in points],
                            [p.accelerations for p in points])


class ArmBridgeNode(Node):
    def __init__(self):
        super().__init__("arm_bridge")
        self.robot, _ = declare_configs(self)
        self.source = declare(self, "source", "teleop", "command source: teleop or policy", read_only=False)
        if self.source not in SOURCES:
            raise ValueError(f"source: expected one of {SOURCES}, got {self.source!r}")
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.names = self.robot.arm.joint_names
        self.safety = SafetyFilter(self.robot.arm, self.robot.control_rate_hz)
        self.follower: TrajectoryFollower | None = None
        self._measured: np.ndarray | None = None
        self._last_sent: np.ndarray | None = None
        self._trajectory_end_s = 0.0
        self._period_s = 1.0 / self.robot.control_rate_hz
        controller = f"/{self.robot.arm.controller}/joint_trajectory"
        self._to_controller = self.create_publisher(JointTrajectory, controller, COMMAND)
        self._sent = self.create_publisher(JointTrajectory, "/rise/arm/command_sent", COMMAND)
        self._status = self.create_publisher(String, "/rise/arm/status", LATCHED)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, STATE)
        for source in SOURCES:
            self.create_subscription(JointTrajectory, f"/rise/{source}/command",
                                     lambda m, s=source: self._on_command(s, m), COMMAND)
        self.create_subscription(String, "/rise/arm/select_source", self._on_select, LATCHED)
        self.create_service(SetBool, "/rise/arm/estop", self._on_estop)
        self._last_status: dict | None = None
        self._last_reasons: tuple[str, ...] = ()
        self._refused = ""
        self._refusals = 0
        self._refusal_logs_s: deque[float] = deque(maxlen=REFUSAL_LOGS_PER_S)
        self.create_timer(self._period_s, self._tick)
        self.get_logger().info(f"arm bridge: source {self.source}, sending to {controller} at "
                               f"{self.robot.control_rate_hz:g} Hz")

    # -- inputs -----------------------------------------------------------------------------
    def _on_joint_state(self, message: JointState) -> None:
        index = {name: i for i, name in enumerate(message.name)}
        if not all(name in index for name in self.names) or len(message.position) != len(message.name):
            return
        measured = np.array([message.position[index[n]] for n in self.names])
        try:
            self.safety.update_measured(measured, time.monotonic())
            self._measured = measured
        except MeasurementError as error:
            self.get_logger().warning(f"joint state ignored: {error}", throttle_duration_sec=1.0)

    def _on_command(self, source: str, message: JointTrajectory) -> None:
        if source != self.source:
            return
        now = time.monotonic()
        try:
            trajectory = parse_command(self.safety, message)
            follower = TrajectoryFollower(self.names, self._current_output())
            follower.set(self.names, trajectory.times_s, trajectory.positions, 0.0, now)
        except (CommandError, TrajectoryError) as error:
            self._refuse(source, str(error), now)
            return
        self.follower = follower
        self._trajectory_end_s = now + float(trajectory.times_s[-1])

    def _refuse(self, source: str, reason: str, now: float) -> None:
        """Show the reason in the status and log it (at most REFUSAL_LOGS_PER_S lines a second)."""
        self._refusals += 1
        self._refused = reason
        logs = self._refusal_logs_s
        if len(logs) < logs.maxlen or now - logs[0] >= 1.0:
            logs.append(now)
            self.get_logger().warning(f"{source} command refused ({self._refusals} so far): {reason}")

    def _on_select(self, message: String) -> None:
        self._select(message.data)

    def _select(self, source: str) -> str | None:
        if source not in SOURCES:
            self.get_logger().warning(f"select_source refused: expected one of {SOURCES}, got {source!r}")
            return f"expected one of {SOURCES}"
        if source != self.source:
            self.source = source
            self.follower = None
            self.safety.reset()  # the new source's first command must start near the arm's pose
            self.get_logger().info(f"command source: {source}")
        return None

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name == "source":
                problem = self._select(parameter.value)
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _on_estop(self, request, response):
        self.safety.set_estop(bool(request.data))
        if request.data:
            self.follower = None
            self._tick()  # hold within this control tick
        response.success = True
        response.message = "e-stop engaged (latched)" if request.data else "e-stop released"
        self.get_logger().warning(response.message)
        return response

    # -- output -----------------------------------------------------------------------------
    def _current_output(self) -> np.ndarray:
        """Where a new trajectory starts from: the last sent command, else the measured pose."""
        for candidate in (self._last_sent, self._measured):
            if candidate is not None:
                return candidate
        return np.array(self.robot.arm.home, dtype=float)

    def _tick(self) -> None:
        now = time.monotonic()
        if self.follower is not None and now <= self._trajectory_end_s + self._period_s:
            self.safety.command(self.follower.sample(now), now)
        result = self.safety.tick(now)
        if not result.sent:
            return
        self._last_sent = np.array(result.positions)
        self._publish(result)

    def _publish(self, result: FilterResult) -> None:
        message = JointTrajectory(joint_names=list(self.names))
        message.header.stamp = self.get_clock().now().to_msg()
        nanoseconds = int(self._period_s * 1e9)
        message.points = [JointTrajectoryPoint(positions=result.positions.tolist(),
                                               time_from_start=Duration(sec=0, nanosec=nanoseconds))]
        self._to_controller.publish(message)
        self._sent.publish(message)
        if result.reasons and result.reasons != self._last_reasons:
            self.get_logger().warning("; ".join(result.reasons), throttle_duration_sec=1.0)
        self._last_reasons = result.reasons
        status = {"source": self.source, "estop": self.safety.estopped, "active": self.safety.active,
                  "held": result.held, "clipped": result.clipped, "reasons": list(result.reasons),
                  "refused": self._refused, "refusals": self._refusals}
        if status != self._last_status:
            self._status.publish(String(data=json.dumps(status)))
            self._last_status = status


def main(args=None) -> int:
    return run_node(ArmBridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
