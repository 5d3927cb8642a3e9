"""Simulator node: the MuJoCo robot as ROS sees a real one.

Publishes ``/cameras/<name>/image_raw`` (rgb8) and ``/cameras/<name>/camera_info`` for every camera
of the robot config and ``/joint_states`` at the control rate, all stamped with the instant of
the simulated state they show (camera and joint state of one tick share a stamp). Obeys
``/<controller>/joint_trajectory`` (trajectory_msgs/JointTrajectory) like a ros2_control
JointTrajectoryController: linear interpolation to the points in time, partial goals allowed,
bad trajectories refused with a log line that says why. Task state: ``/rise/sim/status``
(std_msgs/String, JSON, latched); new episode: ``/rise/sim/reset`` (std_srvs/Trigger).

With ``expert_teleop`` the task's scripted expert is the teleop device: it publishes on
``/rise/teleop/command`` and, with ``record``, runs episodes unattended through the recorder's
services (start, then stop with the success label when the task ends, then a new episode).

Run: ``ros2 run rise rise_sim --ros-args -p task:=brick_sort``
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rise.hardware.trajectory import TrajectoryError, TrajectoryFollower
from rise.nodes.node_main import run_node
from rise.nodes.parameters import declare, declare_configs
from rise.nodes.qos import COMMAND, LATCHED, SENSOR, STATE
from rise.nodes.ros_image import to_image
from rise.sim.env import SimEnv


def pinhole_info(width: int, height: int, fovy_deg: float, stamp, frame_id: str) -> CameraInfo:
    """CameraInfo of an ideal pinhole camera (MuJoCo cameras have no distortion)."""
    focal = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.stamp, info.header.frame_id = stamp, frame_id
    info.d = [0.0] * 5
    info.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class SimNode(Node):
    def __init__(self):
        super().__init__("sim")
        self.robot, experiment = declare_configs(self)
        task = declare(self, "task", "", "simulated task (empty: the experiment config's task)")
        task = task or experiment.task
        self._seed = declare(self, "seed", experiment.seed, "seed of the first episode (then +1 per reset)")
        self._expert_teleop = declare(self, "expert_teleop", False, "the scripted expert publishes on "
                                      "/rise/teleop/command (unattended demos)")
        self._record = declare(self, "record", False, "with expert_teleop: record each episode through "
                               "the recorder's services")
        self.env = SimEnv(task, self.robot)
        self.env.reset(seed=self._seed)
        self.follower = TrajectoryFollower(self.env.joint_names, self.env.joint_positions())
        self._joint_states = self.create_publisher(JointState, "/joint_states", STATE)
        self._status = self.create_publisher(String, "/rise/sim/status", LATCHED)
        self._images, self._infos, self._due = {}, {}, {}
        for camera in self.robot.cameras:
            self._images[camera.name] = self.create_publisher(Image, f"/cameras/{camera.name}/image_raw",
                                                              SENSOR)
            self._infos[camera.name] = self.create_publisher(
                CameraInfo, f"/cameras/{camera.name}/camera_info", SENSOR)
            self._due[camera.name] = 0.0
        topic = f"/{self.robot.arm.controller}/joint_trajectory"
        self.create_subscription(JointTrajectory, topic, self._on_trajectory, COMMAND)
        self.create_service(Trigger, "/rise/sim/reset", self._on_reset)
        self._last_status = None
        self._episode = EpisodeLoop(self) if self._expert_teleop else None
        self.create_timer(1.0 / self.robot.control_rate_hz, self._tick)
        self.get_logger().info(f"simulating {task} on {self.robot.name}; commands on {topic}")

    def _now_s(self) -> float:
        return time.monotonic()

    def _on_trajectory(self, message: JointTrajectory) -> None:
        now = self._now_s()
        try:
            stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
            start = now + max(0.0, stamp - time.time()) if stamp > 0 else now
            self.follower.set(
                list(message.joint_names),
                [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in message.points],
                [list(p.positions) for p in message.points], start, now)
        except TrajectoryError as error:
            self.get_logger().warning(f"trajectory refused: {error}")

    def _on_reset(self, _request, response):
        self.new_episode()
        response.success, response.message = True, f"episode reset with seed {self._seed}"
        return response

    def new_episode(self) -> None:
        """New objects; the arm stays where it is (a live robot does not teleport)."""
        self._seed += 1
        self.env.reset(seed=self._seed, keep_arm=True)

    def _tick(self) -> None:
        now = self._now_s()
        target = self.follower.sample(now)
        _, _, terminated, truncated, info = self.env.step(target)
        stamp = self.get_clock().now().to_msg()
        state = JointState(name=list(self.env.joint_names), position=self.env.joint_positions().tolist(),
                           velocity=self.env.joint_velocities().tolist())
        state.header.stamp = stamp
        self._joint_states.publish(state)
        self._publish_images(now, stamp)
        status = {k: info[k] for k in ("task", "success", "failed", "score", "tick")}
        status["done"] = bool(terminated or truncated)
        if self._episode is not None:
            self._episode.tick(status)
        if status != self._last_status:
            self._status.publish(String(data=json.dumps(status)))
            self._last_status = status

    def _publish_images(self, now: float, stamp) -> None:
        due = [c for c in self.robot.cameras if now >= self._due[c.name]]
        if not due:
            return
        images = self.env.render()
        for camera in due:
            self._due[camera.name] = max(self._due[camera.name] + 1.0 / camera.fps, now)
            frame = f"{camera.name}_camera"
            self._images[camera.name].publish(to_image(images[camera.name], stamp, frame))
            fovy = float(self.env.model.camera(camera.name).fovy[0])
            self._infos[camera.name].publish(pinhole_info(camera.width, camera.height, fovy, stamp, frame))

    def destroy_node(self):
        if hasattr(self, "env"):  # construction may have failed before the simulator existed
            self.env.close()
        return super().destroy_node()


class EpisodeLoop:
    """The scripted expert as a teleop device, with unattended episodes (see the module doc)."""

    def __init__(self, node: SimNode):
        self.node = node
        self.command = node.create_publisher(JointTrajectory, "/rise/teleop/command", COMMAND)
        self.start = node.create_client(Trigger, "/rise/recorder/start_episode")
        self.stop = node.create_client(SetBool, "/rise/recorder/stop_episode")
        self.phase = "starting"
        self.pending = None
        self.expert = None
        self.episodes = 0
        # The bridge publishes its status once it knows the arm's pose: before that it would
        # refuse the expert's commands (no first command without a measured pose).
        self.bridge_ready = False
        node.create_subscription(String, "/rise/arm/status", self._on_bridge_status, LATCHED)

    def _on_bridge_status(self, _message: String) -> None:
        self.bridge_ready = True

    def tick(self, status: dict) -> None:
        node = self.node
        if self.pending is not None and not self.pending.done():
            return
        if self.phase == "starting":
            if not self.bridge_ready:
                return
            if node._record and self.pending is None:
                if not self.start.service_is_ready():
                    return
                self.pending = self.start.call_async(Trigger.Request())
                return
            if self.pending is not None and not self.pending.result().success:
                node.get_logger().warning(f"recorder refused to start: {self.pending.result().message}")
            self.pending = None
            self.expert = node.env.task.expert(node.env, np.random.default_rng(node._seed))
            self.phase = "running"
        if self.phase == "running":
            if status["done"]:
                self.phase = "stopping"
                if node._record:
                    self.pending = self.stop.call_async(SetBool.Request(data=bool(status["success"])))
                return
            self._publish(self.expert.act(node.env))
            return
        # stopping: the recorder has answered (or there is none); next episode
        if self.pending is not None:
            node.get_logger().info(f"episode {self.episodes}: success={status['success']} "
                                   f"score={status['score']}: {self.pending.result().message}")
        self.pending = None
        self.episodes += 1
        node.new_episode()
        self.phase = "starting"

    def _publish(self, action) -> None:
        message = JointTrajectory(joint_names=list(self.node.env.joint_names))
        period_ns = int(1e9 / self.node.robot.control_rate_hz)
        message.points = [JointTrajectoryPoint(positions=[float(v) for v in action],
                                               time_from_start=Duration(sec=0, nanosec=period_ns))]
        self.command.publish(message)


def main(args=None) -> int:
    return run_node(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
