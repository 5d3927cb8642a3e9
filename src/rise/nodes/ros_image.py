"""sensor_msgs/Image <-> numpy without cv_bridge (ROS 2's cv_bridge is not installable here).

``to_image`` copies an RGB/grey uint8 array into a message (~1 ms at 640x480); ``from_image`` is a
zero-copy view of a message's data, with every field checked so a malformed message raises a
ValueError that names the field instead of producing a garbled frame. Both sides speak RGB (or
grey): ``from_image(to_image(pixels, stamp, frame, encoding))`` equals ``pixels`` for every encoding.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import Image

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


def to_image(pixels: np.ndarray, stamp, frame_id: str, encoding: str = "rgb8") -> Image:
    """An Image message holding ``pixels`` (H x W x 3 RGB uint8 for rgb8 and bgr8, which stores them
    as BGR; H x W for mono8)."""
    channels = _channels(encoding)
    if not isinstance(pixels, np.ndarray):
        raise ValueError(f"pixels: expected a numpy array, got {type(pixels).__name__}")
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels: expected uint8, got {pixels.dtype}")
    expected_ndim = 2 if channels == 1 else 3
    if pixels.ndim != expected_ndim or (channels == 3 and pixels.shape[2] != 3):
        raise ValueError(f"pixels: expected shape (H, W{', 3' if channels == 3 else ''}) for {encoding}, "
                         f"got {pixels.shape}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"pixels: expected a non-empty image, got shape {pixels.shape}")
    if encoding == "bgr8":
        pixels = pixels[:, :, ::-1]
    message = Image()
    message.header.stamp = stamp
    message.header.frame_id = frame_id
    message.height, message.width = int(pixels.shape[0]), int(pixels.shape[1])
    message.encoding = encoding
    message.is_bigendian = 0
    message.step = message.width * channels
    message.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
    return message


def from_image(message: Image) -> np.ndarray:
    """The pixels of ``message`` as an RGB (or grey) uint8 array; bgr8 is converted to RGB."""
    channels = _channels(message.encoding)
    if message.height <= 0 or message.width <= 0:
        raise ValueError(f"height/width: expected positive sizes, got {message.height}x{message.width}")
    row = message.width * channels
    if message.step < row:
        raise ValueError(f"step: expected >= {row} bytes for {message.width} px of {message.encoding}, "
                         f"got {message.step}")
    if len(message.data) != message.step * message.height:
        raise ValueError(f"data: expected {message.step * message.height} bytes (step x height), "
                         f"got {len(message.data)}")
    buffer = np.frombuffer(message.data, dtype=np.uint8).reshape(message.height, message.step)
    pixels = buffer[:, :row].reshape(message.height, message.width, channels)
    if message.encoding == "bgr8":
        return pixels[:, :, ::-1]
    return pixels[:, :, 0] if channels == 1 else pixels


def _channels(encoding: object) -> int:
    channels = CHANNELS.get(encoding) if isinstance(encoding, str) else None
    if channels is None:
        raise ValueError(f"encoding: expected one of {sorted(CHANNELS)}, got {encoding!r}")
    return channels
