"""brick_sort: bricks of two colours arrive on a moving conveyor; put each in the bin of its colour.

Dynamic: the belt keeps moving (MuJoCo surface velocity), bricks arrive one after another, and a
brick that reaches the end of the belt falls off and the episode fails. Score out of 10, per
brick: 2 for lifting it off the belt, 3 for leaving it in the bin of its colour.
"""

from __future__ import annotations

import mujoco
import numpy as np

from rise.sim.tasks.base import CartesianMotion, Expert, Task, TaskStatus

BELT_X = 0.33  # conveyor centre line [m]
BELT_HALF = (0.05, 0.40, 0.02)  # half sizes: width, length, height [m]
BELT_TOP = 2 * BELT_HALF[2]
BRICK_HALF = (0.0125, 0.02, 0.0125)  # 2.5 x 4 x 2.5 cm, long side along the belt
COLOURS = {"red": (0.85, 0.15, 0.12, 1.0), "blue": (0.12, 0.3, 0.85, 1.0)}
BIN_CENTRES = {"red": (0.13, 0.25), "blue": (0.13, -0.25)}
BIN_INNER_HALF = 0.055
BIN_WALL = (0.005, 0.03)  # wall half thickness, half height
PARKED_X = 1.2  # bricks wait on the table behind the scene camera until they arrive
GRIPPER_OPEN = 0.035
GRIPPER_CLOSED = 0.0


