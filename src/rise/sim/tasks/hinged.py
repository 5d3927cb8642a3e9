"""Hinged panels (box flaps, a container lid) and the expert motion that closes one by pushing it.

A panel hangs on a hinge along the top edge of a box wall. Angle 0 is closed (lying flat over the
opening); positive angles open it outward, and an open panel leans past vertical so gravity holds
it open against its joint limit. Closing means pushing its outer face inward past vertical and
then pressing it down — a contact-rich motion.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from rise.sim.tasks.base import CartesianMotion

PANEL_THICKNESS = 0.006
CLOSED_ANGLE = 0.2  # below this a panel counts as closed [rad]


def build_open_box(box: mujoco.MjsBody, name: str, half: tuple[float, float, float], wall: float,
                   rgba) -> None:
    """Four walls and a floor in ``box``'s frame: an open-top box of outer half sizes ``half``."""
    hx, hy, hz = half
    walls = [((hx - wall, 0), (wall, hy)), ((-hx + wall, 0), (wall, hy)),
             ((0, hy - wall), (hx, wall)), ((0, -hy + wall), (hx, wall))]
    for i, ((x, y), (sx, sy)) in enumerate(walls):
        box.add_geom(name=f"{name}_wall{i}", type=mujoco.mjtGeom.mjGEOM_BOX, pos=[x, y, hz],
                     size=[sx, sy, hz], rgba=rgba)
    box.add_geom(name=f"{name}_floor", type=mujoco.mjtGeom.mjGEOM_BOX, pos=[0, 0, 0.002],
                 size=[hx, hy, 0.002], rgba=rgba)


@dataclasses.dataclass
class Panel:
    """A hinged panel in a (possibly rotated) box body."""

    name: str
    side: int  # +1: hinge on the box's -y wall, closes toward +y; -1: the mirror image
    length: float  # from hinge to free edge [m]
    width: float  # along the hinge [m]
    hinge_y: float  # hinge line in the box frame [m]
    hinge_z: float

    def build(self, box: mujoco.MjsBody, rgba) -> None:
        body = box.add_body(name=self.name, pos=[0.0, self.hinge_y, self.hinge_z])
        body.add_joint(name=self.name, type=mujoco.mjtJoint.mjJNT_HINGE, axis=[self.side, 0, 0],
                       range=[0.0, 2.2], damping=0.004, armature=0.0005)
        body.add_geom(name=self.name, type=mujoco.mjtGeom.mjGEOM_BOX,
                      pos=[0.0, self.side * self.length / 2, PANEL_THICKNESS / 2],
                      size=[self.width / 2, self.length / 2, PANEL_THICKNESS / 2], mass=0.03,
                      rgba=rgba, friction=[0.8, 0.005, 0.0001], condim=4)

    def bind(self, model: mujoco.MjModel) -> None:
        joint = model.joint(self.name)
        self._qpos = joint.qposadr[0]
        self._joint = joint.id
        self._body = model.body(self.name).id
        self._box = model.body_parentid[self._body]

    def open(self, model: mujoco.MjModel, data: mujoco.MjData, angle: float) -> None:
        model.jnt_range[self._joint][1] = angle
        data.qpos[self._qpos] = angle

    def angle(self, data: mujoco.MjData) -> float:
        return float(data.qpos[self._qpos])

    def hinge_frame(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """World position of the hinge centre and the horizontal unit vector toward 'closed'."""
        rotation = data.xmat[self._box].reshape(3, 3)  # the box's frame, not the turning panel's
        direction = rotation[:, 1] * self.side
        direction[2] = 0.0
        return data.xpos[self._body].copy(), direction / np.linalg.norm(direction)


class PanelCloser:
    """Expert motion: come down outside the open panel, sweep it closed along an arc, press down.

    ``step(env)`` returns the next joint target, or None when the panel is closed and the tool
    has lifted clear.
    """

    START_ANGLE = 2.9  # arc angle where the sweep starts, outside the panel [rad]
    END_ANGLE = 0.25

    def __init__(self, panel: Panel, motion: CartesianMotion, clearance_z: float):
        self.panel = panel
        self.motion = motion
        self.clearance_z = clearance_z  # the tool never goes lower than this [m]
        self.phase = "rise"
        self.theta = self.START_ANGLE
        self.timer = 0

    def _arc_point(self, data, theta: float, radius: float) -> np.ndarray:
        hinge, closed = self.panel.hinge_frame(data)
        point = hinge + radius * (np.cos(theta) * closed + np.array([0, 0, np.sin(theta)]))
        point[2] = max(point[2], self.clearance_z)
        return point

    def _yaw(self, data) -> float:
        _, closed = self.panel.hinge_frame(data)
        return float(np.arctan2(closed[1], closed[0]))

    def step(self, env) -> np.ndarray | None:
        data, motion = env.data, self.motion
        radius = 0.8 * self.panel.length
        yaw = self._yaw(data)
        safe_z = self.clearance_z + 0.11  # above any open panel
        if self.phase == "rise":
            goal = motion.tool.copy()
            goal[2] = max(goal[2], safe_z)
            action, left = motion.toward(goal, 0.0, yaw)
            if left < 0.005:
                self.phase = "above"
            return action
        if self.phase == "above":
            goal = self._arc_point(data, self.START_ANGLE, radius)
            goal[2] = safe_z
            action, left = motion.toward(goal, 0.0, yaw)
            if left < 0.005:
                self.phase = "down"
            return action
        if self.phase == "down":
            action, left = motion.toward(self._arc_point(data, self.START_ANGLE, radius), 0.0, yaw)
            if left < 0.003:
                self.phase = "sweep"
            return action
        if self.phase == "sweep":
            self.theta = max(self.theta - 0.05, self.END_ANGLE)
            action, _ = motion.toward(self._arc_point(data, self.theta, radius), 0.0, yaw, speed_m_s=0.2)
            if self.theta <= self.END_ANGLE:
                self.phase, self.timer = "press", 0
            return action
        if self.phase == "press":
            self.timer += 1
            goal = self._arc_point(data, 0.0, 0.6 * self.panel.length)
            action, _ = motion.toward(goal, 0.0, yaw, speed_m_s=0.15)
            if self.timer >= 25 and self.panel.angle(data) < CLOSED_ANGLE:
                self.phase = "lift"
            return action
        goal = motion.tool.copy()
        goal[2] = self.clearance_z + 0.05
        action, left = motion.toward(goal, 0.0, yaw)
        return None if left < 0.005 else action
