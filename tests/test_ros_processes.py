"""ROS 2 across processes: nodes exchange messages and service calls; ``rise up`` starts, keeps
and stops its nodes; every console script exits cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from std_srvs.srv import Trigger

from rise.bringup import NODE_TABLE
from support import ROOT, call_service, console_scripts, read_lines, real_robot_yaml, wait_for

pytestmark = pytest.mark.ros

NESTED = "RISE_NESTED_SUITE"


def monitor_command(*expected: str) -> list[str]:
    listed = ", ".join(expected)
    return [sys.executable, "-m", "rise.nodes.monitor_node", "--ros-args",
            "-p", f"expected_nodes:=[{listed}]", "-p", "period_s:=0.2"]


def test_two_processes_exchange_messages_and_a_service_call(ros_node, spawn):
    node, executor = ros_node
    received: list[DiagnosticArray] = []
    node.create_subscription(DiagnosticArray, "/diagnostics", received.append, 10)
    spawn(monitor_command("monitor", node.get_name()))

    def spin_until_received():
        executor.spin_once(timeout_sec=0.1)
        return received

    wait_for(spin_until_received, 20, "a /diagnostics message from the monitor process")
    names = {status.name for status in received[-1].status}
    assert names == {"rise/nodes/monitor", f"rise/nodes/{node.get_name()}"}

    # The monitor's graph can lag behind its first diagnostics on a loaded machine: ask until it
    # sees this node too (or the deadline passes).
    def status_all_alive():
        response = call_service(node, executor, Trigger, "/rise/monitor/status", Trigger.Request())
        return json.loads(response.message) if response.success else None

    status = wait_for(status_all_alive, 20, "the monitor to see both nodes", step_s=0.2)
    assert status["alive"] == ["monitor", node.get_name()] and status["robot"] == "sim"


def test_monitor_reports_a_missing_node(ros_node, spawn):
    node, executor = ros_node
    spawn(monitor_command("monitor", "recorder"))
    response = call_service(node, executor, Trigger, "/rise/monitor/status", Trigger.Request())
    assert not response.success
    assert json.loads(response.message)["missing"] == ["recorder"]


def stack_up(node, executor) -> bool:
    response = call_service(node, executor, Trigger, "/rise/monitor/status", Trigger.Request())
    return response.success


def test_rise_up_supervises_and_stops_cleanly(ros_node, spawn):
    node, executor = ros_node
    up = spawn([sys.executable, "-m", "rise.cli", "up", "--robot", "sim", "--mode", "collect"],
               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = read_lines(up)
    wait_for(lambda: stack_up(node, executor), 60, "every node of the mode to be alive")

    # A node killed while it works is reported and restarted (the monitor has respawn=True).
    started = [re.search(r"started monitor \(pid (\d+)\)", line) for line in lines]
    first_pid = int(next(m for m in started if m).group(1))
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: any("monitor exited with code -9" in line for line in lines), 15,
             "the runner to report the killed node")
    wait_for(lambda: sum("started monitor" in line for line in lines) == 2, 15, "the restart")
    wait_for(lambda: stack_up(node, executor), 30, "the restarted monitor to answer")

    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=30) == 0, "\n".join(lines)
    assert any("all nodes stopped" in line for line in lines)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)


def script_args(script: str, tmp_path) -> list[str]:
    """Arguments that let each console script start without hardware."""
    if script == "rise":
        return ["up"]
    if script == "rise_camera":  # a camera that is not plugged in: the node waits for it
        robot = real_robot_yaml(tmp_path, [{"name": "front", "driver": "opencv", "width": 64,
                                            "height": 48, "device": "/dev/video99"}])
        return ["--ros-args", "-p", f"robot_config:={robot}", "-p", "camera:=front"]
    if script == "rise_teleop":
        return ["--ros-args", "-p", "device:=leader_arm"]
    return []


@pytest.mark.parametrize("script", sorted(console_scripts()))
def test_console_script_exits_cleanly_on_sigterm(script, tmp_path, ros_node, spawn):
    node, _ = ros_node
    executable = Path(sys.executable).parent / script  # the venv's console script (pip install -e)
    process = spawn([str(executable), *script_args(script, tmp_path)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = read_lines(process)
    name = next((s.name for s in NODE_TABLE if s.executable == script), "monitor")
    name = "camera_front" if script == "rise_camera" else name
    wait_for(lambda: name in node.get_node_names(), 30, f"{script}'s node {name!r} in the graph")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, "\n".join(lines)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)


@pytest.mark.skipif(os.environ.get(NESTED) == "1", reason="already inside a concurrent run")
def test_two_suites_at_once_do_not_interfere(tmp_path):
    """Two pytest processes run the multi-process tests at the same time; both pass."""
    env = {k: v for k, v in os.environ.items() if k not in ("ROS_DOMAIN_ID", "ROS_LOG_DIR")}
    env[NESTED] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "test_ros_processes.py"), "-k", "exchange or missing"]
    runs = [subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=False):
        assert run.returncode == 0, output
        assert "2 passed" in output, output
    domains = {re.search(r"ROS_DOMAIN_ID=(\d+)", out).group(1) for out in outputs}
    assert len(domains) == 2, "both runs got the same ROS_DOMAIN_ID"


@pytest.mark.timeout(600)  # the stack, then the whole learning pipeline at the smoke budget
def test_demo_brings_the_stack_up_and_down_then_runs_the_pipeline(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rise.cli", "demo", "--budget", "smoke", "--workers", "1"],
                            capture_output=True, text=True, timeout=480, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stack up in" in result.stdout and "alive  recorder" in result.stdout
    saved = re.search(r"episode 0 saved: (\d+) frames, success (True|False), (\d+) dropped", result.stdout)
    assert saved, result.stdout
    assert int(saved.group(1)) > 100 and int(saved.group(3)) <= 2, result.stdout
    assert (tmp_path / "rise_runs" / "data" / "brick_sort" / "meta" / "info.json").is_file()
    # then the learning pipeline, ending with its table and where the plots and videos are
    bench = (tmp_path / "rise_runs" / "output" / "bench" / "box_close_smoke").resolve()
    assert "| RISE, learned world model |" in result.stdout and "RISE − RECAP-style" in result.stdout
    assert f"learning curves: {bench / 'learning_curves.png'}" in result.stdout
    assert (bench / "learning_curves.png").is_file() and (bench / "imagined_vs_real.mp4").is_file()
