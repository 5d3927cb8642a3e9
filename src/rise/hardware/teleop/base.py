"""What every teleop device produces (:class:`TeleopCommand`) and the device interface.

A device is polled once per control tick by the teleop node; :meth:`TeleopDevice.poll` never
blocks and returns a :class:`TeleopCommand`: an empty one when nothing happened. The command
carries motion (a joint delta, an end-effector delta or absolute joint targets), an optional
gripper target and one-shot flags for the recorder and the arm bridge (episode keys, e-stop).
Commands are requests: the arm bridge's safety filter decides what is actually sent.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import math
from types import TracebackType

import numpy as np


class TeleopMode(enum.Enum):
    """How a command's motion is expressed."""

    JOINT = "joint"  # joint_delta [rad per tick] or absolute_joints [rad]
    END_EFFECTOR = "end_effector"  # ee_delta in the base frame, per tick


class TeleopDeviceError(RuntimeError):
    """A device that cannot be opened (missing package, not a terminal, no gamepad) or was lost."""


class TeleopDeviceMissing(TeleopDeviceError):
    """A device that is not there now but may come (unplugged, not yet paired): worth retrying."""


def _vector(name: str, values, size: int | None) -> np.ndarray:
    """A read-only finite float64 vector, checked for length when ``size`` is given."""
    array = np.array(values, dtype=np.float64)
    if array.ndim != 1 or (size is not None and array.shape[0] != size):
        expected = f"{size} values" if size is not None else "a 1-D array"
        raise ValueError(f"{name}: expected {expected}, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite values, got {array.tolist()}")
    array.flags.writeable = False
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class TeleopCommand:
    """One poll's worth of operator input; all fields optional (the default is an empty command).

    Motion: at most one of ``joint_delta`` and ``absolute_joints`` (mode JOINT) or
    ``ee_delta`` (mode END_EFFECTOR). Flags are true for the one poll in which the operator
    pressed the key or button (``estop`` may stay true while its button is held).
    """

    mode: TeleopMode = TeleopMode.JOINT
    joint_delta: np.ndarray | None = None
    """Change per arm joint (gripper excluded) [rad per tick], arm joint order."""
    ee_delta: np.ndarray | None = None
    """End-effector change per tick in the base frame: dx, dy, dz [m], droll, dpitch, dyaw [rad]."""
    absolute_joints: np.ndarray | None = None
    """Absolute target per arm joint [rad] (a leader arm), arm joint order."""
    gripper: float | None = None
    """Target gripper opening in [0, 1] (0 closed, 1 open); None leaves it unchanged."""
    start_episode: bool = False
    stop_episode_success: bool = False
    stop_episode_failure: bool = False
    discard_episode: bool = False
    estop: bool = False

    def __post_init__(self):
        if not isinstance(self.mode, TeleopMode):
            raise ValueError(f"mode: expected a TeleopMode, got {self.mode!r}")
        for name, size in (("joint_delta", None), ("ee_delta", 6), ("absolute_joints", None)):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _vector(name, value, size))
        if self.joint_delta is not None and self.absolute_joints is not None:
            raise ValueError("expected at most one of joint_delta and absolute_joints")
        joint_motion = self.joint_delta is not None or self.absolute_joints is not None
        if joint_motion and self.mode is not TeleopMode.JOINT:
            raise ValueError("joint_delta and absolute_joints need mode JOINT")
        if self.ee_delta is not None and self.mode is not TeleopMode.END_EFFECTOR:
            raise ValueError("ee_delta needs mode END_EFFECTOR")
        if self.gripper is not None:
            opening = float(self.gripper)
            if not (math.isfinite(opening) and 0.0 <= opening <= 1.0):
                raise ValueError(f"gripper: expected an opening in [0, 1], got {self.gripper}")
            object.__setattr__(self, "gripper", opening)

    @property
    def has_motion(self) -> bool:
        """True when the command asks the arm to move (any delta or an absolute target)."""
        return any(v is not None for v in (self.joint_delta, self.ee_delta, self.absolute_joints))

    @property
    def has_flags(self) -> bool:
        """True when any episode or e-stop flag is set."""
        return (self.start_episode or self.stop_episode_success or self.stop_episode_failure
                or self.discard_episode or self.estop)

    @property
    def is_empty(self) -> bool:
        """True when the command changes nothing (no motion, no gripper target, no flags)."""
        return not self.has_motion and self.gripper is None and not self.has_flags


class TeleopDevice(abc.ABC):
    """A source of :class:`TeleopCommand`; open it (or use ``with``) before polling.

    Blocking and timeouts: :meth:`open` may take a moment (it may initialise a device library)
    but never waits for the operator; :meth:`poll` never blocks: it returns what arrived since
    the last poll, or an empty command. :meth:`close` restores what :meth:`open` changed,
    is idempotent and is called by ``with`` even when the body raises.
    """

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device; raises TeleopDeviceError with the reason when it cannot."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device and restore any state changed by :meth:`open`; idempotent."""

    @abc.abstractmethod
    def poll(self, now_s: float) -> TeleopCommand:
        """The operator's input since the last poll (non-blocking); ``now_s`` is monotonic time [s]."""

    def __enter__(self) -> TeleopDevice:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
