"""Declaring node parameters with descriptions, and reading the shared config files from them."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from rise.config import ExperimentConfig, RobotConfig, load_experiment, load_robot


def declare(node: Node, name: str, default: Any, description: str, read_only: bool = True) -> Any:
    """Declare a parameter with a description (shown by ``ros2 param describe``); return its value."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    return node.declare_parameter(name, default, descriptor).value


def declare_configs(node: Node) -> tuple[RobotConfig, ExperimentConfig]:
    """The robot and experiment configs every rise node reads: one source of truth for all nodes."""
    robot = declare(node, "robot_config", "sim", "robot config: a name (config/robots/<name>.yaml) "
                    "or a YAML path")
    experiment = declare(node, "experiment_config", "", "experiment config YAML (empty: default)")
    return load_robot(robot), load_experiment(experiment or None)
