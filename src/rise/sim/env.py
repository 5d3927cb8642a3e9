"""The simulator's plain Python interface (gymnasium-style ``reset`` / ``step`` / ``render``).

Example::

    env = SimEnv("brick_sort")
    observation, info = env.reset(seed=0)
    expert = env.task.expert(env, np.random.default_rng(0))
    while True:
        observation, reward, terminated, truncated, info = env.step(expert.act(env))
        if terminated or truncated:
            break
    print(info["success"], info["score"])

Actions are absolute joint position targets, one per control tick, in the robot config's joint
order (arm joints, then the gripper opening in m) — what the arm bridge sends to a
JointTrajectoryController. Observations are ``{"state": joint positions (float32), "images":
{camera: RGB uint8 HxWx3}, "time_s": sim time}``. The ROS sim node and the imagination
environment expose the same thing.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from rise.config import RobotConfig, load_robot
from rise.sim.scene import SUBSTEPS_PER_TICK, build_spec
from rise.sim.tasks import Task, make_task


class RenderingUnavailable(RuntimeError):
    """No OpenGL context for offscreen rendering; the message says what to install."""


def _make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    try:
        renderer = mujoco.Renderer(model, height, width)
    except Exception as error:  # mujoco raises FatalError or RuntimeError, by backend
        backend = os.environ.get("MUJOCO_GL", "glfw (default)")
        raise RenderingUnavailable(
            f"cannot render the cameras with MUJOCO_GL={backend}: {error}. Headless rendering needs "
            "EGL: `apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` and MUJOCO_GL=egl (or "
            "libosmesa6 with MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa)") from None
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    return renderer


class SimEnv:
    """One simulated robot + task. Not thread-safe: use it from one thread."""

    def __init__(self, task: str | Task, robot: RobotConfig | None = None, *, render: bool = True):
        self.robot = robot or load_robot("sim")
        self.task = make_task(task) if isinstance(task, str) else task
        spec = build_spec(self.robot)
        self.task.build(spec)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self.task.bind(self.model)
        names = self.robot.arm.joint_names
        self._qpos = np.array([self.model.joint(n).qposadr[0] for n in names])
        self._qvel = np.array([self.model.joint(n).dofadr[0] for n in names])
        self._actuators = np.array([self.model.actuator(n).id for n in names])
        self._ctrl_low = self.model.actuator_ctrlrange[self._actuators, 0]
        self._ctrl_high = self.model.actuator_ctrlrange[self._actuators, 1]
        self._home = np.array(self.robot.arm.home)
        self._renderers: dict[str, mujoco.Renderer] = {}
        if render:
            for camera in self.robot.cameras:
                self._renderers[camera.name] = _make_renderer(self.model, camera.height, camera.width)
        self._target = self._home.copy()
        self.tick = 0
        self._rng = np.random.default_rng()

    # -- the interface shared with the imagination environment --------------------------------
    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.robot.arm.joint_names

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.robot.control_rate_hz

    def reset(self, seed: int | None = None, keep_arm: bool = False) -> tuple[dict, dict]:
        """Start a new episode: task objects randomised, the arm at home (or where it is, with
        ``keep_arm``: a live robot does not teleport). Returns (observation, info)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        arm = self.joint_positions() if keep_arm else self._home
        target = self._target.copy() if keep_arm else self._home
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._qpos] = arm
        self.data.ctrl[self._actuators] = target
        self._sync_mimic()
        self.task.reset(self.model, self.data, self._rng)
        mujoco.mj_forward(self.model, self.data)
        self._target = target
        self.tick = 0
        return self.observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """Advance one control tick toward the joint target ``action``.

        Returns (observation, reward, terminated, truncated, info); reward is 1.0 on success.
        The target is clipped to the joint limits and interpolated linearly over the tick.
        """
        action = np.asarray(action, dtype=float)
        if action.shape != self._home.shape:
            raise ValueError(f"action must have shape {self._home.shape} ({', '.join(self.joint_names)}), "
                             f"got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError("action contains NaN or inf")
        target = np.clip(action, self._ctrl_low, self._ctrl_high)
        self.task.on_tick(self.model, self.data, self.tick)
        start = self._target
        for substep in range(1, SUBSTEPS_PER_TICK + 1):
            self.data.ctrl[self._actuators] = start + (target - start) * (substep / SUBSTEPS_PER_TICK)
            mujoco.mj_step(self.model, self.data)
        self._target = target
        self.tick += 1
        info = self._info()
        terminated = info["success"] or info["failed"]
        truncated = not terminated and self.tick >= self.task.max_steps
        return self.observation(), float(info["success"]), terminated, truncated, info

    def step_chunk(self, actions: np.ndarray) -> tuple[list[dict], float, bool, bool, dict]:
        """Run an action chunk (H, J) tick by tick; stops early when the episode ends.

        Returns (observations after each tick, reward, terminated, truncated, info) — the
        interface the imagination environment shares, so rollout code works on either.
        """
        actions = np.asarray(actions, dtype=float)
        if actions.ndim != 2:
            raise ValueError(f"actions must have shape (H, {len(self.joint_names)}), got {actions.shape}")
        observations, reward, terminated, truncated, info = [], 0.0, False, False, {}
        for action in actions:
            observation, reward, terminated, truncated, info = self.step(action)
            observations.append(observation)
            if terminated or truncated:
                break
        return observations, reward, terminated, truncated, info

    def render(self) -> dict[str, np.ndarray]:
        """The current image of every camera (RGB uint8 HxWx3); empty when built with render=False."""
        images = {}
        for name, renderer in self._renderers.items():
            renderer.update_scene(self.data, camera=name)
            images[name] = renderer.render()
        return images

    def observation(self) -> dict:
        return {"state": self.joint_positions().astype(np.float32), "images": self.render(),
                "time_s": float(self.data.time)}

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- simulator-only access (experts, the ROS sim node, evaluation) ------------------------
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._qpos].copy()

    def robot_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper joint position limits in action order."""
        return self._ctrl_low.copy(), self._ctrl_high.copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._qvel].copy()

    def _sync_mimic(self) -> None:
        mirror = self.model.joint("gripper_mirror").qposadr[0]
        self.data.qpos[mirror] = self.data.qpos[self._qpos[-1]]

    def _info(self) -> dict:
        status = self.task.status(self.model, self.data)
        return {"success": status.success, "failed": status.failed, "score": status.score,
                "task": self.task.name, "tick": self.tick, **status.details}
