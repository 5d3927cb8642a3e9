"""Camera drivers without hardware: a real video file, a fake V4L2 device, a fake pyrealsense2.

``cv2.VideoCapture`` is patched with :class:`FakeBus` to stand in for devices that can be
unplugged, replugged and made slow; every wait has a deadline.
"""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from rise.config import CameraConfig, CameraDriver, ConfigError
from rise.hardware.cameras import (
    Calibration,
    CameraError,
    OpenCVCamera,
    RealSenseCamera,
    calibration_for,
    load_calibration,
    make_camera,
    opencv_camera,
)
from support import wait_for

RED_BGR, BLUE_BGR = (0, 0, 255), (255, 0, 0)


def camera_config(device: str, *, width: int = 64, height: int = 48, fps: float = 30.0,
                  fourcc: str = "", name: str = "cam",
                  driver: CameraDriver = CameraDriver.OPENCV, calibration: str = "") -> CameraConfig:
    return CameraConfig(name=name, driver=driver, width=width, height=height, fps=fps,
                        device=device, fourcc=fourcc, calibration=calibration)


def red_blue_bgr(width: int, height: int) -> np.ndarray:
    """Left half red, right half blue (BGR, as OpenCV gives it)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = RED_BGR
    image[:, width // 2:] = BLUE_BGR
    return image


def assert_red_left_blue_right(rgb: np.ndarray) -> None:
    height, width = rgb.shape[:2]
    left, right = rgb[height // 2, width // 4].astype(int), rgb[height // 2, 3 * width // 4].astype(int)
    assert left[0] > 200 and left[1] < 60 and left[2] < 60, f"left is not red in RGB: {left}"
    assert right[2] > 200 and right[0] < 60 and right[1] < 60, f"right is not blue in RGB: {right}"


@pytest.fixture
def opened():
    """Open cameras through this; all are closed at teardown."""
    cameras = []

    def open_camera(camera):
        camera.open()
        cameras.append(camera)
        return camera

    yield open_camera
    for camera in cameras:
        camera.close()


# --- a video file through the real cv2.VideoCapture -------------------------------------------

@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    """10 frames, 64x48, MJPG in AVI, left half red and right half blue."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    assert writer.isOpened()
    for _ in range(10):
        writer.write(red_blue_bgr(64, 48))
    writer.release()
    return path


def test_video_file_frames_are_rgb_stamped_looped_and_paced(video_file, opened):
    camera = opened(OpenCVCamera(camera_config(str(video_file), fps=30.0)))
    frames = []
    deadline_s = time.monotonic() + 10.0
    while len(frames) < 25 and time.monotonic() < deadline_s:  # 25 > 10: the file loops
        frame = camera.latest(timeout_s=1.0)
        assert frame is not None, "no frame within 1 s"
        frames.append(frame)
    assert len(frames) == 25
    for frame in frames:
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
    assert_red_left_blue_right(frames[-1].image)
    stamps = [f.capture_ns for f in frames]
    assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False)), "capture stamps not increasing"
    sequences = [f.sequence for f in frames]
    assert all(a < b for a, b in zip(sequences, sequences[1:], strict=False)), "sequence not increasing"
    assert abs(stamps[0] - time.time_ns()) < 5e9, "capture_ns is not wall-clock time"
    status = camera.status()
    assert status.connected and status.frames >= 25 and status.reconnects == 0
    assert 24.0 <= status.measured_fps <= 36.0, f"measured {status.measured_fps:.1f} fps, configured 30"
    assert status.last_frame_age_s is not None and status.last_frame_age_s < 1.0
    assert status.warnings == []


def test_video_file_is_resized_to_the_configured_size(video_file, opened):
    camera = opened(OpenCVCamera(camera_config(str(video_file), width=32, height=40)))
    frame = camera.latest(timeout_s=2.0)
    assert frame is not None and frame.image.shape == (40, 32, 3)
    assert_red_left_blue_right(frame.image)
    assert any("64x48" in w and "resized" in w for w in camera.status().warnings)


def test_missing_video_file_is_refused_on_open(tmp_path):
    camera = OpenCVCamera(camera_config(str(tmp_path / "missing.avi"), name="front"))
    with pytest.raises(CameraError, match=r"'front'.*no such video file"):
        camera.open()
    with pytest.raises(CameraError, match="not open"):
        camera.latest(timeout_s=0.0)


