"""The node table: which nodes each bringup mode starts. Read by launch/bringup.launch.py (ROS 2
machines) and by the embedded runner behind ``rise up`` (machines without ``launch``).

A node joins this table when it exists; the table never lists a node that cannot start.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection
from pathlib import Path

from rise.config import (
    ConfigError,
    ExperimentConfig,
    RobotConfig,
    RobotKind,
    experiment_path,
    load_experiment,
    load_robot,
    robot_path,
)

PACKAGE = "rise"


class Mode(str, enum.Enum):
    """What the stack is brought up for."""

    COLLECT = "collect"  # robot + arm bridge + teleop + recorder: record demonstrations
    DEPLOY = "deploy"  # robot + arm bridge + policy: run a policy on the arm
    IMPROVE = "improve"  # world model + trainer (+ the deploy nodes when a robot is attached)


class ArgumentStyle(str, enum.Enum):
    """How the user spelt the bringup's arguments: errors quote them back the same way."""

    CLI = "cli"  # rise up --robot sim --config my.yaml
    LAUNCH = "launch"  # ros2 launch rise bringup.launch.py robot:=sim config:=my.yaml

    def spell(self, name: str, value: str) -> str:
        if self is ArgumentStyle.CLI:
            return f"--{name.replace('_', '-')} {value}"
        return f"{name}:={value}"


