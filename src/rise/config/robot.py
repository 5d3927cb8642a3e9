"""Robot configuration: joints and their limits, cameras, control rate (``config/robots/*.yaml``)."""

from __future__ import annotations

import dataclasses
import enum
import re

from rise.config.schema import FieldError, setting

_ROS_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RobotKind(str, enum.Enum):
    """Where the robot's cameras and arm come from."""

    SIM = "sim"  # the built-in MuJoCo simulator stands in for cameras and arm
    REAL = "real"  # camera driver nodes + an arm behind ros2_control


class CameraDriver(str, enum.Enum):
    """Which backend produces a camera's frames."""

    SIM = "sim"  # rendered by the MuJoCo simulator
    OPENCV = "opencv"  # OpenCV / V4L2 device path or index, or a video file
    REALSENSE = "realsense"  # Intel RealSense through pyrealsense2


def _check_ros_name(key: str, name: str) -> None:
    if not _ROS_NAME.match(name):
        raise FieldError(key, f"expected a ROS name ([a-z][a-z0-9_]*), got {name!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class JointConfig:
    """One joint as the controller and the safety filter see it."""

    name: str = setting(doc="joint name, as in the URDF and /joint_states")
    lower: float = setting(doc="lower position limit [rad, or m for prismatic joints]")
    upper: float = setting(doc="upper position limit [rad, or m for prismatic joints]")
    max_velocity: float = setting(doc="velocity limit [rad/s or m/s]", gt=0)

    def __post_init__(self):
        _check_ros_name("name", self.name)
        if not self.lower < self.upper:
            raise FieldError("upper", f"expected upper > lower ({self.lower}), got {self.upper}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SafetyConfig:
    """The arm bridge's safety filter (joint limits come from the joints themselves)."""

    start_tolerance: float = setting(
        0.2, doc="first command after activation must be this close to the measured pose, per "
        "joint [rad or m]", gt=0)
    command_timeout_s: float = setting(
        0.5, doc="no command for this long: hold the current position [s]", gt=0)
    velocity_scale: float = setting(
        1.0, doc="fraction of each joint's max_velocity the filter allows; the per-tick change "
        "limit is velocity_scale * max_velocity / control_rate_hz", gt=0, le=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArmConfig:
    """The arm: its joints, gripper and the ros2_control controller that drives it."""

    controller: str = setting(
        "arm_controller",
        doc="JointTrajectoryController name: commands go to /<controller>/joint_trajectory",
    )
    joints: tuple[JointConfig, ...] = setting(doc="arm joints, base to tip")
    gripper: JointConfig = setting(doc="gripper joint (opening, m)")
    home: tuple[float, ...] = setting(doc="home pose: one value per arm joint, then the gripper")
    safety: SafetyConfig = setting(SafetyConfig(), doc="safety filter settings")

    def __post_init__(self):
        _check_ros_name("controller", self.controller)
        if not self.joints:
            raise FieldError("joints", "expected at least one joint")
        names = [j.name for j in self.all_joints]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldError(f"joints[{i}].name", f"duplicate joint name {name!r}")
        if len(self.home) != len(names):
            raise FieldError("home", f"expected {len(names)} values ({', '.join(names)}), "
                             f"got {len(self.home)}")
        for i, (joint, value) in enumerate(zip(self.all_joints, self.home, strict=False)):
            if not joint.lower <= value <= joint.upper:
                raise FieldError(f"home[{i}]", f"expected {joint.name} within "
                                 f"[{joint.lower}, {joint.upper}], got {value}")

    @property
    def all_joints(self) -> tuple[JointConfig, ...]:
        """Arm joints followed by the gripper: the order of /joint_states and of actions."""
        return (*self.joints, self.gripper)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.all_joints)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CameraConfig:
    """One camera; it publishes /cameras/<name>/image_raw and /cameras/<name>/camera_info."""

    name: str = setting(doc="camera name, used in topic names")
    driver: CameraDriver = setting(doc="frame source: sim, opencv or realsense")
    width: int = setting(doc="image width [px]", gt=0, le=7680)
    height: int = setting(doc="image height [px]", gt=0, le=4320)
    fps: float = setting(30.0, doc="frame rate [Hz]", gt=0, le=240)
    device: str = setting("", doc="opencv: /dev/videoN, an index or a video file; realsense: serial")
    fourcc: str = setting("", doc="opencv pixel format: MJPG, YUYV or empty for the default")
    calibration: str = setting("", doc="camera_info calibration YAML (empty: ideal pinhole)")

    def __post_init__(self):
        _check_ros_name("name", self.name)
        if self.fourcc not in ("", "MJPG", "YUYV"):
            raise FieldError("fourcc", f"expected 'MJPG', 'YUYV' or '', got {self.fourcc!r}")
        if self.driver is not CameraDriver.SIM and not self.device:
            raise FieldError("device", f"required for the {self.driver.value} driver")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RobotConfig:
    """A robot: what `rise up --robot <name>` brings up."""

    name: str = setting(doc="robot name (the config file's stem)")
    description: str = setting("", doc="one line for humans")
    kind: RobotKind = setting(doc="sim (built-in MuJoCo robot) or real (hardware drivers)")
    urdf: str = setting(doc="robot description, relative to the package share directory")
    control_rate_hz: float = setting(doc="arm control and recording rate [Hz]", gt=0, le=1000)
    arm: ArmConfig = setting(doc="joints, limits, gripper and controller")
    cameras: tuple[CameraConfig, ...] = setting(doc="cameras, in observation order")

    def __post_init__(self):
        _check_ros_name("name", self.name)
        if not self.cameras:
            raise FieldError("cameras", "expected at least one camera")
        seen: set[str] = set()
        for i, camera in enumerate(self.cameras):
            if camera.name in seen:
                raise FieldError(f"cameras[{i}].name", f"duplicate camera name {camera.name!r}")
            seen.add(camera.name)
            simulated = camera.driver is CameraDriver.SIM
            if simulated != (self.kind is RobotKind.SIM):
                expected = "sim" if self.kind is RobotKind.SIM else "opencv or realsense"
                raise FieldError(f"cameras[{i}].driver",
                                 f"expected {expected} for a {self.kind.value} robot")

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)
