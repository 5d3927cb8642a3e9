"""Teleop devices (keyboard, gamepad, leader arm) that produce :class:`TeleopCommand`, without ROS."""

from rise.hardware.teleop.base import (
    TeleopCommand,
    TeleopDevice,
    TeleopDeviceError,
    TeleopDeviceMissing,
    TeleopMode,
)
from rise.hardware.teleop.gamepad import GamepadLayout, GamepadScales, GamepadTeleop, map_gamepad
from rise.hardware.teleop.keyboard import KeyboardTeleop, map_keys, split_keys
from rise.hardware.teleop.leader_arm import LeaderArmTeleop

__all__ = [
    "GamepadLayout",
    "GamepadScales",
    "GamepadTeleop",
    "KeyboardTeleop",
    "LeaderArmTeleop",
    "TeleopCommand",
    "TeleopDevice",
    "TeleopDeviceError",
    "TeleopDeviceMissing",
    "TeleopMode",
    "map_gamepad",
    "map_keys",
    "split_keys",
]
