"""Follows joint trajectories the way ros2_control's JointTrajectoryController does.

A new trajectory replaces the old one from its start time on. Between the current position (at the
moment the trajectory was received) and the first point, and between consecutive points, the
target is interpolated linearly in time; after the last point it holds that point. Joints the
trajectory does not name keep their current target (partial goals).

:func:`parse_trajectory` checks a whole command for the arm before anything of it is followed
(the arm bridge calls it on every JointTrajectory): every point names every joint once with
finite positions, ``time_from_start`` is finite, >= 0 and strictly increasing, the optional
``velocities`` / ``accelerations`` have one finite value per joint, declared velocities are
within each joint's ``max_velocity``, and consecutive points do not imply an arm joint speed above
``SPEED_MARGIN`` times it (the gripper is exempt: a chunk that opens or closes it in one step is
normal, and the rate limit slows it). The move from the current pose to the first point is not checked here:
the safety filter's rate limit takes care of it (a teleop command is a single point).

Example::

    safety = SafetyFilter(robot.arm, robot.control_rate_hz)
    trajectory = parse_trajectory(safety, ["waist", ...], [0.5, 1.0], [[...], [...]])
    follower = TrajectoryFollower(safety.joint_names, current_pose)
    follower.set(safety.joint_names, trajectory.times_s, trajectory.positions, 0.0, now_s)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from rise.hardware.safety import CommandError, SafetyFilter

SPEED_MARGIN = 5.0
"""Consecutive points implying more than this times an arm joint's max_velocity are refused (the
safety filter only slows a trajectory down to the limit; far above it the command is surely wrong,
while a policy's noisy chunk a little above it is still worth following slowly)."""


class TrajectoryError(ValueError):
    """A trajectory that cannot be followed; the message says why."""


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A checked command: all joints, in the safety filter's joint order."""

    times_s: np.ndarray
    """Time from start of each point [s]: finite, >= 0, strictly increasing."""
    positions: np.ndarray
    """Target positions, one row per point (finite, not yet clipped to the limits)."""


def parse_trajectory(safety: SafetyFilter, names: Sequence[str], times_s: Sequence[float],
                     positions: Sequence[Sequence[float]], velocities: Sequence[Sequence[float]] = (),
                     accelerations: Sequence[Sequence[float]] = ()) -> Trajectory:
    """Check a JointTrajectory's fields (one list entry per point; empty ``velocities`` or
    ``accelerations``, overall or for a point, mean not given).

    Raises CommandError (a point's joint names or positions) or TrajectoryError (times, velocities,
    accelerations, implied speed), with a message naming the point, the joint and the figures.
    """
    rows = _items(positions, "points")
    if not rows:
        raise TrajectoryError("no points")
    times = _numbers(times_s, [f"point {i}" for i in range(len(rows))], "time_from_start")
    names = _items(names, "joint names")
    targets = np.empty((len(rows), len(safety.joint_names)))
    for i, row in enumerate(rows):
        try:
            targets[i] = safety.validate(names, row)
        except CommandError as error:
            raise CommandError(f"point {i}: {error}") from None
    # validate() checked that ``names`` holds every joint once
    limits = {name: safety.max_velocity[safety.joint_names.index(name)] for name in names}
    units = dict(zip(safety.joint_names, safety.units, strict=True))
    for field, values in (("velocities", velocities), ("accelerations", accelerations)):
        per_point = _items(values, field)
        if per_point and len(per_point) != len(rows):
            raise TrajectoryError(f"{field}: got {len(per_point)} entries for {len(rows)} points")
        for i, point in enumerate(per_point):
            items = _items(point, f"point {i}: {field}")
            if not items:
                continue  # not given for this point
            numbers = _numbers(items, names, f"point {i}: {field}")
            too_fast = [(n, v) for n, v in zip(names, numbers, strict=True) if abs(v) > limits[n]]
            if field == "velocities" and too_fast:
                name, value = too_fast[0]
                raise TrajectoryError(f"point {i}: {name} velocity {value:.4g} {units[name]}/s above its "
                                      f"limit {limits[name]:.4g} {units[name]}/s")
    if times[0] < 0:
        raise TrajectoryError(f"point 0: time_from_start {times[0]:.4g} s is negative")
    with np.errstate(over="ignore", invalid="ignore"):
        backwards = np.flatnonzero(~(np.diff(times) > 0))
    if len(backwards):
        i = int(backwards[0]) + 1
        raise TrajectoryError(f"point {i}: time_from_start {times[i]:.4g} s is not after point {i - 1}'s "
                              f"{times[i - 1]:.4g} s (it must increase strictly)")
    _check_speeds(safety, times, targets)
    return Trajectory(_read_only(times), _read_only(targets))


