"""Bring up RISE on a ROS 2 machine: ``ros2 launch rise bringup.launch.py robot:=sim mode:=collect``.

The nodes come from the node table in ``rise.bringup`` — the same table that ``rise up`` runs on
machines without ``launch`` — so the two never disagree. Arguments:

- ``robot``   robot config name (config/robots/<robot>.yaml) or a YAML path (default: sim)
- ``mode``    collect | deploy | improve (default: collect)
- ``config``  experiment config YAML (default: the package's config/experiments/default.yaml)
- ``network`` localhost (default: DDS stays on this host) | default (your DDS settings)
- ``no_respawn`` comma-separated node names not to restart when they die (default: none)
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from rise.bringup import Mode, plan
from rise.config import experiment_path, load_robot, robot_names, robot_path
from rise.paths import resolve, share_dir
from rise.ros_env import DDS_PROFILE, Network


def _nodes(context):
    robot_arg = LaunchConfiguration("robot").perform(context)
    mode = Mode(LaunchConfiguration("mode").perform(context))
    config = LaunchConfiguration("config").perform(context) or None
    no_respawn = [name.strip() for name in LaunchConfiguration("no_respawn").perform(context).split(",")
                  if name.strip()]
    robot_file = robot_path(robot_arg).resolve()
    robot = load_robot(str(robot_file))
    urdf_xml = Path(resolve(robot.urdf)).read_text(encoding="utf-8")
    launches = plan(robot, robot_file, mode, experiment_path(config).resolve(), embedded=False,
                    urdf_xml=urdf_xml, no_respawn=no_respawn)
    actions = [LogInfo(msg=f"rise: mode {mode.value} on robot {robot.name}: "
                       + ", ".join(launch.name for launch in launches))]
    for launch in launches:
        actions.append(Node(
            package=launch.spec.package,
            executable=launch.spec.executable,
            name=launch.name,
            parameters=[dict(launch.parameters)],
            respawn=launch.respawn,
            respawn_delay=launch.spec.respawn_delay_s,
            output="screen",
            emulate_tty=True,
        ))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "robot", default_value="sim",
            description="robot config name or YAML path; shipped: " + ", ".join(robot_names())),
        DeclareLaunchArgument(
            "mode", default_value=Mode.COLLECT.value, choices=[m.value for m in Mode],
            description="collect: record demos; deploy: run a policy on the arm; improve: train "
            "the policy in the world model"),
        DeclareLaunchArgument(
            "config", default_value="",
            description="experiment config YAML (empty: config/experiments/default.yaml)"),
        DeclareLaunchArgument(
            "no_respawn", default_value="",
            description="comma-separated nodes that stay down when they die (default: every rise "
            "node is restarted, as its row in rise.bringup.NODE_TABLE says)"),
        DeclareLaunchArgument(
            "network", default_value=Network.LOCALHOST.value, choices=[n.value for n in Network],
            description="localhost: DDS traffic stays on this host (Fast DDS profile with a "
            "32 MB shared-memory segment); default: the RMW's or your own DDS settings"),
        SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", str(share_dir() / DDS_PROFILE),
            condition=IfCondition(PythonExpression(
                ["'", LaunchConfiguration("network"), "' == 'localhost'"]))),
        OpaqueFunction(function=_nodes),
    ])
