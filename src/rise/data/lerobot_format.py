"""LeRobot v3.0 on-disk layout: paths, ``info.json`` features, atomic writes, tasks, episode rows.

The layout written by :class:`rise.data.DatasetWriter` (one episode per data file and per video
file, which is valid v3.0 because readers locate files through ``meta/episodes``)::

    meta/info.json                                     schema, fps, totals, path templates
    meta/stats.json                                    per-feature min/max/mean/std/count
    meta/tasks.parquet                                 task (pandas index) -> task_index
    meta/episodes/chunk-000/file-000.parquet           one row per episode (the commit point)
    data/chunk-000/file-000.parquet                    frames: state, action, indices, capture_ns.*
    videos/observation.images.<cam>/chunk-000/file-000.mp4

Everything here is pure functions over paths, dicts and pyarrow tables; no ROS, no encoders.
Files are replaced atomically (temporary ``*.partial`` sibling, fsync, ``os.replace``, fsync of
the folder), so a crash leaves either the old or the new version of a file. The stats themselves
are computed in :mod:`rise.data.stats`; codecs and mp4 encoding/decoding are in :mod:`rise.data.video`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pa_dataset
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from rise.data.video import VideoCodec  # annotations only: rise.data.video imports this module

CODEBASE_VERSION = "v3.0"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE_PATTERN + ".parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
PARTIAL_SUFFIX = ".partial"  # unfinished or temporary files; never referenced, removed on open
DATA_FILES_SIZE_IN_MB = 100  # LeRobot's defaults, recorded in info.json for its tools
VIDEO_FILES_SIZE_IN_MB = 500

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
CAPTURE_PREFIX = "capture_ns."
SUCCESS_COLUMN = "success"
METADATA_COLUMN = "rise_metadata"
INDEX_COLUMNS = ("frame_index", "episode_index", "index", "task_index")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class DatasetError(RuntimeError):
    """A dataset on disk is unreadable or inconsistent (the message says which file and why)."""


class DatasetSpecMismatch(DatasetError, ValueError):
    """An existing dataset was opened with a spec that differs from its ``info.json``."""

    def __init__(self, field: str, existing: Any, requested: Any):
        self.field = field
        super().__init__(
            f"dataset spec mismatch in {field!r}: the dataset has {existing!r}, the writer was given "
            f"{requested!r}; write to a new dataset folder or use the dataset's {field}"
        )


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What every frame of a dataset holds; fixed for the dataset's lifetime."""

    fps: float  # frame rate of the dataset and of its videos [Hz]
    robot_type: str  # free text recorded in info.json (e.g. the robot config's name)
    joint_names: tuple[str, ...]  # names of observation.state and action entries, in order
    cameras: tuple[tuple[str, int, int], ...]  # (name, height, width) per camera, RGB frames

    def __post_init__(self):
        if not self.fps > 0:
            raise ValueError(f"fps: expected > 0, got {self.fps}")
        if not self.joint_names or len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f"joint_names: expected unique, non-empty names, got {self.joint_names}")
        names = [camera[0] for camera in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"cameras: names must be unique, got {names}")
        for name, height, width in self.cameras:
            if not _NAME.match(name) or name == "state":
                raise ValueError(f"cameras: expected a name like [a-z][a-z0-9_]* (not 'state'), got {name!r}")
            if height <= 0 or width <= 0 or height % 2 or width % 2:
                raise ValueError(f"cameras: {name}: height and width must be even and > 0 (yuv420p), "
                                 f"got {height}x{width}")

    @property
    def camera_names(self) -> tuple[str, ...]:
        """Camera names in spec order."""
        return tuple(camera[0] for camera in self.cameras)


def image_key(camera: str) -> str:
    """Feature key of a camera's video: ``observation.images.<camera>``."""
    return IMAGE_PREFIX + camera


