"""Recording into a full disk: the episode is stopped cleanly with an error naming the file, earlier
episodes read back unchanged, and recording resumes once there is space again.

Faults are injected at the OS layer (``os.fsync`` of one file failing with ENOSPC, as delayed
writes do), in the video encoder (PyAV raising ENOSPC mid-episode), through a fake
``shutil.disk_usage`` for the free-space guard, and on a real 3 MB tmpfs mounted in a private
user + mount namespace (``unshare -rm``; skipped where the kernel does not allow it).
"""

from __future__ import annotations

import collections
import errno
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from fault_log import record
from rise.data import DatasetReader, DatasetSpec, DatasetWriter, DiskSpaceError, Recorder, disk_space
from rise.data import lerobot_format as fmt
from rise.data import writer as writer_module
from support import call_service, spin_until

FPS = 30
PERIOD_NS = 33_333_333
SPEC = DatasetSpec(fps=FPS, robot_type="sim", joint_names=("j1", "j2"), cameras=(("front", 32, 32),))
Usage = collections.namedtuple("Usage", "total used free")


def image(episode: int, frame: int) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    return np.stack([(xx * 4 + 8 * frame) % 256, (yy * 4 + 40 * episode) % 256,
                     np.full_like(xx, 60 + frame)], axis=-1).astype(np.uint8)


def feed(recorder: Recorder, episode: int, frames: int) -> None:
    """``frames`` synchronised ticks: command, joint state and camera frame at the same stamp."""
    for frame in range(frames):
        stamp = 10**15 + episode * 10**12 + frame * PERIOD_NS
        state = np.array([episode, frame], np.float32)
        recorder.on_sample("command", stamp, state + 0.5)
        recorder.on_sample("joint_state", stamp, state)
        recorder.on_sample("front", stamp, image(episode, frame))


def record_episode(recorder: Recorder, episode: int, frames: int = 6, task: str = "pick") -> int:
    recorder.start_episode(task)
    feed(recorder, episode, frames)
    return recorder.stop_episode(success=True).episode_index


def snapshot(root: Path) -> list[tuple]:
    """Everything a finished episode holds, decoded, for exact before/after comparisons."""
    reader = DatasetReader(root)
    episodes = map(reader.episode, range(reader.num_episodes))
    return [(e.task, e.length, e.success, e.states.tobytes(), e.actions.tobytes(),
             e.images["front"].tobytes()) for e in episodes]


def episodes_lost(root: Path, before: list[tuple]) -> int:
    """Finished episodes that no longer read back as they were."""
    try:
        after = snapshot(root)
    except Exception:  # noqa: BLE001 - an unreadable dataset loses every episode
        return len(before)
    return sum(1 for i, episode in enumerate(before) if i >= len(after) or after[i] != episode)


def assert_consistent(root: Path, committed_frames: int, tasks: list[str]) -> None:
    """No leftovers of the abandoned episode: no partial files, the summary counts only saved ones."""
    assert sorted(root.rglob("*" + fmt.PARTIAL_SUFFIX)) == []
    assert fmt.read_json(root / fmt.STATS_PATH)["index"]["count"] == [committed_frames]
    assert fmt.read_json(root / fmt.INFO_PATH)["total_frames"] == committed_frames
    assert fmt.read_tasks(root) == tasks


def fsync_fails_for(monkeypatch, root: Path, pattern: str) -> None:
    """``os.fsync`` of files under ``root`` matching ``pattern`` fails with ENOSPC (no file name,
    like the real call)."""
    real = os.fsync

    def fsync(fd):
        path = os.path.relpath(os.readlink(f"/proc/self/fd/{fd}"), root)
        if fnmatch.fnmatch(path, pattern):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.faults
