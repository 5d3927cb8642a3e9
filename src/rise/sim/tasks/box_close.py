"""box_close: close a box by folding its two hinged flaps, left flap first (contact-rich).

The flaps overlap in the middle, so the order matters physically: the right flap closed first
blocks the left one, and the episode fails. Score out of 10: per flap 1 for pushing it past
vertical and 3 for closing it; 2 for the right order.
"""

from __future__ import annotations

import mujoco
import numpy as np

from rise.sim.tasks.base import CartesianMotion, Expert, Task, TaskStatus
from rise.sim.tasks.hinged import CLOSED_ANGLE, PANEL_THICKNESS, Panel, PanelCloser, build_open_box

BOX_HALF = (0.06, 0.075, 0.04)  # outer half sizes x, y, z [m]
WALL = 0.004  # wall half thickness [m]
FLAP_LENGTH = BOX_HALF[1] + 0.008  # slightly over half the opening: the flaps overlap


class BoxClose(Task):
    name = "box_close"
    instruction = "close the box: fold the left flap, then the right flap"
    max_steps = 30 * 16

    def __init__(self):
        height = 2 * BOX_HALF[2]
        self.flaps = (
            Panel("flap_left", +1, FLAP_LENGTH, 2 * BOX_HALF[0] - 0.01, -BOX_HALF[1], height),
            Panel("flap_right", -1, FLAP_LENGTH, 2 * BOX_HALF[0] - 0.01, BOX_HALF[1], height),
        )
        self._closed_at: list[int | None] = [None, None]
        self._past_vertical = [False, False]

    def build(self, spec: mujoco.MjSpec) -> None:
        box = spec.worldbody.add_body(name="box", pos=[0.3, 0.0, 0.0])
        colour = [0.72, 0.55, 0.33, 1]
        build_open_box(box, "box", BOX_HALF, WALL, colour)
        self.flaps[0].build(box, [0.85, 0.68, 0.42, 1])
        self.flaps[1].build(box, [0.62, 0.45, 0.25, 1])

    def bind(self, model: mujoco.MjModel) -> None:
        self._box = model.body("box").id
        for flap in self.flaps:
            flap.bind(model)

    def reset(self, model, data, rng) -> None:
        model.body_pos[self._box] = [rng.uniform(0.27, 0.33), rng.uniform(-0.05, 0.05), 0.0]
        yaw = rng.uniform(-0.25, 0.25)
        model.body_quat[self._box] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        for flap in self.flaps:
            flap.open(model, data, float(rng.uniform(1.9, 2.15)))
        self._closed_at = [None, None]
        self._past_vertical = [False, False]
        self._tick = 0

    def on_tick(self, model, data, tick: int) -> None:
        self._tick = tick

    def status(self, model, data) -> TaskStatus:
        angles = [flap.angle(data) for flap in self.flaps]
        for i, angle in enumerate(angles):
            self._past_vertical[i] |= angle < np.pi / 2
            closed = angle < CLOSED_ANGLE + (0.1 if i == 1 else 0.0)  # right rests on the left
            if closed and self._closed_at[i] is None:
                self._closed_at[i] = self._tick
            elif not closed:
                self._closed_at[i] = None
        left, right = self._closed_at
        in_order = left is not None and (right is None or left <= right)
        success = left is not None and right is not None and left <= right
        failed = right is not None and left is None and angles[0] > 0.6
        score = sum(self._past_vertical) + 3 * (left is not None) + 3 * (right is not None)
        score += 2 * (success or (in_order and right is not None))
        return TaskStatus(success=success, failed=failed, score=int(score),
                          details={"flap_angles": [round(a, 3) for a in angles]})

    def expert(self, env, rng) -> Expert:
        return BoxCloseExpert(env, self)


class BoxCloseExpert(Expert):
    """Closes the left flap, then the right one, then moves clear."""

    def __init__(self, env, task: BoxClose):
        self.motion = CartesianMotion(env)
        clearance = 2 * BOX_HALF[2] + PANEL_THICKNESS + 0.03
        self.closers = [PanelCloser(flap, self.motion, clearance) for flap in task.flaps]
        self.phase = "flap0"

    def act(self, env) -> np.ndarray:
        while self.closers:
            action = self.closers[0].step(env)
            if action is not None:
                return action
            self.closers.pop(0)
            self.phase = f"flap{2 - len(self.closers)}"
        return self.motion.toward(np.array([0.2, 0.0, 0.22]), 0.0)[0]