def capture_key(feature: str) -> str:
    """Column with the capture stamps [ns] of a feature: ``capture_ns.<feature>``.

    Prefixed rather than suffixed, so that LeRobot code that finds cameras or the state by
    ``key.startswith("observation.")`` does not take these columns for features.
    """
    return CAPTURE_PREFIX + feature


def chunk_and_file(episode_index: int, chunks_size: int) -> tuple[int, int]:
    """(chunk_index, file_index) of the files of an episode: one file per episode."""
    return divmod(episode_index, chunks_size)


def data_path(root: Path, chunk_index: int, file_index: int) -> Path:
    """Path of a data parquet file."""
    return root / DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)


def video_path(root: Path, camera: str, chunk_index: int, file_index: int) -> Path:
    """Path of a camera's mp4 file."""
    return root / VIDEO_PATH.format(video_key=image_key(camera), chunk_index=chunk_index,
                                    file_index=file_index)


def episodes_path(root: Path, chunk_index: int, file_index: int) -> Path:
    """Path of an episodes-metadata parquet file."""
    return root / EPISODES_PATH.format(chunk_index=chunk_index, file_index=file_index)


def partial_path(path: Path) -> Path:
    """The temporary sibling a file is written to before it is renamed into place."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


# ---------------------------------------------------------------- features and info.json


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def build_features(spec: DatasetSpec, codec: VideoCodec) -> dict[str, dict]:
    """The ``features`` block of ``info.json``: one entry per parquet column and per video."""
    joints = list(spec.joint_names)
    vector = {"dtype": "float32", "shape": [len(joints)], "names": joints}
    scalar_int = {"dtype": "int64", "shape": [1], "names": None}
    features: dict[str, dict] = {STATE_KEY: dict(vector), ACTION_KEY: dict(vector)}
    for name, height, width in spec.cameras:
        features[image_key(name)] = {
            "dtype": "video",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": height,
                "video.width": width,
                "video.codec": codec.name,
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": _number(spec.fps),
                "video.channels": 3,
                "has_audio": False,
            },
        }
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for column in INDEX_COLUMNS:
        features[column] = dict(scalar_int)
    features[capture_key(STATE_KEY)] = dict(scalar_int)
    for name in spec.camera_names:
        features[capture_key(image_key(name))] = dict(scalar_int)
    return features


def build_info(spec: DatasetSpec, codec: VideoCodec, chunks_size: int, *, total_episodes: int,
               total_frames: int, total_tasks: int) -> dict[str, Any]:
    """A complete ``info.json`` document."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": spec.robot_type,
        "total_episodes": total_episodes,
        "total_frames": total_frames,
        "total_tasks": total_tasks,
        "chunks_size": chunks_size,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "fps": _number(spec.fps),
        "splits": {"train": f"0:{total_episodes}"} if total_episodes else {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if spec.cameras else None,
        "features": build_features(spec, codec),
    }


def spec_from_info(info: Mapping[str, Any]) -> DatasetSpec:
    """The :class:`DatasetSpec` an ``info.json`` describes."""
    features = info["features"]
    cameras = tuple(
        (key[len(IMAGE_PREFIX):], int(ft["shape"][0]), int(ft["shape"][1]))
        for key, ft in features.items() if ft.get("dtype") == "video"
    )
    return DatasetSpec(fps=float(info["fps"]), robot_type=info.get("robot_type") or "",
                       joint_names=tuple(features[STATE_KEY]["names"]), cameras=cameras)


def codec_name_from_info(info: Mapping[str, Any]) -> str | None:
    """The codec name recorded for the dataset's videos (None without cameras)."""
    for ft in info["features"].values():
        if ft.get("dtype") == "video":
            return ft.get("info", {}).get("video.codec")
    return None


