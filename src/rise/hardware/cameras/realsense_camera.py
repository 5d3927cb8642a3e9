"""Intel RealSense colour cameras through ``pyrealsense2`` (optional: imported when opened).

``config.device`` is the camera's serial number. The colour stream is requested as rgb8 at the
configured size and frame rate (librealsense takes whole frame rates: 6, 15, 30, 60, 90).
Capture, reconnection and status work as for every :class:`ThreadedCamera`.

Example::

    from rise.config import CameraConfig, CameraDriver
    from rise.hardware.cameras import RealSenseCamera

    config = CameraConfig(name="wrist", driver=CameraDriver.REALSENSE, width=640, height=480,
                          fps=30.0, device="123456789012")
    with RealSenseCamera(config) as camera:
        frame = camera.latest(timeout_s=1.0)
"""

from __future__ import annotations

import importlib
import time
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from rise.config import CameraConfig
from rise.hardware.cameras.base import CameraError, ThreadedCamera

_MIN_READ_TIMEOUT_MS = 1000  # a frame missing for this long (or 5 frame periods) means lost


def import_pyrealsense2() -> ModuleType:
    """The ``pyrealsense2`` module, or a RuntimeError that says how to install it."""
    try:
        return importlib.import_module("pyrealsense2")
    except ImportError as error:
        raise RuntimeError("the realsense camera driver needs the pyrealsense2 package, which is "
                           "not installed (pip install pyrealsense2)") from error


class RealSenseCamera(ThreadedCamera):
    """A RealSense colour stream on its own capture thread.

    ``reconnect_interval_s`` and ``close_timeout_s`` as for :class:`ThreadedCamera`.
    """

    def __init__(self, config: CameraConfig, *, reconnect_interval_s: float = 0.5,
                 close_timeout_s: float = 2.0):
        super().__init__(config, reconnect_interval_s=reconnect_interval_s,
                         close_timeout_s=close_timeout_s)
        self._rs: Any = None
        self._pipeline: Any = None
        self._read_timeout_ms = max(_MIN_READ_TIMEOUT_MS, int(5000 / config.fps))

    def open(self) -> None:
        """Open the camera; RuntimeError naming pyrealsense2 when it is not installed."""
        self._rs = import_pyrealsense2()
        super().open()

    def _connect(self) -> None:
        rs, config = self._rs, self.config
        fps = round(config.fps)
        warnings = []
        if abs(fps - config.fps) > 1e-6:
            warnings.append(f"librealsense takes whole frame rates: requested {fps}, "
                            f"configured {config.fps:g}")
        rs_config = rs.config()
        if config.device:
            rs_config.enable_device(config.device)
        rs_config.enable_stream(rs.stream.color, config.width, config.height, rs.format.rgb8, fps)
        pipeline = rs.pipeline()
        pipeline.start(rs_config)
        self._pipeline = pipeline
        self._set_warnings(warnings)

    def _read(self) -> tuple[np.ndarray, int]:
        frames = self._pipeline.wait_for_frames(self._read_timeout_ms)
        capture_ns = time.time_ns()
        color = frames.get_color_frame()
        if not color:
            raise CameraError("the frame set has no colour frame")
        # Copy: librealsense reuses the frame's buffer once the frame is released.
        image = np.array(color.get_data(), dtype=np.uint8, copy=True)
        if image.ndim != 3 or image.shape[2] != 3:
            raise CameraError(f"expected an rgb8 colour frame, got shape {image.shape}")
        if image.shape[:2] != (self.config.height, self.config.width):
            image = cv2.resize(image, (self.config.width, self.config.height),
                               interpolation=cv2.INTER_AREA)
        return image, capture_ns

    def _disconnect(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.stop()
