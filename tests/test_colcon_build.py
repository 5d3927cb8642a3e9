"""The package as a ROS 2 machine builds it: ``colcon build`` (plain, as docker/Dockerfile does, and
``--symlink-install``) installs every module, console script and data file, and the installed tree
runs on its own: imports, the ``rise`` command and a node executable, from outside this checkout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rise.bringup import Mode, plan
from rise.config import experiment_path, load_robot, robot_path
from ros2_workspace import COLCON_BUILD, Workspace, build_workspace
from support import ROOT, console_scripts, read_lines, wait_for

WHERE = ("import rise, rise.nodes.monitor_node, rise.paths; print(rise.__file__); "
         "print(rise.paths.share_dir())")


def run_installed(workspace: Workspace, args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=workspace.root, env=workspace.env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def deploy_node_names() -> list[str]:
    return [launch.name for launch in plan(load_robot("sim"), robot_path("sim"), Mode.DEPLOY,
                                           experiment_path(None), embedded=True)]


def test_plain_build_installs_modules_scripts_and_data(ros2_workspace):
    workspace = ros2_workspace
    # colcon read data_files from setup.py (it falls back to installing the marker itself, with
    # this warning, when it cannot read setup.py's arguments)
    assert "doesn't explicitly install" not in workspace.build_output, workspace.build_output
    [site] = workspace.install.glob("lib/python3*/site-packages")
    for module in ("__init__.py", "bringup.py", "nodes/monitor_node.py", "nodes/start.py",
                   "config/__init__.py", "sim/tasks/__init__.py"):
        assert (site / "rise" / module).is_file(), module
    for script in console_scripts():
        assert os.access(workspace.lib / script, os.X_OK), script
    for data in ("package.xml", "launch/bringup.launch.py", "config/experiments/default.yaml",
                 "config/robots/sim.yaml", "config/dds/fastdds_localhost.xml", "urdf/rise_arm.urdf"):
        assert (workspace.share / data).is_file(), data
    assert (workspace.install / "share/ament_index/resource_index/packages/rise").is_file()


def test_installed_tree_runs_without_the_checkout(ros2_workspace):
    workspace = ros2_workspace
    module_file, share = run_installed(workspace, [sys.executable, "-c", WHERE]).stdout.split()
    assert Path(module_file).is_relative_to(workspace.install), module_file
    assert Path(share) == workspace.share  # config/, launch/, urdf/ found through the ament index
    nodes = run_installed(workspace, [str(workspace.lib / "rise"), "nodes", "--mode", "deploy", "--json"])
    assert [node["name"] for node in json.loads(nodes.stdout)] == deploy_node_names()


@pytest.mark.ros
def test_an_installed_node_executable_runs_and_stops_cleanly(ros2_workspace, spawn):
    process = spawn([str(ros2_workspace.lib / "rise_monitor")], env=ros2_workspace.env,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = read_lines(process)
    wait_for(lambda: any("monitoring 1 nodes" in line for line in lines), 60,
             "the installed monitor node to start")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0, "\n".join(lines)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)


def test_symlink_install_links_the_sources(tmp_path):
    workspace = build_workspace(tmp_path, "--symlink-install")
    module_file, share = run_installed(workspace, [sys.executable, "-c", WHERE]).stdout.split()
    assert Path(module_file).resolve().is_relative_to(tmp_path / "src" / "rise" / "src"), module_file
    assert (workspace.share / "launch" / "bringup.launch.py").is_symlink()
    assert Path(share).resolve() in (workspace.share.resolve(), (tmp_path / "src" / "rise").resolve())
    nodes = run_installed(workspace, [str(workspace.lib / "rise"), "nodes", "--mode", "deploy", "--json"])
    assert [node["name"] for node in json.loads(nodes.stdout)] == deploy_node_names()


def test_the_dockerfile_and_the_readme_build_the_tested_way():
    for path in (ROOT / "docker" / "Dockerfile", ROOT / "README.md"):
        assert " ".join(COLCON_BUILD) in path.read_text(), path
    assert "python_requires" not in (ROOT / "setup.cfg").read_text()  # colcon cannot read it there