class BrickSort(Task):
    name = "brick_sort"
    instruction = "sort the bricks into the bins of their colour"
    max_steps = 30 * 24  # 24 s at 30 Hz

    def __init__(self, bricks: int = 2):
        self.bricks = bricks
        self.colours: list[str] = []
        self.arrival_ticks: list[int] = []
        self._lifted: list[bool] = []

    def build(self, spec: mujoco.MjSpec) -> None:
        belt = spec.worldbody.add_body(name="conveyor", pos=[BELT_X, 0.0, BELT_HALF[2]])
        belt.add_geom(name="belt", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(BELT_HALF),
                      rgba=[0.15, 0.15, 0.15, 1], surfacevel=[0, 0.04, 0, 0, 0, 0],
                      friction=[1.0, 0.005, 0.0001])
        for colour, (x, y) in BIN_CENTRES.items():
            bin_body = spec.worldbody.add_body(name=f"bin_{colour}", pos=[x, y, BIN_WALL[1]])
            r = BIN_INNER_HALF + BIN_WALL[0]
            for i, (dx, dy, sx, sy) in enumerate([(r, 0, BIN_WALL[0], r), (-r, 0, BIN_WALL[0], r),
                                                  (0, r, r, BIN_WALL[0]), (0, -r, r, BIN_WALL[0])]):
                bin_body.add_geom(name=f"bin_{colour}_wall{i}", type=mujoco.mjtGeom.mjGEOM_BOX,
                                  pos=[dx, dy, 0], size=[sx, sy, BIN_WALL[1]],
                                  rgba=[*COLOURS[colour][:3], 0.6])
        for k in range(self.bricks):
            brick = spec.worldbody.add_body(name=f"brick{k}", pos=[PARKED_X + 0.1 * k, 0, BRICK_HALF[2]])
            brick.add_freejoint(name=f"brick{k}")
            brick.add_geom(name=f"brick{k}", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(BRICK_HALF),
                           mass=0.05, rgba=COLOURS["red"], friction=[1.2, 0.01, 0.001], condim=4)

    def bind(self, model: mujoco.MjModel) -> None:
        self._belt = model.geom("belt").id
        self._brick_qpos = [model.joint(f"brick{k}").qposadr[0] for k in range(self.bricks)]
        self._brick_qvel = [model.joint(f"brick{k}").dofadr[0] for k in range(self.bricks)]
        self._brick_geom = [model.geom(f"brick{k}").id for k in range(self.bricks)]
        self._brick_body = [model.body(f"brick{k}").id for k in range(self.bricks)]
        self._bins = {c: model.body(f"bin_{c}").id for c in COLOURS}

    def reset(self, model, data, rng) -> None:
        self.belt_speed = float(rng.uniform(0.03, 0.05))
        model.geom_surfacevel[self._belt][1] = self.belt_speed
        for colour, (x, y) in BIN_CENTRES.items():
            model.body_pos[self._bins[colour]][:2] = (x + rng.uniform(-0.015, 0.015),
                                                     y + rng.uniform(-0.015, 0.015))
        self.colours = [str(c) for c in rng.choice(list(COLOURS), size=self.bricks)]
        if len(set(self.colours)) == 1 and self.bricks > 1:
            self.colours[int(rng.integers(self.bricks))] = "blue" if self.colours[0] == "red" else "red"
        first = int(rng.integers(0, 15))
        gaps = rng.integers(100, 140, size=max(self.bricks - 1, 0))
        self.arrival_ticks = [first, *(first + np.cumsum(gaps)).tolist()]
        self._entry_x = rng.uniform(-0.012, 0.012, size=self.bricks) + BELT_X
        self._entry_yaw = rng.uniform(-0.15, 0.15, size=self.bricks)
        self._lifted = [False] * self.bricks
        for k, colour in enumerate(self.colours):
            model.geom_rgba[self._brick_geom[k]] = COLOURS[colour]
            self._park(data, k)

    def _park(self, data, k: int) -> None:
        adr, dof = self._brick_qpos[k], self._brick_qvel[k]
        data.qpos[adr:adr + 7] = [PARKED_X + 0.1 * k, 0.0, BRICK_HALF[2], 1, 0, 0, 0]
        data.qvel[dof:dof + 6] = 0

    def on_tick(self, model, data, tick: int) -> None:
        for k, arrival in enumerate(self.arrival_ticks):
            adr, dof = self._brick_qpos[k], self._brick_qvel[k]
            if tick < arrival:
                self._park(data, k)
            elif tick == arrival:
                yaw = self._entry_yaw[k]
                data.qpos[adr:adr + 7] = [self._entry_x[k], -BELT_HALF[1] + 0.03, BELT_TOP + BRICK_HALF[2],
                                          np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
                data.qvel[dof:dof + 6] = 0

    def brick_position(self, data, k: int) -> np.ndarray:
        return data.xpos[self._brick_body[k]].copy()

    def brick_yaw(self, data, k: int) -> float:
        matrix = data.xmat[self._brick_body[k]].reshape(3, 3)
        return float(np.arctan2(matrix[1, 0], matrix[0, 0]))

    def arrived(self, data, k: int) -> bool:
        return self.brick_position(data, k)[0] < PARKED_X - 0.2

    def bin_centre(self, model, colour: str) -> np.ndarray:
        return model.body_pos[self._bins[colour]][:2].copy()

    def in_bin(self, model, data, k: int) -> str | None:
        position = self.brick_position(data, k)
        for colour in COLOURS:
            offset = np.abs(position[:2] - self.bin_centre(model, colour))
            if np.all(offset < BIN_INNER_HALF) and position[2] < 2 * BIN_WALL[1]:
                return colour
        return None

    def status(self, model, data) -> TaskStatus:
        score, placed, failed = 0, 0, False
        for k, colour in enumerate(self.colours):
            position = self.brick_position(data, k)
            if self.arrived(data, k) and position[2] > BELT_TOP + 0.05:
                self._lifted[k] = True
            landed = self.in_bin(model, data, k)
            score += 2 * self._lifted[k] + 3 * (landed == colour)
            placed += landed == colour
            off_end = position[1] > BELT_HALF[1] + 0.02 and position[2] < BELT_TOP
            failed |= off_end or (landed is not None and landed != colour)
        return TaskStatus(success=placed == self.bricks, failed=failed and placed < self.bricks,
                          score=score, details={"placed": placed})

    def expert(self, env, rng) -> Expert:
        return BrickSortExpert(env, self, rng)


class BrickSortExpert(Expert):
    """Intercepts each brick on the belt, lifts it and drops it in the bin of its colour."""

    HOVER_Z = 0.12
    CARRY_Z = 0.13

    def __init__(self, env, task: BrickSort, rng: np.random.Generator):
        self.task = task
        self.motion = CartesianMotion(env)
        self.phase = "wait"
        self.brick = 0
        self.timer = 0
        self.lead_s = float(rng.uniform(0.0, 0.1))

    def _grasp_point(self, env, lead_s: float) -> np.ndarray:
        position = self.task.brick_position(env.data, self.brick)
        position[1] += self.task.belt_speed * lead_s
        return position

    def act(self, env) -> np.ndarray:
        task, motion, data = self.task, self.motion, env.data
        if self.brick >= task.bricks:
            return motion.toward(np.array([0.22, 0.0, 0.2]), GRIPPER_OPEN)[0]
        yaw = task.brick_yaw(data, self.brick) + np.pi / 2
        if self.phase == "wait":
            if task.arrived(data, self.brick) and task.brick_position(data, self.brick)[1] > -0.3:
                self.phase = "approach"
            return motion.toward(np.array([BELT_X, -0.12, self.HOVER_Z]), GRIPPER_OPEN, yaw)[0]
        if self.phase == "approach":
            goal = self._grasp_point(env, 0.6 + self.lead_s)
            goal[2] = self.HOVER_Z
            action, left = motion.toward(goal, GRIPPER_OPEN, yaw)
            if left < 0.01:
                self.phase = "descend"
            return action
        if self.phase == "descend":
            goal = self._grasp_point(env, 0.15)
            goal[2] = task.brick_position(data, self.brick)[2] - 0.002
            action, left = motion.toward(goal, GRIPPER_OPEN, yaw, speed_m_s=0.25)
            if left < 0.004:
                self.phase, self.timer = "close", 0
            return action
        if self.phase == "close":
            self.timer += 1
            goal = self._grasp_point(env, 0.1)
            goal[2] = motion.tool[2]
            action, _ = motion.toward(goal, GRIPPER_CLOSED, yaw)
            if self.timer >= 9:
                self.phase = "lift"
            return action
        colour_bin = task.bin_centre(env.model, task.colours[self.brick])
        if self.phase == "lift":
            goal = motion.tool.copy()
            goal[2] = self.CARRY_Z
            action, left = motion.toward(goal, GRIPPER_CLOSED)
            if left < 0.005:
                self.phase = "carry"
            return action
        if self.phase == "carry":
            action, left = motion.toward(np.array([*colour_bin, self.CARRY_Z]), GRIPPER_CLOSED)
            if left < 0.005:
                self.phase, self.timer = "release", 0
            return action
        # release, then go back for the next brick
        self.timer += 1
        action, _ = motion.toward(np.array([*colour_bin, self.CARRY_Z]), GRIPPER_OPEN)
        if self.timer >= 9:
            self.brick += 1
            self.phase = "wait"
        return action