@pytest.mark.parametrize("pattern", [
    "videos/*/chunk-*/file-*.mp4.partial",  # finishing the episode's video
    "data/chunk-*/file-*.parquet.partial",  # its frames
    "meta/episodes/chunk-*/file-*.parquet.partial",  # its row: the commit point
    "meta/tasks.parquet.partial",  # the summary, after the commit
    "meta/stats.json.partial",
    "meta/info.json.partial",
])
def test_full_disk_while_saving_abandons_only_that_episode(tmp_path, monkeypatch, pattern):
    with DatasetWriter(tmp_path, SPEC, codec="mpeg4") as writer:
        recorder = Recorder(writer, tolerance_ns=PERIOD_NS // 4)
        assert [record_episode(recorder, e) for e in range(2)] == [0, 1]
        before = snapshot(tmp_path)
        recorder.start_episode("stack")  # a new task: the summary would list it
        feed(recorder, 2, 6)
        with monkeypatch.context() as patch:
            fsync_fails_for(patch, tmp_path, pattern)
            with pytest.raises(DiskSpaceError) as caught:
                recorder.stop_episode(success=True)
        message = str(caught.value)
        assert "episode 2 failed" in message and "No space left on device" in message
        assert fnmatch.fnmatch(os.path.relpath(caught.value.__cause__.filename, tmp_path), pattern), message
        assert not recorder.recording and not writer.recording and writer.num_episodes == 2
        assert_consistent(tmp_path, 12, ["pick"])
        lost = episodes_lost(tmp_path, before)
        assert record_episode(recorder, 2, 4, "stack") == 2  # space again: recording goes on
    record(f"disk full: fsync of {pattern}", "episode stopped cleanly with an error", data_lost=lost)
    assert lost == 0 and snapshot(tmp_path)[:2] == before
    assert DatasetReader(tmp_path).num_frames == 16


@pytest.mark.faults
def test_full_disk_while_encoding_stops_the_episode(tmp_path, monkeypatch):
    real = writer_module._VideoEncoder.encode

    def encode(self, frame, index):  # PyAV's error once the disk fills: ENOSPC naming the mp4
        if index >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        real(self, frame, index)

    with DatasetWriter(tmp_path, SPEC, codec="mpeg4") as writer:
        recorder = Recorder(writer, tolerance_ns=PERIOD_NS // 4)
        record_episode(recorder, 0)
        before = snapshot(tmp_path)
        monkeypatch.setattr(writer_module._VideoEncoder, "encode", encode)
        recorder.start_episode("pick")
        with pytest.raises(DiskSpaceError, match=r"recording frame 3 of episode 1 failed.*No space left on "
                                                 r"device: '.*file-001\.mp4\.partial'"):
            feed(recorder, 1, 6)
        assert not recorder.recording and not writer.recording
        feed(recorder, 1, 2)  # later samples are ignored, not errors
        assert_consistent(tmp_path, 6, ["pick"])
        lost = episodes_lost(tmp_path, before)
        monkeypatch.undo()
        assert record_episode(recorder, 1) == 1
    record("disk full: video encoder", "episode stopped cleanly with an error", data_lost=lost)
    assert lost == 0


@pytest.mark.faults
def test_low_free_space_stops_the_episode_and_refuses_new_ones(tmp_path, monkeypatch):
    free = {"mb": 10_000.0}
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, int(free["mb"] * 1024**2)))
    with DatasetWriter(tmp_path, SPEC, codec="mpeg4", min_free_disk_mb=500) as writer:
        writer.disk_space.interval_s = 0.0  # look on every frame
        recorder = Recorder(writer, tolerance_ns=PERIOD_NS // 4)
        record_episode(recorder, 0)
        before = snapshot(tmp_path)
        recorder.start_episode("pick")
        feed(recorder, 1, 3)
        free["mb"] = 123.4
        with pytest.raises(DiskSpaceError, match=r"only 123\.4 MiB free .* below the minimum of 500 MiB "
                                                 r"\(min_free_disk_mb\)"):
            feed(recorder, 1, 6)
        assert not recorder.recording and sorted(tmp_path.rglob("*.partial")) == []
        with pytest.raises(DiskSpaceError, match="cannot start episode 1: only 123.4 MiB free"):
            recorder.start_episode("pick")
        assert not recorder.recording and not writer.recording
        lost = episodes_lost(tmp_path, before)
        free["mb"] = 501.0
        assert record_episode(recorder, 1) == 1
    record("disk below min_free_disk_mb", "episode stopped cleanly, new ones refused", data_lost=lost)
    assert lost == 0 and DatasetReader(tmp_path).num_episodes == 2


def test_the_free_space_guard_looks_once_per_interval(tmp_path, monkeypatch):
    clock = {"s": 100.0}
    monkeypatch.setattr(disk_space, "time", types.SimpleNamespace(monotonic=lambda: clock["s"]))
    calls = []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: calls.append(path) or Usage(10**9, 0, 1024**2))
    guard = disk_space.FreeSpaceGuard(tmp_path, min_free_disk_mb=2)
    assert isinstance(guard.check_due(), disk_space.LowDiskSpace)
    assert guard.check_due() is None and len(calls) == 1  # within the second: not looked at
    clock["s"] += 1.0
    assert "only 1.0 MiB free" in str(guard.check_due()) and len(calls) == 2
    guard.min_free_disk_mb = 0  # no minimum: never looks
    clock["s"] += 5.0
    assert guard.check_due() is None and guard.shortfall() is None and len(calls) == 2
    with pytest.raises(ValueError, match="min_free_disk_mb"):
        guard.min_free_disk_mb = -1


