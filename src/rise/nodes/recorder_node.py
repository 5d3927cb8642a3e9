"""Recorder node: records synchronised episodes into a LeRobot v3 dataset.

Subscribes to every camera of the robot config (``/cameras/<name>/image_raw``), ``/joint_states``
and ``/rise/arm/command_sent`` (the command actually sent = the action), matches them by capture
stamp (:class:`rise.data.recorder.Recorder`, the same code ``rise collect`` uses) and writes
episodes on:

- ``/rise/recorder/start_episode`` (std_srvs/Trigger)
- ``/rise/recorder/stop_episode`` (std_srvs/SetBool, data = success)
- ``/rise/recorder/discard_episode`` (std_srvs/Trigger)

State on ``/rise/recorder/status`` (std_msgs/String, JSON, latched). Encoding runs on a worker
thread, so subscriptions never wait for the video encoder. A write error, or less free disk space
than ``min_free_disk_mb`` (checked once a second), ends the episode cleanly: its files are removed,
earlier episodes stay readable, the status says why (``last_error``, ``disk_full``) and new episodes
are refused until there is space again.

Run: ``ros2 run rise rise_recorder --ros-args -p output:=/data/demos -p instruction:="pick the cube"``
"""

from __future__ import annotations

import collections
import json
import queue
import threading
import time
from pathlib import Path

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from rise.data.collect import dataset_spec
from rise.data.recorder import COMMAND_STREAM, STATE_STREAM, EmptyEpisodeError, Recorder
from rise.data.writer import DatasetError, DatasetWriter, DiskSpaceError
from rise.nodes.node_main import run_node
from rise.nodes.parameters import declare, declare_configs
from rise.nodes.qos import COMMAND, LATCHED, SENSOR, STATE
from rise.nodes.ros_image import from_image

SERVICE_TIMEOUT_S = 60.0  # stopping flushes the encoders: allow for long episodes


AV1_REALTIME_PIXELS_PER_S = 10e6  # SVT-AV1 on 2 CPU cores: ~99 fps of 640x480 (30 Mpx/s), flat out


