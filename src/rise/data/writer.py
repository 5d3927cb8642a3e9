"""Crash-safe LeRobot v3.0 dataset writer: parquet through pyarrow, mp4 through PyAV.

The writer drives the episode lifecycle and crash safety; the on-disk layout is in
:mod:`rise.data.lerobot_format`, the mp4 encoder in :mod:`rise.data.video`, the feature statistics
in :mod:`rise.data.stats` and the buffered episode in :mod:`rise.data.episode_buffer`.

Example::

    spec = DatasetSpec(fps=30, robot_type="sim", joint_names=("j1", "j2"), cameras=(("front", 96, 96),))
    with DatasetWriter(Path("datasets/demo"), spec) as writer:
        writer.start_episode("pick up the cube")
        for state, action, rgb, stamp_ns in stream:
            writer.add_frame(state=state, action=action, images={"front": rgb},
                             state_capture_ns=stamp_ns, image_capture_ns={"front": stamp_ns})
        writer.end_episode(success=True, metadata={"operator": "ana"})

Each episode gets its own data file and its own mp4 per camera. Frames are encoded as they
arrive (only state rows stay in memory), into ``*.partial`` files that are renamed into place by
:meth:`DatasetWriter.end_episode`. The atomic write of the episode's ``meta/episodes`` file is
the commit point; ``tasks.parquet``, ``stats.json`` and ``info.json`` (last) follow. Opening a
dataset removes ``*.partial`` files and data/video files no committed episode references, and
rebuilds the summaries if ``info.json`` is stale, so a process killed at any moment leaves the
dataset as it was after its last finished episode.

A write error (a full disk included) abandons the episode being recorded: its files are removed,
:class:`DatasetWriteError` names the file and the OS error, earlier episodes stay readable and the
writer takes the next episode. With ``min_free_disk_mb``, an episode refuses to start, and stops
(checked once a second), when the dataset's filesystem has less free space: :class:`DiskSpaceError`.

Not thread-safe: one thread (or a caller that serialises calls) per writer. One writer per folder
(an exclusive ``flock`` on ``.rise_writer.lock`` refuses a second one, in any process).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rise.data import lerobot_format as fmt
from rise.data.disk_space import FreeSpaceGuard, is_disk_full
from rise.data.episode_buffer import EpisodeBuffer
from rise.data.lerobot_format import DatasetError, DatasetSpec, DatasetSpecMismatch
from rise.data.stats import ImageStats, Stats, aggregate_stats, stats_from_row, stats_to_json, stats_to_row
from rise.data.video import VideoEncoder as _VideoEncoder  # module-level name, patched in tests
from rise.data.video import video_codec

_LOG = logging.getLogger(__name__)
LOCK_NAME = ".rise_writer.lock"  # flock'ed by the open writer: one writer per dataset folder


class DatasetWriteError(DatasetError):
    """Writing an episode failed; it was abandoned and earlier episodes are intact."""


class DiskSpaceError(DatasetWriteError):
    """The disk is full or below ``min_free_disk_mb``: the episode was not started, or abandoned."""


def _write_data_file(table: pa.Table, path: Path) -> None:
    """Write a frames table to ``path`` and fsync it."""
    with fmt.naming_os_errors(path), open(path, "wb") as f:
        pq.write_table(table, f, compression="snappy")
        f.flush()
        os.fsync(f.fileno())


class DatasetWriter:
    """Appends episodes to a LeRobot v3.0 dataset folder (created if missing).

    ``codec``: ``libsvtav1`` (LeRobot's default; AV1), ``h264`` (libx264) or ``mpeg4``.
    ``crf``: quality, lower is better and bigger (libsvtav1 0-63, default 30; libx264 0-51,
    default 23; mpeg4 qscale 1-31, default 3). ``chunks_size``: files per chunk folder, for new
    datasets (an existing dataset keeps its own). Re-opening an existing dataset appends and
    raises :class:`DatasetSpecMismatch` naming the field if fps, robot_type, joint names,
    cameras, image shapes or codec differ. ``min_free_disk_mb``: see the module doc (0: no minimum).
    """

    def __init__(self, root: Path, spec: DatasetSpec, *, codec: str = "libsvtav1", crf: int | None = None,
                 chunks_size: int = 1000, min_free_disk_mb: float = 0.0):
        self._root = Path(root)
        self._space = FreeSpaceGuard(self._root, min_free_disk_mb)
        self._spec = spec
        self._codec = video_codec(codec)
        self._quality = self._codec.default_quality if crf is None else int(crf)
        if not 0 <= self._quality <= self._codec.max_quality:
            raise ValueError(f"crf: expected 0..{self._codec.max_quality} for {codec}, got {crf}")
        if chunks_size < 1:
            raise ValueError(f"chunks_size: expected >= 1, got {chunks_size}")
        self._chunks_size = chunks_size
        self._rows: list[dict[str, Any]] = []
        self._tasks: list[str] = []
        self._stats: Stats = {}
        self._episode: EpisodeBuffer | None = None
        self._closed = False
        self._lock = self._acquire_lock()
        try:
            if (self._root / fmt.INFO_PATH).exists():
                self._open_existing()
            else:
                self._create()
        except BaseException:
            self._lock.close()
            raise

    # ------------------------------------------------------------ public API

    @property
    def root(self) -> Path:
        """The dataset folder."""
        return self._root

    @property
    def spec(self) -> DatasetSpec:
        """What each frame holds."""
        return self._spec

    @property
    def recording(self) -> bool:
        """True between :meth:`start_episode` and :meth:`end_episode` / :meth:`discard_episode`."""
        return self._episode is not None

    @property
    def num_episodes(self) -> int:
        """Committed episodes in the dataset."""
        return len(self._rows)

    @property
    def disk_space(self) -> FreeSpaceGuard:
        """The dataset folder's free-space guard: ``free_mb()``, ``min_free_disk_mb`` (settable)."""
        return self._space

    def start_episode(self, task: str) -> None:
        """Begin an episode of ``task`` (an instruction); :class:`DiskSpaceError` when low on disk space."""
        if self._closed:
            raise RuntimeError("the dataset writer is closed")
        if self._episode is not None:
            raise RuntimeError("an episode is already being recorded; end or discard it first")
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"task: expected a non-empty string, got {task!r}")
        index = len(self._rows)
        if (shortfall := self._space.shortfall()) is not None:
            raise DiskSpaceError(f"{self._root}: cannot start episode {index}: {shortfall}")
        task_index = self._tasks.index(task) if task in self._tasks else len(self._tasks)
        episode = EpisodeBuffer(index, task, task_index, *fmt.chunk_and_file(index, self._chunks_size))
        self._episode = episode
        try:
            for (name, height, width), (path, _) in zip(self._spec.cameras, self._episode_paths(episode)[1:],
                                                        strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                episode.encoders[name] = _VideoEncoder(path, height, width, self._spec.fps, self._codec,
                                                       self._quality)
                episode.image_stats[name] = ImageStats()
                episode.image_capture_ns[name] = []
        except Exception as exc:
            self._abandon(exc, "starting")

    def add_frame(self, *, state: np.ndarray, action: np.ndarray, images: Mapping[str, np.ndarray],
                  state_capture_ns: int, image_capture_ns: Mapping[str, int]) -> None:
        """Append one frame: joint state, the action actually sent, one RGB image per camera."""
        episode = self._require_episode()
        state_row, action_row = self._check_frame(state, action, images, image_capture_ns)
        try:
            if (low_space := self._space.check_due()) is not None:
                raise low_space
            for name, encoder in episode.encoders.items():
                encoder.encode(images[name], episode.length)
                episode.image_stats[name].update(images[name])
                episode.image_capture_ns[name].append(int(image_capture_ns[name]))
        except Exception as exc:
            self._abandon(exc, f"recording frame {episode.length} of")
        episode.states.append(state_row)
        episode.actions.append(action_row)
        episode.state_capture_ns.append(int(state_capture_ns))

    def end_episode(self, success: bool, metadata: Mapping[str, Any] | None = None) -> int:
        """Finish and commit the episode; returns its index. ``metadata`` must be JSON-serialisable."""
        episode = self._require_episode()
        if episode.length == 0:
            raise ValueError("the episode has no frames; add frames or discard it")
        try:
            metadata_json = json.dumps(dict(metadata or {}), sort_keys=True)
        except TypeError as exc:
            raise ValueError(f"metadata: expected JSON-serialisable values: {exc}") from exc
        try:
            row = self._commit_files(episode, bool(success), metadata_json)
        except Exception as exc:
            self._abandon(exc, "finishing")
        try:
            self._publish(row)
        except Exception as exc:
            fmt.episodes_path(self._root, episode.chunk_index, episode.file_index).unlink(missing_ok=True)
            self._abandon(exc, "updating the dataset summary for", restore_summary=True)
        self._episode = None
        return episode.index

    def discard_episode(self) -> None:
        """Drop the episode being recorded and its files (does nothing when none is)."""
        episode, self._episode = self._episode, None
        if episode is not None:
            self._remove_episode_files(episode)

    def close(self) -> None:
        """Discard an unfinished episode, release the folder and refuse further episodes."""
        self.discard_episode()
        self._closed = True
        self._lock.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------ opening

    def _acquire_lock(self):
        """An exclusive lock on the folder (released by close() or when the process dies)."""
        self._root.mkdir(parents=True, exist_ok=True)
        lock = open(self._root / LOCK_NAME, "a")  # noqa: SIM115 - held open until close()
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DatasetError(f"{self._root}: another DatasetWriter has this dataset open") from None
        return lock

    def _create(self) -> None:
        if any((self._root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
            raise DatasetError(f"{self._root}: meta/episodes exists but meta/info.json is missing")
        self._write_summary(self._rows, self._tasks, self._stats)

    def _open_existing(self) -> None:
        info = fmt.read_json(self._root / fmt.INFO_PATH)
        if info.get("codebase_version") != fmt.CODEBASE_VERSION:
            raise DatasetError(f"{self._root}: codebase_version {info.get('codebase_version')!r}, "
                               f"expected {fmt.CODEBASE_VERSION!r}")
        fmt.check_spec(fmt.spec_from_info(info), self._spec)
        recorded_codec = fmt.codec_name_from_info(info)
        if recorded_codec is not None and recorded_codec != self._codec.name:
            raise DatasetSpecMismatch("codec", recorded_codec, self._codec.name)
        self._chunks_size = int(info["chunks_size"])
        self._rows = fmt.load_episode_rows(self._root)
        self._tasks = fmt.tasks_from_episodes(self._rows)
        self._stats = aggregate_stats([stats_from_row(row) for row in self._rows])
        self._remove_unreferenced_files()
        totals = (info.get("total_episodes"), info.get("total_frames"), info.get("total_tasks"))
        frames = self._total_frames(self._rows)
        stale = totals != (len(self._rows), frames, len(self._tasks)) or self._stats_frames() != frames
        if stale or fmt.read_tasks(self._root) != self._tasks:
            _LOG.warning("%s: meta/info.json is stale; rebuilding it from meta/episodes", self._root)
            self._write_summary(self._rows, self._tasks, self._stats)

    def _stats_frames(self) -> int | None:
        """Frames counted in ``stats.json`` (None if it is missing or unreadable)."""
        try:
            count = fmt.read_json(self._root / fmt.STATS_PATH).get("index", {}).get("count", [0])
            return int(count[0])
        except (DatasetError, AttributeError, TypeError, ValueError, IndexError):
            return None

    def _remove_unreferenced_files(self) -> None:
        video_keys = [fmt.image_key(name) for name in self._spec.camera_names]
        keep = {path for row in self._rows for path in fmt.episode_files(self._root, row, video_keys)}
        candidates = [*self._root.glob("data/chunk-*/file-*.parquet"),
                      *self._root.glob("videos/*/chunk-*/file-*.mp4")]
        for folder in ("data", "videos", "meta"):
            candidates.extend((self._root / folder).rglob("*" + fmt.PARTIAL_SUFFIX))
        for path in candidates:
            if path not in keep:
                _LOG.info("removing %s (not part of a committed episode)", path)
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------ episode internals

    def _require_episode(self) -> EpisodeBuffer:
        if self._episode is None:
            raise RuntimeError("no episode is being recorded; call start_episode first")
        return self._episode

    def _check_frame(self, state: np.ndarray, action: np.ndarray, images: Mapping[str, np.ndarray],
                     image_capture_ns: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
        joints = len(self._spec.joint_names)
        state_row = np.asarray(state, dtype=np.float32).reshape(-1)
        action_row = np.asarray(action, dtype=np.float32).reshape(-1)
        for key, row in (("state", state_row), ("action", action_row)):
            if row.shape != (joints,):
                raise ValueError(f"{key}: expected {joints} values ({', '.join(self._spec.joint_names)}), "
                                 f"got shape {np.shape(state if key == 'state' else action)}")
        expected = set(self._spec.camera_names)
        for key, given in (("images", images), ("image_capture_ns", image_capture_ns)):
            if set(given) != expected:
                raise ValueError(f"{key}: expected cameras {sorted(expected)}, got {sorted(given)}")
        for name, height, width in self._spec.cameras:
            image = images[name]
            is_rgb = isinstance(image, np.ndarray) and image.dtype == np.uint8
            if not is_rgb or image.shape != (height, width, 3):
                raise ValueError(f"images[{name!r}]: expected a uint8 ({height}, {width}, 3) RGB array, got "
                                 f"{getattr(image, 'dtype', type(image).__name__)} {np.shape(image)}")
        return state_row, action_row

    def _episode_paths(self, episode: EpisodeBuffer) -> list[tuple[Path, Path]]:
        """(partial, final) path pairs of the episode's data and video files."""
        data = fmt.data_path(self._root, episode.chunk_index, episode.file_index)
        pairs = [(fmt.partial_path(data), data)]
        for name in self._spec.camera_names:
            final = fmt.video_path(self._root, name, episode.chunk_index, episode.file_index)
            pairs.append((fmt.partial_path(final), final))
        return pairs

    def _commit_files(self, episode: EpisodeBuffer, success: bool, metadata_json: str) -> dict[str, Any]:
        """Finish the files, rename them into place, and write the episode row (the commit)."""
        for encoder in episode.encoders.values():
            encoder.close()
        table = episode.frames_table(self._spec, self._total_frames(self._rows))
        pairs = self._episode_paths(episode)
        pairs[0][0].parent.mkdir(parents=True, exist_ok=True)
        _write_data_file(table, pairs[0][0])
        for partial, final in pairs:
            fmt.replace_durably(partial, final)
        row = self._episode_row(episode, success, metadata_json, episode.stats(table))
        path = fmt.episodes_path(self._root, episode.chunk_index, episode.file_index)
        fmt.atomic_write_bytes(path, fmt.table_to_parquet_bytes(pa.Table.from_pylist([row])))
        return row

    def _episode_row(self, episode: EpisodeBuffer, success: bool, metadata_json: str,
                     stats: Stats) -> dict[str, Any]:
        start = self._total_frames(self._rows)
        row: dict[str, Any] = {
            "episode_index": episode.index, "tasks": [episode.task], "length": episode.length,
            "data/chunk_index": episode.chunk_index, "data/file_index": episode.file_index,
            "dataset_from_index": start, "dataset_to_index": start + episode.length,
        }
        for name in self._spec.camera_names:
            key = fmt.image_key(name)
            row[f"videos/{key}/chunk_index"] = episode.chunk_index
            row[f"videos/{key}/file_index"] = episode.file_index
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = episode.length / self._spec.fps
        row["meta/episodes/chunk_index"] = episode.chunk_index
        row["meta/episodes/file_index"] = episode.file_index
        row.update(stats_to_row(stats))
        row[fmt.SUCCESS_COLUMN] = success
        row[fmt.METADATA_COLUMN] = metadata_json
        return row

    def _publish(self, row: dict[str, Any]) -> None:
        """Rewrite the summaries for the committed row; only then adopt it in memory."""
        rows = [*self._rows, row]
        tasks = fmt.tasks_from_episodes(rows)
        stats = aggregate_stats([self._stats, stats_from_row(row)])
        self._write_summary(rows, tasks, stats)
        self._rows, self._tasks, self._stats = rows, tasks, stats

    def _write_summary(self, rows: list[dict[str, Any]], tasks: list[str], stats: Stats) -> None:
        """tasks.parquet, stats.json, then info.json (its totals mark the summary as fresh)."""
        tasks_parquet = fmt.table_to_parquet_bytes(fmt.tasks_table(tasks))
        fmt.atomic_write_bytes(self._root / fmt.TASKS_PATH, tasks_parquet)
        fmt.atomic_write_json(self._root / fmt.STATS_PATH, stats_to_json(stats))
        info = fmt.build_info(self._spec, self._codec, self._chunks_size, total_episodes=len(rows),
                              total_frames=self._total_frames(rows), total_tasks=len(tasks))
        fmt.atomic_write_json(self._root / fmt.INFO_PATH, info)

    @staticmethod
    def _total_frames(rows: list[dict[str, Any]]) -> int:
        return sum(int(row["length"]) for row in rows)

    def _remove_episode_files(self, episode: EpisodeBuffer) -> None:
        for encoder in episode.encoders.values():
            encoder.abort()
        for partial, final in self._episode_paths(episode):
            partial.unlink(missing_ok=True)
            final.unlink(missing_ok=True)

    def _abandon(self, exc: Exception, doing: str, restore_summary: bool = False) -> NoReturn:
        """Remove the episode's files (and with ``restore_summary`` rewrite the committed episodes'
        summary) and raise :class:`DatasetWriteError`, or :class:`DiskSpaceError`, from ``exc``."""
        episode, self._episode = self._episode, None
        try:
            self._remove_episode_files(episode)
        except OSError as cleanup_exc:  # what is left is removed when the dataset is next opened
            _LOG.error("could not remove the files of abandoned episode %d: %s", episode.index, cleanup_exc)
        if restore_summary:  # tasks.parquet and stats.json may count the abandoned episode
            try:
                self._write_summary(self._rows, self._tasks, self._stats)
            except OSError as summary_exc:  # rebuilt when the dataset is next opened
                _LOG.error("could not restore the summary of %s: %s", self._root, summary_exc)
        error = DiskSpaceError if is_disk_full(exc) else DatasetWriteError
        raise error(f"{self._root}: {doing} episode {episode.index} failed, the episode was "
                    f"abandoned and earlier episodes are intact: {exc}") from exc
