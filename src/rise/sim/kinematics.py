"""Inverse kinematics of the simulated arm's tool point (damped least squares on MuJoCo's Jacobian).

Used by the scripted experts and by end-effector teleoperation in the simulator.
"""

from __future__ import annotations

import mujoco
import numpy as np

from rise.sim.scene import TCP_SITE


def top_down_rotation(yaw: float) -> np.ndarray:
    """Gripper pointing straight down (its x axis = -z), fingers opening along ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.column_stack([[0.0, 0.0, -1.0], [-s, c, 0.0], [c, s, 0.0]])


class ArmKinematics:
    """Forward and inverse kinematics of the tool point over the arm joints (not the gripper)."""

    def __init__(self, model: mujoco.MjModel, joint_names: tuple[str, ...], site: str = TCP_SITE):
        self._model = model
        self._data = mujoco.MjData(model)
        self._site = model.site(site).id
        joints = [model.joint(name) for name in joint_names]
        self._qpos = np.array([j.qposadr[0] for j in joints])
        self._dofs = np.array([j.dofadr[0] for j in joints])
        self.lower = np.array([j.range[0] for j in joints])
        self.upper = np.array([j.range[1] for j in joints])
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tool position (3,) and rotation (3, 3) for arm joint positions ``q``."""
        self._data.qpos[self._qpos] = q
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_comPos(self._model, self._data)  # the Jacobian needs cdof
        return self._data.site_xpos[self._site].copy(), self._data.site_xmat[self._site].reshape(3, 3).copy()

    def _error(self, q, position, rotation, rot_weight) -> np.ndarray:
        current_p, current_r = self.forward(q)
        error = np.zeros(6)
        error[:3] = position - current_p
        if rotation is not None:
            quat_err = np.zeros(4)
            mujoco.mju_mat2Quat(quat_err, (rotation @ current_r.T).flatten())
            axis_angle = np.zeros(3)
            mujoco.mju_quat2Vel(axis_angle, quat_err, 1.0)
            error[3:] = rot_weight * axis_angle
        return error

    def solve(self, q_init: np.ndarray, position: np.ndarray, rotation: np.ndarray | None = None,
              iterations: int = 60, tolerance: float = 1e-4, damping: float = 1e-3,
              rot_weight: float = 0.3) -> tuple[np.ndarray, float]:
        """Joint positions that put the tool at ``position`` (and ``rotation``); returns (q, error).

        Starts from ``q_init`` (use the current pose: solutions stay close to it), respects the
        joint limits, and returns the best found even when the target is out of reach.
        """
        q = np.clip(np.asarray(q_init, float).copy(), self.lower, self.upper)
        error = self._error(q, position, rotation, rot_weight)
        for _ in range(iterations):
            if np.linalg.norm(error) < tolerance:
                break
            mujoco.mj_jacSite(self._model, self._data, self._jacp, self._jacr, self._site)
            jac = np.vstack([self._jacp[:, self._dofs], rot_weight * self._jacr[:, self._dofs]])
            if rotation is None:
                jac, err = jac[:3], error[:3]
            else:
                err = error
            step = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(len(err)), err)
            q = np.clip(q + step, self.lower, self.upper)
            error = self._error(q, position, rotation, rot_weight)
        return q, float(np.linalg.norm(error))
