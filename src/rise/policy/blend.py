"""Smooth motion across action chunks: a new chunk is cross-faded over what is left of the old one.

The policy predicts H absolute joint targets per observation, but a new chunk is asked for long
before the old one runs out (and arrives some ticks after its observation). Switching straight to
the new chunk would jump by the difference between the two predictions; :class:`ChunkBlender`
instead fades linearly from the old plan to the new chunk over the steps the two overlap::

    overlap n = min(len(new), max(len(old), min_fade))      (old padded with its last row)
    blended[j] = (1 - a_j) * old[j] + a_j * new[j],   a_j = (j + 1) / (n + 1),   j < n
    blended[j] = new[j],                                                        j >= n

so the first blended target moves from the old plan by at most ``|new - old| / (n + 1)`` plus the
old plan's own step, and the plan reaches the new chunk by the end of the overlap. The rows of a
chunk that are already in the past (the ticks that elapsed while the policy was thinking) are
dropped first (``skip``). Once the plan is consumed the last target is held.

Example (one joint)::

    blender = ChunkBlender(action_dim=1)
    blender.add(np.array([[0.0], [1.0], [2.0], [3.0]]))
    blender.pop(), blender.pop()             # [0.], [1.]; left: [2.], [3.]
    blender.add(np.full((4, 1), 10.0))       # overlap 2: a = 1/3, 2/3
    blender.plan[:, 0]                       # [14/3, 23/3, 10, 10]
"""

from __future__ import annotations

import numpy as np


class ChunkBlender:
    """The planned joint targets from the current control tick on (float64, rows = ticks).

    Args:
        action_dim: size A of a target.
        min_fade: the shortest cross-fade [ticks], used when little or nothing of the old plan is
            left (then the old plan's last row, or the held target, is faded out); >= 1.
    """

    def __init__(self, action_dim: int, min_fade: int = 1):
        if action_dim < 1:
            raise ValueError(f"action_dim: expected >= 1, got {action_dim}")
        if min_fade < 1:
            raise ValueError(f"min_fade: expected >= 1 tick, got {min_fade}")
        self.action_dim = int(action_dim)
        self.min_fade = int(min_fade)
        self.plan = np.zeros((0, self.action_dim))
        self.last: np.ndarray | None = None  # the last target handed out (held when the plan runs out)

    def reset(self, start: np.ndarray | None = None) -> None:
        """Forget the plan; ``start`` (e.g. the measured pose) is faded out by the first chunk."""
        self.plan = np.zeros((0, self.action_dim))
        self.last = None if start is None else self._row(start, "start")

    def add(self, chunk: np.ndarray, skip: int = 0) -> bool:
        """Merge a chunk whose row 0 was due ``skip`` ticks ago (rows before now are dropped).

        Returns False, leaving the plan as it was, when the whole chunk is already in the past.
        Raises ValueError for a chunk of the wrong shape or with NaN/inf.
        """
        chunk = np.asarray(chunk, dtype=float)
        if chunk.ndim != 2 or chunk.shape[1] != self.action_dim or not len(chunk):
            raise ValueError(f"chunk: expected shape (H, {self.action_dim}), got {chunk.shape}")
        if not np.all(np.isfinite(chunk)):
            raise ValueError("chunk: NaN or inf")
        if skip < 0:
            raise ValueError(f"skip: expected >= 0 ticks, got {skip}")
        new = chunk[skip:]
        if not len(new):
            return False
        old = self.plan if len(self.plan) else (None if self.last is None else self.last[None])
        if old is None:
            self.plan = new.copy()
            return True
        n = min(len(new), max(len(old), self.min_fade))
        if len(old) < n:
            old = np.vstack([old, np.repeat(old[-1:], n - len(old), axis=0)])
        alpha = (np.arange(1, n + 1) / (n + 1))[:, None]
        self.plan = np.vstack([(1 - alpha) * old[:n] + alpha * new[:n], new[n:]])
        return True

    def pop(self) -> np.ndarray | None:
        """The target for this tick (the plan advances one row); the held target once the plan is
        consumed; None before any chunk or start."""
        if len(self.plan):
            self.last = self.plan[0].copy()
            self.plan = self.plan[1:]
        return None if self.last is None else self.last.copy()

    def __len__(self) -> int:
        """Planned ticks left after the last :meth:`pop`."""
        return len(self.plan)

    def _row(self, value: np.ndarray, name: str) -> np.ndarray:
        row = np.asarray(value, dtype=float).reshape(-1)
        if row.shape != (self.action_dim,):
            raise ValueError(f"{name}: expected shape ({self.action_dim},), got {np.shape(value)}")
        return row
