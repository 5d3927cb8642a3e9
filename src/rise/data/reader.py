"""Read LeRobot v3.0 datasets written by :class:`rise.data.DatasetWriter` (and other v3.0 datasets).

Example::

    reader = DatasetReader(Path("datasets/demo"))
    episode = reader.episode(0)
    episode.states.shape                  # (T, J) float32
    episode.images["front"].shape         # (T, H, W, 3) uint8, decoded on first access
    for rgb in reader.frames(0, "front"):  # or one frame at a time
        ...

Episodes are found through ``meta/episodes`` only, so files of an unfinished episode (a writer
killed mid-episode) are never seen. The reader never modifies the folder. Videos are decoded with
PyAV by :func:`rise.data.video.decode_video` (OpenCV silently reads no frames of AV1); decoding
checks that every frame's presentation time is ``from_timestamp + i / fps`` and that the episode
has exactly ``length`` frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rise.data import lerobot_format as fmt
from rise.data.lerobot_format import DatasetError, DatasetSpec
from rise.data.video import decode_video


class _LazyImages(Mapping):
    """camera -> (T, H, W, 3) uint8 frames, each camera decoded on first access and kept."""

    def __init__(self, reader: DatasetReader, episode_index: int, cameras: tuple[str, ...]):
        self._reader = reader
        self._episode_index = episode_index
        self._cameras = cameras
        self._decoded: dict[str, np.ndarray] = {}

    def __getitem__(self, camera: str) -> np.ndarray:
        if camera not in self._cameras:
            raise KeyError(camera)
        if camera not in self._decoded:
            frames = list(self._reader.frames(self._episode_index, camera))
            self._decoded[camera] = np.stack(frames)
        return self._decoded[camera]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cameras)

    def __len__(self) -> int:
        return len(self._cameras)


@dataclasses.dataclass(frozen=True)
class Episode:
    """One episode: arrays over its T frames."""

    index: int  # episode_index
    task: str  # the task it was recorded for
    success: bool | None  # success label given at episode end (None if the dataset has none)
    metadata: dict[str, Any]  # the rise_metadata dict given at episode end (plus recorder counts)
    length: int  # T
    states: np.ndarray  # (T, J) float32 observation.state
    actions: np.ndarray  # (T, J) float32 action (the command actually sent)
    timestamps: np.ndarray  # (T,) float32 seconds from the episode start (frame_index / fps)
    capture_ns: dict[str, np.ndarray]  # "state" and each camera -> (T,) int64 capture stamps [ns]
    images: Mapping[str, np.ndarray]  # camera -> (T, H, W, 3) uint8, decoded on first access


class DatasetReader:
    """Read-only view of a dataset folder's committed episodes."""

    def __init__(self, root: Path):
        self._root = Path(root)
        info_path = self._root / fmt.INFO_PATH
        if not info_path.exists():
            raise DatasetError(f"{self._root}: not a dataset ({fmt.INFO_PATH} is missing)")
        self._info = fmt.read_json(info_path)
        if self._info.get("codebase_version") != fmt.CODEBASE_VERSION:
            raise DatasetError(f"{self._root}: codebase_version {self._info.get('codebase_version')!r}, "
                               f"expected {fmt.CODEBASE_VERSION!r}")
        self._spec = fmt.spec_from_info(self._info)
        self._rows = fmt.load_episode_rows(self._root, with_stats=False)
        self._tasks = tuple(fmt.tasks_from_episodes(self._rows, known=fmt.read_tasks(self._root)))

    @property
    def root(self) -> Path:
        """The dataset folder."""
        return self._root

    @property
    def info(self) -> dict[str, Any]:
        """The parsed ``meta/info.json``."""
        return self._info

    @property
    def spec(self) -> DatasetSpec:
        """fps, robot type, joint names and cameras of the dataset."""
        return self._spec

    @property
    def num_episodes(self) -> int:
        """Committed episodes."""
        return len(self._rows)

    @property
    def num_frames(self) -> int:
        """Frames over all committed episodes."""
        return sum(int(row["length"]) for row in self._rows)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks in task_index order."""
        return self._tasks

    def episode_row(self, index: int) -> dict[str, Any]:
        """The raw ``meta/episodes`` row of an episode."""
        if not 0 <= index < len(self._rows):
            raise IndexError(f"episode {index} out of range: the dataset has {len(self._rows)} episodes")
        return self._rows[index]

    def episode(self, index: int) -> Episode:
        """Load an episode's frame columns; its images decode lazily."""
        row = self.episode_row(index)
        table = self._frames(row)
        states = _vectors(table, fmt.STATE_KEY)
        capture_ns = {"state": table.column(fmt.capture_key(fmt.STATE_KEY)).to_numpy()}
        for name in self._spec.camera_names:
            capture_ns[name] = table.column(fmt.capture_key(fmt.image_key(name))).to_numpy()
        success = row.get(fmt.SUCCESS_COLUMN)
        return Episode(
            index=index, task=row["tasks"][0], success=None if success is None else bool(success),
            metadata=fmt.episode_metadata(row), length=int(row["length"]), states=states,
            actions=_vectors(table, fmt.ACTION_KEY),
            timestamps=table.column("timestamp").to_numpy().astype(np.float32), capture_ns=capture_ns,
            images=_LazyImages(self, index, self._spec.camera_names),
        )

    def frames(self, index: int, camera: str) -> Iterator[np.ndarray]:
        """Decode an episode's frames of ``camera`` one at a time, RGB uint8 (H, W, 3)."""
        if camera not in self._spec.camera_names:
            raise KeyError(f"camera {camera!r}: the dataset has {list(self._spec.camera_names)}")
        row = self.episode_row(index)
        key = fmt.image_key(camera)
        path = self._root / fmt.VIDEO_PATH.format(
            video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
            file_index=row[f"videos/{key}/file_index"])
        return decode_video(path, from_s=float(row[f"videos/{key}/from_timestamp"]),
                            length=int(row["length"]), fps=self._spec.fps)

    def _frames(self, row: Mapping[str, Any]):
        path = fmt.data_path(self._root, row["data/chunk_index"], row["data/file_index"])
        try:
            table = pq.read_table(path)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read episode {row['episode_index']}: {exc}") from exc
        table = table.filter(pc.equal(table.column("episode_index"), row["episode_index"]))
        table = table.sort_by("frame_index")
        if table.num_rows != row["length"]:
            raise DatasetError(f"{path}: episode {row['episode_index']} has {table.num_rows} rows, "
                               f"meta/episodes says {row['length']}")
        return table


def _vectors(table, column: str) -> np.ndarray:
    """A fixed-size-list (or list) float column as a (T, D) float32 array."""
    values = table.column(column).combine_chunks()
    return values.flatten().to_numpy().astype(np.float32).reshape(len(values), -1)
