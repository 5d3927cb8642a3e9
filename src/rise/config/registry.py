"""Named configs: ``config/robots/<name>.yaml`` and ``config/experiments/<name>.yaml``."""

from __future__ import annotations

from pathlib import Path

from rise import paths
from rise.config.experiment import ExperimentConfig
from rise.config.robot import RobotConfig
from rise.config.schema import ConfigError, did_you_mean, load
from rise.robot_description import read_joints

DEFAULT_EXPERIMENT = "config/experiments/default.yaml"


def robot_names() -> list[str]:
    """Names of the robot configs shipped with the package."""
    return sorted(p.stem for p in (paths.share_dir() / "config" / "robots").glob("*.yaml"))


def robot_path(name_or_path: str) -> Path:
    """A robot config file from a name (``sim``) or a path to a YAML file."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        return Path(name_or_path)
    path = paths.share_dir() / "config" / "robots" / f"{name_or_path}.yaml"
    if not path.is_file():
        names = robot_names()
        hint = did_you_mean(name_or_path, names)
        raise ConfigError("--robot", name_or_path, f"no such robot config{hint} "
                          f"(available: {', '.join(names)})")
    return path


def experiment_path(path: str | None) -> Path:
    """The experiment config file: the given path, or the shipped default."""
    return Path(path) if path else paths.share_dir() / DEFAULT_EXPERIMENT


def load_robot(name_or_path: str) -> RobotConfig:
    """Load and validate a robot config, including its joints against the URDF it names."""
    path = robot_path(name_or_path)
    robot = load(RobotConfig, path)
    check_against_urdf(robot, str(path))
    return robot


def load_experiment(path: str | None = None) -> ExperimentConfig:
    return load(ExperimentConfig, experiment_path(path))


def check_against_urdf(robot: RobotConfig, source: str) -> None:
    """Every configured joint exists in the URDF, is actuated, and stays within its limits."""
    urdf = paths.resolve(robot.urdf)
    try:
        joints = read_joints(urdf)
    except ValueError as error:
        raise ConfigError(source, "urdf", str(error)) from None
    for i, joint in enumerate(robot.arm.all_joints):
        key = f"arm.joints[{i}]" if i < len(robot.arm.joints) else "arm.gripper"
        described = joints.get(joint.name)
        if described is None or not described.actuated:
            hint = did_you_mean(joint.name, [j.name for j in joints.values() if j.actuated])
            raise ConfigError(source, f"{key}.name",
                              f"{joint.name!r} is not an actuated joint of {urdf.name}{hint}")
        for field, ok in (("lower", lambda c, u: c >= u), ("upper", lambda c, u: c <= u),
                          ("max_velocity", lambda c, u: c <= u)):
            urdf_value = described.velocity if field == "max_velocity" else getattr(described, field)
            value = getattr(joint, field)
            if urdf_value is not None and not ok(value, urdf_value):
                raise ConfigError(source, f"{key}.{field}", f"expected within the URDF limit "
                                  f"{urdf_value} of {joint.name}, got {value}")