# --- fake V4L2 devices behind a patched cv2.VideoCapture --------------------------------------

class FakeDevice:
    """One camera on the fake bus: what it gives, what was asked of it, and whether it is plugged."""

    def __init__(self, size=(64, 48), fps=100.0, fourcc="MJPG", read_delay_s=None):
        self.size, self.fps, self.fourcc = size, fps, fourcc
        self.read_delay_s = 1.0 / fps if read_delay_s is None else read_delay_s
        self.plugged = True
        self.busy = False
        self.closes_on_unplug = False  # unplug shows as isOpened() False rather than failed reads
        self.set_calls: list[tuple[int, float]] = []
        self.captures: list[FakeCapture] = []

    def unplug(self, closes: bool = False) -> None:
        self.closes_on_unplug = closes
        self.plugged = False


class FakeCapture:
    """Stands in for cv2.VideoCapture: isOpened, set, get, read, release."""

    def __init__(self, device: FakeDevice | None, source, api):
        self.device, self.source, self.api = device, source, api
        self.opened = device is not None and device.plugged and not device.busy
        self.released = False
        if device is not None:
            device.captures.append(self)

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        if not self.opened:
            return False
        return self.device.plugged or not self.device.closes_on_unplug

    def set(self, prop: int, value: float) -> bool:
        self.device.set_calls.append((prop, value))
        return True

    def get(self, prop: int) -> float:
        values = {cv2.CAP_PROP_FRAME_WIDTH: self.device.size[0],
                  cv2.CAP_PROP_FRAME_HEIGHT: self.device.size[1], cv2.CAP_PROP_FPS: self.device.fps,
                  cv2.CAP_PROP_FOURCC: cv2.VideoWriter_fourcc(*self.device.fourcc)}
        return float(values.get(prop, 0.0))

    def read(self):
        time.sleep(self.device.read_delay_s)
        if not self.opened or not self.device.plugged:
            return False, None
        return True, red_blue_bgr(*self.device.size)

    def release(self) -> None:
        self.opened = False
        self.released = True


class FakeBus:
    """The patched ``cv2.VideoCapture``: opens the FakeDevice registered for a source."""

    def __init__(self):
        self.devices: dict[object, FakeDevice] = {}

    def add(self, source, device: FakeDevice | None = None) -> FakeDevice:
        self.devices[source] = device or FakeDevice()
        return self.devices[source]

    def __call__(self, source, api=cv2.CAP_ANY) -> FakeCapture:
        return FakeCapture(self.devices.get(source), source, api)


    def present(self, source) -> bool:
        return source in self.devices and self.devices[source].plugged


@pytest.fixture
def bus(monkeypatch) -> FakeBus:
    fake = FakeBus()
    monkeypatch.setattr(opencv_camera.cv2, "VideoCapture", fake)
    monkeypatch.setattr(opencv_camera, "device_present", fake.present)
    return fake


