"""Bring up RISE on a ROS 2 machine: ``ros2 launch rise bringup.launch.py robot:=sim mode:=collect``.

The nodes come from the node table in ``rise.bringup`` — the same table that ``rise up`` runs on
machines without ``launch`` — so the two never disagree. Arguments:

- ``robot``   robot config name (config/robots/<robot>.yaml) or a YAML path (default: the
              experiment's robot; the shipped experiment's is sim)
- ``mode``    collect | deploy | improve (default: collect)
- ``config``  experiment config YAML (default: the package's config/experiments/default.yaml)
- ``network`` localhost (default: DDS stays on this host) | default (your DDS settings)
- ``no_respawn`` comma-separated node names not to restart when they die (default: none)

Every argument is checked (robot and experiment configs loaded with the nodes' own checks) before
any node starts: a bad one ends the launch with one error line and nothing running. Without the
``robot_state_publisher`` package the rest starts, with a warning that /tf is not published. A
node that exits with code 2 (it refused its configuration or environment, e.g. no OpenGL for the
simulator's cameras) is not restarted: it would only fail again, every second.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import matches_action
from launch.events.process import ShutdownProcess
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from rise.bringup import ArgumentStyle, Mode, load_bringup_configs, other_packages, plan_bringup
from rise.config import ConfigError, robot_names
from rise.paths import resolve, share_dir
from rise.ros_env import DDS_PROFILE, Network
from rise.runner import CONFIG_ERROR_EXIT


class LaunchArgumentError(Exception):
    """A launch argument was refused; launch prints the message and starts nothing."""


def _installed(package: str) -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix(package)
    except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (nothing sourced)
        return False
    return True


def _stay_down_on_config_error(node: Node):
    """Respawn, but not after exit code 2: a refused configuration would only fail again."""

    def on_exit(event, _context):
        if event.returncode != CONFIG_ERROR_EXIT:
            return None
        get_logger("launch").error(
            f"{event.action.name} exited with code {event.returncode} (it refused its configuration "
            "or environment, see its error above): not restarting it")
        return [EmitEvent(event=ShutdownProcess(process_matcher=matches_action(event.action)))]

    return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))


def _nodes(context):
    def argument(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    mode = Mode(argument("mode"))  # DeclareLaunchArgument(choices=...) has checked it
    no_respawn = [name.strip() for name in argument("no_respawn").split(",") if name.strip()]
    missing = [package for package in other_packages() if not _installed(package)]
    try:
        configs = load_bringup_configs(argument("robot") or None, argument("config") or None,
                                       ArgumentStyle.LAUNCH)
        urdf_xml = Path(resolve(configs.robot.urdf)).read_text(encoding="utf-8")
        launches = plan_bringup(configs, mode, embedded=False, urdf_xml=urdf_xml,
                                no_respawn=no_respawn, missing_packages=missing,
                                style=ArgumentStyle.LAUNCH)
    except (ConfigError, OSError) as error:
        raise LaunchArgumentError(f"rise bringup refused: {error}") from None
    for package in missing:
        get_logger("launch").warning(
            f"package {package} is not installed: its nodes are left out (robot_state_publisher: "
            f"no /tf of the arm); to add it: apt install ros-$ROS_DISTRO-{package.replace('_', '-')}")
    actions = [LogInfo(msg=f"rise: mode {mode.value} on robot {configs.robot.name}: "
                       + ", ".join(launch.name for launch in launches))]
    for launch in launches:
        node = Node(
            package=launch.spec.package,
            executable=launch.spec.executable,
            name=launch.name,
            parameters=[dict(launch.parameters)],
            respawn=launch.respawn,
            respawn_delay=launch.spec.respawn_delay_s,
            sigterm_timeout=str(launch.spec.stop_timeout_s),
            output="screen",
            emulate_tty=True,
        )
        if launch.respawn:
            actions.append(_stay_down_on_config_error(node))
        actions.append(node)
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "robot", default_value="",
            description="robot config name or YAML path (empty: the experiment's robot); shipped: "
            + ", ".join(robot_names())),
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
