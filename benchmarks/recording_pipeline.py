"""Recording pipeline benchmark: 3 cameras x 640x480 @ 30 Hz through camera nodes -> recorder.

    .venv/bin/python benchmarks/recording_pipeline.py [--seconds 60] [--codec h264]

Three camera node processes replay generated 640x480 MJPG videos (the OpenCV backend, paced at
30 fps, as a V4L2 camera would deliver), a fake arm publishes /joint_states at 100 Hz, and the
recorder node records one episode of ``--seconds``. Prints frames published vs recorded per
camera (dropped), the recorder's sync counts, p50/p99 capture -> recorder latency, and the
recorder process's CPU use. Runs on its own ROS domain with the localhost DDS profile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from rise import paths
from rise.ros_env import isolate_this_process

CAMERAS = ("cam0", "cam1", "cam2")


def make_video(path: Path, seed: int, seconds: float = 4.0) -> None:
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 6)
    for i in range(int(30 * seconds)):
        frame = np.roll(base, 4 * i, axis=1)
        cv2.putText(frame, f"{i}", (40, 240), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
        writer.write(frame)
    writer.release()


def robot_yaml(folder: Path) -> Path:
    sim = yaml.safe_load((paths.share_dir() / "config" / "robots" / "sim.yaml").read_text())
    sim.update(name="bench", kind="real", description="benchmark: three replayed 640x480 cameras")
    sim["urdf"] = str(paths.resolve(sim["urdf"]))
    sim["cameras"] = [{"name": name, "driver": "opencv", "width": 640, "height": 480, "fps": 30.0,
                       "device": str(folder / f"{name}.avi")} for name in CAMERAS]
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(sim))
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--codec", default="h264", choices=["h264", "libsvtav1", "mpeg4"])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rise-bench-"))
    isolate_this_process(folder / "ros_log")
    for i, name in enumerate(CAMERAS):
        make_video(folder / f"{name}.avi", seed=i)
    robot = robot_yaml(folder)

    import rclpy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from rise.nodes.qos import LATCHED, SENSOR

    python = sys.executable
    processes = [subprocess.Popen([python, "-m", "rise.nodes.camera_node", "--ros-args", "-r",
                                   f"__node:=camera_{name}", "-p", f"robot_config:={robot}",
                                   "-p", f"camera:={name}"]) for name in CAMERAS]
    recorder = subprocess.Popen([python, "-m", "rise.nodes.recorder_node", "--ros-args", "-p",
                                 f"robot_config:={robot}", "-p", f"output:={folder / 'dataset'}",
                                 "-p", f"codec:={args.codec}", "-p", "instruction:=benchmark"])
    processes.append(recorder)
    rclpy.init()
    node = rclpy.create_node("bench_harness")
    published = dict.fromkeys(CAMERAS, 0)
    counting = [False]

    def count(name):
        def on_image(_message):
            if counting[0]:
                published[name] += 1
        return on_image

    for name in CAMERAS:
        node.create_subscription(Image, f"/cameras/{name}/image_raw", count(name), SENSOR)
    status: list[dict] = []
    node.create_subscription(String, "/rise/recorder/status", lambda m: status.append(json.loads(m.data)),
                             LATCHED)
    joints = node.create_publisher(JointState, "/joint_states", 10)
    names = yaml.safe_load(robot.read_text())["arm"]
    joint_names = [j["name"] for j in names["joints"]] + [names["gripper"]["name"]]

    def publish_joints():
        message = JointState(name=joint_names, position=[0.0] * len(joint_names))
        message.header.stamp = node.get_clock().now().to_msg()
        joints.publish(message)

    node.create_timer(0.01, publish_joints)
    start_client = node.create_client(Trigger, "/rise/recorder/start_episode")
    stop_client = node.create_client(SetBool, "/rise/recorder/stop_episode")
    try:
        deadline = time.monotonic() + 60
        while not start_client.wait_for_service(timeout_sec=0.5):
            if time.monotonic() > deadline:
                raise SystemExit("the recorder did not come up within 60 s")
        warm = time.monotonic() + 5  # cameras streaming before the episode starts
        while time.monotonic() < warm:
            rclpy.spin_once(node, timeout_sec=0.05)
        future = start_client.call_async(Trigger.Request())
        rclpy.spin_until_future_complete(node, future, timeout_sec=10)
        counting[0] = True
        cpu_start, wall_start = cpu_seconds(recorder.pid), time.monotonic()
        while time.monotonic() - wall_start < args.seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
        counting[0] = False
        cpu = (cpu_seconds(recorder.pid) - cpu_start) / (time.monotonic() - wall_start)
        future = stop_client.call_async(SetBool.Request(data=True))
        rclpy.spin_until_future_complete(node, future, timeout_sec=120)
        print(f"stop: {future.result().message}")
        end = time.monotonic() + 5
        while time.monotonic() < end and not (status and "last_episode" in status[-1]):
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        node.destroy_node()
        rclpy.shutdown()

    from rise.data import DatasetReader

    episode = DatasetReader(folder / "dataset").episode(0)
    last = status[-1]["last_episode"]
    print(f"{args.seconds:g} s, 3 cameras 640x480 @ 30 Hz, codec {args.codec}")
    for name in CAMERAS:
        latency = last["latency_ms"].get(name, {})
        print(f"  {name}: published {published[name]}, recorded {episode.length}, "
              f"latency p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms, "
              f"max {latency.get('max')} ms")
    print(f"  recorder sync: {last['frames']} frames, {last['dropped']} dropped, {last['late']} late")
    print(f"  recorder CPU: {100 * cpu:.0f} % of one core")
    print(f"  dataset: {folder / 'dataset'}")


if __name__ == "__main__":
    main()
