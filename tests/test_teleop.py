"""Teleop devices: key, gamepad and leader-arm mappings, and the keyboard on a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import io
import math
import os
import pty
import subprocess
import sys
import termios
import time
import types

import numpy as np
import pytest

from rise.hardware.teleop import (
    GamepadLayout,
    GamepadScales,
    GamepadTeleop,
    KeyboardTeleop,
    LeaderArmTeleop,
    TeleopCommand,
    TeleopDeviceError,
    TeleopMode,
    map_gamepad,
    map_keys,
    split_keys,
)
from rise.hardware.teleop.gamepad import GamepadState, apply_deadzone
from rise.hardware.teleop.keyboard import KeyState, KeySteps

JOINT, EE = TeleopMode.JOINT, TeleopMode.END_EFFECTOR
STEPS = KeySteps(joint_step_rad=0.1, linear_step_m=0.01, angular_step_rad=0.2)
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_pitch", "wrist_roll")


def keys(text: str, state: KeyState | None = None, num_joints: int = 6):
    """Map a string of keys: (new state, command)."""
    state = state or KeyState()
    tokens, rest = split_keys(text)
    assert rest == ""
    new_state, command, consumed = map_keys(tokens, state, STEPS, num_joints)
    assert consumed == len(tokens)
    return new_state, command


def unit(size: int, index: int, value: float) -> list[float]:
    out = [0.0] * size
    out[index] = value
    return out


# --- keyboard mapping ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "joint", "delta"), [
    ("w", 0, unit(6, 0, 0.1)),
    ("s", 0, unit(6, 0, -0.1)),
    ("2w", 1, unit(6, 1, 0.1)),
    ("6ss", 5, unit(6, 5, -0.2)),
    ("1w3s", 2, [0.1, 0, -0.1, 0, 0, 0]),
    ("7w", 0, unit(6, 0, 0.1)),  # no joint 7: selection unchanged
])
def test_joint_mode_keys(text, joint, delta):
    state, command = keys(text)
    assert command.mode is JOINT and state.joint == joint
    assert command.joint_delta.tolist() == pytest.approx(delta)
    assert command.ee_delta is None and command.absolute_joints is None


@pytest.mark.parametrize(("key", "axis", "value"), [
    ("w", 0, 0.01), ("s", 0, -0.01), ("a", 1, 0.01), ("d", 1, -0.01), ("r", 2, 0.01),
    ("f", 2, -0.01), ("j", 3, 0.2), ("l", 3, -0.2), ("i", 4, 0.2), ("k", 4, -0.2),
    ("q", 5, 0.2), ("e", 5, -0.2),
])
def test_end_effector_mode_keys(key, axis, value):
    _, command = keys(key, KeyState(mode=EE))
    assert command.mode is EE and command.joint_delta is None
    assert command.ee_delta.tolist() == pytest.approx(unit(6, axis, value))


@pytest.mark.parametrize(("text", "flag"), [
    (" ", "start_episode"), ("\r", "stop_episode_success"), ("\n", "stop_episode_success"),
    ("x", "stop_episode_failure"), ("\x7f", "discard_episode"), ("\x08", "discard_episode"),
    ("!", "estop"),
])
def test_episode_and_estop_keys(text, flag):
    for mode in (JOINT, EE):
        _, command = keys(text, KeyState(mode=mode))
        flags = ("start_episode", "stop_episode_success", "stop_episode_failure",
                 "discard_episode", "estop")
        assert {f for f in flags if getattr(command, f)} == {flag}
        assert not command.has_motion


@pytest.mark.parametrize(("text", "opening"), [("o", 1.0), ("c", 0.0), ("oc", 0.0), ("co", 1.0), ("w", None)])
def test_gripper_keys(text, opening):
    assert keys(text)[1].gripper == opening


@pytest.mark.parametrize("text", ["", "z", "W", "a", "\x1b[A", "\x1b[1;5D", "\x1bOP", "\x1bw", "9"])
def test_other_keys_and_escape_sequences_do_nothing_in_joint_mode(text):
    state, command = keys(text)
    assert command.is_empty and state == KeyState()


def test_mode_toggle_ends_the_batch():
    tokens, _ = split_keys("wmw")
    state, first, consumed = map_keys(tokens, KeyState(), STEPS, 6)
    assert consumed == 2 and state.mode is EE
    assert first.mode is JOINT and first.joint_delta.tolist() == pytest.approx(unit(6, 0, 0.1))
    state, second, consumed = map_keys(tokens[consumed:], state, STEPS, 6)
    assert consumed == 1 and second.mode is EE
    assert second.ee_delta.tolist() == pytest.approx(unit(6, 0, 0.01))
    assert keys("m", state)[0].mode is JOINT


def test_split_keys_keeps_incomplete_escape_sequences():
    assert split_keys("a\x1b[1;5Cb") == (["a", "\x1b[1;5C", "b"], "")
    assert split_keys("a\x1b[1;") == (["a"], "\x1b[1;")
    assert split_keys("\x1b") == ([], "\x1b")
    assert split_keys("\x1bO") == ([], "\x1bO")


def test_keyboard_open_refuses_a_non_tty():
    read_fd, write_fd = os.pipe()
    try:
        with pytest.raises(RuntimeError, match="file descriptor .* is not a TTY"):
            KeyboardTeleop(fd=read_fd).open()
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_keyboard_open_refuses_a_non_tty_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("w"))
    with pytest.raises(TeleopDeviceError, match="needs an interactive terminal, but stdin is not a TTY"):
        KeyboardTeleop().open()
    with pytest.raises(TeleopDeviceError, match="before open"):
        KeyboardTeleop().poll(0.0)


_BACKGROUND_SCRIPT = """
import os, pty
from rise.hardware.teleop import KeyboardTeleop, TeleopDeviceError
master, slave = pty.openpty()
name = os.ttyname(slave)
fd = os.open(name, os.O_RDWR)  # the new session's controlling terminal, with us in the foreground
child = os.fork()
if child == 0:
    os.setpgid(0, 0)  # a background process group, as `rise up` starts nodes
    try:
        KeyboardTeleop(fd=fd).open()
        print("opened", flush=True)
    except TeleopDeviceError as error:
        print("refused:", error, flush=True)
    os._exit(0)