def check_spec(existing: DatasetSpec, requested: DatasetSpec) -> None:
    """Raise :class:`DatasetSpecMismatch` naming the first field that differs."""
    if not np.isclose(existing.fps, requested.fps, rtol=0, atol=1e-6):
        raise DatasetSpecMismatch("fps", existing.fps, requested.fps)
    if existing.robot_type != requested.robot_type:
        raise DatasetSpecMismatch("robot_type", existing.robot_type, requested.robot_type)
    if existing.joint_names != requested.joint_names:
        raise DatasetSpecMismatch("joint_names", existing.joint_names, requested.joint_names)
    if existing.camera_names != requested.camera_names:
        raise DatasetSpecMismatch("cameras", existing.camera_names, requested.camera_names)
    for old, new in zip(existing.cameras, requested.cameras, strict=True):
        if old != new:
            raise DatasetSpecMismatch(f"cameras[{old[0]}].shape", old[1:], new[1:])


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def naming_os_errors(path: Path) -> Iterator[None]:
    """Re-raise an OSError that names no file (a failed write or fsync) with ``path`` as its file."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a finished file's data to disk."""
    with naming_os_errors(path), open(path, "rb") as f:
        os.fsync(f.fileno())


def replace_durably(source: Path, target: Path) -> None:
    """Rename ``source`` onto ``target`` atomically and make the rename durable."""
    os.replace(source, target)
    fsync_dir(target.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with naming_os_errors(tmp), open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: Path, document: Any) -> None:
    """Atomically write a JSON document (indented like LeRobot's files)."""
    atomic_write_bytes(path, (json.dumps(document, indent=4) + "\n").encode())


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    """Serialise a table to parquet bytes (snappy, like LeRobot)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def read_json(path: Path) -> Any:
    """Load a JSON file, raising :class:`DatasetError` naming the file if it is unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read JSON: {exc}") from exc


# ---------------------------------------------------------------- tasks.parquet


def tasks_table(tasks: Sequence[str]) -> pa.Table:
    """``tasks.parquet`` as LeRobot writes it with pandas: column task_index, index ``task``."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "task": pa.array(list(tasks), pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def read_tasks(root: Path) -> list[str]:
    """Tasks in task_index order from ``tasks.parquet`` (empty if the file is missing)."""
    path = root / TASKS_PATH
    if not path.exists():
        return []
    rows = sorted(pq.read_table(path, columns=["task", "task_index"]).to_pylist(),
                  key=lambda row: row["task_index"])
    return [row["task"] for row in rows]


def tasks_from_episodes(rows: Iterable[Mapping[str, Any]], known: Sequence[str] = ()) -> list[str]:
    """``known`` tasks, then each episode's tasks in order of first appearance (the writer's rule)."""
    tasks = list(known)
    for row in rows:
        for task in row["tasks"]:
            if task not in tasks:
                tasks.append(task)
    return tasks


# ---------------------------------------------------------------- meta/episodes


def load_episode_rows(root: Path, *, with_stats: bool = True) -> list[dict[str, Any]]:
    """Committed episode rows sorted by episode_index; DatasetError unless they are 0..N-1."""
    paths = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    rows: list[dict[str, Any]] = []
    if paths:
        try:
            dataset = pa_dataset.dataset([str(path) for path in paths], format="parquet")
            columns = None if with_stats else [c for c in dataset.schema.names if not c.startswith("stats/")]
            rows = dataset.to_table(columns=columns).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"{root}: cannot read meta/episodes: {exc}") from exc
    rows.sort(key=lambda row: row["episode_index"])
    indices = [row["episode_index"] for row in rows]
    if indices != list(range(len(rows))):
        raise DatasetError(f"{root}: meta/episodes holds episodes {indices}, expected 0..{len(rows) - 1}")
    return rows


def episode_files(root: Path, row: Mapping[str, Any], video_keys: Iterable[str]) -> list[Path]:
    """The data and video files an episode row references."""
    files = [data_path(root, row["data/chunk_index"], row["data/file_index"])]
    for key in video_keys:
        files.append(root / VIDEO_PATH.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                              file_index=row[f"videos/{key}/file_index"]))
    return files


def episode_metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``rise_metadata`` dict of an episode row ({} when absent)."""
    text = row.get(METADATA_COLUMN)
    return json.loads(text) if text else {}
