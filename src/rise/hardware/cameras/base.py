"""The camera interface: :class:`Camera`, the frames it returns and the status it reports.

A camera is a :class:`rise.config.CameraConfig` plus an implementation. Each implementation
here runs one capture thread per camera (:class:`ThreadedCamera`), so a slow or unplugged camera
never blocks another one or the caller. The thread keeps only the newest frame; a lost device is
released and reopened every ``reconnect_interval_s`` until the camera is closed.

Example::

    from rise.config import load_robot
    from rise.hardware.cameras import make_camera

    config = load_robot("my_arm").cameras[0]
    with make_camera(config) as camera:
        frame = camera.latest(timeout_s=1.0)  # None if no new frame came within 1 s
        if frame is not None:
            print(frame.image.shape, frame.capture_ns, camera.status())
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import logging
import math
import threading
import time

import numpy as np

from rise.config import CameraConfig, CameraDriver

_LOG = logging.getLogger(__name__)

_FPS_WINDOW_NS = 2_000_000_000  # measured_fps counts the frames of the last 2 s
_MAX_GAPS = 100  # status().gaps keeps the most recent disconnection gaps


class CameraError(RuntimeError):
    """A camera could not be opened or used; the message names the camera and its device."""


@dataclasses.dataclass(frozen=True, eq=False)
class Frame:
    """One captured image."""

    image: np.ndarray
    """RGB, uint8, shape (height, width, 3) of the configured size; a fresh array per frame."""
    capture_ns: int
    """Wall-clock time (``time.time_ns()``) taken right after the device returned the frame."""
    sequence: int
    """0, 1, 2, ... per captured frame since open (a jump means frames the caller did not take)."""


@dataclasses.dataclass(frozen=True)
class CameraStatus:
    """A snapshot of a camera's health, for diagnostics."""

    name: str
    """The camera's config name."""
    device: str
    """The configured device (path, index, video file or serial)."""
    connected: bool
    """Open and not in a disconnection gap."""
    frames: int
    """Frames captured since open."""
    reconnects: int
    """Times frames resumed after a disconnection."""
    last_error: str
    """The most recent error ("" if none), kept after recovery for diagnosis."""
    last_frame_age_s: float | None
    """Seconds since the newest frame was captured (None before the first frame)."""
    measured_fps: float
    """Frames per second over the last 2 s (0.0 with fewer than 2 frames in that window)."""
    gaps: list[tuple[int, int]]
    """Closed disconnection gaps, oldest first (the last 100): (start_ns, end_ns) wall-clock times
    of the failed read and of the first frame after it."""
    disconnected_since_ns: int | None
    """Start of the current gap (wall clock), or None while connected."""
    warnings: list[str]
    """Differences between what was configured and what the device gave (size, fps, format)."""


