"""``rise up --mode collect`` in sim: the scripted expert drives the arm through the arm bridge,
and the recorder node saves unattended episodes that read back with (next to) no dropped frames."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from rosbags.highlevel import AnyReader
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from rise.data import DatasetReader
from rise.nodes.qos import LATCHED
from support import call_service, read_lines, wait_for

pytestmark = pytest.mark.ros


def test_unattended_collection_through_ros(tmp_path, spawn, ros_node):
    node, executor = ros_node
    config = tmp_path / "experiment.yaml"
    config.write_text(f"name: collect_test\ntask: box_close\ndata_dir: {tmp_path / 'data'}\n")
    up = spawn([sys.executable, "-m", "rise.cli", "up", "--mode", "collect", "--config", str(config)],
               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = read_lines(up)
    statuses: list[dict] = []
    node.create_subscription(String, "/rise/recorder/status", lambda m: statuses.append(json.loads(m.data)),
                             LATCHED)
    sim: list[dict] = []
    node.create_subscription(String, "/rise/sim/status", lambda m: sim.append(json.loads(m.data)), LATCHED)

    def saved():
        executor.spin_once(timeout_sec=0.1)
        return statuses and statuses[-1]["episodes"] >= 1

    wait_for(saved, 120, "the recorder to save an episode", step_s=0.0)
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=60) == 0, "\n".join(lines)

    dataset = DatasetReader(tmp_path / "data" / "box_close")
    assert dataset.num_episodes >= 1
    episode = dataset.episode(0)
    # The success label is the simulator's verdict at the end of the episode.
    verdict = next(status for status in sim if status["done"])
    assert episode.success == verdict["success"]
    # 0 on an idle machine; on CI's 2 shared cores a DDS delivery can now and then miss the
    # synchroniser's window, and such a frame is counted, not silently duplicated.
    assert episode.metadata["sync"]["dropped"] <= max(2, episode.length // 100), episode.metadata["sync"]
    assert episode.length > 100 and episode.images["front"].shape[0] == episode.length
    # The actions are the bridge's commands: they change over the episode and differ from the state.
    assert (episode.actions.max(axis=0) - episode.actions.min(axis=0)).max() > 0.3
    assert any("episode 0 saved" in line for line in lines)


def test_recorder_node_services_and_raw_mcap(tmp_path, spawn, ros_node):
    """Manual episodes through the services, with the optional raw MCAP bag beside the dataset."""
    node, executor = ros_node
    spawn([sys.executable, "-m", "rise.nodes.sim_node", "--ros-args", "-p", "task:=pack"])
    spawn([sys.executable, "-m", "rise.nodes.arm_bridge_node"])
    root = tmp_path / "demos"
    spawn([sys.executable, "-m", "rise.nodes.recorder_node", "--ros-args", "-p", f"output:={root}",
           "-p", "mcap:=true", "-p", "codec:=h264"])
    assert not call_service(node, executor, SetBool, "/rise/recorder/stop_episode",
                            SetBool.Request(data=True)).success  # nothing to stop yet
    assert call_service(node, executor, Trigger, "/rise/recorder/start_episode", Trigger.Request()).success
    statuses: list[dict] = []
    node.create_subscription(String, "/rise/recorder/status", lambda m: statuses.append(json.loads(m.data)),
                             LATCHED)
    start = time.monotonic()

    def two_seconds_later():
        executor.spin_once(timeout_sec=0.1)
        return time.monotonic() - start > 2.0

    wait_for(two_seconds_later, 10, "2 s of data")
    response = call_service(node, executor, SetBool, "/rise/recorder/stop_episode",
                            SetBool.Request(data=False))
    assert response.success, response.message
    assert call_service(node, executor, Trigger, "/rise/recorder/start_episode", Trigger.Request()).success
    assert call_service(node, executor, Trigger, "/rise/recorder/discard_episode", Trigger.Request()).success

    dataset = DatasetReader(root)
    assert dataset.num_episodes == 1
    episode = dataset.episode(0)
    assert episode.success is False and 30 <= episode.length <= 120
    bags = sorted((root / "bags").iterdir())
    assert [b.name for b in bags] == ["episode_000000"]  # the discarded episode left no bag
    with AnyReader([bags[0]]) as reader:
        topics = {c.topic: c.msgcount for c in reader.connections}
    assert topics["/cameras/front/image_raw"] >= 30 and topics["/joint_states"] >= 30
