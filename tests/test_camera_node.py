"""The camera node: a video file as a real camera, and a missing camera that must not crash it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, Image

from rise.hardware.cameras import Calibration
from rise.nodes.qos import SENSOR
from rise.nodes.ros_image import from_image
from support import read_lines, real_robot_yaml, spin_until

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 160, 120



def write_video(path: Path, frames: int = 30) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        image[:, : WIDTH // 2] = (0, 0, 255)  # BGR red on the left
        image[:, WIDTH // 2:] = (255, 0, 0)  # blue on the right
        image[: 4 + i] = 255
        writer.write(image)
    writer.release()
    return path


def start_camera(spawn, robot_file: Path, camera: str = "front") -> tuple[subprocess.Popen, list[str]]:
    process = spawn([sys.executable, "-m", "rise.nodes.camera_node", "--ros-args",
                     "-p", f"robot_config:={robot_file}", "-p", f"camera:={camera}"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, read_lines(process)


def camera_status(messages: list[DiagnosticArray], name: str = "front") -> DiagnosticStatus | None:
    for message in reversed(messages):
        for status in message.status:
            if status.name == f"rise/cameras/{name}":
                return status
    return None


def test_video_file_camera_publishes_stamped_rgb_images_and_camera_info(tmp_path, spawn, ros_node):
    video = write_video(tmp_path / "front.avi")
    robot_file = real_robot_yaml(tmp_path, [{"name": "front", "driver": "opencv", "width": WIDTH,
                                             "height": HEIGHT, "fps": 30.0, "device": str(video)}])
    start_camera(spawn, robot_file)
    node, executor = ros_node
    images: list[tuple[float, Image]] = []
    infos: list[CameraInfo] = []
    diagnostics: list[DiagnosticArray] = []
    node.create_subscription(Image, "/cameras/front/image_raw", lambda m: images.append((time.time(), m)),
                             SENSOR)
    node.create_subscription(CameraInfo, "/cameras/front/camera_info", infos.append, SENSOR)
    node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    spin_until(executor, lambda: len(images) >= 5 and infos, 30, "images and camera_info")

    count, start = len(images), time.monotonic()
    spin_until(executor, lambda: time.monotonic() - start > 2.0, 5, "2 s of frames")
    rate = (len(images) - count) / (time.monotonic() - start)
    assert 15 < rate < 40, rate

    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in images]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False)), "stamps must increase"
    lags = [received - stamp for (received, _), stamp in zip(images, stamps, strict=True)]
    assert all(-0.05 < lag < 0.5 for lag in lags), (min(lags), max(lags))
    message = images[-1][1]
    assert (message.encoding, message.width, message.height) == ("rgb8", WIDTH, HEIGHT)
    assert message.header.frame_id == "front_camera"
    pixels = from_image(message)
    assert pixels[HEIGHT - 1, 10, 0] > 200 and pixels[HEIGHT - 1, WIDTH - 10, 2] > 200  # red | blue

    info = infos[-1]
    ideal = Calibration.ideal(WIDTH, HEIGHT)
    assert (info.width, info.height, info.header.frame_id) == (WIDTH, HEIGHT, "front_camera")
    np.testing.assert_allclose(info.k, ideal.k)
    np.testing.assert_allclose(info.p, ideal.p)
    image_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in images}
    assert (info.header.stamp.sec, info.header.stamp.nanosec) in image_stamps

    status = spin_until(executor, lambda: camera_status(diagnostics), 10, "camera diagnostics")
    assert status.level == DiagnosticStatus.OK, status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values["connected"] == "True" and int(values["frames"]) > 0
    assert "camera_front" in node.get_node_names()


def test_missing_camera_is_reported_not_fatal_and_sigterm_exits_0(tmp_path, spawn, ros_node):
    robot_file = real_robot_yaml(tmp_path, [{"name": "front", "driver": "opencv", "width": WIDTH,
                                             "height": HEIGHT, "device": "/dev/video99"}])
    process, lines = start_camera(spawn, robot_file)
    node, executor = ros_node
    diagnostics: list[DiagnosticArray] = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    spin_until(executor, lambda: sum(camera_status([m]) is not None for m in diagnostics) >= 3, 20,
               "3 diagnostics of the missing camera (the node keeps retrying)")
    status = camera_status(diagnostics)
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.ERROR
    assert "disconnected" in status.message and "/dev/video99" in status.message
    assert values["connected"] == "False" and "/dev/video99" in values["last_error"]
    assert process.poll() is None
    errors = [line for line in lines if "no V4L2 device '/dev/video99'" in line]
    assert len(errors) == 1, lines  # reported once, not at every retry

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert not any("Traceback" in line for line in lines), lines


def test_unknown_camera_exits_2_with_one_line(tmp_path):
    robot_file = real_robot_yaml(tmp_path, [{"name": "front", "driver": "opencv", "width": WIDTH,
                                             "height": HEIGHT, "device": "/dev/video99"}])
    result = subprocess.run([sys.executable, "-m", "rise.nodes.camera_node", "--ros-args",
                             "-p", f"robot_config:={robot_file}", "-p", "camera:=frnt"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "camera: expected one of ['front'], got 'frnt'; did you mean 'front'?" in result.stderr
