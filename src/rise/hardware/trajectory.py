"""Follows joint trajectories the way ros2_control's JointTrajectoryController does.

A new trajectory replaces the old one from its start time on. Between the current position (at the
moment the trajectory was received) and the first point, and between consecutive points, the
target is interpolated linearly in time; after the last point it holds that point. Joints the
trajectory does not name keep their current target (partial goals).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TrajectoryError(ValueError):
    """A trajectory that cannot be followed; the message says why."""


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
