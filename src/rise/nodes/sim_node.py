"""Simulator node: the MuJoCo robot as ROS sees a real one.

Publishes ``/cameras/<name>/image_raw`` (rgb8) and ``/cameras/<name>/camera_info`` for every camera
of the robot config, stamped at render time, and ``/joint_states`` at the control rate. Obeys
``/<controller>/joint_trajectory`` (trajectory_msgs/JointTrajectory) like a ros2_control
JointTrajectoryController: linear interpolation to the points in time, partial goals allowed,
bad trajectories refused with a log line that says why. Task state: ``/rise/sim/status``
(std_msgs/String, JSON, latched); new episode: ``/rise/sim/reset`` (std_srvs/Trigger).

Run: ``ros2 run rise rise_sim --ros-args -p task:=brick_sort``
"""

from __future__ import annotations

import json
import math
import time

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

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
        self._seed += 1
        self.env.reset(seed=self._seed)
        self.follower = TrajectoryFollower(self.env.joint_names, self.env.joint_positions())
        response.success, response.message = True, f"episode reset with seed {self._seed}"
        return response

    def _tick(self) -> None:
        now = self._now_s()
        target = self.follower.sample(now)
        _, _, terminated, truncated, info = self.env.step(target)
        stamp = self.get_clock().now().to_msg()
        state = JointState(name=list(self.env.joint_names), position=self.env.joint_positions().tolist(),
                           velocity=self.env.joint_velocities().tolist())
        state.header.stamp = stamp
        self._joint_states.publish(state)
        self._publish_images(now)
        status = {k: info[k] for k in ("task", "success", "failed", "score", "tick")}
        status["done"] = bool(terminated or truncated)
        if status != self._last_status:
            self._status.publish(String(data=json.dumps(status)))
            self._last_status = status

    def _publish_images(self, now: float) -> None:
        due = [c for c in self.robot.cameras if now >= self._due[c.name]]
        if not due:
            return
        images = self.env.render()
        for camera in due:
            self._due[camera.name] = max(self._due[camera.name] + 1.0 / camera.fps, now)
            stamp = self.get_clock().now().to_msg()
            frame = f"{camera.name}_camera"
            self._images[camera.name].publish(to_image(images[camera.name], stamp, frame))
            fovy = float(self.env.model.camera(camera.name).fovy[0])
            self._infos[camera.name].publish(pinhole_info(camera.width, camera.height, fovy, stamp, frame))

    def destroy_node(self):
        self.env.close()
        return super().destroy_node()


def main(args=None) -> int:
    return run_node(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
