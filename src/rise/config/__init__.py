"""Typed configuration: one YAML file per robot and per experiment, one source of truth.

``load_robot("sim")`` reads ``config/robots/sim.yaml``; ``load_experiment(path)`` an experiment.
Both return frozen dataclasses and raise :class:`ConfigError` with file, key and expectation.
"""

from rise.config.experiment import ExperimentConfig
from rise.config.registry import (
    DEFAULT_EXPERIMENT,
    experiment_path,
    load_experiment,
    load_robot,
    robot_names,
    robot_path,
)
from rise.config.robot import (
    ArmConfig,
    CameraConfig,
    CameraDriver,
    JointConfig,
    RobotConfig,
    RobotKind,
    SafetyConfig,
)
from rise.config.schema import ConfigError, FieldError

__all__ = [
    "DEFAULT_EXPERIMENT",
    "ArmConfig",
    "CameraConfig",
    "CameraDriver",
    "ConfigError",
    "ExperimentConfig",
    "FieldError",
    "JointConfig",
    "RobotConfig",
    "RobotKind",
    "SafetyConfig",
    "experiment_path",
    "load_experiment",
    "load_robot",
    "robot_names",
    "robot_path",
]