ALL_MODES = frozenset(Mode)
ALL_ROBOTS = frozenset(RobotKind)


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One row of the node table."""

    name: str  # ROS node name
    executable: str  # console script (setup.cfg) or the other package's executable
    description: str
    modes: frozenset[Mode] = ALL_MODES
    robot_kinds: frozenset[RobotKind] = ALL_ROBOTS
    package: str = PACKAGE
    module: str | None = None  # rise nodes: the module whose main() the embedded runner runs
    respawn: bool = False  # restart the node when it dies (launch's `respawn`)
    respawn_delay_s: float = 1.0
    # After SIGINT, how long the node may take to stop before SIGTERM (then SIGKILL) follows; a
    # node ignores signals after the first while it cleans up (rise.nodes.node_main).
    stop_timeout_s: float = 10.0
    per_camera: bool = False  # one node per camera of the robot, named <name>_<camera>

    @property
    def embedded(self) -> bool:
        """Whether the embedded runner can start it (rise's own nodes; other packages need ROS)."""
        return self.package == PACKAGE and self.module is not None


NODE_TABLE: tuple[NodeSpec, ...] = (
    NodeSpec(
        name="monitor",
        executable="rise_monitor",
        module="rise.nodes.monitor_node",
        description="reports which of the mode's nodes are alive: /diagnostics, "
        "/rise/monitor/status",
        respawn=True,
    ),
    NodeSpec(
        name="sim",
        executable="rise_sim",
        module="rise.nodes.sim_node",
        description="MuJoCo robot: /cameras/<name>/image_raw + camera_info, /joint_states; obeys "
        "/<controller>/joint_trajectory; /rise/sim/reset, /rise/sim/status",
        modes=ALL_MODES,
        robot_kinds=frozenset({RobotKind.SIM}),
        respawn=True,  # a restarted simulator starts a new scene; the arm bridge re-arms on it
    ),
    NodeSpec(
        name="arm_bridge",
        executable="rise_arm_bridge",
        module="rise.nodes.arm_bridge_node",
        description="safety filter between /rise/{teleop,policy}/command and "
        "/<controller>/joint_trajectory; /rise/arm/command_sent, /rise/arm/estop, "
        "/rise/arm/select_source, /rise/arm/status",
        modes=ALL_MODES,
        respawn=True,
    ),
    NodeSpec(
        name="camera",
        executable="rise_camera",
        module="rise.nodes.camera_node",
        description="one real camera (one node per camera, camera_<name>): "
        "/cameras/<name>/image_raw + camera_info, /diagnostics",
        modes=ALL_MODES,
        robot_kinds=frozenset({RobotKind.REAL}),
        respawn=True,
        per_camera=True,
    ),
    NodeSpec(
        name="teleop",
        executable="rise_teleop",
        module="rise.nodes.teleop_node",
        description="operator device (gamepad, leader arm; keyboard in its own terminal) -> "
        "/rise/teleop/command; episode flags -> /rise/recorder/*, e-stop -> /rise/arm/estop",
        modes=frozenset({Mode.COLLECT}),
        robot_kinds=frozenset({RobotKind.REAL}),
        respawn=True,  # while it is gone the arm bridge holds; its first command must start near the arm
    ),
    NodeSpec(
        name="recorder",
        executable="rise_recorder",
        module="rise.nodes.recorder_node",
        description="records synchronised cameras, /joint_states and /rise/arm/command_sent into a "
        "LeRobot v3 dataset; /rise/recorder/{start,stop,discard}_episode, /rise/recorder/status",
        modes=frozenset({Mode.COLLECT}),
        respawn=True,  # finished episodes survive a crash; the unfinished one is dropped on reopen
        stop_timeout_s=20.0,  # a stop while an episode is being written waits for it (<= 10 s)
    ),
    NodeSpec(
        name="policy",
        executable="rise_policy",
        module="rise.nodes.policy_node",
        description="runs the policy on the cameras + /joint_states -> /rise/policy/command at the "
        "control rate; hot-swaps verified checkpoints from /rise/policy/checkpoint; "
        "/rise/policy/rollback, /rise/policy/enable, /rise/policy/status",
        modes=frozenset({Mode.DEPLOY, Mode.IMPROVE}),
        respawn=True,
    ),
    NodeSpec(
        name="trainer",
        executable="rise_trainer",
        module="rise.nodes.trainer_node",
        description="runs the imagination loop on the announced world model, announces each policy on "
        "/rise/policy/checkpoint; /rise/trainer/start, /rise/trainer/pause, /rise/trainer/status",
        modes=frozenset({Mode.IMPROVE}),
        respawn=True,  # a restarted trainer resumes after its last finished iteration
    ),
    NodeSpec(
        name="world_model",
        executable="rise_world_model",
        module="rise.nodes.world_model_node",
        description="serves the verified dynamics + value checkpoints; /rise/world_model/checkpoint, "
        "/rise/world_model/reload, /rise/world_model/imagine",
        modes=frozenset({Mode.IMPROVE}),
        respawn=True,
    ),
    NodeSpec(
        name="robot_state_publisher",
        package="robot_state_publisher",
        executable="robot_state_publisher",
        description="publishes /tf of the arm from urdf/ and /joint_states (ROS 2 machines)",
    ),
)


@dataclasses.dataclass(frozen=True)
class NodeLaunch:
    """One node to start, with its parameters."""

    spec: NodeSpec
    parameters: tuple[tuple[str, object], ...]
    node_name: str = ""  # the ROS node name when it differs from the row's (per-camera nodes)
    respawn: bool = False  # restart it when it dies: the row's ``respawn`` unless turned off

    @property
    def name(self) -> str:
        return self.node_name or self.spec.name


def _instances(spec: NodeSpec, robot: RobotConfig) -> list[tuple[str, tuple[tuple[str, object], ...]]]:
    """(node name, extra parameters) of each node a row starts: one, or one per camera."""
    if spec.per_camera:
        return [(f"{spec.name}_{camera.name}", (("camera", camera.name),)) for camera in robot.cameras]
    return [(spec.name, ())]


def plan(
    robot: RobotConfig,
    robot_config: Path,
    mode: Mode,
    experiment_config: Path,
    *,
    embedded: bool,
    urdf_xml: str = "",
    no_respawn: Collection[str] = (),
    missing_packages: Collection[str] = (),
) -> list[NodeLaunch]:
    """The nodes to start for ``mode`` on ``robot``; ``embedded`` drops nodes of other packages,
    ``missing_packages`` those of the named packages (not installed on this machine).

    ``robot_config``/``experiment_config`` are the files every node reads (one source of truth);
    ``urdf_xml`` is the robot description handed to robot_state_publisher; ``no_respawn`` names
    nodes (row names like ``camera``, or node names like ``camera_front``) that stay down when
    they die although their row says ``respawn``.
    """
    specs = [
        s for s in NODE_TABLE
        if mode in s.modes and robot.kind in s.robot_kinds and (s.embedded or not embedded)
        and s.package not in missing_packages
    ]
    common = (
        ("robot_config", str(robot_config)),
        ("experiment_config", str(experiment_config)),
        ("mode", mode.value),
    )
    names = [name for spec in specs for name, _ in _instances(spec, robot)]
    unknown = sorted(set(no_respawn) - set(names) - {spec.name for spec in NODE_TABLE})
    if unknown:
        raise ValueError(f"no_respawn: unknown node(s) {unknown}; the node table has "
                         f"{', '.join(s.name for s in NODE_TABLE)}")
    launches = []
    for spec in specs:
        for name, extra in _instances(spec, robot):
            if spec.package == PACKAGE:
                parameters = common + extra
                if spec.name == "monitor":
                    parameters += (("expected_nodes", names),)
                if spec.name == "sim" and mode is Mode.COLLECT:
                    # In sim the scripted expert is the teleop device and runs episodes unattended.
                    parameters += (("expert_teleop", True), ("record", True))
                if spec.name == "arm_bridge":
                    parameters += (("source", "teleop" if mode is Mode.COLLECT else "policy"),)
                if spec.name == "policy" and robot.kind is RobotKind.SIM:
                    parameters += (("enabled", True),)  # a real arm waits for /rise/policy/enable
                if spec.name == "teleop":
                    parameters += (("device", "gamepad"),)  # a robot config field can come later
            elif spec.name == "robot_state_publisher":
                parameters = (("robot_description", urdf_xml),)
            else:
                parameters = ()
            respawn = spec.respawn and not ({name, spec.name} & set(no_respawn))
            launches.append(NodeLaunch(spec, parameters, node_name=name, respawn=respawn))
    return launches


@dataclasses.dataclass(frozen=True)
class BringupConfigs:
    """The robot and experiment configs a bringup runs with, loaded and checked."""

    robot: RobotConfig
    robot_file: Path  # absolute: every node reads this file
    experiment: ExperimentConfig
    experiment_file: Path  # absolute


def load_bringup_configs(robot: str | None, config: str | None,
                         style: ArgumentStyle = ArgumentStyle.CLI) -> BringupConfigs:
    """Load the experiment config (``config``: a path, or None for the shipped default) and the
    robot (``robot``: a name or YAML path, or None for the experiment's robot), with every check
    the nodes would make, so a bad argument is refused before any node starts. A refused argument
    raises :class:`ConfigError` quoting it as the user wrote it (``style``)."""
    try:
        experiment = load_experiment(config)
    except ConfigError as error:
        if config and error.source == str(experiment_path(config)) and not error.key:  # no such file
            raise ConfigError(style.spell("config", config), "", error.message) from None
        raise
    name = robot or experiment.robot
    try:
        robot_file = robot_path(name).resolve()
    except ConfigError as error:  # no shipped robot of that name
        raise ConfigError(style.spell("robot", name), "", error.message) from None
    if not robot_file.is_file():
        raise ConfigError(style.spell("robot", name), "", "file not found")
    return BringupConfigs(load_robot(str(robot_file)), robot_file, experiment,
                          experiment_path(config).resolve())


def other_packages() -> list[str]:
    """The packages other than rise whose nodes the node table lists."""
    return sorted({spec.package for spec in NODE_TABLE if spec.package != PACKAGE})


def plan_bringup(configs: BringupConfigs, mode: Mode, *, embedded: bool, urdf_xml: str = "",
                 no_respawn: Collection[str] = (), missing_packages: Collection[str] = (),
                 style: ArgumentStyle = ArgumentStyle.CLI) -> list[NodeLaunch]:
    """:func:`plan` for loaded configs; an unknown ``no_respawn`` name is a ConfigError naming it."""
    try:
        return plan(configs.robot, configs.robot_file, mode, configs.experiment_file,
                    embedded=embedded, urdf_xml=urdf_xml, no_respawn=no_respawn,
                    missing_packages=missing_packages)
    except ValueError as error:
        raise ConfigError(style.spell("no_respawn", ",".join(no_respawn)), "",
                          str(error).removeprefix("no_respawn: ")) from None
