"""Policy node: runs the deployed policy at the control rate and hot-swaps verified checkpoints.

- Subscribes to every camera of the robot config (``/cameras/<name>/image_raw``, SensorDataQoS)
  and ``/joint_states``; inference runs on a worker thread of
  :class:`rise.policy.runtime.PolicyRuntime`, never in a callback.
- Every control tick (``control_rate_hz``, default the robot's) publishes a short
  trajectory_msgs/JointTrajectory on ``/rise/policy/command``: this tick's target, then the rest of
  the blended plan, one point per control period. The arm bridge follows it through its safety
  filter (deploy mode: ``source:=policy``). Nothing is published while disabled or before a policy
  has produced its first chunk.
- ``/rise/policy/checkpoint`` (std_msgs/String, JSON ``{"path", "sha256", "iteration", "metrics"}``,
  transient local): a new checkpoint (``path`` relative to the experiment's ``checkpoint_dir`` or
  absolute). It is verified by :func:`rise.models.checkpoint.read_checkpoint` (the announced sha256
  of its manifest, inside ``checkpoint_dir`` after resolving links, safetensors/JSON only, at most
  the experiment's ``max_checkpoint_mb``), built from the bytes that were hashed, dry-run in the
  background and goes live between two control ticks; a bad one is refused with the file and the
  reason (log and status), the running policy keeps going.
- At start it loads ``checkpoint``, or the newest policy under ``<checkpoint_dir>/policy``, or the
  warm-up policy under ``<checkpoint_dir>/policy_warmup`` (as named by their ``latest.json``:
  inside the root, with the sha256 written there).
- ``/rise/policy/rollback`` (std_srvs/Trigger): back to the policy live before the last swap.
- ``/rise/policy/enable`` (std_srvs/SetBool): start or stop publishing commands.
- ``/rise/policy/status`` (std_msgs/String, JSON, latched, on changes and at 1 Hz): active and
  previous sha256, enabled, control ticks, missed ticks (a tick later than one period), last swap
  time (announcement -> live) and last refusal.

Run: ``ros2 run rise rise_policy --ros-args -p checkpoint:=rise_runs/checkpoints/policy/step_001000
-p enabled:=true``
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rise.models.fit_dynamics import latest_pointer
from rise.nodes.node_main import run_node
from rise.nodes.parameters import declare, declare_configs
from rise.nodes.qos import COMMAND, LATCHED, SENSOR, STATE
from rise.nodes.ros_image import from_image
from rise.policy.runtime import PolicyRuntime, PolicySwapError

STATUS_PERIOD_S = 1.0  # the status is published on every change and at least this often [s]


def duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(sec=whole, nanosec=int(round((seconds - whole) * 1e9)))


class PolicyNode(Node):
    """The policy on the robot; ``node_kwargs`` go to rclpy's Node (tests pass a context and
    parameter overrides)."""

    def __init__(self, **node_kwargs):
        super().__init__("policy", **node_kwargs)
        self.robot, experiment = declare_configs(self)
        self._root = Path(experiment.checkpoint_dir)
        rate = declare(self, "control_rate_hz", float(self.robot.control_rate_hz),
                       "commands per second [Hz] (default: the robot config's control rate)")
        if rate <= 0:
            raise ValueError(f"control_rate_hz: expected > 0, got {rate}")
        steps = declare(self, "flow_steps", 10, "Euler steps of the policy's flow per prediction")
        replan = declare(self, "replan_every", 0, "control ticks between predictions (0: half a chunk)")
        enabled = declare(self, "enabled", False, "publish commands from the start (else: call "
                          "/rise/policy/enable)")
        checkpoint = declare(self, "checkpoint", "", "policy folder to load at start (verified, not "
                             "limited to checkpoint_dir; empty: the newest under <checkpoint_dir>/policy, "
                             "else <checkpoint_dir>/policy_warmup, else wait for /rise/policy/checkpoint)")
        self.names = list(self.robot.arm.joint_names)
        self._period_s = 1.0 / rate
        self._status_dirty = True
        self._last_status_s = 0.0
        self.runtime = PolicyRuntime(action_dim=len(self.names), cameras=self.robot.camera_names,
                                     period_s=self._period_s, steps=steps, replan_every=replan or None,
                                     on_event=self._on_runtime_event,
                                     max_checkpoint_bytes=experiment.max_checkpoint_bytes).start()
        self.runtime.set_enabled(enabled)
        self._command = self.create_publisher(JointTrajectory, "/rise/policy/command", COMMAND)
        self._status = self.create_publisher(String, "/rise/policy/status", LATCHED)
        for camera in self.robot.camera_names:
            self.create_subscription(Image, f"/cameras/{camera}/image_raw",
                                     lambda m, c=camera: self._on_image(c, m), SENSOR)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, STATE)
        self.create_subscription(String, "/rise/policy/checkpoint", self._on_checkpoint, LATCHED)
        self.create_service(Trigger, "/rise/policy/rollback", self._on_rollback)
        self.create_service(SetBool, "/rise/policy/enable", self._on_enable)
        if checkpoint:
            self.runtime.load_candidate(checkpoint)  # the operator's choice: not limited to the root
        elif newest := self._newest_policy():
            self.runtime.load_candidate(newest[0], expected_sha256=newest[1], root=self._root)
        self.create_timer(self._period_s, self._tick)
        self.get_logger().info(f"policy: {rate:g} Hz on /rise/policy/command, cameras "
                               f"{list(self.robot.camera_names)}, checkpoint root {self._root}, "
                               f"{'enabled' if enabled else 'disabled'}")

    def _newest_policy(self) -> tuple[Path, str | None] | None:
        for run in ("policy", "policy_warmup"):
            try:
                found = latest_pointer(self._root / run)
            except ValueError as error:  # CheckpointError: the file and the reason
                self.get_logger().error(str(error))
                continue
            if found is not None:
                return found
        return None

    # -- inputs -----------------------------------------------------------------------------
    def _on_image(self, camera: str, message: Image) -> None:
        try:
            pixels = from_image(message)
        except ValueError as error:
            self.get_logger().warning(f"/cameras/{camera}/image_raw ignored: {error}",
                                      throttle_duration_sec=1.0)
            return
        if pixels.ndim != 3:
            self.get_logger().warning(f"/cameras/{camera}/image_raw: expected colour frames, got "
                                      f"{message.encoding}", throttle_duration_sec=1.0)
            return
        self.runtime.observe(images={camera: np.array(pixels)})  # a writable, contiguous copy

    def _on_joint_state(self, message: JointState) -> None:
        index = {name: i for i, name in enumerate(message.name)}
        if len(message.position) != len(message.name) or any(n not in index for n in self.names):
            return
        state = np.array([message.position[index[n]] for n in self.names], dtype=np.float32)
        if np.all(np.isfinite(state)):
            self.runtime.observe(state=state)

    def _on_checkpoint(self, message: String) -> None:
        try:
            announcement = json.loads(message.data)
            path, sha256 = announcement["path"], announcement["sha256"]
            if not (isinstance(path, str) and path and isinstance(sha256, str) and len(sha256) == 64):
                raise TypeError("'path' must be a non-empty string, 'sha256' 64 hex digits")
            path = Path(path)
        except (ValueError, KeyError, TypeError) as error:
            self._refuse(f"announcement refused: expected JSON with 'path' and 'sha256' ({error!r}): "
                         f"{message.data[:200]!r}")
            return
        if self.runtime.active is not None and self.runtime.active.sha256 == sha256:
            return  # already live (a latched announcement heard again)
        folder = path if path.is_absolute() else self._root / path
        self.get_logger().info(f"checkpoint announced: {folder} (iteration "
                               f"{announcement.get('iteration')}); verifying in the background")
        self.runtime.load_candidate(folder, expected_sha256=sha256, root=self._root)

    def _on_rollback(self, _request, response):
        try:
            sha256 = self.runtime.rollback()
            response.success, response.message = True, f"rolled back to {sha256}"
        except PolicySwapError as error:
            response.success, response.message = False, str(error)
        self._status_dirty = True
        return response

    def _on_enable(self, request, response):
        self.runtime.set_enabled(bool(request.data))
        response.success = True
        response.message = "enabled" if request.data else "disabled: no commands are published"
        if request.data and self.runtime.active is None:
            response.message += " (no policy loaded yet: commands start once one is)"
        self.get_logger().info(f"policy {response.message}")
        self._status_dirty = True
        return response

    def _on_runtime_event(self, kind: str, message: str) -> None:
        """From the runtime's threads: log, and publish the status at the next tick."""
        if kind in ("refused", "error"):  # rclpy loggers want one severity per call site
            self.get_logger().error(message)
        else:
            self.get_logger().info(message)
        self._status_dirty = True

    def _refuse(self, reason: str) -> None:
        self.runtime.last_refusal = reason
        self.get_logger().error(reason)
        self._status_dirty = True

    # -- output -----------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        rows = self.runtime.tick(now)
        if rows is not None:
            message = JointTrajectory(joint_names=self.names)
            message.header.stamp = self.get_clock().now().to_msg()
            message.points = [JointTrajectoryPoint(positions=row.tolist(),
                                                   time_from_start=duration((i + 1) * self._period_s))
                              for i, row in enumerate(rows)]
            self._command.publish(message)
        if self._status_dirty or now - self._last_status_s >= STATUS_PERIOD_S:
            self._status_dirty, self._last_status_s = False, now
            status = {**self.runtime.status(), "control_rate_hz": 1.0 / self._period_s}
            self._status.publish(String(data=json.dumps(status)))

    def destroy_node(self):
        self.runtime.close()
        return super().destroy_node()


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
