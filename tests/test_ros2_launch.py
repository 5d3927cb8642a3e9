"""The real ``ros2 launch rise bringup.launch.py``, from a colcon-built workspace.

- each mode brings up exactly the nodes of ``rise nodes`` and a plain client can use them
  (launch_testing: tests/launch_checks/check_bringup.launch.py, run by ``launch_test``);
- SIGINT to the launch, Ctrl-C to its process group, SIGTERM and SIGKILL of the launch each stop
  every node: no orphan (tests/process_reaper.py collects them), exit 0, no traceback, every saved
  episode intact;
- a bad argument is refused before any node starts; a node that refuses its environment is not
  respawned.

Needs the launch tooling (not on any registry: scripts/setup_venv.sh installs it from wheels when
they are at hand); without it these tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rise.bringup import Mode
from rise.data import DatasetReader
from ros2_workspace import VENV_BIN, Workspace, missing_launch_tooling
from support import ROOT, read_lines, wait_for

pytestmark = [pytest.mark.ros,
              pytest.mark.skipif(missing_launch_tooling() is not None,
                                 reason=missing_launch_tooling() or "")]
REAPER = Path(__file__).with_name("process_reaper.py")
CHECK = Path(__file__).parent / "launch_checks" / "check_bringup.launch.py"


def experiment(tmp_path: Path) -> Path:
    config = tmp_path / "experiment.yaml"
    config.write_text(f"name: launch_test\ntask: box_close\ndata_dir: {tmp_path / 'data'}\n"
                      f"checkpoint_dir: {tmp_path / 'checkpoints'}\n")
    return config


def expected_nodes(workspace: Workspace, mode: Mode, config: Path) -> list[str]:
    """What ``rise nodes`` (the installed command) says the mode starts."""
    result = subprocess.run([str(workspace.lib / "rise"), "nodes", "--mode", mode.value, "--config",
                             str(config), "--json"], env=workspace.env, capture_output=True,
                            text=True, timeout=60, check=True)
    return [node["name"] for node in json.loads(result.stdout)]


@pytest.mark.parametrize("mode", list(Mode))
def test_each_mode_brings_up_exactly_the_rise_nodes_nodes(mode, ros2_workspace, tmp_path):
    config = experiment(tmp_path)
    env = {**ros2_workspace.env, "RISE_CHECK_MODE": mode.value,
           "RISE_CHECK_EXPECTED_NODES": json.dumps(expected_nodes(ros2_workspace, mode, config))}
    result = subprocess.run([str(VENV_BIN / "launch_test"), str(CHECK), f"mode:={mode.value}",
                             f"config:={config}"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert re.search(r"Ran 3 tests.*\n\s*\nOK", output), output[-6000:]  # the active tests ran


def launch(ros2_workspace: Workspace, tmp_path: Path, *arguments: str, env: dict | None = None):
    """``ros2 launch rise bringup.launch.py ARGUMENTS`` under the reaper; (process, lines, report)."""
    report = tmp_path / "reaper.json"
    process = subprocess.Popen(
        [sys.executable, str(REAPER), str(report), "--", str(VENV_BIN / "ros2"), "launch", "rise",
         "bringup.launch.py", *arguments],
        cwd=tmp_path, env={**ros2_workspace.env, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    return process, read_lines(process), report


def launch_pid(lines: list[str]) -> int:
    line = wait_for(lambda: next((l for l in lines if l.startswith("process_reaper: pid")), None),
                    30, "the launch to start")
    return int(line.split()[-1])


def finish(process: subprocess.Popen, lines: list[str], report: Path) -> dict:
    try:
        process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert report.is_file(), "\n".join(lines)
    return json.loads(report.read_text())


def node_exit_codes(lines: list[str], result: dict) -> dict[str, int]:
    """Executable -> exit code of each node: as launch reported it, or, for nodes that outlived
    the launch, as the reaper collected it."""
    codes = {}
    for line in lines:
        if match := re.search(r"\[(rise_\w+)-\d+\]: process has finished cleanly", line):
            codes[match.group(1)] = 0
        elif match := re.search(r"\[(rise_\w+)-\d+\]: process has died \[pid \d+, exit code (-?\d+)", line):
            codes[match.group(1)] = int(match.group(2))
    for entry in result["exited"]:
        names = [Path(word).name for word in entry["cmd"].split() if Path(word).name.startswith("rise_")]
        codes[names[0] if names else entry["cmd"]] = entry["code"]
    return codes


def send(how: str, pid: int) -> None:
    if how == "sigint":
        os.kill(pid, signal.SIGINT)
    elif how == "ctrl-c":  # a terminal's Ctrl-C: every process of the group gets it
        os.killpg(pid, signal.SIGINT)
    elif how == "sigterm":
        os.kill(pid, signal.SIGTERM)
    else:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["sigint", "ctrl-c", "sigterm", "sigkill"])
def test_a_stop_signal_stops_every_node_and_keeps_every_saved_episode(how, ros2_workspace, tmp_path):
    process, lines, report = launch(ros2_workspace, tmp_path, f"config:={experiment(tmp_path)}")
    pid = launch_pid(lines)
    wait_for(lambda: any("episode 0 saved" in line for line in lines), 120,
             "the recorder to save an episode")
    send(how, pid)
    result = finish(process, lines, report)
    output = "\n".join(lines)
    assert result["orphans"] == [], output
    assert node_exit_codes(lines, result) == {"rise_monitor": 0, "rise_sim": 0, "rise_arm_bridge": 0,
                                              "rise_recorder": 0}, (result, output)
    assert "Traceback" not in output, output
    if how in ("sigint", "ctrl-c"):
        assert result["code"] == 0, output
    saved = sorted({int(m.group(1)) for m in re.finditer(r"episode (\d+) saved", output)})
    dataset = DatasetReader(tmp_path / "data" / "box_close")
    assert dataset.num_episodes >= len(saved) >= 1, output  # those logged before the launch died
    for index in range(dataset.num_episodes):
        episode = dataset.episode(index)
        assert episode.length > 100 and episode.images["front"].shape[0] == episode.length


@pytest.mark.parametrize(("arguments", "message"), [
    (["robot:=nosuchrobot"], "robot:=nosuchrobot: no such robot config"),
    (["config:=/nonexistent.yaml"], "config:=/nonexistent.yaml: file not found"),
    (["no_respawn:=simm"], "no_respawn:=simm: unknown node(s) ['simm']"),
    (["mode:=deploi"], "Valid options are: ['collect', 'deploy', 'improve']"),
    (["robot:=BAD_ROBOT"], "arm.joints[0].name"),
])
def test_a_bad_argument_is_refused_before_any_node_starts(arguments, message, ros2_workspace, tmp_path):
    bad_robot = tmp_path / "bad_robot.yaml"
    bad_robot.write_text((ROOT / "config" / "robots" / "sim.yaml").read_text()
                         .replace("name: waist", "name: waste", 1))
    arguments = [a.replace("BAD_ROBOT", str(bad_robot)) for a in arguments]
    process, lines, report = launch(ros2_workspace, tmp_path, *arguments)
    result = finish(process, lines, report)
    output = "\n".join(lines)
    assert result["code"] == 1, output
    assert message in output, output
    assert result["exited"] == [] and result["orphans"] == [], result  # nothing was started
    assert "Traceback" not in output and "process started" not in output, output


def test_a_node_that_refuses_its_environment_is_not_respawned(ros2_workspace, tmp_path):
    # No display: MuJoCo's glfw backend cannot render, the sim node exits 2 naming what to install.
    process, lines, report = launch(ros2_workspace, tmp_path, f"config:={experiment(tmp_path)}",
                                    env={"MUJOCO_GL": "glfw", "DISPLAY": ""})
    pid = launch_pid(lines)
    wait_for(lambda: any("rise_sim-2 exited with code 2" in line for line in lines), 60,
             "the sim node to refuse")
    wait_for(lambda: any("monitoring 4 nodes" in line for line in lines), 60, "the monitor")
    time.sleep(3.0)  # three respawn delays: a restart would have shown by now
    os.kill(pid, signal.SIGINT)
    result = finish(process, lines, report)
    output = "\n".join(lines)
    assert "not restarting it" in output and "cannot render the cameras" in output, output
    assert sum("[rise_sim-2]: process started" in line for line in lines) == 1, output
    assert result["code"] == 0 and result["orphans"] == [], result
