"""The node table: what each mode starts, and that every row can really start."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

from rise.bringup import (
    NODE_TABLE,
    ArgumentStyle,
    Mode,
    NodeLaunch,
    NodeSpec,
    load_bringup_configs,
    plan,
    plan_bringup,
)
from rise.config import ConfigError, experiment_path, load_robot, robot_path
from rise.nodes import start
from rise.runner import Runner, node_command, ros_args
from ros2_workspace import missing_launch_tooling
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
        # every node executable starts through rise.nodes.start, which maps it to its module
        assert scripts[spec.executable] == f"rise.nodes.start:{spec.executable}"
        entry = getattr(start, spec.executable)
        assert entry.func is start._console_script and entry.args == (spec.module,)
        module = importlib.import_module(spec.module)
        assert callable(module.main)
    with pytest.raises(AttributeError):
        start.rise_nonexistent  # noqa: B018
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


def launch_file_actions(**arguments: str) -> tuple[list, list]:
    """The launch file's declared arguments and the actions its node function returns for
    ``arguments`` (in this process: nothing is started)."""
    reason = missing_launch_tooling()
    if reason:
        pytest.skip(reason)
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    description = get_launch_description_from_python_launch_file(
        str(ROOT / "launch" / "bringup.launch.py"))
    context = LaunchContext()
    context.launch_configurations.update(arguments)
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    for entity in declared:
        entity.visit(context)  # fills in the defaults of arguments not given
    [nodes] = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    return declared, nodes.execute(context)


def test_launch_file_builds_the_node_table_plan():
    declared, actions = launch_file_actions(mode="deploy")  # skips without launch
    from launch_ros.actions import Node

    assert {"robot", "mode", "config", "network", "no_respawn"} <= {a.name for a in declared}
    assert all(a.description for a in declared)
    nodes = [a for a in actions if isinstance(a, Node)]
    expected = [l for l in make_plan(Mode.DEPLOY, embedded=False)
                if l.spec.package == "rise"]  # robot_state_publisher is not installed here
    assert [n.node_executable for n in nodes] == [l.spec.executable for l in expected]


def test_launch_file_refuses_a_bad_robot_before_making_any_node():
    with pytest.raises(Exception, match=r"robot:=nosuchrobot: no such robot config"):
        launch_file_actions(robot="nosuchrobot")


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


@pytest.mark.parametrize(("style", "robot", "config", "no_respawn", "message"), [
    (ArgumentStyle.CLI, "nosuchrobot", None, (), "--robot nosuchrobot: no such robot config"),
    (ArgumentStyle.LAUNCH, "nosuchrobot", None, (), "robot:=nosuchrobot: no such robot config"),
    (ArgumentStyle.LAUNCH, "/no/such/robot.yaml", None, (), "robot:=/no/such/robot.yaml: file not found"),
    (ArgumentStyle.CLI, None, "/nonexistent.yaml", (), "--config /nonexistent.yaml: file not found"),
    (ArgumentStyle.LAUNCH, None, "/nonexistent.yaml", (), "config:=/nonexistent.yaml: file not found"),
    (ArgumentStyle.CLI, None, None, ("simm",), r"--no-respawn simm: unknown node\(s\) \['simm'\]"),
    (ArgumentStyle.LAUNCH, None, None, ("sim", "simm"), r"no_respawn:=sim,simm: unknown node\(s\)"),
])
def test_a_bad_bringup_argument_is_quoted_as_the_user_wrote_it(style, robot, config, no_respawn,
                                                               message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        configs = load_bringup_configs(robot, config, style)
        plan_bringup(configs, Mode.COLLECT, embedded=True, no_respawn=no_respawn, style=style)


def test_the_runner_does_not_respawn_a_node_that_refused_its_configuration(tmp_path):
    (tmp_path / "refusing_node.py").write_text("def main(argv):\n    print('error: bad')\n    return 2\n")
    spec = NodeSpec(name="refusing", executable="refusing", module="refusing_node",
                    description="exits 2", respawn=True, respawn_delay_s=0.1)
    lines: list[str] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    runner = Runner([NodeLaunch(spec, (), respawn=True)], env, log=lines.append)
    code = runner.run(duration_s=10)  # ends as soon as no node is left
    assert any("refusing exited with code 2" in line and "not restarting" in line for line in lines), lines
    assert sum(line.startswith("started refusing") for line in lines) == 1, lines
    assert code == 1
