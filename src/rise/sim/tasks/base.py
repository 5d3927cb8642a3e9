"""What a simulated task provides, and the Cartesian motion helper its scripted expert uses."""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import mujoco
import numpy as np

from rise.sim.kinematics import ArmKinematics, top_down_rotation
from rise.sim.scene import TCP_SITE

if TYPE_CHECKING:
    from rise.sim.env import SimEnv


@dataclasses.dataclass(frozen=True)
class TaskStatus:
    """How far an episode got."""

    success: bool  # the task is done
    failed: bool  # cannot be done any more (e.g. a brick fell off the conveyor)
    score: int  # sub-goals reached, out of 10
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class Task(abc.ABC):
    """A task: its objects, randomised resets, success test, sub-goal score and scripted expert."""

    name: ClassVar[str]
    instruction: ClassVar[str]  # the language instruction stored with each episode
    max_steps: ClassVar[int]  # episode limit in control ticks

    @abc.abstractmethod
    def build(self, spec: mujoco.MjSpec) -> None:
        """Add the task's bodies to the scene before it is compiled."""

    def bind(self, model: mujoco.MjModel) -> None:
        """Look up ids in the compiled model (called once after compile)."""

    @abc.abstractmethod
    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        """Randomise the objects for a new episode (the arm is already at home)."""

    def on_tick(self, model: mujoco.MjModel, data: mujoco.MjData, tick: int) -> None:
        """Called once per control tick before physics (e.g. to release new objects)."""

    @abc.abstractmethod
    def status(self, model: mujoco.MjModel, data: mujoco.MjData) -> TaskStatus:
        """Success, failure and sub-goal score of the current state."""

    @abc.abstractmethod
    def expert(self, env: SimEnv, rng: np.random.Generator) -> Expert:
        """A scripted expert for the episode that ``env`` just reset."""


def object_pos(model: mujoco.MjModel, data: mujoco.MjData, body: str) -> np.ndarray:
    return data.xpos[model.body(body).id].copy()


class Expert(abc.ABC):
    """A scripted policy: ``act(env)`` returns the next absolute joint target (arm + gripper)."""

    @abc.abstractmethod
    def act(self, env: SimEnv) -> np.ndarray: ...


class CartesianMotion:
    """Moves the tool point toward goals at a bounded speed, through IK, from the commanded pose.

    Keeps the commanded joint vector itself (not the measured one), so motion is smooth; each
    call to ``toward`` advances the tool target by at most ``speed_m_s / rate`` and returns the
    new joint target including the gripper value.
    """

    def __init__(self, env: SimEnv, speed_m_s: float = 0.35, yaw_speed_rad_s: float = 2.0):
        arm_names = env.robot.arm.joint_names[:-1]
        self._kin = ArmKinematics(env.model, arm_names, TCP_SITE)
        self._dt = 1.0 / env.robot.control_rate_hz
        self._speed = speed_m_s
        self._yaw_speed = yaw_speed_rad_s
        self._max_joint_step = 2.0 * self._dt  # rad per tick: well inside the 3 rad/s limit
        self.q = env.joint_positions()[:-1].copy()
        self.tool, _ = self._kin.forward(self.q)
        self.yaw = float(np.arctan2(self.tool[1], self.tool[0]))

    def toward(self, goal: np.ndarray, gripper: float, yaw: float | None = None,
               speed_m_s: float | None = None) -> tuple[np.ndarray, float]:
        """One tick toward ``goal`` with the gripper pointing down; returns (joint target, distance left).

        ``yaw`` is the world direction of the finger opening (the gripper is symmetric, so the
        nearer of yaw and yaw + pi is used); None keeps it fixed relative to the arm's radial
        direction, which keeps the wrist still while the waist turns.
        """
        step = (speed_m_s or self._speed) * self._dt
        delta = np.asarray(goal, float) - self.tool
        distance = float(np.linalg.norm(delta))
        radial_before = np.arctan2(self.tool[1], self.tool[0])
        self.tool = self.tool + (delta if distance <= step else delta * (step / distance))
        if yaw is None:
            self.yaw += float(np.arctan2(self.tool[1], self.tool[0]) - radial_before)
        else:
            wrapped = (yaw - self.yaw + np.pi / 2) % np.pi - np.pi / 2
            self.yaw += float(np.clip(wrapped, -self._yaw_speed * self._dt, self._yaw_speed * self._dt))
        q, _ = self._kin.solve(self.q, self.tool, top_down_rotation(self.yaw), iterations=30)
        self.q = self.q + np.clip(q - self.q, -self._max_joint_step, self._max_joint_step)
        return np.append(self.q, gripper), max(distance - step, 0.0)
