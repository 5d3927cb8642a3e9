"""Optional raw rosbag2 (MCAP) recording beside the dataset: one bag per episode, every topic the
recorder sees plus the command sources, written from raw (serialized) subscriptions without
deserializing. Uses the ``rosbags`` library (no ROS install needed); read back with ``rosbags``,
``mcap`` or ``ros2 bag``.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from rise.nodes.qos import COMMAND, SENSOR, STATE


def bag_topics(camera_names) -> list[tuple[str, type, str, QoSProfile]]:
    """(topic, message class, rosbag type name, QoS) of everything recorded."""
    topics = []
    for camera in camera_names:
        topics.append((f"/cameras/{camera}/image_raw", Image, "sensor_msgs/msg/Image", SENSOR))
        topics.append((f"/cameras/{camera}/camera_info", CameraInfo, "sensor_msgs/msg/CameraInfo", SENSOR))
    topics.append(("/joint_states", JointState, "sensor_msgs/msg/JointState", STATE))
    for topic in ("/rise/arm/command_sent", "/rise/teleop/command", "/rise/policy/command"):
        topics.append((topic, JointTrajectory, "trajectory_msgs/msg/JointTrajectory", COMMAND))
    return topics


class RawBag:
    """Subscribes raw to the recorded topics; ``start(path)`` / ``stop(keep)`` bracket an episode."""

    def __init__(self, node: Node, camera_names):
        self._node = node
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self._lock = threading.Lock()
        self._writer: Writer | None = None
        self._path: Path | None = None
        self._connections: dict = {}
        self._topics = bag_topics(camera_names)
        for topic, cls, _, qos in self._topics:
            node.create_subscription(cls, topic, lambda data, t=topic: self._on_raw(t, data), qos, raw=True)

    def start(self, path: Path) -> None:
        with self._lock:
            self._close(keep=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                shutil.rmtree(path)  # a bag left by an episode that never committed
            writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
            writer.open()
            self._connections = {topic: writer.add_connection(topic, type_name, typestore=self._typestore)
                                 for topic, _, type_name, _ in self._topics}
            self._writer, self._path = writer, path

    def stop(self, keep: bool) -> None:
        with self._lock:
            self._close(keep)

    def _close(self, keep: bool) -> None:
        if self._writer is None:
            return
        self._writer.close()
        if not keep and self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
        self._writer, self._path = None, None

    def _on_raw(self, topic: str, data: bytes) -> None:
        with self._lock:
            if self._writer is not None:
                now_ns = self._node.get_clock().now().nanoseconds
                self._writer.write(self._connections[topic], now_ns, data)
