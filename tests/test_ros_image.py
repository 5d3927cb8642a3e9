"""ros_image: malformed sensor_msgs/Image fields give a ValueError naming the field, never a crash
or a garbled frame; valid arrays round-trip for every encoding. Message classes only (no rclpy.init)."""

from __future__ import annotations

import array

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sensor_msgs.msg import Image

from rise.nodes.ros_image import CHANNELS, from_image, to_image

pytestmark = pytest.mark.faults
FIELDS = ("encoding:", "height/width:", "step:", "data:")
UINT32 = st.one_of(st.integers(0, 9), st.integers(0, 2**32 - 1))


@st.composite
def _messages(draw) -> Image:
    """Images whose fields are often consistent and sometimes anything a uint32 / string can hold."""
    other = st.one_of(st.sampled_from(["rgba8", "16UC1", "RGB8", "", "bayer_rggb8"]), st.text(max_size=8))
    encoding = draw(other if draw(st.integers(0, 3)) == 0 else st.sampled_from(sorted(CHANNELS)))
    height, width = draw(UINT32), draw(UINT32)
    channels = CHANNELS.get(encoding, 3)
    step = draw(st.one_of(st.just(width * channels), st.integers(0, 3).map(lambda p: width * channels + p),
                          UINT32))
    size = step * height
    lengths = st.one_of(st.just(size), st.integers(0, 200)) if size <= 4096 else st.integers(0, 200)
    length = draw(lengths)
    message = Image(height=height, width=width, encoding=encoding, is_bigendian=draw(st.integers(0, 255)))
    message.step = min(step, 2**32 - 1)
    message.data = array.array("B", draw(st.binary(min_size=length, max_size=length)))
    return message


@settings(max_examples=500, deadline=None)
@given(message=_messages())
def test_any_message_gives_the_right_pixels_or_a_value_error_naming_the_field(message):
    try:
        pixels = from_image(message)
    except ValueError as error:
        assert str(error).startswith(FIELDS), error
        return
    channels = CHANNELS[message.encoding]
    assert pixels.dtype == np.uint8
    assert pixels.shape == ((message.height, message.width) if channels == 1
                            else (message.height, message.width, 3))
    rows = np.frombuffer(bytes(message.data), np.uint8).reshape(message.height, message.step)
    expected = rows[:, :message.width * channels].reshape(message.height, message.width, channels)
    if message.encoding == "bgr8":
        expected = expected[:, :, ::-1]
    np.testing.assert_array_equal(pixels, expected[:, :, 0] if channels == 1 else expected)


def _images(channels: int):
    shape = st.tuples(st.integers(1, 9), st.integers(1, 9)).map(
        lambda hw: hw if channels == 1 else (*hw, 3))
    return hnp.arrays(np.uint8, shape)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), encoding=st.sampled_from(sorted(CHANNELS)), view=st.sampled_from(["plain", "strided"]))
def test_valid_arrays_round_trip_for_every_encoding(data, encoding, view):
    pixels = data.draw(_images(CHANNELS[encoding]))
    if view == "strided":  # a non-contiguous view (a crop of a bigger frame)
        pixels = np.pad(pixels, [(1, 1)] * 2 + [(0, 0)] * (pixels.ndim - 2))[1:-1, 1:-1]
    message = to_image(pixels, Time(sec=1, nanosec=2), "front_camera", encoding)
    assert (message.height, message.width, message.encoding) == (*pixels.shape[:2], encoding)
    assert message.step * message.height == len(message.data)
    np.testing.assert_array_equal(from_image(message), pixels)


def test_bgr8_stores_the_channels_reversed():
    rgb = np.array([[[1, 2, 3]]], dtype=np.uint8)
    assert list(to_image(rgb, Time(), "f", "bgr8").data) == [3, 2, 1]
    assert list(to_image(rgb, Time(), "f", "rgb8").data) == [1, 2, 3]


@pytest.mark.parametrize(("pixels", "encoding", "message"), [
    (np.zeros((2, 2, 3), np.uint8), "rgba8", "encoding: expected one of"),
    (np.zeros((2, 2, 3), np.uint8), None, "encoding: expected one of"),
    (np.zeros((2, 2, 3), np.float32), "rgb8", "pixels: expected uint8, got float32"),
    (np.zeros((2, 2), np.uint8), "rgb8", r"pixels: expected shape \(H, W, 3\) for rgb8, got \(2, 2\)"),
    (np.zeros((2, 2, 4), np.uint8), "bgr8", r"pixels: expected shape \(H, W, 3\)"),
    (np.zeros((2, 2, 3), np.uint8), "mono8", r"pixels: expected shape \(H, W\) for mono8"),
    (np.zeros((0, 4, 3), np.uint8), "rgb8", "pixels: expected a non-empty image"),
    ([[0, 1]], "mono8", "pixels: expected a numpy array, got list"),
])
def test_to_image_refuses_what_it_cannot_encode(pixels, encoding, message):
    with pytest.raises(ValueError, match=message):
        to_image(pixels, Time(), "f", encoding)


@pytest.mark.parametrize(("fields", "message"), [
    (dict(height=0, width=4, step=12), "height/width: expected positive sizes, got 0x4"),
    (dict(height=2, width=4, step=11), "step: expected >= 12 bytes for 4 px of rgb8, got 11"),
    (dict(height=2**32 - 1, width=2**30, step=3 * 2**30), r"data: expected \d+ bytes .*, got 24"),
    (dict(height=2, width=4, step=12, data=b"\0" * 23), r"data: expected 24 bytes \(step x height\), got 23"),
    (dict(height=2, width=4, step=12, encoding="16UC1"), "encoding: expected one of"),
])
def test_from_image_names_the_bad_field(fields, message):
    image = Image(encoding="rgb8", data=b"\0" * 24)
    for name, value in fields.items():
        setattr(image, name, value)
    with pytest.raises(ValueError, match=message):
        from_image(image)
