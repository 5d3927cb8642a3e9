"""Perturbed experts: imperfect demonstrations and failing rollouts for the value model.

The value model needs failures with every amount of progress. A perturbed expert follows the
scripted expert with temporally correlated joint noise (an Ornstein-Uhlenbeck process) and, with
some probability, fumbles at a random moment: from then on it opens the gripper and wanders
(a random walk from where it was) instead of finishing the task.
"""

from __future__ import annotations

import numpy as np

from rise.sim.tasks.base import Expert


class PerturbedExpert(Expert):
    def __init__(self, expert: Expert, rng: np.random.Generator, *, noise_rad: float = 0.06,
                 fumble_probability: float = 0.5, max_ticks: int = 600, gripper_open: float = 0.035):
        self.expert = expert
        self._rng = rng
        self._noise_rad = noise_rad
        self._noise: np.ndarray | None = None
        self._tick = 0
        self._last: np.ndarray | None = None
        self._gripper_open = gripper_open
        fumbles = rng.random() < fumble_probability
        self.fumble_tick = int(rng.integers(20, max_ticks // 2)) if fumbles else None

    def act(self, env) -> np.ndarray:
        fumbling = self.fumble_tick is not None and self._tick >= self.fumble_tick
        if fumbling and self._last is not None:
            action = self._last.copy()
            action[:-1] += 0.03 * self._rng.normal(size=len(action) - 1)  # wander: a random walk
            action[-1] = self._gripper_open
        else:
            action = np.asarray(self.expert.act(env), dtype=float).copy()
            if self._noise is None:
                self._noise = np.zeros(len(action) - 1)
            theta = 0.15  # mean reversion per tick: noise correlated over ~7 ticks
            self._noise += -theta * self._noise + self._noise_rad * np.sqrt(2 * theta) * self._rng.normal(
                size=self._noise.shape)
            action[:-1] += self._noise
        lower, upper = env.robot_limits()
        self._last = np.clip(action, lower, upper)
        self._tick += 1
        return self._last