class Camera(abc.ABC):
    """A source of RGB frames. Use it as a context manager, or call open() and close().

    Blocking: ``open()`` blocks while the device is opened (usually well under a second);
    ``latest(timeout_s)`` blocks at most ``timeout_s``; ``close()`` blocks at most the
    implementation's close deadline; ``status()`` never blocks on the device.
    Methods may be called from any thread.
    """

    def __init__(self, config: CameraConfig):
        self.config = config

    @property
    def name(self) -> str:
        """The camera's config name (used in topic names)."""
        return self.config.name

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device and start capturing; raise CameraError if it cannot be opened."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop capturing and release the device; does nothing if not open."""

    @abc.abstractmethod
    def latest(self, timeout_s: float) -> Frame | None:
        """The newest frame not yet returned, waiting at most ``timeout_s`` (finite) for one; else None.

        Raises CameraError if the camera is not open. Frames captured while the caller was
        away are skipped: only the newest is kept.
        """

    @abc.abstractmethod
    def status(self) -> CameraStatus:
        """A snapshot of the camera's health."""

    def __enter__(self) -> Camera:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ThreadedCamera(Camera):
    """Capture-thread machinery shared by the drivers: 1-slot buffer, reconnection, status.

    Subclasses implement :meth:`_connect`, :meth:`_read` and :meth:`_disconnect`. These run on
    one thread at a time: the caller of ``open()`` for the first connection, then the capture
    thread, which owns the device until it exits (it releases the device itself, so a read stuck
    in the driver never races with a release from another thread).
    """

    def __init__(self, config: CameraConfig, *, reconnect_interval_s: float = 0.5,
                 close_timeout_s: float = 2.0):
        super().__init__(config)
        if not reconnect_interval_s > 0:
            raise ValueError(f"reconnect_interval_s must be > 0, got {reconnect_interval_s}")
        if not close_timeout_s > 0:
            raise ValueError(f"close_timeout_s must be > 0, got {close_timeout_s}")
        self.reconnect_interval_s = reconnect_interval_s
        self.close_timeout_s = close_timeout_s
        self._pace_period_s: float | None = None  # set by a subclass to pace reads (video files)
        self._next_due_s = 0.0
        self._device_open = False  # capture thread only (and open() before the thread starts)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        # Everything below is guarded by self._cond.
        self._frame: Frame | None = None
        self._frame_mono_ns = 0
        self._returned_sequence = -1
        self._frames = 0
        self._reconnects = 0
        self._last_error = ""
        self._gaps: collections.deque[tuple[int, int]] = collections.deque(maxlen=_MAX_GAPS)
        self._gap_start_ns: int | None = None
        self._warnings: list[str] = []
        self._stamps_mono_ns: collections.deque[int] = collections.deque(maxlen=512)

    # --- what a driver implements -------------------------------------------------------------

    @abc.abstractmethod
    def _connect(self) -> None:
        """Open the device and apply the configuration; raise (with a reason) on failure."""

    @abc.abstractmethod
    def _read(self) -> tuple[np.ndarray, int]:
        """Block for the next frame: (RGB uint8 image of the configured size, capture_ns).

        Raise (with a reason) when the device fails; the thread then treats it as lost.
        """

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Release the device; called once after every successful :meth:`_connect`."""

    def _set_warnings(self, warnings: list[str]) -> None:
        """Record configuration mismatches found by :meth:`_connect` (shown in status())."""
        with self._cond:
            self._warnings = list(warnings)
        for warning in warnings:
            _LOG.warning("camera %s: %s", self.name, warning)

    # --- the Camera interface -----------------------------------------------------------------

    def open(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise CameraError(f"{self._describe()}: already open (or its last close timed out and "
                              f"a device read is still stuck)")
        self._stop.clear()
        try:
            self._connect()
        except Exception as error:
            raise CameraError(f"{self._describe()}: cannot open: {error}") from error
        self._device_open = True
        self._reset_counters()
        self._next_due_s = time.monotonic()
        self._thread = threading.Thread(target=self._capture_loop, name=f"camera-{self.name}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread.join(self.close_timeout_s)
        if thread.is_alive():
            message = (f"capture thread did not stop within {self.close_timeout_s:g} s (a device "
                       f"read is stuck); it releases the device when the read returns")
            _LOG.warning("camera %s: %s", self.name, message)
            with self._cond:
                self._last_error = message
            return
        self._thread = None

    def latest(self, timeout_s: float) -> Frame | None:
        if not 0 <= timeout_s < math.inf:
            raise ValueError(f"timeout_s must be finite and >= 0, got {timeout_s}")
        deadline_s = time.monotonic() + timeout_s
        with self._cond:
            if self._thread is None or self._stop.is_set():
                raise CameraError(f"{self._describe()}: not open")
            while True:
                frame = self._frame
                if frame is not None and frame.sequence > self._returned_sequence:
                    self._returned_sequence = frame.sequence
                    return frame
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(remaining_s)

    def status(self) -> CameraStatus:
        now_mono_ns = time.monotonic_ns()
        with self._cond:
            running = self._thread is not None and not self._stop.is_set()
            age_s = (now_mono_ns - self._frame_mono_ns) / 1e9 if self._frame is not None else None
            return CameraStatus(
                name=self.name, device=self.config.device,
                connected=running and self._gap_start_ns is None,
                frames=self._frames, reconnects=self._reconnects, last_error=self._last_error,
                last_frame_age_s=age_s, measured_fps=self._measured_fps(now_mono_ns),
                gaps=list(self._gaps), disconnected_since_ns=self._gap_start_ns,
                warnings=list(self._warnings))

    def _reset_counters(self) -> None:
        """Start status() afresh: everything it reports counts from open()."""
        with self._cond:
            self._frame, self._returned_sequence, self._frames = None, -1, 0
            self._reconnects, self._gap_start_ns, self._last_error = 0, None, ""
            self._gaps.clear()
            self._stamps_mono_ns.clear()

    # --- the capture thread -------------------------------------------------------------------

    def _capture_loop(self) -> None:
        try:
            while not self._stop.is_set():
                if self._device_open:
                    self._capture_one()
                else:
                    self._try_reconnect()
        finally:
            self._release()

    def _capture_one(self) -> None:
        if not self._wait_until_due():
            return
        try:
            image, capture_ns = self._read()
        except Exception as error:
            if not self._stop.is_set():
                self._lose(f"read failed: {error}")
            return
        self._publish(image, capture_ns)

    def _wait_until_due(self) -> bool:
        """Pace reads at ``_pace_period_s`` when set; False if the camera is closing."""
        period_s = self._pace_period_s
        if not period_s:
            return True
        now_s = time.monotonic()
        if now_s - self._next_due_s > period_s:  # fell behind by more than a frame: resync
            self._next_due_s = now_s
        delay_s = self._next_due_s - now_s
        if delay_s > 0 and self._stop.wait(delay_s):
            return False
        self._next_due_s += period_s
        return True

    def _publish(self, image: np.ndarray, capture_ns: int) -> None:
        now_mono_ns = time.monotonic_ns()
        with self._cond:
            if self._gap_start_ns is not None:
                self._gaps.append((self._gap_start_ns, capture_ns))
                self._gap_start_ns = None
                self._reconnects += 1
                _LOG.info("camera %s: frames resumed (reconnect %d)", self.name, self._reconnects)
            self._frame = Frame(image=image, capture_ns=capture_ns, sequence=self._frames)
            self._frame_mono_ns = now_mono_ns
            self._frames += 1
            self._stamps_mono_ns.append(now_mono_ns)
            self._cond.notify_all()

    def _lose(self, reason: str) -> None:
        """Start (or continue) a disconnection gap and release the device."""
        with self._cond:
            if self._gap_start_ns is None:
                self._gap_start_ns = time.time_ns()
                _LOG.warning("camera %s: lost (%s); reopening every %g s", self.name, reason,
                             self.reconnect_interval_s)
            self._last_error = reason
            self._cond.notify_all()
        self._release()

    def _try_reconnect(self) -> None:
        if self._stop.wait(self.reconnect_interval_s):
            return
        try:
            self._connect()
        except Exception as error:
            with self._cond:
                self._last_error = f"reopen failed: {error}"
            return
        self._device_open = True
        self._next_due_s = time.monotonic()

    def _release(self) -> None:
        if not self._device_open:
            return
        self._device_open = False
        try:
            self._disconnect()
        except Exception as error:
            _LOG.warning("camera %s: release failed: %s", self.name, error)
            with self._cond:
                self._last_error = f"release failed: {error}"

    # --- helpers ------------------------------------------------------------------------------

    def _measured_fps(self, now_mono_ns: int) -> float:
        recent = [t for t in self._stamps_mono_ns if now_mono_ns - t <= _FPS_WINDOW_NS]
        if len(recent) < 2 or recent[-1] == recent[0]:
            return 0.0
        return (len(recent) - 1) * 1e9 / (recent[-1] - recent[0])

    def _describe(self) -> str:
        return f"camera {self.name!r} ({self.config.driver.value} {self.config.device!r})"


def make_camera(config: CameraConfig, *, reconnect_interval_s: float = 0.5) -> Camera:
    """The driver for ``config.driver``; not opened yet. Sim cameras are not drivers: ValueError."""
    if config.driver is CameraDriver.OPENCV:
        from rise.hardware.cameras.opencv_camera import OpenCVCamera

        return OpenCVCamera(config, reconnect_interval_s=reconnect_interval_s)
    if config.driver is CameraDriver.REALSENSE:
        from rise.hardware.cameras.realsense_camera import RealSenseCamera

        return RealSenseCamera(config, reconnect_interval_s=reconnect_interval_s)
    raise ValueError(f"camera {config.name!r}: driver {config.driver.value!r} has no camera driver "
                     f"(the simulator renders sim cameras)")
