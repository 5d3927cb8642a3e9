"""Camera node: one real camera (OpenCV / V4L2, video file, RealSense) as ROS topics.

One process per camera of a real robot; the ``camera`` parameter names it in the robot config.
Publishes ``/cameras/<name>/image_raw`` (sensor_msgs/Image, rgb8) and ``/cameras/<name>/camera_info``
(from the camera's calibration file, else an ideal pinhole), both with SensorDataQoS, stamped with
the frame's capture time and frame_id ``<name>_camera``. Publishes ``/diagnostics``
(diagnostic_msgs/DiagnosticArray, 1 Hz) with the camera's health: ERROR while it is not delivering
(missing at start, unplugged), WARN when it stalls or differs from its configuration.

A camera missing at start is reported once and opened again every second until it appears; once
open, the driver's capture thread reconnects after an unplug by itself. Frames are taken without
blocking (``latest(timeout_s=0)``) from a timer at twice the camera's fps, so the executor never
waits on the device and no frame is skipped by capture/timer phase jitter; each frame is published
once. The node is named ``camera_<name>`` (``rise up`` and the launch file set it too).

Run: ``ros2 run rise rise_camera --ros-args -p robot_config:=my_arm -p camera:=front``
"""

from __future__ import annotations

import re
import sys
import threading

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from rise.config import CameraConfig, ConfigError
from rise.config.schema import did_you_mean
from rise.hardware.cameras import Calibration, CameraError, CameraStatus, calibration_for, make_camera
from rise.nodes.node_main import run_node
from rise.nodes.parameters import declare, declare_configs
from rise.nodes.qos import SENSOR
from rise.nodes.ros_image import to_image

OPEN_RETRY_S = 1.0  # a camera missing at start is opened again this often [s]
DIAGNOSTICS_PERIOD_S = 1.0
STALL_S = 1.0  # connected but no frame for this long: WARN [s]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def stamp_from_ns(nanoseconds: int) -> Time:
    """A wall-clock time in nanoseconds (``time.time_ns()``) as builtin_interfaces/Time."""
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def camera_info(calibration: Calibration, frame_id: str) -> CameraInfo:
    """The CameraInfo of ``calibration`` (its stamp is set per frame)."""
    info = CameraInfo(width=calibration.width, height=calibration.height,
                      distortion_model=calibration.distortion_model)
    info.header.frame_id = frame_id
    info.d, info.k, info.r, info.p = (list(calibration.d), list(calibration.k), list(calibration.r),
                                      list(calibration.p))
    return info


def node_name(args: list[str] | None) -> str:
    """``camera_<name>`` from a ``-p camera:=<name>`` argument, else ``camera``.

    The name is fixed before the parameter can be read; a ``-r __node:=...`` remap overrides it.
    """
    args = sys.argv if args is None else args
    for flag, value in zip(args, args[1:], strict=False):
        if flag in ("-p", "--param") and value.startswith("camera:="):
            name = value.split(":=", 1)[1].strip("'\"")
            if _NAME.match(name):
                return f"camera_{name}"
    return "camera"


