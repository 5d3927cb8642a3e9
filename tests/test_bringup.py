"""The node table: what each mode starts, and that every row can really start."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from rise.bringup import NODE_TABLE, Mode, plan
from rise.config import experiment_path, load_robot, robot_path
from rise.runner import node_command, ros_args
from support import ROOT, console_scripts, real_robot_yaml


def make_plan(mode: Mode, embedded: bool):
    robot_file = robot_path("sim")
    return plan(load_robot("sim"), robot_file, mode, experiment_path(None), embedded=embedded,
                urdf_xml="<robot/>")


@pytest.mark.parametrize("mode", list(Mode))
def test_every_mode_runs_the_monitor_with_the_mode_nodes(mode):
    launches = make_plan(mode, embedded=True)
    names = [launch.name for launch in launches]
    assert "monitor" in names
    monitor = dict(next(l for l in launches if l.name == "monitor").parameters)
    assert monitor["expected_nodes"] == names
    assert monitor["mode"] == mode.value
    assert Path(monitor["robot_config"]).is_file()
    assert Path(monitor["experiment_config"]).is_file()


def test_embedded_plan_leaves_out_other_packages_nodes():
    embedded = [l.name for l in make_plan(Mode.COLLECT, embedded=True)]
    full = {l.name: l for l in make_plan(Mode.COLLECT, embedded=False)}
    assert "robot_state_publisher" not in embedded
    assert dict(full["robot_state_publisher"].parameters) == {"robot_description": "<robot/>"}


def test_table_rows_are_real():
    scripts = console_scripts()
    names = [spec.name for spec in NODE_TABLE]
    assert len(names) == len(set(names))
    for spec in NODE_TABLE:
        assert spec.modes, spec.name
        if spec.package != "rise":
            continue
        assert scripts[spec.executable] == f"{spec.module}:main"
        module = importlib.import_module(spec.module)
        assert callable(module.main)
    node_scripts = {k for k in scripts if k != "rise"}
    assert node_scripts == {s.executable for s in NODE_TABLE if s.package == "rise"}


def test_runner_command_passes_name_and_parameters():
    launches = make_plan(Mode.DEPLOY, embedded=True)
    launch = next(l for l in launches if l.name == "monitor")
    command = node_command(launch)
    assert command[1:4] == ["-m", "rise.nodes.start", "rise.nodes.monitor_node"]
    args = ros_args(launch)
    assert args[:3] == ["--ros-args", "-r", "__node:=monitor"]
    assert "mode:=deploy" in args
    assert "expected_nodes:=" + json.dumps([l.name for l in launches]) in args


def test_runner_refuses_nodes_of_other_packages():
    rsp = next(l for l in make_plan(Mode.COLLECT, embedded=False)
               if l.name == "robot_state_publisher")
    with pytest.raises(ValueError, match="needs a ROS 2 install"):
        node_command(rsp)


def test_launch_file_builds_the_same_nodes():
    pytest.importorskip("launch_ros", reason="launch_ros is not installable here (no ROS 2 "
                        "install); this runs on ROS 2 machines and in the Docker image")
    from launch import LaunchContext
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    description = get_launch_description_from_python_launch_file(
        str(ROOT / "launch" / "bringup.launch.py"))
    arguments = {a.name: a for a in description.get_launch_arguments()}
    assert {"robot", "mode", "config", "network"} <= set(arguments)
    assert all(a.description for a in arguments.values())
    context = LaunchContext()
    for entity in description.entities:
        entity.visit(context)
    expected = {l.name for l in make_plan(Mode.COLLECT, embedded=False)}
    opaque = description.entities[-1]
    nodes = opaque.execute(context)
    assert {n.node_name.split("/")[-1] for n in nodes if hasattr(n, "node_name")} >= expected


def test_a_real_robot_gets_one_camera_node_per_camera_and_teleop(tmp_path):
    video = str(tmp_path / "clip.avi")
    robot_file = real_robot_yaml(tmp_path, [
        {"name": name, "driver": "opencv", "width": 64, "height": 48, "device": video}
        for name in ("front", "wrist")], name="my_arm")
    collect = plan(load_robot(str(robot_file)), robot_file, Mode.COLLECT, experiment_path(None),
                   embedded=True)
    launches = {launch.name: launch for launch in collect}
    assert {"camera_front", "camera_wrist", "teleop"} <= set(launches)
    assert "camera" not in launches and "sim" not in launches
    assert dict(launches["camera_wrist"].parameters)["camera"] == "wrist"
    assert ros_args(launches["camera_front"])[:3] == ["--ros-args", "-r", "__node:=camera_front"]
    assert dict(launches["teleop"].parameters)["device"] == "gamepad"
    assert dict(launches["monitor"].parameters)["expected_nodes"] == list(launches)
    deploy = [launch.name for launch in plan(load_robot(str(robot_file)), robot_file, Mode.DEPLOY,
                                             experiment_path(None), embedded=True)]
    assert "camera_front" in deploy and "teleop" not in deploy
    sim = [launch.name for launch in make_plan(Mode.COLLECT, embedded=True)]
    assert not any(name.startswith("camera") or name == "teleop" for name in sim)


def test_rows_say_respawn_and_no_respawn_turns_it_off_by_row_or_node_name():
    launches = {l.name: l for l in make_plan(Mode.COLLECT, embedded=True)}
    assert all(l.respawn for l in launches.values())  # every rise node of the mode restarts
    robot = load_robot("sim")
    kept = plan(robot, robot_path("sim"), Mode.COLLECT, experiment_path(None), embedded=True,
                no_respawn=["recorder", "sim"])
    assert {l.name: l.respawn for l in kept} == {"monitor": True, "sim": False, "arm_bridge": True,
                                                 "recorder": False}
    with pytest.raises(ValueError, match=r"unknown node\(s\) \['simm'\]"):
        plan(robot, robot_path("sim"), Mode.COLLECT, experiment_path(None), embedded=True,
             no_respawn=["simm"])
