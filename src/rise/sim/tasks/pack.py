"""pack: put the object into the container, then close the container's lid (multi-stage).

Score out of 10: 2 for lifting the object, 3 for having it in the container, 1 for pushing the
lid past vertical, 2 for closing the lid, 2 for closing it with the object inside (success).
Closing the lid on an empty container fails the episode.
"""

from __future__ import annotations

import mujoco
import numpy as np

from rise.sim.tasks.base import CartesianMotion, Expert, Task, TaskStatus
from rise.sim.tasks.hinged import CLOSED_ANGLE, PANEL_THICKNESS, Panel, PanelCloser, build_open_box

CONTAINER_HALF = (0.06, 0.06, 0.03)  # outer half sizes [m]
WALL = 0.004
OBJECT_HALF = 0.014  # a 2.8 cm cube
GRIPPER_OPEN = 0.035


class Pack(Task):
    name = "pack"
    instruction = "put the cube in the container and close the lid"
    max_steps = 30 * 18

    def __init__(self):
        self.lid = Panel("lid", +1, 2 * CONTAINER_HALF[1], 2 * CONTAINER_HALF[0] - 0.006,
                         -CONTAINER_HALF[1], 2 * CONTAINER_HALF[2])
        self._lifted = False
        self._past_vertical = False

    def build(self, spec: mujoco.MjSpec) -> None:
        container = spec.worldbody.add_body(name="container", pos=[0.3, 0.12, 0.0])
        colour = [0.3, 0.55, 0.35, 1]
        build_open_box(container, "container", CONTAINER_HALF, WALL, colour)
        self.lid.build(container, [0.2, 0.42, 0.26, 1])
        cube = spec.worldbody.add_body(name="cube", pos=[0.3, -0.12, OBJECT_HALF])
        cube.add_freejoint(name="cube")
        cube.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[OBJECT_HALF] * 3, mass=0.04,
                      rgba=[0.95, 0.8, 0.1, 1], friction=[1.2, 0.01, 0.001], condim=4)

    def bind(self, model: mujoco.MjModel) -> None:
        self._container = model.body("container").id
        self._cube = model.body("cube").id
        self._cube_qpos = model.joint("cube").qposadr[0]
        self.lid.bind(model)

    def reset(self, model, data, rng) -> None:
        side = rng.choice([-1.0, 1.0])
        # The lid leans toward the container's local -y: turn it away from the cube's side.
        container_yaw = rng.uniform(-0.2, 0.2) + (np.pi if side > 0 else 0.0)
        model.body_pos[self._container] = [rng.uniform(0.27, 0.33), side * rng.uniform(0.1, 0.14), 0]
        model.body_quat[self._container] = [np.cos(container_yaw / 2), 0, 0, np.sin(container_yaw / 2)]
        cube_yaw = rng.uniform(-0.6, 0.6)
        data.qpos[self._cube_qpos:self._cube_qpos + 7] = [
            rng.uniform(0.24, 0.34), -side * rng.uniform(0.08, 0.16), OBJECT_HALF,
            np.cos(cube_yaw / 2), 0, 0, np.sin(cube_yaw / 2)]
        self.lid.open(model, data, float(rng.uniform(1.9, 2.15)))
        self._lifted = False
        self._past_vertical = False

    def cube_position(self, data) -> np.ndarray:
        return data.xpos[self._cube].copy()

    def cube_yaw(self, data) -> float:
        matrix = data.xmat[self._cube].reshape(3, 3)
        return float(np.arctan2(matrix[1, 0], matrix[0, 0]))

    def container_centre(self, data) -> np.ndarray:
        return data.xpos[self._container].copy()

    def cube_inside(self, data) -> bool:
        rotation = data.xmat[self._container].reshape(3, 3)
        local = rotation.T @ (self.cube_position(data) - self.container_centre(data))
        inner = np.array(CONTAINER_HALF[:2]) - 2 * WALL
        return bool(np.all(np.abs(local[:2]) < inner) and local[2] < 2 * CONTAINER_HALF[2])

    def status(self, model, data) -> TaskStatus:
        self._lifted |= self.cube_position(data)[2] > OBJECT_HALF + 0.04
        lid = self.lid.angle(data)
        self._past_vertical |= lid < np.pi / 2
        inside, closed = self.cube_inside(data), lid < CLOSED_ANGLE
        score = 2 * self._lifted + 3 * inside + self._past_vertical + 2 * closed + 2 * (closed and inside)
        return TaskStatus(success=closed and inside, failed=closed and not inside, score=int(score),
                          details={"lid_angle": round(lid, 3), "cube_inside": inside})

    def expert(self, env, rng) -> Expert:
        return PackExpert(env, self)


class PackExpert(Expert):
    """Picks the cube, drops it in the container, then sweeps the lid closed."""

    CARRY_Z = 0.2

    def __init__(self, env, task: Pack):
        self.task = task
        self.motion = CartesianMotion(env)
        self.closer = PanelCloser(task.lid, self.motion, 2 * CONTAINER_HALF[2] + PANEL_THICKNESS + 0.03)
        self.phase = "above"
        self.timer = 0

    def act(self, env) -> np.ndarray:
        task, motion, data = self.task, self.motion, env.data
        cube = task.cube_position(data)
        yaw = task.cube_yaw(data) + np.pi / 2
        yaw = yaw - np.pi / 2 * np.round((yaw - motion.yaw) / (np.pi / 2))  # a cube: any quarter turn
        if self.phase == "above":
            action, left = motion.toward(cube + [0, 0, 0.09], GRIPPER_OPEN, yaw)
            self.phase = "descend" if left < 0.004 else self.phase
            return action
        if self.phase == "descend":
            action, left = motion.toward(cube + [0, 0, -0.004], GRIPPER_OPEN, yaw, speed_m_s=0.2)
            if left < 0.003:
                self.phase, self.timer = "close", 0
            return action
        if self.phase == "close":
            self.timer += 1
            self.phase = "lift" if self.timer >= 9 else self.phase
            return motion.toward(motion.tool, 0.0)[0]
        centre = task.container_centre(data)
        if self.phase == "lift":
            action, left = motion.toward(np.array([*motion.tool[:2], self.CARRY_Z]), 0.0)
            self.phase = "carry" if left < 0.005 else self.phase
            return action
        if self.phase == "carry":
            action, left = motion.toward(np.array([*centre[:2], self.CARRY_Z]), 0.0)
            self.phase = "lower" if left < 0.005 else self.phase
            return action
        if self.phase == "lower":
            target = np.array([*centre[:2], 2 * CONTAINER_HALF[2] + 0.035])
            action, left = motion.toward(target, 0.0, speed_m_s=0.2)
            if left < 0.004:
                self.phase, self.timer = "release", 0
            return action
        if self.phase == "release":
            self.timer += 1
            self.phase = "lid" if self.timer >= 9 else self.phase
            return motion.toward(motion.tool, GRIPPER_OPEN)[0]
        if self.phase == "lid":
            action = self.closer.step(env)
            if action is not None:
                return action
            self.phase = "done"
        return motion.toward(np.array([0.2, 0.0, 0.22]), 0.0)[0]