def test_device_gets_format_size_and_fps_requested(bus, opened):
    device = bus.add("/dev/video0", FakeDevice(size=(640, 480), fps=30.0, fourcc="MJPG"))
    config = camera_config("/dev/video0", width=640, height=480, fps=30.0, fourcc="MJPG")
    camera = opened(OpenCVCamera(config))
    assert device.captures[0].source == "/dev/video0" and device.captures[0].api == cv2.CAP_V4L2
    assert device.set_calls == [(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG")),
                                (cv2.CAP_PROP_FRAME_WIDTH, 640), (cv2.CAP_PROP_FRAME_HEIGHT, 480),
                                (cv2.CAP_PROP_FPS, 30.0)]
    frame = camera.latest(timeout_s=2.0)
    assert frame is not None and frame.image.shape == (480, 640, 3)
    assert_red_left_blue_right(frame.image)
    assert camera.status().warnings == []


def test_device_that_gives_something_else_is_reported_and_resized(bus, opened):
    bus.add("/dev/video0", FakeDevice(size=(320, 240), fps=15.0, fourcc="YUYV"))
    config = camera_config("/dev/video0", width=640, height=480, fps=30.0, fourcc="MJPG")
    camera = opened(OpenCVCamera(config))
    frame = camera.latest(timeout_s=2.0)
    assert frame is not None and frame.image.shape == (480, 640, 3)
    warnings = " | ".join(camera.status().warnings)
    assert "320x240" in warnings and "15 fps" in warnings and "'YUYV'" in warnings, warnings


def test_device_by_index_opens_through_v4l2(bus, opened):
    device = bus.add(2)
    opened(OpenCVCamera(camera_config("2")))
    assert device.captures[0].source == 2 and device.captures[0].api == cv2.CAP_V4L2


def test_absent_or_busy_device_is_refused_on_open(bus):
    with pytest.raises(CameraError, match=r"cannot open: no V4L2 device '/dev/video7'"):
        OpenCVCamera(camera_config("/dev/video7")).open()
    bus.add("/dev/video8").busy = True  # the node exists, yet opening fails (another process has it)
    with pytest.raises(CameraError, match=r"V4L2 device '/dev/video8' cannot be opened"):
        OpenCVCamera(camera_config("/dev/video8")).open()


@pytest.mark.parametrize("closes", [False, True], ids=["reads-fail", "is-opened-false"])
def test_unplugged_device_reconnects_and_records_the_gap(bus, opened, closes):
    device = bus.add("/dev/video0")
    camera = opened(OpenCVCamera(camera_config("/dev/video0")))  # default reconnect_interval_s
    assert camera.latest(timeout_s=2.0) is not None
    unplugged_ns = time.time_ns()
    device.unplug(closes=closes)
    wait_for(lambda: not camera.status().connected, 2.0, "the camera to report the unplug")
    status = camera.status()
    assert status.disconnected_since_ns is not None and status.disconnected_since_ns >= unplugged_ns
    assert "read failed" in status.last_error
    camera.latest(timeout_s=0.0)  # the last frame from before the unplug, if not yet taken
    assert camera.latest(timeout_s=0.3) is None, "a frame arrived while unplugged"
    device.plugged = True
    replugged_s = time.monotonic()
    frame = wait_for(lambda: camera.latest(timeout_s=0.1), 2.0, "frames after the replug")
    assert time.monotonic() - replugged_s < 2.0
    status = camera.status()
    assert status.connected and status.reconnects == 1 and status.disconnected_since_ns is None
    assert len(status.gaps) == 1
    start_ns, end_ns = status.gaps[0]
    assert unplugged_ns <= start_ns < end_ns <= frame.capture_ns
    assert len(device.captures) >= 2 and all(c.released for c in device.captures[:-1])


def test_slow_camera_does_not_delay_a_fast_one(bus, opened):
    bus.add("/dev/video0", FakeDevice(read_delay_s=0.5))
    bus.add("/dev/video1", FakeDevice(fps=100.0))
    slow = opened(OpenCVCamera(camera_config("/dev/video0", name="slow")))
    fast = opened(OpenCVCamera(camera_config("/dev/video1", name="fast")))
    started_s = time.monotonic()
    received = 0
    while time.monotonic() - started_s < 1.0:
        asked_s = time.monotonic()
        assert fast.latest(timeout_s=0.25) is not None, "the fast camera stalled"
        assert time.monotonic() - asked_s < 0.25
        received += 1
    asked_s = time.monotonic()
    slow.latest(timeout_s=0.05)
    assert time.monotonic() - asked_s < 0.3, "latest() overran its timeout"
    assert received >= 20 and fast.status().frames >= 30, (received, fast.status())
    assert slow.status().frames <= 3


def test_close_stops_the_thread_quickly_and_releases_the_device(bus):
    device = bus.add("/dev/video0")
    with OpenCVCamera(camera_config("/dev/video0")) as camera:
        assert camera.latest(timeout_s=2.0) is not None
        thread = camera._thread
        started_s = time.monotonic()
    assert time.monotonic() - started_s < 0.5
    assert not thread.is_alive() and all(c.released for c in device.captures)
    assert not camera.status().connected
    with pytest.raises(CameraError, match="not open"):
        camera.latest(timeout_s=0.0)
    with camera:  # reopens, counting afresh
        frame = camera.latest(timeout_s=2.0)
        assert frame is not None and frame.sequence < 5 and camera.status().reconnects == 0


def test_close_does_not_wait_out_the_reconnect_interval(bus):
    device = bus.add("/dev/video0")
    camera = OpenCVCamera(camera_config("/dev/video0"), reconnect_interval_s=30.0)
    with camera:
        device.unplug()
        wait_for(lambda: not camera.status().connected, 2.0, "the camera to report the unplug")
        started_s = time.monotonic()
    assert time.monotonic() - started_s < 0.5


def test_close_gives_up_on_a_stuck_read_after_its_deadline(bus):
    bus.add("/dev/video0", FakeDevice(read_delay_s=1.5))
    camera = OpenCVCamera(camera_config("/dev/video0"), close_timeout_s=0.2)
    camera.open()
    time.sleep(0.05)  # the thread is inside read()
    thread = camera._thread
    started_s = time.monotonic()
    camera.close()
    assert time.monotonic() - started_s < 0.6
    assert "did not stop" in camera.status().last_error
    with pytest.raises(CameraError, match="already open"):
        camera.open()
    thread.join(3.0)  # the read returns, the thread releases the device and ends
    assert not thread.is_alive()


def test_make_camera_picks_the_driver():
    assert isinstance(make_camera(camera_config("/dev/video0")), OpenCVCamera)
    realsense = camera_config("123456", driver=CameraDriver.REALSENSE)
    assert isinstance(make_camera(realsense), RealSenseCamera)
    with pytest.raises(ValueError, match="sim"):
        make_camera(CameraConfig(name="front", driver=CameraDriver.SIM, width=64, height=48))


# --- RealSense ----------------------------------------------------------------------------------

def fake_pyrealsense2(calls: list) -> types.ModuleType:
    """Just enough of pyrealsense2 for the driver: config, pipeline and RGB colour frames."""
    rgb = np.ascontiguousarray(red_blue_bgr(64, 48)[..., ::-1])
    frames = types.SimpleNamespace(get_color_frame=lambda: types.SimpleNamespace(get_data=lambda: rgb))

    def wait_for_frames(timeout_ms):
        time.sleep(0.01)
        return frames

    module = types.ModuleType("pyrealsense2")
    module.stream, module.format = types.SimpleNamespace(color="color"), types.SimpleNamespace(rgb8="rgb8")
    module.config = lambda: types.SimpleNamespace(
        enable_device=lambda serial: calls.append(("enable_device", serial)),
        enable_stream=lambda *args: calls.append(("enable_stream", *args)))
    module.pipeline = lambda: types.SimpleNamespace(
        start=lambda config: calls.append(("start",)), wait_for_frames=wait_for_frames,
        stop=lambda: calls.append(("stop",)))
    return module


def test_realsense_streams_rgb_from_the_serial_given(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "pyrealsense2", fake_pyrealsense2(calls))
    config = camera_config("123456", driver=CameraDriver.REALSENSE, fps=30.0)
    with RealSenseCamera(config) as camera:
        frame = camera.latest(timeout_s=2.0)
        assert frame is not None and frame.image.shape == (48, 64, 3)
        assert_red_left_blue_right(frame.image)
    assert calls[:3] == [("enable_device", "123456"), ("enable_stream", "color", 64, 48, "rgb8", 30),
                         ("start",)]
    assert calls[-1] == ("stop",)


def test_realsense_without_pyrealsense2_says_so_on_open(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # makes the import fail
    camera = RealSenseCamera(camera_config("123456", driver=CameraDriver.REALSENSE))
    with pytest.raises(RuntimeError, match="pyrealsense2"):
        camera.open()


@pytest.mark.hardware
def test_realsense_hardware_gives_frames():
    rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed")
    devices = rs.context().query_devices()
    if len(devices) == 0:
        pytest.skip("no RealSense camera connected")
    serial = devices[0].get_info(rs.camera_info.serial_number)
    config = camera_config(serial, driver=CameraDriver.REALSENSE, width=640, height=480)
    with RealSenseCamera(config) as camera:
        frame = camera.latest(timeout_s=5.0)
    assert frame is not None and frame.image.shape == (480, 640, 3)


# --- calibration --------------------------------------------------------------------------------

ROS_CALIBRATION = """\
image_width: 640
image_height: 480
camera_name: front
camera_matrix:
  rows: 3
  cols: 3
  data: [600.5, 0, 321.2, 0, 601.5, 242.7, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.12, 0.05, 0.001, -0.002, 0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [590.1, 0, 320.4, 0, 0, 595.3, 241.9, 0, 0, 0, 1, 0]
"""


def test_ros_calibration_file_loads_and_round_trips(tmp_path):
    source = tmp_path / "front.yaml"
    source.write_text(ROS_CALIBRATION)
    calibration = load_calibration(source)
    assert (calibration.width, calibration.height, calibration.camera_name) == (640, 480, "front")
    assert calibration.k == (600.5, 0.0, 321.2, 0.0, 601.5, 242.7, 0.0, 0.0, 1.0)
    assert calibration.d == (-0.12, 0.05, 0.001, -0.002, 0.0)
    assert calibration.p[:3] == (590.1, 0.0, 320.4) and len(calibration.r) == 9
    assert calibration.distortion_model == "plumb_bob"
    copy = tmp_path / "copy.yaml"
    calibration.save(copy)
    assert load_calibration(copy) == calibration


K_DATA = "data: [600.5, 0, 321.2, 0, 601.5, 242.7, 0, 0, 1]"
BAD_CALIBRATIONS = [  # (text to replace, replacement, key named, words in the message)
    (K_DATA, "data: [600.5, 0, 321.2, 0, 601.5, 242.7, 0, 0]", "camera_matrix.data", "expected 9 values"),
    (K_DATA, "data: [600.5, 0, x, 0, 601.5, 242.7, 0, 0, 1]", "camera_matrix.data[2]", "finite number"),
    ("  cols: 4\n", "  cols: 3\n", "projection_matrix", "expected a 3x4 matrix"),
    ("image_width: 640\n", "", "image_width", "missing"),
    ("image_height: 480", "image_height: -480", "image_height", "positive integer"),
]


@pytest.mark.parametrize(("old", "new", "key", "message"), BAD_CALIBRATIONS,
                         ids=[case[2] for case in BAD_CALIBRATIONS])
def test_bad_calibration_file_names_file_and_key(tmp_path, old, new, key, message):
    path = tmp_path / "bad.yaml"
    assert old in ROS_CALIBRATION
    path.write_text(ROS_CALIBRATION.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_calibration(path)
    assert info.value.source == str(path) and info.value.key == key
    assert message in info.value.message and str(path) in str(info.value)


def test_missing_calibration_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_calibration(tmp_path / "nope.yaml")


def test_ideal_pinhole_and_scaling():
    ideal = Calibration.ideal(640, 480, fov_deg=60.0)
    assert ideal.k[0] == pytest.approx(320.0 / np.tan(np.radians(30.0)))
    assert ideal.k[2] == 319.5 and ideal.k[5] == 239.5 and ideal.k[0] == ideal.k[4]
    assert ideal.p[:3] == ideal.k[:3] and ideal.d == (0.0,) * 5
    half = ideal.scaled(320, 240)
    expected = Calibration.ideal(320, 240, fov_deg=60.0)
    assert half.k == pytest.approx(expected.k) and half.p == pytest.approx(expected.p)
    assert (half.width, half.height, half.d, half.r) == (320, 240, ideal.d, ideal.r)
    assert ideal.scaled(640, 480) is ideal
    with pytest.raises(ValueError):
        Calibration.ideal(640, 480, fov_deg=180.0)


def test_calibration_for_a_camera_config(tmp_path):
    assert calibration_for(camera_config("0", width=96, height=96)) == Calibration.ideal(96, 96)
    path = tmp_path / "front.yaml"
    path.write_text(ROS_CALIBRATION)
    scaled = calibration_for(camera_config("0", width=320, height=240, calibration=str(path)))
    assert (scaled.width, scaled.height) == (320, 240)
    assert scaled.k[0] == pytest.approx(600.5 / 2) and scaled.k[2] == pytest.approx((321.2 + 0.5) / 2 - 0.5)


def test_importing_the_drivers_needs_neither_rclpy_nor_pyrealsense2():
    code = ("import sys, rise.hardware.cameras; "
            "print(sorted(m for m in ('rclpy', 'pyrealsense2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
