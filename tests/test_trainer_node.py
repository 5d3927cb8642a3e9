"""The trainer node: practises in the announced world model and announces each policy checkpoint."""

from __future__ import annotations

import json
import sys

from std_msgs.msg import String
from std_srvs.srv import Trigger

from rise.models.checkpoint import verify
from rise.nodes.qos import LATCHED
from support import call_service, spin_until
from toy_data import trainer_setup


def test_trainer_runs_on_the_announced_world_model_and_announces_policies(tmp_path, spawn, ros_node):
    node, executor = ros_node
    root, config = trainer_setup(tmp_path)
    common = ["--ros-args", "-p", f"experiment_config:={config}"]
    policies: list[dict] = []
    node.create_subscription(String, "/rise/policy/checkpoint", lambda m: policies.append(json.loads(m.data)),
                             LATCHED)
    settings = ["iterations:=2", "rollouts:=2", "steps_per_iteration:=2", "batch_size:=8"]
    spawn([sys.executable, "-m", "rise.nodes.trainer_node", *common,
           *[arg for setting in settings for arg in ("-p", setting)]])
    status = call_service(node, executor, Trigger, "/rise/trainer/status", Trigger.Request(), 60)
    assert json.loads(status.message)["state"] == "waiting for a world model"
    refused = call_service(node, executor, Trigger, "/rise/trainer/start", Trigger.Request(), 20)
    assert not refused.success and "no world model" in refused.message

    spawn([sys.executable, "-m", "rise.nodes.world_model_node", *common, "-p", "sampling_steps:=2"])
    spin_until(executor, lambda: len(policies) >= 2, 120, "two policy checkpoint announcements")
    assert [p["iteration"] for p in policies] == [1, 2]
    for announcement in policies:
        manifest = verify(announcement["path"], expected_sha256=announcement["sha256"], root=root,
                          kind="policy")
        assert manifest.metrics["iteration"] == announcement["iteration"]
        assert announcement["metrics"]["rollouts"] == 2
    answer = call_service(node, executor, Trigger, "/rise/trainer/status", Trigger.Request(), 20)
    status = json.loads(answer.message)
    assert status["iteration"] == 2 and status["state"].startswith("finished") and status["error"] is None
    paused = call_service(node, executor, Trigger, "/rise/trainer/pause", Trigger.Request(), 20)
    assert not paused.success and paused.message == "not running"