_, status = os.waitpid(child, os.WUNTRACED)
if os.WIFSTOPPED(status):  # what the kernel does to a background process touching the terminal
    print("stopped by", os.WSTOPSIG(status), flush=True)
    os.kill(child, 9)
    os.waitpid(child, 0)
"""


def test_keyboard_open_refuses_a_background_process_group():
    """Without the check the kernel would stop the process (SIGTTOU) and freeze the node."""
    result = subprocess.run([sys.executable, "-c", _BACKGROUND_SCRIPT], capture_output=True,
                            text=True, timeout=60, start_new_session=True)  # a session leader
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: KeyboardTeleop: this process is not in the terminal's "
                                    "foreground process group"), result.stdout


# --- keyboard on a pseudo-terminal -----------------------------------------------------------

@pytest.fixture
def terminal():
    """A pseudo-terminal: (master fd, to type into; slave fd, what KeyboardTeleop reads)."""
    master, slave = pty.openpty()
    yield master, slave
    for fd in (master, slave):
        with contextlib.suppress(OSError):  # the hang-up test closes the master itself
            os.close(fd)


def poll_until(device, done, timeout_s: float = 5.0) -> list[TeleopCommand]:
    """Poll until ``done(commands)`` holds for the non-empty commands so far (keys may trickle in)."""
    commands: list[TeleopCommand] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        command = device.poll(time.monotonic())
        if not command.is_empty:
            commands.append(command)
        if done(commands):
            return commands
        time.sleep(0.005)
    pytest.fail(f"timed out after {timeout_s} s; got {commands}")


def test_keyboard_reads_keys_from_a_real_terminal_and_restores_it(terminal):
    master, slave = terminal
    before = termios.tcgetattr(slave)
    keyboard = KeyboardTeleop(num_joints=6, joint_step_rad=0.1, linear_step_m=0.01, fd=slave)
    with keyboard:
        during = termios.tcgetattr(slave)
        assert not during[3] & (termios.ICANON | termios.ECHO)
        os.write(master, b"2w")
        [command] = poll_until(keyboard, lambda c: len(c) == 1)
        assert command.joint_delta.tolist() == pytest.approx(unit(6, 1, 0.1))
        os.write(master, b"m\x1b[Aw o\r!")
        commands = poll_until(keyboard, lambda c: any(x.estop for x in c))
        assert keyboard.state.mode is EE
        motion = [c for c in commands if c.has_motion]
        assert len(motion) == 1 and motion[0].mode is EE
        assert motion[0].ee_delta.tolist() == pytest.approx(unit(6, 0, 0.01))
        assert any(c.start_episode for c in commands) and any(c.stop_episode_success for c in commands)
        assert any(c.gripper == 1.0 for c in commands)
    assert termios.tcgetattr(slave) == before
    keyboard.close()  # idempotent
    assert termios.tcgetattr(slave) == before


def test_keyboard_restores_the_terminal_after_an_exception(terminal):
    _, slave = terminal
    before = termios.tcgetattr(slave)
    with pytest.raises(ZeroDivisionError), KeyboardTeleop(fd=slave):
        assert termios.tcgetattr(slave) != before
        _ = 1 / 0
    assert termios.tcgetattr(slave) == before


def test_keyboard_reports_a_hung_up_terminal(terminal):
    master, slave = terminal
    with KeyboardTeleop(fd=slave) as keyboard:
        os.close(master)
        with pytest.raises(TeleopDeviceError, match="keyboard terminal"):
            poll_until(keyboard, lambda c: False, timeout_s=2.0)


# --- gamepad ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (0.0, 0.0), (0.1, 0.0), (-0.15, 0.0), (0.575, 0.5), (-0.575, -0.5), (1.0, 1.0), (-1.0, -1.0),
    (1.5, 1.0), (math.nan, 0.0),
])
def test_deadzone(value, expected):
    assert apply_deadzone(value, 0.15) == pytest.approx(expected)


def pad(axes: dict[int, float] | None = None, pressed: tuple[int, ...] = ()):
    """Axes and buttons of an 6-axis, 11-button pad."""
    values = [0.0] * 6
    for index, value in (axes or {}).items():
        values[index] = value
    return values, [i in pressed for i in range(11)]


SCALES = GamepadScales(deadzone=0.15, joint_rad=0.05, linear_m=0.01, angular_rad=0.1)
LAYOUT = GamepadLayout()


def read(state, axes=None, pressed=()):
    return map_gamepad(*pad(axes, pressed), state, 6, LAYOUT, SCALES)


def test_gamepad_joint_mode_moves_the_selected_joint():
    state, command = read(GamepadState(), {LAYOUT.left_y: -1.0})  # stick up
    assert command.mode is JOINT and command.joint_delta.tolist() == pytest.approx(unit(6, 0, 0.05))
    state, command = read(state, {LAYOUT.left_y: 0.1, LAYOUT.left_x: 0.9})  # inside the deadzone
    assert command.is_empty
    state, _ = read(state, pressed=(LAYOUT.next,))
    state, _ = read(state, pressed=(LAYOUT.next,))  # held: one step only
    assert state.joint == 1
    state, _ = read(state)
    state, command = read(state, {LAYOUT.left_y: 0.575}, pressed=(LAYOUT.next,))
    assert state.joint == 2 and command.joint_delta.tolist() == pytest.approx(unit(6, 1, -0.025))
    for _ in range(3):  # previous, from joint 2 to 5 (wraps)
        state, _ = read(state, pressed=(LAYOUT.previous,))
        state, _ = read(state)
    assert state.joint == 5


def test_gamepad_end_effector_mode():
    state, _ = read(GamepadState(), pressed=(LAYOUT.toggle_mode,))
    assert state.mode is EE
    state, command = read(state, {LAYOUT.left_y: -1.0, LAYOUT.left_x: -1.0, LAYOUT.right_y: 1.0,
                                  LAYOUT.right_x: 1.0}, pressed=(LAYOUT.toggle_mode, LAYOUT.next))
    assert state.mode is EE  # still held: no second toggle
    assert command.mode is EE
    assert command.ee_delta.tolist() == pytest.approx([0.01, 0.01, -0.01, 0.0, 0.1, -0.1])
    state, _ = read(state)
    state, _ = read(state, pressed=(LAYOUT.toggle_mode,))
    assert state.mode is JOINT


def test_gamepad_buttons():
    cases = {LAYOUT.start_episode: "start_episode", LAYOUT.stop_success: "stop_episode_success",
             LAYOUT.stop_failure: "stop_episode_failure", LAYOUT.discard: "discard_episode"}
    for button, flag in cases.items():
        state, command = read(GamepadState(), pressed=(button,))
        assert getattr(command, flag) and command.has_flags
        _, again = read(state, pressed=(button,))
        assert not again.has_flags  # once per press
    state, command = read(GamepadState(), pressed=(LAYOUT.estop,))
    _, command = read(state, pressed=(LAYOUT.estop,))
    assert command.estop  # while held
    assert read(GamepadState(), pressed=(LAYOUT.open_gripper,))[1].gripper == 1.0
    assert read(GamepadState(), pressed=(LAYOUT.close_gripper,))[1].gripper == 0.0
    assert read(GamepadState())[1].gripper is None


def test_gamepad_with_fewer_axes_and_buttons():
    state, command = map_gamepad([0.0, -1.0], [True], GamepadState(), 6, LAYOUT, SCALES)
    assert command.start_episode and command.joint_delta[0] == pytest.approx(0.05)


def test_gamepad_without_pygame_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame -> ImportError
    with pytest.raises(RuntimeError, match=r"pip install pygame"):
        GamepadTeleop().open()


class FakeJoystick:
    def __init__(self, axes, buttons):
        self.axes, self.buttons, self.closed = axes, buttons, False

    def init(self): ...
    def quit(self): self.closed = True
    def get_instance_id(self): return 7
    def get_numaxes(self): return len(self.axes)
    def get_numbuttons(self): return len(self.buttons)
    def get_axis(self, i): return self.axes[i]
    def get_button(self, i): return int(self.buttons[i])


def fake_pygame(joysticks: list[FakeJoystick], events: list) -> types.ModuleType:
    """The parts of pygame that GamepadTeleop uses."""
    module = types.ModuleType("pygame")
    module.error = type("error", (RuntimeError,), {})
    module.JOYDEVICEREMOVED = 1542
    module.display = types.SimpleNamespace(init=lambda: None, quit=lambda: None, get_init=lambda: False)
    module.joystick = types.SimpleNamespace(init=lambda: None, quit=lambda: None,
                                            get_count=lambda: len(joysticks),
                                            Joystick=lambda i: joysticks[i])
    module.event = types.SimpleNamespace(get=lambda: [events.pop(0)] if events else [])
    return module


def test_gamepad_device_with_a_fake_pygame(monkeypatch):
    joystick = FakeJoystick(*pad({LAYOUT.left_y: -1.0}, (LAYOUT.start_episode,)))
    events: list = []
    monkeypatch.setitem(sys.modules, "pygame", fake_pygame([joystick], events))
    with GamepadTeleop(scales=SCALES) as gamepad:
        command = gamepad.poll(0.0)
        assert command.start_episode and command.joint_delta[0] == pytest.approx(0.05)
        events.append(types.SimpleNamespace(type=1542, instance_id=7))
        with pytest.raises(TeleopDeviceError, match="gamepad disconnected"):
            gamepad.poll(0.1)
    assert joystick.closed
    with pytest.raises(TeleopDeviceError, match="no gamepad at index 1: 1 connected"):
        GamepadTeleop(index=1).open()


def test_gamepad_device_with_pygame():
    pytest.importorskip("pygame", reason="pygame is not installed (pip install pygame)")
    gamepad = GamepadTeleop()
    try:
        gamepad.open()
    except TeleopDeviceError as error:
        assert "no gamepad" in str(error)
        pytest.skip(f"no gamepad connected: {error}")
    with gamepad:
        assert isinstance(gamepad.poll(time.monotonic()), TeleopCommand)


# --- leader arm ------------------------------------------------------------------------------

LEADER_MAP = {f"leader_{name}": name for name in ARM_JOINTS}


def leader(**kwargs) -> LeaderArmTeleop:
    device = LeaderArmTeleop(ARM_JOINTS, LEADER_MAP, gripper_joint="leader_grip", gripper_closed=0.0,
                             gripper_open=0.8, timeout_s=0.1, **kwargs)
    device.open()
    return device


def test_leader_arm_maps_scales_and_offsets():
    device = leader(scale={"elbow": -1.0}, offset={"waist": 0.5})
    names = ["leader_grip", "other_joint", *reversed(LEADER_MAP)]
    positions = [0.2, 9.0, *reversed([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])]
    assert device.update_leader(names, positions, 1.0) == ()
    command = device.poll(1.05)
    assert command.mode is JOINT and command.joint_delta is None
    assert command.absolute_joints.tolist() == pytest.approx([0.6, 0.2, -0.3, 0.4, 0.5, 0.6])
    assert command.gripper == pytest.approx(0.25)
    device.update_leader(["leader_grip"], [2.0], 1.05)
    assert device.poll(1.05).gripper == 1.0  # clipped into [0, 1]


def test_identity_mapping_and_no_gripper():
    device = LeaderArmTeleop(ARM_JOINTS)
    device.open()
    device.update_leader(list(ARM_JOINTS), [0.1] * 6, 0.0)
    command = device.poll(0.0)
    assert command.absolute_joints.tolist() == [0.1] * 6 and command.gripper is None


def test_stale_leader_data_yields_an_empty_command():
    device = leader()
    assert device.poll(0.0).is_empty  # nothing yet
    device.update_leader([*LEADER_MAP, "leader_grip"], [0.0] * 7, 1.0)
    assert not device.poll(1.09).is_empty
    assert device.poll(1.11).is_empty
    assert device.stale_joints(1.11) == ARM_JOINTS
    device.update_leader(list(LEADER_MAP)[1:], [0.0] * 5, 1.2)  # waist not updated
    assert device.poll(1.2).is_empty and device.stale_joints(1.2) == ("waist",)
    device.update_leader(list(LEADER_MAP), [0.0] * 6, 1.3)
    command = device.poll(1.3)
    assert command.absolute_joints is not None and command.gripper is None  # gripper stale


def test_non_finite_leader_values_are_refused_and_go_stale():
    device = leader()
    device.update_leader(list(LEADER_MAP), [0.0] * 6, 0.0)
    assert device.update_leader(["leader_elbow", "leader_grip"], [math.nan, math.inf], 0.05) == (
        "leader_elbow", "leader_grip")
    assert device.poll(0.1).absolute_joints is not None
    assert device.poll(0.12).is_empty
    with pytest.raises(ValueError, match="2 leader joint names and 1 positions"):
        device.update_leader(["leader_waist", "leader_elbow"], [0.0], 0.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"joint_map": {**LEADER_MAP, "x": "wrist_yaw"}}, "unknown follower joints"),
    ({"joint_map": {**LEADER_MAP, "x": "waist"}}, "mapped more than once"),
    ({"joint_map": dict(list(LEADER_MAP.items())[1:])}, r"\['waist'\] have no leader joint"),
    ({"joint_map": LEADER_MAP, "scale": {"hip": 2.0}}, "scale: unknown follower joints"),
    ({"joint_map": LEADER_MAP, "offset": {"waist": math.nan}}, "offset: expected finite"),
    ({"joint_map": LEADER_MAP, "gripper_joint": "leader_waist"}, "also mapped"),
    ({"joint_map": LEADER_MAP, "gripper_open": 0.0}, "must be finite and differ"),
    ({"joint_map": LEADER_MAP, "timeout_s": 0.0}, "timeout_s"),
])
def test_leader_arm_refuses_bad_mappings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LeaderArmTeleop(ARM_JOINTS, **kwargs)


def test_leader_arm_poll_before_open():
    with pytest.raises(TeleopDeviceError, match="before open"):
        LeaderArmTeleop(ARM_JOINTS).poll(0.0)


# --- the command type ------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": EE, "ee_delta": [0.0] * 5}, "ee_delta: expected 6 values"),
    ({"ee_delta": [0.0] * 6}, "ee_delta needs mode END_EFFECTOR"),
    ({"mode": EE, "joint_delta": [0.0]}, "need mode JOINT"),
    ({"joint_delta": [0.0], "absolute_joints": [0.0]}, "at most one"),
    ({"absolute_joints": [math.nan]}, "finite"),
    ({"gripper": 1.5}, r"opening in \[0, 1\]"),
    ({"mode": "joint"}, "TeleopMode"),
])
def test_teleop_command_checks_its_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TeleopCommand(**kwargs)


def test_teleop_command_arrays_are_read_only_float64():
    command = TeleopCommand(joint_delta=[1, 2])
    assert command.joint_delta.dtype == np.float64 and not command.joint_delta.flags.writeable
    assert TeleopCommand().is_empty and not TeleopCommand(estop=True).is_empty
