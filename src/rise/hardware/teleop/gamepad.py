"""Gamepad teleop through pygame (SDL2 joystick API); pygame is imported only when opened.

Default layout (:class:`GamepadLayout`, an Xbox-style pad on Linux; change the indices for
others). Sticks are scaled by :class:`GamepadScales` per tick at full deflection, after a
deadzone; stick up / left are the positive directions::

    joint mode   left stick up/down     selected joint + / -             joint_rad
                 LB / RB                select the previous / next joint
    EE mode      left stick up/down     +x / -x (forward / back)         linear_m
                 left stick left/right  +y / -y                          linear_m
                 right stick up/down    +z / -z                          linear_m
                 right stick left/right +yaw / -yaw                      angular_rad
                 LB / RB (held)         -pitch / +pitch                  angular_rad
    both modes   Y / X (held)           open / close the gripper
                 A                      start an episode
                 Start                  stop the episode: success
                 Back                   stop the episode: failure
                 left stick click       discard the episode
                 right stick click      toggle joint / end-effector mode
                 B (held)               e-stop (latching in the arm bridge)

Episode, mode and joint-select buttons act once per press (on the press edge); the e-stop and
the gripper buttons act while held. Install the package with ``pip install pygame``.

Example::

    with GamepadTeleop(num_joints=6) as pad:
        command = pad.poll(time.monotonic())   # never blocks
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from rise.hardware.teleop.base import (
    TeleopCommand,
    TeleopDevice,
    TeleopDeviceError,
    TeleopDeviceMissing,
    TeleopMode,
)

_EDGE_BUTTONS = {"start_episode": "start_episode", "stop_success": "stop_episode_success",
                 "stop_failure": "stop_episode_failure", "discard": "discard_episode"}


@dataclasses.dataclass(frozen=True)
class GamepadLayout:
    """Axis and button indices as the SDL2 joystick API numbers them."""

    left_x: int = 0
    left_y: int = 1
    right_x: int = 3
    right_y: int = 4
    start_episode: int = 0  # A
    estop: int = 1  # B
    close_gripper: int = 2  # X
    open_gripper: int = 3  # Y
    previous: int = 4  # LB: previous joint / -pitch
    next: int = 5  # RB: next joint / +pitch
    stop_failure: int = 6  # Back
    stop_success: int = 7  # Start
    discard: int = 9  # left stick click
    toggle_mode: int = 10  # right stick click


@dataclasses.dataclass(frozen=True)
class GamepadScales:
    """Deadzone and the motion per tick at full stick deflection."""

    deadzone: float = 0.15  # |axis| below this reads as 0; the rest is rescaled to [0, 1]
    joint_rad: float = 0.03
    linear_m: float = 0.005
    angular_rad: float = 0.03

    def __post_init__(self):
        if not 0 <= self.deadzone < 1:
            raise ValueError(f"deadzone: expected within [0, 1), got {self.deadzone}")


@dataclasses.dataclass(frozen=True)
class GamepadState:
    """What persists between polls: mode, selected joint and the last buttons (for press edges)."""

    mode: TeleopMode = TeleopMode.JOINT
    joint: int = 0
    buttons: tuple[bool, ...] = ()


def apply_deadzone(value: float, deadzone: float) -> float:
    """0 inside the deadzone, else rescaled so the output runs continuously from 0 to +/-1."""
    if not math.isfinite(value):
        return 0.0
    value = max(-1.0, min(1.0, value))
    if abs(value) <= deadzone:
        return 0.0
    return math.copysign((abs(value) - deadzone) / (1.0 - deadzone), value)


def map_gamepad(axes: Sequence[float], buttons: Sequence[bool], state: GamepadState,
                num_joints: int, layout: GamepadLayout = GamepadLayout(),
                scales: GamepadScales = GamepadScales()) -> tuple[GamepadState, TeleopCommand]:
    """Map one reading of the pad to a command (pure: no I/O); missing axes/buttons read as 0."""
    pressed = tuple(bool(b) for b in buttons)

    def axis(index: int) -> float:
        return apply_deadzone(float(axes[index]), scales.deadzone) if index < len(axes) else 0.0

    def held(index: int) -> bool:
        return index < len(pressed) and pressed[index]

    def edge(index: int) -> bool:
        return held(index) and not (index < len(state.buttons) and state.buttons[index])

    flags = {flag: True for name, flag in _EDGE_BUTTONS.items() if edge(getattr(layout, name))}
    gripper = 1.0 if held(layout.open_gripper) else 0.0 if held(layout.close_gripper) else None
    if state.mode is TeleopMode.JOINT:
        motion = _joint_motion(-axis(layout.left_y), state.joint, num_joints, scales)
    else:
        pitch = float(held(layout.next)) - float(held(layout.previous))
        motion = _ee_motion((-axis(layout.left_y), -axis(layout.left_x), -axis(layout.right_y),
                             0.0, pitch, -axis(layout.right_x)), scales)
    command = TeleopCommand(mode=state.mode, gripper=gripper, estop=held(layout.estop),
                            **motion, **flags)
    return _next_state(state, pressed, edge, layout, num_joints), command


def _joint_motion(stick: float, joint: int, num_joints: int, scales: GamepadScales) -> dict:
    if stick == 0.0:
        return {}
    delta = np.zeros(num_joints)
    delta[joint] = stick * scales.joint_rad
    return {"joint_delta": delta}


def _ee_motion(sticks: tuple[float, ...], scales: GamepadScales) -> dict:
    if not any(sticks):
        return {}
    per_axis = np.array([scales.linear_m] * 3 + [scales.angular_rad] * 3)
    return {"ee_delta": np.array(sticks) * per_axis}


def _next_state(state: GamepadState, pressed: tuple[bool, ...], edge: Callable[[int], bool],
                layout: GamepadLayout, num_joints: int) -> GamepadState:
    """Selected joint (joint mode: LB / RB), mode toggle, and the buttons for the next edge test."""
    mode, joint = state.mode, state.joint
    if mode is TeleopMode.JOINT:
        joint = (joint + int(edge(layout.next)) - int(edge(layout.previous))) % num_joints
    if edge(layout.toggle_mode):
        mode = TeleopMode.END_EFFECTOR if mode is TeleopMode.JOINT else TeleopMode.JOINT
    return GamepadState(mode=mode, joint=joint, buttons=pressed)


def _import_pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as error:
        raise TeleopDeviceError("GamepadTeleop needs the pygame package (SDL2 joystick API), which "
                                "is not installed: pip install pygame") from error
    return pygame


class GamepadTeleop(TeleopDevice):
    """Teleop from a gamepad; see the module docstring for the default layout."""

    def __init__(self, num_joints: int = 6, *, index: int = 0,
                 layout: GamepadLayout = GamepadLayout(), scales: GamepadScales = GamepadScales(),
                 mode: TeleopMode = TeleopMode.JOINT):
        """``index``: which connected gamepad (SDL device index)."""
        if num_joints < 1:
            raise ValueError(f"num_joints: expected >= 1, got {num_joints}")
        self._num_joints = num_joints
        self._index = index
        self._layout = layout
        self._scales = scales
        self._state = GamepadState(mode=mode)
        self._pygame = None
        self._joystick = None
        self._started_display = False

    @property
    def state(self) -> GamepadState:
        """The current mode, selected joint and last buttons."""
        return self._state

    def open(self) -> None:
        """Initialise SDL's joystick API (no window) and open the pad; TeleopDeviceError if none.

        Sets ``SDL_VIDEODRIVER=dummy`` and ``SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS=1`` unless
        already set: pygame needs its (hidden) display for events, and no window has focus.
        """
        if self._joystick is not None:
            return
        pygame = _import_pygame()
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
        self._started_display = not pygame.display.get_init()
        pygame.display.init()
        pygame.joystick.init()
        count = pygame.joystick.get_count()
        if self._index >= count:
            self._quit_sdl(pygame)
            raise TeleopDeviceMissing(f"no gamepad at index {self._index}: {count} connected "
                                    "(check the cable / pairing and permissions on /dev/input)")
        joystick = pygame.joystick.Joystick(self._index)
        joystick.init()
        self._pygame, self._joystick = pygame, joystick

    def close(self) -> None:
        """Close the pad and SDL's joystick API; idempotent."""
        pygame, joystick = self._pygame, self._joystick
        self._pygame, self._joystick = None, None
        if joystick is not None:
            joystick.quit()
            self._quit_sdl(pygame)

    def _quit_sdl(self, pygame) -> None:
        """Quit what :meth:`open` initialised (the display only if it was not running before)."""
        pygame.joystick.quit()
        if self._started_display:
            pygame.display.quit()
        self._started_display = False

    def poll(self, now_s: float) -> TeleopCommand:
        """The pad's current sticks and buttons as one command (never blocks)."""
        if self._joystick is None:
            raise TeleopDeviceError("GamepadTeleop.poll() before open()")
        pygame, joystick = self._pygame, self._joystick
        try:
            self._check_events(pygame, joystick)
            axes = [joystick.get_axis(i) for i in range(joystick.get_numaxes())]
            buttons = [joystick.get_button(i) for i in range(joystick.get_numbuttons())]
        except pygame.error as error:
            raise TeleopDeviceMissing(f"gamepad lost: {error}") from error
        self._state, command = map_gamepad(axes, buttons, self._state, self._num_joints,
                                           self._layout, self._scales)
        return command

    @staticmethod
    def _check_events(pygame, joystick) -> None:
        """Drain SDL's event queue (this updates the joystick state); raise if the pad went away."""
        for event in pygame.event.get():
            if (event.type == pygame.JOYDEVICEREMOVED
                    and getattr(event, "instance_id", None) == joystick.get_instance_id()):
                raise TeleopDeviceMissing("gamepad disconnected")
