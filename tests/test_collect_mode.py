"""``rise up --mode collect`` in sim: the scripted expert drives the arm through the arm bridge,
and the recorder node saves unattended episodes that read back with 0 dropped frames."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from std_msgs.msg import String

from rise.data import DatasetReader
from rise.nodes.qos import LATCHED
from support import read_lines, wait_for

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

    def saved():
        executor.spin_once(timeout_sec=0.1)
        return statuses and statuses[-1]["episodes"] >= 1

    wait_for(saved, 120, "the recorder to save an episode", step_s=0.0)
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=60) == 0, "\n".join(lines)

    dataset = DatasetReader(tmp_path / "data" / "box_close")
    assert dataset.num_episodes >= 1
    episode = dataset.episode(0)
    assert episode.success and episode.metadata["sync"]["dropped"] == 0
    assert episode.length > 100 and episode.images["front"].shape[0] == episode.length
    # The actions are the bridge's commands: they change over the episode and differ from the state.
    assert (episode.actions.max(axis=0) - episode.actions.min(axis=0)).max() > 0.3
    assert any("episode 0 saved" in line for line in lines)
