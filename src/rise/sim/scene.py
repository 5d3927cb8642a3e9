"""The simulated scene: the arm of ``urdf/`` in MuJoCo, with actuators, cameras, table and lights.

The arm is loaded from the same URDF that ``robot_state_publisher`` reads. On top of it this
module adds what a URDF cannot say: position servos for the joints (a ros2_control
JointTrajectoryController's job on a real arm), the mimic coupling of the two fingers, contact
settings for grasping, a gravity-compensated arm, the scene and wrist cameras, and the table.
Tasks add their objects through ``Task.build(spec)``.
"""

from __future__ import annotations

import mujoco
import numpy as np

from rise import paths
from rise.config import RobotConfig

SUBSTEPS_PER_TICK = 16  # physics steps per control tick: 2.08 ms at 30 Hz
TCP_SITE = "tcp"  # between the fingertips, on the gripper's x axis
TCP_OFFSET_M = 0.095  # the tool point: this far along GRIPPER_BODY's x axis
GRIPPER_BODY = "gripper_base_link"
FINGER_BODIES = ("left_finger_link", "right_finger_link")
ARM_BODIES = ("shoulder_link", "upper_arm_link", "forearm_link", "forearm_roll_link",
              "wrist_pitch_link", "gripper_base_link", "left_finger_link", "right_finger_link",
              "wrist_camera_link")
# Position servo stiffness per joint [N m / rad, N / m]; critically damped.
SERVO_KP = {"waist": 400.0, "shoulder": 600.0, "elbow": 400.0, "forearm_roll": 80.0,
            "wrist_pitch": 80.0, "wrist_roll": 40.0, "gripper": 800.0}
GRIPPER_FORCE_N = 25.0


def look_at_quat(position, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Quaternion of a MuJoCo camera at ``position`` looking at ``target`` (camera looks along -z)."""
    z_axis = np.asarray(position, float) - np.asarray(target, float)
    z_axis /= np.linalg.norm(z_axis)
    x_axis = np.cross(up, z_axis)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([x_axis, y_axis, z_axis]).flatten())
    return quat


def _add_world(spec: mujoco.MjSpec) -> None:
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    spec.visual.quality.offsamples = 0  # no MSAA: ~10x faster offscreen rendering
    table = spec.worldbody.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_PLANE,
                                    size=[1.0, 1.0, 0.05], rgba=[0.78, 0.74, 0.66, 1])
    table.friction = [1.0, 0.005, 0.0001]
    spec.worldbody.add_light(name="top", pos=[0.3, 0.0, 1.5], dir=[0, 0, -1],
                             diffuse=[0.6, 0.6, 0.6], castshadow=False)


def _add_arm_physics(spec: mujoco.MjSpec, robot: RobotConfig) -> None:
    for name in ARM_BODIES:
        spec.body(name).gravcomp = 1.0  # the servos hold the pose without sagging
    for joint in robot.arm.all_joints:
        spec_joint = spec.joint(joint.name)
        spec_joint.armature = 0.05 if joint.name != robot.arm.gripper.name else 0.01
        actuator = spec.add_actuator(name=joint.name, target=joint.name,
                                     trntype=mujoco.mjtTrn.mjTRN_JOINT)
        actuator.set_to_position(kp=SERVO_KP.get(joint.name, 200.0), dampratio=1.0)
        actuator.ctrlrange = [joint.lower, joint.upper]
        actuator.ctrllimited = True
        if joint.name == robot.arm.gripper.name:
            actuator.forcerange = [-GRIPPER_FORCE_N, GRIPPER_FORCE_N]
            actuator.forcelimited = True
    # MuJoCo turns the URDF <mimic> of the second finger into a joint equality; check it is there.
    if not any(e.type == mujoco.mjtEq.mjEQ_JOINT and e.name1 == "gripper_mirror"
               for e in spec.equalities):
        raise ValueError("the URDF's gripper_mirror joint must <mimic> the gripper joint")
    spec.joint("gripper_mirror").armature = 0.01
    for body_name in ("base_link", *ARM_BODIES):
        for geom in spec.body(body_name).geoms:
            if geom.contype:  # collision copy of a link: hide it, the visual copy is drawn
                geom.group = 3
    for body_name in FINGER_BODIES:
        for geom in spec.body(body_name).geoms:
            geom.friction = [1.5, 0.01, 0.001]
            geom.condim = 4
            geom.solref = [0.005, 1.0]
    spec.body(GRIPPER_BODY).add_site(name=TCP_SITE, pos=[TCP_OFFSET_M, 0.0, 0.0], size=[0.005] * 3,
                                     rgba=[0, 1, 0, 0], group=5)


SIM_CAMERAS = ("front", "wrist", "side")


def _add_cameras(spec: mujoco.MjSpec, robot: RobotConfig) -> None:
    names = set(robot.camera_names)
    if "front" in names:
        position = [0.8, 0.0, 0.72]
        spec.worldbody.add_camera(name="front", pos=position, fovy=45.0,
                                  quat=look_at_quat(position, [0.22, 0.0, 0.06]))
    if "wrist" in names:
        # Looks along the gripper's +x (toward the fingertips), image up = gripper +z.
        camera = spec.body("wrist_camera_link").add_camera(name="wrist", fovy=75.0)
        camera.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
        camera.alt.xyaxes = [0, -1, 0, 0, 0, 1]
    if "side" in names:  # a third view, from the arm's left, for multi-camera setups
        position = [0.25, 0.7, 0.45]
        spec.worldbody.add_camera(name="side", pos=position, fovy=50.0,
                                  quat=look_at_quat(position, [0.25, 0.0, 0.06]))
    unknown = names - set(SIM_CAMERAS)
    if unknown:
        raise ValueError(f"the simulator has cameras {', '.join(SIM_CAMERAS)}; the robot config asks "
                         f"for {sorted(unknown)}")


def build_spec(robot: RobotConfig) -> mujoco.MjSpec:
    """The scene without task objects; ``Task.build`` adds those before ``spec.compile()``."""
    spec = mujoco.MjSpec.from_file(str(paths.resolve(robot.urdf)))
    spec.option.timestep = 1.0 / (robot.control_rate_hz * SUBSTEPS_PER_TICK)
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    _add_world(spec)
    _add_arm_physics(spec, robot)
    _add_cameras(spec, robot)
    return spec
