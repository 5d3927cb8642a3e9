"""Camera drivers without ROS: OpenCV / V4L2 devices and video files, Intel RealSense.

``make_camera(config)`` builds the driver a :class:`rise.config.CameraConfig` names; every
driver captures on its own thread, keeps the newest frame and reconnects after an unplug.
:mod:`rise.hardware.cameras.calibration` supplies the intrinsics for ``camera_info``.
"""

from rise.hardware.cameras.base import (
    Camera,
    CameraError,
    CameraStatus,
    Frame,
    ThreadedCamera,
    make_camera,
)
from rise.hardware.cameras.calibration import Calibration, calibration_for, load_calibration
from rise.hardware.cameras.opencv_camera import OpenCVCamera
from rise.hardware.cameras.realsense_camera import RealSenseCamera

__all__ = [
    "Calibration",
    "Camera",
    "CameraError",
    "CameraStatus",
    "Frame",
    "OpenCVCamera",
    "RealSenseCamera",
    "ThreadedCamera",
    "calibration_for",
    "load_calibration",
    "make_camera",
]
