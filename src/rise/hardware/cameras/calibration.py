"""Camera calibration: ROS ``camera_calibration`` YAML files, ideal pinholes, rescaling.

:class:`Calibration` holds what ``sensor_msgs/CameraInfo`` carries, field for field
(``k``, ``d``, ``r``, ``p``, ``distortion_model``, plus ``width`` / ``height``), so the camera
node fills the message directly. Files use the layout written by ROS's ``camera_calibration``
(``image_width``, ``camera_matrix: {rows, cols, data}``, ...); a bad file is refused with a
:class:`~rise.config.ConfigError` naming the file and the key.

Example::

    from rise.hardware.cameras.calibration import Calibration, load_calibration

    calibration = load_calibration("config/calibration/front.yaml").scaled(320, 240)
    pinhole = Calibration.ideal(640, 480, fov_deg=60.0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rise import paths
from rise.config import CameraConfig
from rise.config.schema import ConfigError, read_yaml

_IDENTITY_3X3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Intrinsics of one camera at one image size, as in ``sensor_msgs/CameraInfo``."""

    width: int
    """Image width [px] the calibration is for."""
    height: int
    """Image height [px] the calibration is for."""
    k: tuple[float, ...]
    """Camera matrix, 3x3 row-major: fx 0 cx / 0 fy cy / 0 0 1 [px]."""
    d: tuple[float, ...]
    """Distortion coefficients of ``distortion_model`` (plumb_bob: k1 k2 t1 t2 k3)."""
    r: tuple[float, ...]
    """Rectification matrix, 3x3 row-major (identity for a monocular camera)."""
    p: tuple[float, ...]
    """Projection matrix, 3x4 row-major: fx' 0 cx' Tx / 0 fy' cy' Ty / 0 0 1 0 [px]."""
    distortion_model: str = "plumb_bob"
    """CameraInfo's distortion model name (plumb_bob, rational_polynomial, equidistant, ...)."""
    camera_name: str = ""
    """The name stored in the file (informational)."""

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"expected a positive image size, got {self.width}x{self.height}")
        for name in ("k", "d", "r", "p"):  # any sequence in, tuples of float out
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for name, size in (("k", 9), ("r", 9), ("p", 12)):
            if len(getattr(self, name)) != size:
                raise ValueError(f"{name}: expected {size} values, got {len(getattr(self, name))}")

    @classmethod
    def ideal(cls, width: int, height: int, fov_deg: float = 60.0) -> Calibration:
        """A distortion-free pinhole with horizontal field of view ``fov_deg``, square pixels and
        the principal point at the image centre (pixel centres at integers)."""
        if not 0 < fov_deg < 180:
            raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
        f = (width / 2) / math.tan(math.radians(fov_deg) / 2)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        return cls(width=width, height=height, k=(f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0),
                   d=(0.0, 0.0, 0.0, 0.0, 0.0), r=_IDENTITY_3X3,
                   p=(f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0))

    def scaled(self, width: int, height: int) -> Calibration:
        """The calibration for images resized to ``width`` x ``height`` (as ``cv2.resize`` does:
        pixel centres map as ``u' = (u + 0.5) * sx - 0.5``). Distortion and R are unchanged."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height

        def row(values: tuple[float, ...], scale: float) -> list[float]:
            # [f, skew, c, (t)]: f, skew and t scale; the principal point keeps pixel centres.
            out = [v * scale for v in values]
            out[2] = (values[2] + 0.5) * scale - 0.5
            return out

        k = (*row(self.k[0:3], sx), *row(self.k[3:6], sy), *self.k[6:9])
        p = (*row(self.p[0:4], sx), *row(self.p[4:8], sy), *self.p[8:12])
        return dataclasses.replace(self, width=width, height=height, k=k, p=p)

    def to_mapping(self) -> dict[str, Any]:
        """The ROS ``camera_calibration`` YAML layout."""
        def matrix(rows: int, cols: int, data: tuple[float, ...]) -> dict[str, Any]:
            return {"rows": rows, "cols": cols, "data": [float(v) for v in data]}

        return {
            "image_width": self.width, "image_height": self.height,
            "camera_name": self.camera_name,
            "camera_matrix": matrix(3, 3, self.k),
            "distortion_model": self.distortion_model,
            "distortion_coefficients": matrix(1, len(self.d), self.d),
            "rectification_matrix": matrix(3, 3, self.r),
            "projection_matrix": matrix(3, 4, self.p),
        }

    def save(self, path: str | Path) -> None:
        """Write the ROS ``camera_calibration`` YAML layout to ``path``."""
        Path(path).write_text(yaml.safe_dump(self.to_mapping(), sort_keys=False), encoding="utf-8")


def load_calibration(path: str | Path) -> Calibration:
    """Read a ROS ``camera_calibration`` YAML file; ConfigError naming file and key if bad.

    Keys other than the ones CameraInfo needs are ignored; ``camera_name`` is optional.
    """
    path = Path(path)
    source = str(path)
    data = read_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError(source, "", f"expected a mapping of calibration keys, got {type(data).__name__}")
    width = _positive_int(data, "image_width", source)
    height = _positive_int(data, "image_height", source)
    model = _required(data, "distortion_model", source)
    if not isinstance(model, str) or not model:
        raise ConfigError(source, "distortion_model", f"expected a model name, got {model!r}")
    name = data.get("camera_name", "")
    return Calibration(
        width=width, height=height,
        k=_matrix(data, "camera_matrix", source, shape=(3, 3)),
        d=_matrix(data, "distortion_coefficients", source, shape=(1, None)),
        r=_matrix(data, "rectification_matrix", source, shape=(3, 3)),
        p=_matrix(data, "projection_matrix", source, shape=(3, 4)),
        distortion_model=model, camera_name=str(name) if name is not None else "")


def calibration_for(config: CameraConfig) -> Calibration:
    """The calibration a camera publishes: its file (relative paths from the package share
    directory) scaled to the configured size, or an ideal 60° pinhole when none is given."""
    if not config.calibration:
        return Calibration.ideal(config.width, config.height)
    return load_calibration(paths.resolve(config.calibration)).scaled(config.width, config.height)


def _required(data: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in data:
        raise ConfigError(source, key, "missing required key")
    return data[key]


def _positive_int(data: Mapping[str, Any], key: str, source: str) -> int:
    value = _required(data, key, source)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(source, key, f"expected a positive integer, got {value!r}")
    return value


def _matrix(data: Mapping[str, Any], key: str, source: str,
            shape: tuple[int, int | None]) -> tuple[float, ...]:
    """A ``{rows, cols, data}`` entry checked against ``shape`` (None: any number of columns)."""
    value = _required(data, key, source)
    if not isinstance(value, Mapping):
        raise ConfigError(source, key, f"expected a mapping with rows, cols and data, got {value!r}")
    rows, cols = (_dimension(value, key, name, source) for name in ("rows", "cols"))
    want_rows, want_cols = shape
    if rows != want_rows or (want_cols is not None and cols != want_cols):
        want = f"{want_rows}x{want_cols if want_cols is not None else 'N'}"
        raise ConfigError(source, key, f"expected a {want} matrix, got {rows}x{cols}")
    values = value.get("data")
    if not isinstance(values, list):
        raise ConfigError(source, f"{key}.data", f"expected a list of numbers, got {values!r}")
    if len(values) != rows * cols:
        raise ConfigError(source, f"{key}.data",
                          f"expected {rows * cols} values ({rows}x{cols}), got {len(values)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(source, f"{key}.data[{i}]", f"expected a finite number, got {v!r}")
    return tuple(float(v) for v in values)


def _dimension(value: Mapping[str, Any], key: str, name: str, source: str) -> int:
    dim = value.get(name)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
        raise ConfigError(source, f"{key}.{name}", f"expected a non-negative integer, got {dim!r}")
    return dim
