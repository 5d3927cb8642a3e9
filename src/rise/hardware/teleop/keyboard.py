"""Keyboard teleop from a terminal: one key press = one step.

Key map (case-sensitive; other keys, arrows and Alt-combinations are ignored)::

    both modes   m          toggle joint / end-effector mode
                 o / c      open / close the gripper
                 space      start an episode
                 enter      stop the episode: success
                 x          stop the episode: failure
                 backspace  discard the episode
                 !          e-stop (latching in the arm bridge)
    joint mode   1 .. 6     select joint 1 .. 6 (up to num_joints, at most 9)
                 w / s      selected joint + / - joint_step_rad
    EE mode      w / s      +x / -x (forward / back)       linear_step_m
                 a / d      +y / -y (left / right)         linear_step_m
                 r / f      +z / -z (up / down)            linear_step_m
                 q / e      +yaw / -yaw                    angular_step_rad
                 i / k      +pitch / -pitch                angular_step_rad
                 j / l      +roll / -roll                  angular_step_rad

The terminal is put in cbreak mode without echo (Ctrl-C still interrupts) and read without
blocking; its settings are restored on :meth:`KeyboardTeleop.close` (``with`` restores them even
when the body raises). It works only on an interactive terminal (a TTY).

Example::

    with KeyboardTeleop(num_joints=6, joint_step_rad=0.02) as keyboard:
        while running:
            command = keyboard.poll(time.monotonic())   # never blocks
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import logging
import os
import select
import sys
import termios
from collections.abc import Sequence

import numpy as np

from rise.hardware.teleop.base import TeleopCommand, TeleopDevice, TeleopDeviceError, TeleopMode

_LOG = logging.getLogger(__name__)

ESC = "\x1b"
_MAX_READS = 64
ENTER_KEYS = ("\r", "\n")
BACKSPACE_KEYS = ("\x7f", "\x08")
# End-effector keys: key -> (index in ee_delta, sign); indices 0-2 linear, 3-5 angular.
EE_KEYS = {"w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "r": (2, 1), "f": (2, -1),
           "j": (3, 1), "l": (3, -1), "i": (4, 1), "k": (4, -1), "q": (5, 1), "e": (5, -1)}
FLAG_KEYS = {" ": "start_episode", "x": "stop_episode_failure", "!": "estop",
             **{k: "stop_episode_success" for k in ENTER_KEYS},
             **{k: "discard_episode" for k in BACKSPACE_KEYS}}


@dataclasses.dataclass(frozen=True)
class KeySteps:
    """How far one key press moves [per press]."""

    joint_step_rad: float = 0.02
    linear_step_m: float = 0.005
    angular_step_rad: float = 0.02


@dataclasses.dataclass(frozen=True)
class KeyState:
    """What persists between key presses: the mode and the selected joint (0-based)."""

    mode: TeleopMode = TeleopMode.JOINT
    joint: int = 0


def split_keys(text: str) -> tuple[list[str], str]:
    """Split terminal input into keys; an escape sequence is one key.

    Returns the keys and an incomplete escape sequence at the end (to prepend to the next
    input), so that e.g. the ``A`` of a split arrow key ``ESC [ A`` is never read as a key.
    """
    keys: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != ESC:
            keys.append(text[i])
            i += 1
            continue
        end = _escape_end(text, i)
        if end is None:
            return keys, text[i:]
        keys.append(text[i:end])
        i = end
    return keys, ""


def _escape_end(text: str, start: int) -> int | None:
    """End index of the escape sequence at ``start``, None when the text ends inside it."""
    if start + 1 >= len(text):
        return None
    kind = text[start + 1]
    if kind == "O":  # SS3: one more character (F1-F4, keypad)
        return start + 3 if start + 2 < len(text) else None
    if kind != "[":  # Alt + key
        return start + 2
    for i in range(start + 2, len(text)):  # CSI: parameters and intermediates, then a final byte
        if "\x40" <= text[i] <= "\x7e":
            return i + 1
    return None


def map_keys(keys: Sequence[str], state: KeyState, steps: KeySteps,
             num_joints: int) -> tuple[KeyState, TeleopCommand, int]:
    """Map key presses to one command (pure: no I/O).

    Returns the new state, the command and how many keys were consumed: a mode toggle ends the
    batch, so one command never mixes modes; the caller passes the rest in the next call.
    """
    joint_delta = np.zeros(num_joints)
    ee_delta = np.zeros(6)
    moved, gripper, flags = False, None, set()
    consumed = 0
    for key in keys:
        consumed += 1
        if key == "m":  # the keys so far were meant for the old mode
            command = _command(state, moved, joint_delta, ee_delta, gripper, flags)
            return _toggled(state), command, consumed
        if key in FLAG_KEYS:
            flags.add(FLAG_KEYS[key])
        elif key in ("o", "c"):
            gripper = 1.0 if key == "o" else 0.0
        elif state.mode is TeleopMode.JOINT and len(key) == 1 and "1" <= key <= "9":
            if int(key) <= num_joints:
                state = dataclasses.replace(state, joint=int(key) - 1)
        elif state.mode is TeleopMode.JOINT and key in ("w", "s"):
            joint_delta[state.joint] += steps.joint_step_rad * (1 if key == "w" else -1)
            moved = True
        elif state.mode is TeleopMode.END_EFFECTOR and key in EE_KEYS:
            axis, sign = EE_KEYS[key]
            ee_delta[axis] += sign * (steps.linear_step_m if axis < 3 else steps.angular_step_rad)
            moved = True
    return state, _command(state, moved, joint_delta, ee_delta, gripper, flags), consumed


def _toggled(state: KeyState) -> KeyState:
    mode = TeleopMode.END_EFFECTOR if state.mode is TeleopMode.JOINT else TeleopMode.JOINT
    return dataclasses.replace(state, mode=mode)


def _command(state: KeyState, moved: bool, joint_delta: np.ndarray, ee_delta: np.ndarray,
             gripper: float | None, flags: set[str]) -> TeleopCommand:
    joint_mode = state.mode is TeleopMode.JOINT
    return TeleopCommand(
        mode=state.mode,
        joint_delta=joint_delta if moved and joint_mode else None,
        ee_delta=ee_delta if moved and not joint_mode else None,
        gripper=gripper,
        **{flag: True for flag in flags},
    )


def _check_foreground(fd: int) -> None:
    """Refuse a terminal on which this process is in the background.

    The kernel stops a background process (SIGTTOU / SIGTTIN) that changes or reads its
    controlling terminal, which would freeze the node; say so instead. A terminal that is not
    this process's controlling terminal (tcgetpgrp fails) has no such restriction.
    """
    try:
        foreground = os.tcgetpgrp(fd)
    except OSError:
        return
    if foreground != os.getpgrp():
        raise TeleopDeviceError(
            "KeyboardTeleop: this process is not in the terminal's foreground process group "
            "(e.g. a node started by `rise up`, which gives each node its own group), so it "
            "cannot read keys; run the teleop node in the foreground of its own terminal")


class KeyboardTeleop(TeleopDevice):
    """Teleop from the keys of a terminal (stdin by default); see the module docstring for keys."""

    def __init__(self, num_joints: int = 6, *, joint_step_rad: float = 0.02,
                 linear_step_m: float = 0.005, angular_step_rad: float = 0.02,
                 mode: TeleopMode = TeleopMode.JOINT, fd: int | None = None):
        """``fd``: the terminal's file descriptor (default: stdin's)."""
        if not 1 <= num_joints <= 9:
            raise ValueError(f"num_joints: expected 1 to 9 (keys 1-9), got {num_joints}")
        for name, step in (("joint_step_rad", joint_step_rad), ("linear_step_m", linear_step_m),
                           ("angular_step_rad", angular_step_rad)):
            if not step > 0:
                raise ValueError(f"{name}: expected > 0, got {step}")
        self._num_joints = num_joints
        self._steps = KeySteps(joint_step_rad, linear_step_m, angular_step_rad)
        self._state = KeyState(mode=mode)
        self._fd_arg = fd
        self._fd: int | None = None
        self._saved: list | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[str] = []
        self._partial = ""

    @property
    def state(self) -> KeyState:
        """The current mode and selected joint."""
        return self._state

    def open(self) -> None:
        """Put the terminal in non-blocking cbreak mode; raises TeleopDeviceError if not a TTY."""
        if self._fd is not None:
            return
        fd = self._resolve_fd()
        _check_foreground(fd)
        saved = termios.tcgetattr(fd)
        mode = termios.tcgetattr(fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO)  # lflag: keys arrive at once, not echoed
        mode[6][termios.VMIN] = 0  # reads return at once, with what is there
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSADRAIN, mode)
        self._fd, self._saved = fd, saved

    def close(self) -> None:
        """Restore the terminal settings saved by :meth:`open`; idempotent."""
        fd, saved = self._fd, self._saved
        self._fd, self._saved = None, None
        if fd is None or saved is None:
            return
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        except termios.error as error:  # the terminal is gone: nothing left to restore
            _LOG.warning("could not restore terminal settings: %s", error)

    def poll(self, now_s: float) -> TeleopCommand:
        """Keys pressed since the last poll as one command (never blocks)."""
        if self._fd is None:
            raise TeleopDeviceError("KeyboardTeleop.poll() before open()")
        text = self._read_available()
        if text:
            keys, self._partial = split_keys(self._partial + text)
            self._pending.extend(keys)
        else:
            self._partial = ""  # a lone ESC press, not the start of a sequence
        self._state, command, consumed = map_keys(self._pending, self._state, self._steps,
                                                  self._num_joints)
        del self._pending[:consumed]
        return command

    def _resolve_fd(self) -> int:
        if self._fd_arg is not None:
            fd, what = self._fd_arg, f"file descriptor {self._fd_arg}"
        else:
            what = "stdin"
            try:
                fd = sys.stdin.fileno()
            except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
                fd = -1
        if fd < 0 or not os.isatty(fd):
            raise TeleopDeviceError(
                f"KeyboardTeleop needs an interactive terminal, but {what} is not a TTY; run it "
                "in a terminal (e.g. `ros2 run` in a shell, or a launch prefix such as "
                "'xterm -e'), not with input from a pipe, a file or a service manager")
        return fd

    def _read_available(self) -> str:
        """Everything typed since the last call (at most _MAX_READS chunks, so a flood cannot stall)."""
        chunks = []
        for _ in range(_MAX_READS):
            if not select.select([self._fd], [], [], 0)[0]:
                break
            try:
                data = os.read(self._fd, 1024)
            except OSError as error:
                raise TeleopDeviceError(f"keyboard terminal lost: {error}") from error
            if not data:  # readable but empty: the terminal hung up
                raise TeleopDeviceError("keyboard terminal closed (end of input)")
            chunks.append(self._decoder.decode(data))
        return "".join(chunks)
