"""Read the joints of a URDF robot description (names, types, limits) with the standard library.

Used to check a robot config against its URDF, and by the safety filter for position limits.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class UrdfJoint:
    name: str
    type: str  # revolute, prismatic, continuous, fixed, ...
    parent: str
    child: str
    lower: float | None
    upper: float | None
    velocity: float | None
    mimic: str | None  # the joint this one mirrors, if any

    @property
    def actuated(self) -> bool:
        return self.type != "fixed" and self.mimic is None


def read_joints(path: str | Path) -> dict[str, UrdfJoint]:
    """All joints of the URDF at ``path``, in file order. Raises ValueError naming the file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise ValueError(f"{path}: cannot read URDF: {error}") from None
    if root.tag != "robot":
        raise ValueError(f"{path}: expected a <robot> root element, got <{root.tag}>")
    joints: dict[str, UrdfJoint] = {}
    for element in root.iter("joint"):
        name = element.get("name")
        if not name:
            raise ValueError(f"{path}: a <joint> has no name")
        limit = element.find("limit")
        mimic = element.find("mimic")

        def number(attr: str, _limit=limit, _name=name) -> float | None:
            if _limit is None or _limit.get(attr) is None:
                return None
            try:
                return float(_limit.get(attr))
            except ValueError:
                raise ValueError(f"{path}: joint {_name}: limit {attr} is not a number") from None

        joints[name] = UrdfJoint(
            name=name,
            type=element.get("type", ""),
            parent=element.find("parent").get("link"),
            child=element.find("child").get("link"),
            lower=number("lower"),
            upper=number("upper"),
            velocity=number("velocity"),
            mimic=mimic.get("joint") if mimic is not None else None,
        )
    return joints