def diagnostic_status(status: CameraStatus, config: CameraConfig, opened: bool, open_error: str,
                      published: int) -> DiagnosticStatus:
    """The camera's health as one DiagnosticStatus (pure: no I/O)."""
    level, message = DiagnosticStatus.OK, "streaming"
    if not opened:
        level = DiagnosticStatus.ERROR
        message = f"disconnected: not opened ({open_error}); retrying every {OPEN_RETRY_S:g} s"
    elif not status.connected:
        level, message = DiagnosticStatus.ERROR, f"disconnected: {status.last_error}; reconnecting"
    elif status.last_frame_age_s is None or status.last_frame_age_s > STALL_S:
        level, message = DiagnosticStatus.WARN, f"connected but no frame for over {STALL_S:g} s"
    elif status.warnings:
        level, message = DiagnosticStatus.WARN, "; ".join(status.warnings)
    age = "" if status.last_frame_age_s is None else f"{status.last_frame_age_s:.3f}"
    last_gap = f"{(status.gaps[-1][1] - status.gaps[-1][0]) / 1e9:.3f}" if status.gaps else ""
    values = {
        "driver": config.driver.value, "device": config.device, "connected": opened and status.connected,
        "frames": status.frames, "published": published, "measured_fps": f"{status.measured_fps:.1f}",
        "configured_fps": f"{config.fps:g}", "reconnects": status.reconnects, "gaps": len(status.gaps),
        "last_gap_s": last_gap, "last_frame_age_s": age,
        "last_error": status.last_error or (open_error if not opened else ""),
        "warnings": "; ".join(status.warnings),
    }
    return DiagnosticStatus(level=level, name=f"rise/cameras/{config.name}", message=message,
                            hardware_id=config.device,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


class CameraNode(Node):
    def __init__(self, name: str = "camera"):
        super().__init__(name)
        robot, _ = declare_configs(self)
        source = self.get_parameter("robot_config").value
        camera_name = declare(self, "camera", "", "camera name in the robot config's cameras")
        configs = {c.name: c for c in robot.cameras}
        if camera_name not in configs:
            hint = did_you_mean(camera_name, list(configs))
            raise ConfigError(source, "camera", f"expected one of {list(configs)}, got "
                              f"{camera_name!r}{hint}")
        self.config = configs[camera_name]
        self._frame_id = f"{camera_name}_camera"
        self._info = camera_info(calibration_for(self.config), self._frame_id)
        try:
            self.camera = make_camera(self.config)
        except ValueError as error:
            raise ConfigError(source, "camera", str(error)) from None
        topic = f"/cameras/{camera_name}"
        self._images = self.create_publisher(Image, f"{topic}/image_raw", SENSOR)
        self._infos = self.create_publisher(CameraInfo, f"{topic}/camera_info", SENSOR)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._opened, self._open_error = False, ""
        self._published = 0
        self._connected, self._reconnects_seen = False, 0
        self._retry = self.create_timer(OPEN_RETRY_S, self._try_open)
        # Frames are published from a thread that wakes the moment the capture thread has one:
        # no polling delay between capture and publication.
        self._stop = threading.Event()
        self._publisher_thread = threading.Thread(target=self._publish_frames, daemon=True,
                                                  name=f"publish-{camera_name}")
        self._publisher_thread.start()
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.get_logger().info(f"camera {camera_name}: {self.config.driver.value} "
                               f"{self.config.device!r}, {self.config.width}x{self.config.height} "
                               f"@ {self.config.fps:g} fps -> {topic}/image_raw, camera_info")
        self._try_open()

    def _try_open(self) -> None:
        if self._opened:
            return
        try:
            self.camera.open()
        except CameraError as error:
            if str(error) != self._open_error:  # each new reason once, not every retry
                self.get_logger().error(f"{error}; retrying every {OPEN_RETRY_S:g} s")
            self._open_error = str(error)
            return
        self._retry.cancel()
        self._opened, self._connected = True, True
        if self._open_error:
            self.get_logger().info(f"camera {self.config.name} opened after: {self._open_error}")
        self._open_error = ""

    def _publish_frames(self) -> None:
        while not self._stop.is_set():
            if not self._opened:
                self._stop.wait(0.05)
                continue
            try:
                frame = self.camera.latest(timeout_s=0.2)
            except CameraError:  # closed while shutting down
                return
            if frame is None:
                continue
            stamp = stamp_from_ns(frame.capture_ns)
            try:
                self._images.publish(to_image(frame.image, stamp, self._frame_id))
                self._info.header.stamp = stamp
                self._infos.publish(self._info)
            except Exception:
                if self._stop.is_set() or not rclpy.ok(context=self.context):
                    return  # shutting down: the context went away under us
                raise
            self._published += 1

    def _publish_diagnostics(self) -> None:
        status = self.camera.status()
        if self._opened:
            self._log_transitions(status)
        message = DiagnosticArray()
        message.header.stamp = self.get_clock().now().to_msg()
        message.status.append(diagnostic_status(status, self.config, self._opened, self._open_error,
                                                 self._published))
        self._diagnostics.publish(message)

    def _log_transitions(self, status: CameraStatus) -> None:
        """Log each disconnection and each reconnection once (checked at the diagnostics rate)."""
        name = self.config.name
        if self._connected and not status.connected:
            self.get_logger().warning(f"camera {name} disconnected: {status.last_error}; reconnecting")
        if status.reconnects > self._reconnects_seen and status.connected:
            gap_s = (status.gaps[-1][1] - status.gaps[-1][0]) / 1e9 if status.gaps else 0.0
            self.get_logger().info(f"camera {name} reconnected after a {gap_s:.1f} s gap "
                                   f"(reconnects: {status.reconnects})")
            self._reconnects_seen = status.reconnects
        self._connected = status.connected

    def destroy_node(self):
        self._stop.set()
        self._publisher_thread.join(timeout=2.0)
        self.camera.close()
        return super().destroy_node()


def main(args=None) -> int:
    name = node_name(args)
    return run_node(lambda: CameraNode(name), args)


if __name__ == "__main__":
    raise SystemExit(main())
