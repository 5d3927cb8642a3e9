"""Leader-arm teleop: the follower arm mirrors a leader arm's joint positions.

The teleop node feeds the leader's ``JointState`` messages to :meth:`LeaderArmTeleop.update_leader`;
:meth:`LeaderArmTeleop.poll` turns the latest positions into an absolute joint target for the
follower (mode JOINT, ``absolute_joints`` in follower arm joint order) and a gripper opening in
[0, 1]. Each follower joint is ``scale * leader + offset``, with the leader joint found through
``joint_map`` (leader name -> follower name). When any mapped leader joint is older than
``timeout_s`` (or never arrived), poll returns an empty command: no motion from stale data.

Example::

    leader = LeaderArmTeleop([j.name for j in robot.arm.joints],
                             {"leader_waist": "waist", ...}, offset={"elbow": 0.1},
                             gripper_joint="leader_gripper", gripper_closed=0.0, gripper_open=0.8)
    with leader:
        leader.update_leader(msg.name, msg.position, now_s)   # on the leader's /joint_states
        command = leader.poll(now_s)                           # every control tick
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from rise.hardware.teleop.base import TeleopCommand, TeleopDevice, TeleopDeviceError, TeleopMode


class LeaderArmTeleop(TeleopDevice):
    """Absolute joint targets mirrored from a leader arm (data pushed in, nothing to open)."""

    def __init__(self, arm_joints: Sequence[str], joint_map: Mapping[str, str] | None = None, *,
                 scale: Mapping[str, float] | None = None, offset: Mapping[str, float] | None = None,
                 gripper_joint: str | None = None, gripper_closed: float = 0.0,
                 gripper_open: float = 1.0, timeout_s: float = 0.1):
        """Set up the mapping; raises ValueError when it does not cover the follower exactly.

        ``arm_joints``: the follower's arm joints (gripper excluded), in order. ``joint_map``:
        leader joint name -> follower joint name, one leader joint per follower joint (default:
        the same names). ``scale`` / ``offset``: per follower joint (default 1 / 0 [rad]).
        ``gripper_joint``: the leader joint read as the gripper (None: no gripper target), whose
        positions ``gripper_closed`` and ``gripper_open`` map to openings 0 and 1.
        ``timeout_s``: leader data older than this is stale [s].
        """
        self._arm_joints = tuple(arm_joints)
        joint_map = dict(joint_map) if joint_map is not None else {n: n for n in self._arm_joints}
        self._leader_index = _leader_index(self._arm_joints, joint_map)
        self._scale = _per_joint("scale", scale, self._arm_joints, 1.0)
        self._offset = _per_joint("offset", offset, self._arm_joints, 0.0)
        if gripper_joint is not None and gripper_joint in joint_map:
            raise ValueError(f"gripper_joint {gripper_joint!r} is also mapped to an arm joint")
        if not (math.isfinite(gripper_open - gripper_closed) and gripper_open != gripper_closed):
            raise ValueError(f"gripper_open ({gripper_open}) and gripper_closed ({gripper_closed}) "
                             "must be finite and differ")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: expected > 0, got {timeout_s}")
        self._gripper_joint = gripper_joint
        self._gripper_range = (gripper_closed, gripper_open)
        self._timeout_s = timeout_s
        self._positions = np.full(len(self._arm_joints), np.nan)
        self._stamps_s = np.full(len(self._arm_joints), -np.inf)
        self._gripper: tuple[float, float] | None = None  # (position, stamp [s])
        self._open = False

    @property
    def arm_joints(self) -> tuple[str, ...]:
        """Follower arm joints: the order of ``absolute_joints``."""
        return self._arm_joints

    def open(self) -> None:
        """Nothing to acquire: the leader's data is pushed in through :meth:`update_leader`."""
        self._open = True

    def close(self) -> None:
        """Forget the leader's data; idempotent."""
        self._open = False
        self._positions[:] = np.nan
        self._stamps_s[:] = -np.inf
        self._gripper = None

    def update_leader(self, names: Sequence[str], positions: Sequence[float],
                      now_s: float) -> tuple[str, ...]:
        """Take one leader joint state (names in any order; unmapped names are ignored).

        Returns the mapped joints whose value was not finite: those are not taken, so they go
        stale and poll stops commanding. Raises ValueError when names and positions differ in length.
        """
        if len(names) != len(positions):
            raise ValueError(f"got {len(names)} leader joint names and {len(positions)} positions")
        rejected = []
        for name, value in zip(names, positions, strict=True):
            if name not in self._leader_index and name != self._gripper_joint:
                continue
            value = float(value)
            if not math.isfinite(value):
                rejected.append(name)
            elif name == self._gripper_joint:
                self._gripper = (value, now_s)
            else:
                i = self._leader_index[name]
                self._positions[i], self._stamps_s[i] = value, now_s
        return tuple(rejected)

    def poll(self, now_s: float) -> TeleopCommand:
        """The mirrored target, or an empty command when the leader's data is stale."""
        if not self._open:
            raise TeleopDeviceError("LeaderArmTeleop.poll() before open()")
        if np.any(now_s - self._stamps_s > self._timeout_s):
            return TeleopCommand()
        target = self._scale * self._positions + self._offset
        return TeleopCommand(mode=TeleopMode.JOINT, absolute_joints=target,
                             gripper=self._gripper_opening(now_s))

    def stale_joints(self, now_s: float) -> tuple[str, ...]:
        """Follower joints whose leader data is missing or older than ``timeout_s`` (for logs)."""
        stale = now_s - self._stamps_s > self._timeout_s
        return tuple(name for name, old in zip(self._arm_joints, stale, strict=True) if old)

    def _gripper_opening(self, now_s: float) -> float | None:
        if self._gripper is None or now_s - self._gripper[1] > self._timeout_s:
            return None
        closed, opened = self._gripper_range
        return float(np.clip((self._gripper[0] - closed) / (opened - closed), 0.0, 1.0))


def _leader_index(arm_joints: tuple[str, ...], joint_map: dict[str, str]) -> dict[str, int]:
    """Leader joint name -> index in the follower's arm joints; each follower joint exactly once."""
    unknown = sorted(set(joint_map.values()) - set(arm_joints))
    if unknown:
        raise ValueError(f"joint_map: unknown follower joints {unknown} (expected {list(arm_joints)})")
    followers = list(joint_map.values())
    duplicates = sorted({f for f in followers if followers.count(f) > 1})
    if duplicates:
        raise ValueError(f"joint_map: follower joints {duplicates} are mapped more than once")
    missing = [j for j in arm_joints if j not in followers]
    if missing:
        raise ValueError(f"joint_map: follower joints {missing} have no leader joint")
    return {leader: arm_joints.index(follower) for leader, follower in joint_map.items()}


def _per_joint(what: str, values: Mapping[str, float] | None, arm_joints: tuple[str, ...],
               default: float) -> np.ndarray:
    """A per-joint setting keyed by follower joint, as an array in arm joint order."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(arm_joints))
    if unknown:
        raise ValueError(f"{what}: unknown follower joints {unknown}")
    array = np.array([float(values.get(j, default)) for j in arm_joints])
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: expected finite values, got {values}")
    return array
