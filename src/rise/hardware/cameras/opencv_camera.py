"""OpenCV cameras: V4L2 devices by path or index, and video files (looped, for tests and replay).

``config.device`` selects the source:

- ``/dev/video0`` or any path under ``/dev`` (prefer the stable ``/dev/v4l/by-id/...`` links: a
  replugged camera may come back as another ``/dev/videoN``): a V4L2 device;
- ``"0"``, ``"1"``, ...: a V4L2 device by index;
- anything else: a video file, played in a loop at ``config.fps``. A file that is moved away
  behaves like an unplugged camera (reads fail, the driver reopens it once it is back), which
  is how the fault tests unplug a camera.

For devices the pixel format (``config.fourcc``), size and frame rate are requested; what the
device actually gave is checked, reported in ``status().warnings`` when it differs, and frames
are resized to the configured size. Frames come out RGB.

Example::

    from rise.config import CameraConfig, CameraDriver
    from rise.hardware.cameras import OpenCVCamera

    config = CameraConfig(name="front", driver=CameraDriver.OPENCV, width=640, height=480,
                          fps=30.0, device="/dev/video0", fourcc="MJPG")
    with OpenCVCamera(config) as camera:
        frame = camera.latest(timeout_s=1.0)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from rise.config import CameraConfig
from rise.hardware.cameras.base import CameraError, ThreadedCamera

_FPS_TOLERANCE = 0.05  # relative difference below which the device's fps counts as the configured


def parse_source(device: str) -> tuple[int | str, bool]:
    """``config.device`` as (what cv2.VideoCapture opens, True for a V4L2 device / False for a file)."""
    if device.isdigit():
        return int(device), True
    return device, device.startswith("/dev/")


def device_present(source: int | str) -> bool:
    """Whether a V4L2 device's node exists (checked before opening: OpenCV logs a warning for
    every failed open, which would fill the log while a camera stays unplugged)."""
    if isinstance(source, int):
        return not sys.platform.startswith("linux") or os.path.exists(f"/dev/video{source}")
    return os.path.exists(source)


def fourcc_code(fourcc: str) -> int:
    """A four-character pixel format (``"MJPG"``) as OpenCV's integer code."""
    if len(fourcc) != 4:
        raise ValueError(f"expected a four-character code, got {fourcc!r}")
    return cv2.VideoWriter_fourcc(*fourcc)


def fourcc_text(code: float) -> str:
    """OpenCV's integer pixel format code (as returned by ``get``) as four characters."""
    value = int(code)
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4)).strip("\0 ")


class OpenCVCamera(ThreadedCamera):
    """A V4L2 device or a looped video file through ``cv2.VideoCapture``, on its own thread.

    ``reconnect_interval_s``: after a failed read the device is released and reopened this
    often until it returns or the camera is closed. ``close_timeout_s``: how long ``close()``
    waits for the capture thread.
    """

    def __init__(self, config: CameraConfig, *, reconnect_interval_s: float = 0.5,
                 close_timeout_s: float = 2.0):
        super().__init__(config, reconnect_interval_s=reconnect_interval_s,
                         close_timeout_s=close_timeout_s)
        self._source, self._is_device = parse_source(config.device)
        self._capture: cv2.VideoCapture | None = None

    def _connect(self) -> None:
        if not self._is_device and not Path(self._source).is_file():
            raise CameraError(f"no such video file: {self._source}")
        if self._is_device and not device_present(self._source):
            raise CameraError(f"no V4L2 device {self._source!r} (unplugged?)")
        api = cv2.CAP_V4L2 if self._is_device else cv2.CAP_ANY
        capture = cv2.VideoCapture(self._source, api)
        if not capture.isOpened():
            capture.release()
            if self._is_device:
                raise CameraError(f"V4L2 device {self._source!r} cannot be opened (busy?)")
            raise CameraError(f"OpenCV cannot decode the video file {self._source!r}")
        if self._is_device:
            self._configure(capture)
        self._set_warnings(self._mismatches(capture))
        self._pace_period_s = None if self._is_device else 1.0 / self.config.fps
        self._capture = capture

    def _configure(self, capture: cv2.VideoCapture) -> None:
        """Request pixel format, size and frame rate (format first: it limits the sizes offered)."""
        config = self.config
        if config.fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, fourcc_code(config.fourcc))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
        capture.set(cv2.CAP_PROP_FPS, config.fps)

    def _mismatches(self, capture: cv2.VideoCapture) -> list[str]:
        """What the source gives that differs from the configuration (size always; for devices
        also fps and pixel format)."""
        config = self.config
        warnings = []
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width > 0 and height > 0 and (width, height) != (config.width, config.height):
            warnings.append(f"source gives {width}x{height}, configured {config.width}x"
                            f"{config.height}: frames are resized")
        if not self._is_device:
            return warnings
        fps = capture.get(cv2.CAP_PROP_FPS)
        if fps > 0 and abs(fps - config.fps) > _FPS_TOLERANCE * config.fps:
            warnings.append(f"device gives {fps:g} fps, configured {config.fps:g}")
        fourcc = fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
        if config.fourcc and fourcc != config.fourcc:
            warnings.append(f"device gives pixel format {fourcc!r}, configured {config.fourcc!r}")
        return warnings

    def _read(self) -> tuple[np.ndarray, int]:
        capture = self._capture
        if capture is None or not capture.isOpened():
            raise CameraError("device is closed (isOpened() is false)")
        if not self._is_device and not os.path.exists(self._source):
            raise CameraError(f"video file {self._source} is gone")
        ok, image = capture.read()
        capture_ns = time.time_ns()
        if (not ok or image is None) and not self._is_device:  # end of the file: loop
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = capture.read()
            capture_ns = time.time_ns()
        if not ok or image is None:
            raise CameraError("no frame from the device (unplugged?)")
        return self._to_rgb(image), capture_ns

    def _to_rgb(self, image: np.ndarray) -> np.ndarray:
        """BGR (or gray / BGRA) from OpenCV to RGB uint8 at the configured size."""
        if image.ndim == 2:
            rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        elif image.shape[2] == 4:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        width, height = self.config.width, self.config.height
        if rgb.shape[:2] != (height, width):
            shrink = rgb.shape[1] > width or rgb.shape[0] > height
            rgb = cv2.resize(rgb, (width, height),
                             interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return rgb

    def _disconnect(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