# ---------------------------------------------------------------- a real, small filesystem

MOUNT_MB = 3


def _record_noise(recorder: Recorder, episode: int, rng: np.random.Generator) -> None:
    recorder.start_episode("pick")
    for frame in range(30):  # losslessly encoded noise: about 0.5 MB per episode
        stamp = episode * 10**12 + frame * PERIOD_NS
        recorder.on_sample("joint_state", stamp, np.array([episode, frame], np.float32))
        recorder.on_sample("front", stamp, rng.integers(0, 256, (96, 96, 3), np.uint8))
    recorder.stop_episode(success=True)


def _fill_in_tmpfs(mount: Path) -> dict:
    """Run inside ``unshare -rm`` (see below): record on a MOUNT_MB tmpfs until it is full, then
    free 1 MB (a ballast file) and record one more episode."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MOUNT_MB}m", "tmpfs", str(mount)], check=True)
    (mount / "ballast").write_bytes(bytes(1_000_000))
    root = mount / "dataset"
    spec = DatasetSpec(fps=FPS, robot_type="sim", joint_names=("j1", "j2"), cameras=(("front", 96, 96),))
    rng = np.random.default_rng(0)
    result: dict = {"saved": 0}
    before: list[tuple] = []
    with DatasetWriter(root, spec, codec="h264", crf=0) as writer:
        recorder = Recorder(writer, tolerance_ns=PERIOD_NS // 4)
        try:
            for episode in range(10):
                _record_noise(recorder, episode, rng)
                result["saved"] += 1
                before = snapshot(root)
        except DiskSpaceError as error:
            result["error"] = str(error)
        result["recording"] = recorder.recording
        result["partial_files"] = [str(p) for p in root.rglob("*.partial")]
        result["free_mb_when_full"] = round(writer.disk_space.free_mb(), 3)
        result["lost"] = episodes_lost(root, before)
        (mount / "ballast").unlink()
        _record_noise(recorder, result["saved"], rng)
    result["episodes_after"] = DatasetReader(root).num_episodes
    return result


@pytest.mark.faults
def test_recording_into_a_real_full_tmpfs(tmp_path):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    unshare = shutil.which("unshare")
    probe = [unshare, "-rm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]
    if unshare is None or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs unshare and user + mount namespaces)")
    started = time.monotonic()
    done = subprocess.run([unshare, "-rm", sys.executable, __file__, str(mount)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    record("disk full: real 3 MB tmpfs", "episode stopped cleanly with an error", data_lost=result["lost"],
           recovery_s=None)
    assert result["saved"] >= 1 and "No space left on device" in result["error"], result
    assert str(mount) in result["error"] and result["partial_files"] == [] and result["lost"] == 0, result
    assert not result["recording"] and result["episodes_after"] == result["saved"] + 1, result
    assert time.monotonic() - started < 120



# ---------------------------------------------------------------- the ROS recorder node


def _set_min_free(node, executor, value_mb: float) -> None:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value_mb)
    request = SetParameters.Request(parameters=[Parameter(name="min_free_disk_mb", value=value)])
    response = call_service(node, executor, SetParameters, "/recorder/set_parameters", request)
    assert response.results[0].successful, response.results[0].reason


@pytest.mark.ros
@pytest.mark.faults
def test_recorder_node_stops_the_episode_when_the_disk_runs_low(tmp_path, spawn, ros_node):
    """Camera and joint-state streams from this test; the free-space minimum raised mid-episode
    stands in for a filling disk."""
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from rise.config import load_robot
    from rise.nodes.qos import LATCHED, SENSOR, STATE
    from rise.nodes.ros_image import to_image

    node, executor = ros_node
    robot = load_robot("sim")
    root = tmp_path / "demos"
    spawn([sys.executable, "-m", "rise.nodes.recorder_node", "--ros-args", "-p", f"output:={root}",
           "-p", "codec:=mpeg4", "-p", "min_free_disk_mb:=0.0"])
    statuses: list[dict] = []
    node.create_subscription(String, "/rise/recorder/status", lambda m: statuses.append(json.loads(m.data)),
                             LATCHED)
    joints = node.create_publisher(JointState, "/joint_states", STATE)
    cameras = {c.name: node.create_publisher(Image, f"/cameras/{c.name}/image_raw", SENSOR)
               for c in robot.cameras}
    names = list(robot.arm.joint_names)

    def tick():
        stamp = node.get_clock().now().to_msg()
        state = JointState(name=names, position=[0.1] * len(names))
        state.header.stamp = stamp
        joints.publish(state)
        for camera in robot.cameras:
            pixels = np.full((camera.height, camera.width, 3), 90, np.uint8)
            cameras[camera.name].publish(to_image(pixels, stamp, camera.name))

    node.create_timer(1.0 / robot.control_rate_hz, tick)

    def start():
        return call_service(node, executor, Trigger, "/rise/recorder/start_episode", Trigger.Request())

    def stop():
        request = SetBool.Request(data=True)
        return call_service(node, executor, SetBool, "/rise/recorder/stop_episode", request)

    def stream_for(seconds: float) -> None:
        until = time.monotonic() + seconds
        spin_until(executor, lambda: time.monotonic() > until, seconds + 5, "streaming")

    assert start().success
    stream_for(1.0)
    saved = stop()
    assert saved.success, saved.message
    before = snapshot(root)
    assert start().success
    stream_for(0.5)
    _set_min_free(node, executor, 1e9)  # a petabyte: far more than is free
    spin_until(executor, lambda: statuses and statuses[-1].get("disk_full"), 10, "the episode to stop")
    status = statuses[-1]
    assert not status["recording"] and status["episodes"] == 1, status
    assert "episode stopped" in status["last_error"] and "min_free_disk_mb" in status["last_error"], status
    refused = start()
    assert not refused.success and "cannot start episode 1" in refused.message, refused.message
    lost = episodes_lost(root, before)
    _set_min_free(node, executor, 0.0)  # space again
    assert start().success
    stream_for(0.5)
    assert stop().success
    record("recorder node: disk below min_free_disk_mb", "episode stopped, status says why",
           data_lost=lost)
    assert lost == 0 and DatasetReader(root).num_episodes == 2 and not sorted(root.rglob("*.partial"))


if __name__ == "__main__":  # the tmpfs test's worker, started by it inside a private namespace
    print(json.dumps(_fill_in_tmpfs(Path(sys.argv[1]))))