def auto_codec(robot) -> str:
    """libsvtav1 when the cameras' pixel rate leaves it ample headroom, else h264."""
    rate = sum(c.width * c.height * c.fps for c in robot.cameras)
    return "libsvtav1" if rate <= AV1_REALTIME_PIXELS_PER_S else "h264"


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class RecorderNode(Node):
    def __init__(self):
        super().__init__("recorder")
        self.robot, experiment = declare_configs(self)
        default_root = str(Path(experiment.data_dir) / experiment.task)
        root = Path(declare(self, "output", default_root, "dataset folder (appended to if it exists)"))
        self._instruction = declare(self, "instruction", "", "task instruction stored with episodes "
                                    "(empty: the simulated task's)", read_only=False)
        codec = declare(self, "codec", "auto", "video codec: libsvtav1, h264, mpeg4, or auto (AV1, "
                        "LeRobot's default, unless the cameras deliver more than it encodes in real "
                        "time on a small CPU: then h264)")
        codec = auto_codec(self.robot) if codec == "auto" else codec
        self._bag = None
        if declare(self, "mcap", False, "also record every topic raw into <output>/bags/episode_NNNNNN "
                   "(rosbag2 MCAP)"):
            from rise.nodes.raw_bag import RawBag

            self._bag = RawBag(self, self.robot.camera_names)
        self._root = root
        if not self._instruction:
            from rise.sim.tasks import make_task

            self._instruction = make_task(experiment.task).instruction
        min_free_mb = declare(self, "min_free_disk_mb", experiment.min_free_disk_mb, "episodes refuse to "
                              "start, and stop, below this much free space in the output folder [MiB, "
                              "a float; 0: no minimum]", read_only=False)
        self._writer = DatasetWriter(root, dataset_spec(self.robot), codec=codec,
                                     min_free_disk_mb=min_free_mb)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Unsynchronised cameras at the control rate are up to half a period apart, plus jitter.
        period_ms = 1e3 / self.robot.control_rate_hz
        tolerance_ms = declare(self, "sync_tolerance_ms", round(0.6 * period_ms, 3),
                               "streams match when their capture stamps are this close [ms]")
        self._recorder = Recorder(self._writer, tolerance_ns=int(tolerance_ms * 1e6))
        self._names = self.robot.arm.joint_names
        self._work: queue.Queue = queue.Queue(maxsize=2000)
        self._overflow = 0
        self._last_state: tuple | None = None
        # capture -> recorder latency of recent frames, per camera [ns] (for status and benchmarks)
        self._latency_ns = {c: collections.deque(maxlen=10_000) for c in self.robot.camera_names}
        self._status = self.create_publisher(String, "/rise/recorder/status", LATCHED)
        self._state = {"recording": False, "episodes": self._writer.num_episodes, "root": str(root),
                       "disk_full": False}
        for camera in self.robot.camera_names:
            self.create_subscription(Image, f"/cameras/{camera}/image_raw",
                                     lambda m, c=camera: self._on_image(c, m), SENSOR)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, STATE)
        self.create_subscription(JointTrajectory, "/rise/arm/command_sent", self._on_command, COMMAND)
        self.create_service(Trigger, "/rise/recorder/start_episode", self._on_start)
        self.create_service(SetBool, "/rise/recorder/stop_episode", self._on_stop)
        self.create_service(Trigger, "/rise/recorder/discard_episode", self._on_discard)
        self._worker = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
        self._worker.start()
        self._publish_status()
        self.get_logger().info(f"recording to {root} ({self._writer.num_episodes} episodes so far)")

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name == "min_free_disk_mb":
                try:  # a float attribute: read by the worker thread at its next check
                    self._writer.disk_space.min_free_disk_mb = parameter.value
                except ValueError as error:
                    return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    # -- subscriptions: enqueue only -------------------------------------------------------
    def _enqueue(self, item) -> None:
        try:
            self._work.put_nowait(item)
        except queue.Full:
            self._overflow += 1
            self.get_logger().error("recorder queue full: the writer cannot keep up, sample dropped",
                                    throttle_duration_sec=1.0)

    def _on_image(self, camera: str, message: Image) -> None:
        if self._recorder.recording:
            self._latency_ns[camera].append(time.time_ns() - stamp_ns(message.header))
            try:
                pixels = np.array(from_image(message))  # copy: the message buffer is reused
            except ValueError as error:
                self.get_logger().warning(f"{camera}: image ignored: {error}", throttle_duration_sec=1.0)
                return
            self._enqueue(("sample", camera, stamp_ns(message.header), pixels))

    def _on_joint_state(self, message: JointState) -> None:
        index = {name: i for i, name in enumerate(message.name)}
        if not all(n in index for n in self._names) or len(message.position) != len(message.name):
            return
        positions = np.array([message.position[index[n]] for n in self._names], np.float32)
        sample = (STATE_STREAM, stamp_ns(message.header), positions)
        if self._recorder.recording:
            self._enqueue(("sample", *sample))
        else:
            self._last_state = sample  # the first frames of an episode pair with it

    def _on_command(self, message: JointTrajectory) -> None:
        if self._recorder.recording and message.points and list(message.joint_names) == list(self._names):
            action = np.array(message.points[0].positions, np.float32)
            self._enqueue(("sample", COMMAND_STREAM, stamp_ns(message.header), action))

    # -- services: run on the worker, wait with a deadline ---------------------------------
    def _call(self, action: str, *args) -> tuple[bool, str]:
        done = threading.Event()
        result: list = []
        self._work.put((action, done, result, *args))
        if not done.wait(SERVICE_TIMEOUT_S):
            return False, f"{action} did not finish within {SERVICE_TIMEOUT_S:g} s"
        return result[0]

    def _on_start(self, _request, response):
        response.success, response.message = self._call("start")
        return response

    def _on_stop(self, request, response):
        latency = self._latency_report()  # here, on the thread that appends the samples
        response.success, response.message = self._call("stop", bool(request.data), latency)
        return response

    def _on_discard(self, _request, response):
        response.success, response.message = self._call("discard")
        return response

    # -- the worker thread: the only one touching the Recorder's files ----------------------
    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            if item[0] == "sample":
                self._sample(*item[1:])
                continue
            action, done, result, *args = item
            result.append(self._control(action, *args))
            done.set()

    def _sample(self, stream: str, stamp: int, payload) -> None:
        if not self._recorder.recording:
            return
        try:
            self._recorder.on_sample(stream, stamp, payload)
        except DatasetError as error:  # the writer abandoned the episode (files removed)
            if self._bag is not None:
                self._bag.stop(keep=False)  # the episode was not saved: neither is its bag
            self._note_error(f"episode stopped: {error}", error)
            self._state["recording"] = self._recorder.recording
            self._publish_status()

    def _control(self, action: str, *args) -> tuple[bool, str]:
        try:
            if action == "start":
                if self._recorder.recording:
                    return False, "an episode is already being recorded"
                self._recorder.start_episode(self._instruction)
                self._state["disk_full"] = False
                if self._last_state is not None:
                    self._recorder.on_sample(*self._last_state)
                for samples in self._latency_ns.values():
                    samples.clear()
                if self._bag is not None:
                    self._bag.start(self._root / "bags" / f"episode_{self._writer.num_episodes:06d}")
                message = f"recording episode {self._writer.num_episodes}"
            elif action == "stop":
                if not self._recorder.recording:
                    return False, "no episode is being recorded"
                try:
                    report = self._recorder.stop_episode(args[0], metadata={"overflow": self._overflow})
                except Exception:
                    if self._bag is not None:
                        self._bag.stop(keep=False)  # the episode was not saved: neither is its bag
                    raise
                if self._bag is not None:
                    self._bag.stop(keep=True)
                self._state["last_episode"] = {"index": report.episode_index, "frames": report.frames,
                                               "dropped": report.dropped, "late": report.late,
                                               "success": args[0], "latency_ms": args[1]}
                message = (f"episode {report.episode_index} saved: {report.frames} frames, "
                           f"{report.dropped} dropped, {report.late} late")
            else:
                if not self._recorder.recording:
                    return False, "no episode is being recorded"
                self._recorder.discard_episode()
                if self._bag is not None:
                    self._bag.stop(keep=False)
                message = "episode discarded"
        except (DatasetError, EmptyEpisodeError, OSError) as error:
            self._note_error(f"{action} failed: {error}", error)
            return False, str(error)
        finally:
            self._state.update(recording=self._recorder.recording, episodes=self._writer.num_episodes)
            self._publish_status()
        self.get_logger().info(message)
        return True, message

    def _latency_report(self) -> dict:
        """p50 / p99 / max capture -> recorder latency per camera over the episode [ms]."""
        report = {}
        for camera, samples in self._latency_ns.items():
            if samples:
                values = np.array(samples) / 1e6
                report[camera] = {"p50": round(float(np.percentile(values, 50)), 2),
                                  "p99": round(float(np.percentile(values, 99)), 2),
                                  "max": round(float(values.max()), 2), "frames": len(values)}
        return report

    def _note_error(self, message: str, error: Exception) -> None:
        """Log ``message`` and keep it in the status; ``disk_full`` says whether the disk was the cause."""
        self.get_logger().error(message)
        self._state["last_error"] = message
        self._state["disk_full"] = isinstance(error, DiskSpaceError)

    def _publish_status(self) -> None:
        try:
            self._state["free_disk_mb"] = round(self._writer.disk_space.free_mb(), 1)
        except OSError:  # the output folder vanished: the next write reports it
            self._state["free_disk_mb"] = None
        self._status.publish(String(data=json.dumps(self._state)))

    def destroy_node(self):
        self._work.put(None)
        self._worker.join(timeout=10.0)
        if self._recorder.recording:
            self._recorder.discard_episode()  # an unfinished episode is never left half-written
            if self._bag is not None:
                self._bag.stop(keep=False)  # nor its raw bag
        self._writer.close()
        return super().destroy_node()


def main(args=None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
