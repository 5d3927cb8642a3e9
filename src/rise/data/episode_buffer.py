"""The episode a :class:`rise.data.DatasetWriter` is recording, and the frames table it becomes.

:class:`EpisodeBuffer` holds the episode's indices, its per-camera video encoders and image stats,
and the state/action rows and capture stamps buffered so far (images go straight to the encoders).
At the end of the episode it builds the data-file table (the columns ``info.json`` describes) and
the episode's per-feature stats.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rise.data import lerobot_format as fmt
from rise.data.lerobot_format import DatasetSpec
from rise.data.stats import ImageStats, Stats, array_stats
from rise.data.video import VideoEncoder


class EpisodeBuffer:
    """What the writer holds for the episode being recorded."""

    def __init__(self, index: int, task: str, task_index: int, chunk_index: int, file_index: int):
        self.index = index
        self.task = task
        self.task_index = task_index
        self.chunk_index = chunk_index
        self.file_index = file_index
        self.encoders: dict[str, VideoEncoder] = {}
        self.image_stats: dict[str, ImageStats] = {}
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.state_capture_ns: list[int] = []
        self.image_capture_ns: dict[str, list[int]] = {}

    @property
    def length(self) -> int:
        return len(self.states)

    def frames_table(self, spec: DatasetSpec, start: int) -> pa.Table:
        """The episode's data-file table; ``start`` is the dataset index of its first frame."""
        joints = len(spec.joint_names)
        frame_index = np.arange(self.length, dtype=np.int64)

        def vectors(rows: list[np.ndarray]) -> pa.Array:
            flat = pa.array(np.stack(rows).reshape(-1), pa.float32())
            return pa.FixedSizeListArray.from_arrays(flat, joints)

        columns: dict[str, pa.Array] = {
            fmt.STATE_KEY: vectors(self.states),
            fmt.ACTION_KEY: vectors(self.actions),
            "timestamp": pa.array((frame_index / spec.fps).astype(np.float32)),
            "frame_index": pa.array(frame_index),
            "episode_index": pa.array(np.full(self.length, self.index, dtype=np.int64)),
            "index": pa.array(start + frame_index),
            "task_index": pa.array(np.full(self.length, self.task_index, dtype=np.int64)),
            fmt.capture_key(fmt.STATE_KEY): pa.array(np.asarray(self.state_capture_ns, np.int64)),
        }
        for name, stamps in self.image_capture_ns.items():
            columns[fmt.capture_key(fmt.image_key(name))] = pa.array(np.asarray(stamps, np.int64))
        return pa.table(columns)

    def stats(self, table: pa.Table) -> Stats:
        """Per-feature stats of the episode: every column of ``table``, then every camera."""
        stats: Stats = {}
        for column in table.column_names:
            values = table.column(column).combine_chunks()
            if pa.types.is_fixed_size_list(values.type):
                array = values.values.to_numpy().reshape(len(values), -1)
            else:
                array = values.to_numpy()
            stats[column] = array_stats(array)
        for name, accumulator in self.image_stats.items():
            stats[fmt.image_key(name)] = accumulator.stats()
        return stats