def _check_speeds(safety: SafetyFilter, times: np.ndarray, targets: np.ndarray) -> None:
    """Refuse consecutive points that imply an arm joint speed above SPEED_MARGIN x max_velocity."""
    if len(times) < 2:
        return
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        moves = np.abs(np.diff(targets, axis=0))
        moves[:, -1] = 0.0  # the gripper (last joint) may open or close between two points
        gaps = np.diff(times)
        speeds = moves / gaps[:, None]
    too_fast = np.argwhere(~(speeds <= SPEED_MARGIN * safety.max_velocity))
    if len(too_fast):
        i, j = (int(k) for k in too_fast[0])
        unit = safety.units[j]
        raise TrajectoryError(
            f"point {i + 1}: {safety.joint_names[j]} moves {moves[i, j]:.4g} {unit} in {gaps[i]:.4g} s "
            f"after point {i} ({speeds[i, j]:.4g} {unit}/s; limit {safety.max_velocity[j]:.4g} {unit}/s, "
            f"refused above {SPEED_MARGIN:g}x)")


def _items(values: object, what: str) -> list:
    if isinstance(values, (str, bytes)):
        raise TrajectoryError(f"{what}: expected a sequence, got {type(values).__name__}")
    try:
        return list(values)  # type: ignore[call-overload]
    except TypeError:
        raise TrajectoryError(f"{what}: expected a sequence, got {type(values).__name__}") from None


def _numbers(values: object, labels: Sequence[str], what: str) -> np.ndarray:
    """One finite float per label, else TrajectoryError naming the label."""
    items = _items(values, what)
    if len(items) != len(labels):
        raise TrajectoryError(f"{what}: got {len(items)} values for {len(labels)} "
                              f"({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''})")
    out = np.empty(len(items))
    for k, (label, value) in enumerate(zip(labels, items, strict=True)):
        number = _float(value)
        if number is None or not math.isfinite(number):
            raise TrajectoryError(f"{what}: {label}: {value!r} is not a finite number")
        out[k] = number
    return out


def _float(value: object) -> float | None:
    if isinstance(value, (str, bytes, bool, np.bool_)) or (isinstance(value, np.ndarray) and value.ndim):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def _read_only(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values


class TrajectoryFollower:
    def __init__(self, joint_names: Sequence[str], initial: np.ndarray):
        self.joint_names = tuple(joint_names)
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self._hold = np.asarray(initial, dtype=float).copy()
        self._times = np.zeros(0)
        self._points = np.zeros((0, len(self.joint_names)))
        self._start_s = 0.0

    def set(self, names: Sequence[str], times_s: Sequence[float], positions: Sequence[Sequence[float]],
            start_s: float, now_s: float) -> None:
        """Replace the trajectory. ``times_s`` are relative to ``start_s``; checks everything first."""
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise TrajectoryError(f"unknown joints {unknown} (known: {', '.join(self.joint_names)})")
        if len(set(names)) != len(names):
            raise TrajectoryError("duplicate joint names")
        if not len(times_s):
            raise TrajectoryError("no points")
        times = np.asarray(times_s, dtype=float)
        values = np.asarray(positions, dtype=float)
        if values.shape != (len(times), len(names)):
            raise TrajectoryError(f"each point needs {len(names)} positions")
        if not (np.all(np.isfinite(values)) and np.all(np.isfinite(times))):
            raise TrajectoryError("NaN or inf in the trajectory")
        if np.any(np.diff(times) <= 0) or times[0] < 0:
            raise TrajectoryError("time_from_start must be >= 0 and strictly increasing")
        current = self.sample(now_s)
        columns = [self._index[n] for n in names]
        points = np.tile(current, (len(times), 1))
        points[:, columns] = values
        start = max(start_s, now_s) if start_s > 0 else now_s
        self._hold = current
        self._start_s = start
        self._times = times
        self._points = points

    def sample(self, now_s: float) -> np.ndarray:
        """The target at ``now_s``."""
        if not len(self._times):
            return self._hold.copy()
        t = now_s - self._start_s
        if t <= 0:
            return self._hold.copy()
        times = np.concatenate([[0.0], self._times]) if self._times[0] > 0 else self._times
        points = np.vstack([self._hold, self._points]) if self._times[0] > 0 else self._points
        if t >= times[-1]:
            return points[-1].copy()
        i = int(np.searchsorted(times, t, side="right")) - 1
        alpha = (t - times[i]) / (times[i + 1] - times[i])
        return points[i] + alpha * (points[i + 1] - points[i])
