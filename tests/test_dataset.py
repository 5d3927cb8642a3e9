"""LeRobot v3.0 dataset writer and reader: round trip checked with plain pyarrow and PyAV,
appending, spec mismatches, crash safety (SIGKILL mid-episode), discard and write errors.

Videos are lossy: on the smooth synthetic images used here the decoded pixels differ from the
originals by a mean absolute error of about 2-3 (of 255) for libsvtav1 crf 30 and libx264 crf 23
and about 4-7 for mpeg4 qscale 3; the tests allow 8.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from rise.data import (
    DatasetError,
    DatasetReader,
    DatasetSpec,
    DatasetSpecMismatch,
    DatasetWriteError,
    DatasetWriter,
)
from rise.data import lerobot_format as fmt
from rise.data import writer as writer_module

FPS = 30
JOINTS = ("shoulder", "elbow", "gripper")
CAMERAS = (("front", 48, 64), ("wrist", 32, 32))
SPEC = DatasetSpec(fps=FPS, robot_type="sim_arm", joint_names=JOINTS, cameras=CAMERAS)
MAX_MEAN_ABS_ERROR = 8.0  # of 255, smooth images (measured 2-3 for AV1 / H.264, 4-7 for MPEG-4)


def smooth_image(height: int, width: int, frame: int) -> np.ndarray:
    """A moving colour gradient: smooth, so a lossy codec keeps it close."""
    yy, xx = np.mgrid[0:height, 0:width]
    red = (xx * 160 // width + 4 * frame) % 256
    green = (yy * 160 // height + 40) % 256
    blue = np.full_like(xx, (60 + 6 * frame) % 200)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def frame_values(episode: int, frame: int) -> dict:
    """Deterministic state, action and stamps of a frame."""
    state = np.array([episode, frame, 0.5 * frame], dtype=np.float32) + np.float32(0.125)
    return {
        "state": state,
        "action": state[::-1].copy(),
        "images": {name: smooth_image(h, w, frame + episode) for name, h, w in CAMERAS},
        "state_capture_ns": 10**18 + episode * 10**10 + frame * 33_333_333,
        "image_capture_ns": {name: 10**18 + episode * 10**10 + frame * 33_333_333 + 1000 * (k + 1)
                             for k, (name, _, _) in enumerate(CAMERAS)},
    }


def record(writer: DatasetWriter, episode: int, frames: int, task: str = "pick", success: bool = True,
           metadata: dict | None = None) -> int:
    writer.start_episode(task)
    for frame in range(frames):
        writer.add_frame(**frame_values(episode, frame))
    return writer.end_episode(success=success, metadata=metadata)


def files_named(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern))


def plain_decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of an mp4 and its time, with plain PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(f.to_ndarray(format="rgb24"), float(f.pts * stream.time_base))
                  for f in container.decode(stream)]
    return [f for f, _ in frames], [t for _, t in frames]


def episodes_rows(root: Path) -> list[dict]:
    rows = [row for path in sorted(root.glob("meta/episodes/*/*.parquet"))
            for row in pq.read_table(path).to_pylist()]
    return sorted(rows, key=lambda row: row["episode_index"])


# ---------------------------------------------------------------- round trip


def test_round_trip_checked_with_plain_pyarrow_and_pyav(tmp_path):
    lengths = [12, 7]
    with DatasetWriter(tmp_path, SPEC) as writer:
        assert record(writer, 0, lengths[0], "pick", True, {"operator": "ana"}) == 0
        assert record(writer, 1, lengths[1], "place", False) == 1
        assert writer.num_episodes == 2

    info = json.loads((tmp_path / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 19, 2)
    assert info["fps"] == FPS and info["robot_type"] == "sim_arm" and info["splits"] == {"train": "0:2"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["features"]["observation.state"]["names"] == list(JOINTS)
    video_info = info["features"]["observation.images.front"]
    assert video_info["shape"] == [48, 64, 3] and video_info["info"]["video.codec"] == "av1"

    tasks = pq.read_table(tmp_path / "meta/tasks.parquet").to_pylist()
    assert tasks == [{"task_index": 0, "task": "pick"}, {"task_index": 1, "task": "place"}]

    rows = episodes_rows(tmp_path)
    assert [row["length"] for row in rows] == lengths
    assert [(row["dataset_from_index"], row["dataset_to_index"]) for row in rows] == [(0, 12), (12, 19)]
    assert [row["success"] for row in rows] == [True, False]
    assert [json.loads(row["rise_metadata"]) for row in rows] == [{"operator": "ana"}, {}]
    assert [row["tasks"] for row in rows] == [["pick"], ["place"]]

    for episode, row in enumerate(rows):
        data = pq.read_table(fmt.data_path(tmp_path, row["data/chunk_index"], row["data/file_index"]))
        expected = [frame_values(episode, i) for i in range(row["length"])]
        states = np.array(data.column("observation.state").to_pylist(), dtype=np.float32)
        np.testing.assert_array_equal(states, [v["state"] for v in expected])
        actions = np.array(data.column("action").to_pylist(), dtype=np.float32)
        np.testing.assert_array_equal(actions, [v["action"] for v in expected])
        assert data.column("frame_index").to_pylist() == list(range(row["length"]))
        assert data.column("index").to_pylist() == list(range(row["dataset_from_index"],
                                                              row["dataset_to_index"]))
        assert set(data.column("episode_index").to_pylist()) == {episode}
        assert set(data.column("task_index").to_pylist()) == {episode}
        np.testing.assert_allclose(data.column("timestamp").to_numpy(), np.arange(row["length"]) / FPS,
                                   atol=1e-6)
        assert data.column("capture_ns.observation.state").to_pylist() == [v["state_capture_ns"]
                                                                          for v in expected]
        for name, _, _ in CAMERAS:
            key = f"observation.images.{name}"
            assert data.column(f"capture_ns.{key}").to_pylist() == [v["image_capture_ns"][name]
                                                                   for v in expected]
            path = tmp_path / info["video_path"].format(
                video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"])
            frames, times = plain_decode(path)
            assert len(frames) == row["length"]
            np.testing.assert_allclose(times, np.arange(row["length"]) / FPS, atol=1e-6)
            assert row[f"videos/{key}/to_timestamp"] == pytest.approx(row["length"] / FPS)
            error = np.abs(np.stack(frames).astype(int) - [v["images"][name] for v in expected]).mean()
            assert error < MAX_MEAN_ABS_ERROR


def test_reader_returns_what_was_written(tmp_path):
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 10, "pick", True, {"note": [1, 2]})
        record(writer, 1, 5, "pick", False)
    reader = DatasetReader(tmp_path)
    assert (reader.num_episodes, reader.num_frames, reader.tasks) == (2, 15, ("pick",))
    assert reader.spec == SPEC
    episode = reader.episode(1)
    expected = [frame_values(1, i) for i in range(5)]
    assert (episode.index, episode.task, episode.success, episode.length) == (1, "pick", False, 5)
    assert episode.metadata == {}
    assert reader.episode(0).metadata == {"note": [1, 2]}
    np.testing.assert_array_equal(episode.states, [v["state"] for v in expected])
    np.testing.assert_array_equal(episode.actions, [v["action"] for v in expected])
    assert episode.capture_ns["state"].tolist() == [v["state_capture_ns"] for v in expected]
    assert episode.capture_ns["wrist"].tolist() == [v["image_capture_ns"]["wrist"] for v in expected]
    for name, height, width in CAMERAS:
        images = episode.images[name]
        assert images.shape == (5, height, width, 3) and images.dtype == np.uint8
        assert np.abs(images.astype(int) - [v["images"][name] for v in expected]).mean() < MAX_MEAN_ABS_ERROR
    assert len(list(reader.frames(0, "front"))) == 10


def test_stats_match_the_frames(tmp_path):
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 8)
        record(writer, 1, 4)
    stats = json.loads((tmp_path / "meta/stats.json").read_text())
    states = np.array([frame_values(e, i)["state"] for e, n in ((0, 8), (1, 4)) for i in range(n)])
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], states.std(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["observation.state"]["min"], states.min(axis=0))
    assert stats["observation.state"]["count"] == [12]
    image = np.array(stats["observation.images.front"]["mean"])
    assert image.shape == (3, 1, 1) and np.all((image > 0) & (image < 1))
    assert stats["observation.images.front"]["count"] == [12]


@pytest.mark.parametrize("codec, codec_name", [("h264", "h264"), ("mpeg4", "mpeg4")])
def test_other_codecs_are_frame_exact(tmp_path, codec, codec_name):
    with DatasetWriter(tmp_path, SPEC, codec=codec) as writer:
        record(writer, 0, 9)
    reader = DatasetReader(tmp_path)
    assert reader.info["features"]["observation.images.front"]["info"]["video.codec"] == codec_name
    images = reader.episode(0).images["front"]
    expected = np.stack([frame_values(0, i)["images"]["front"] for i in range(9)])
    assert images.shape == expected.shape
    assert np.abs(images.astype(int) - expected).mean() < MAX_MEAN_ABS_ERROR


def test_chunks_roll_over(tmp_path):
    spec = DatasetSpec(fps=FPS, robot_type="sim_arm", joint_names=JOINTS, cameras=())
    with DatasetWriter(tmp_path, spec, chunks_size=2) as writer:
        for episode in range(3):
            record_states_only(writer, episode)
    assert (tmp_path / "data/chunk-001/file-000.parquet").exists()
    assert DatasetReader(tmp_path).num_frames == 9


def record_states_only(writer: DatasetWriter, episode: int) -> None:
    writer.start_episode("reach")
    for frame in range(3):
        writer.add_frame(state=np.full(3, frame, np.float32), action=np.zeros(3), images={},
                         state_capture_ns=frame, image_capture_ns={})
    writer.end_episode(success=True)


# ---------------------------------------------------------------- re-opening


def test_reopen_appends(tmp_path):
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 6, "pick")
    with DatasetWriter(tmp_path, SPEC) as writer:
        assert writer.num_episodes == 1
        assert record(writer, 1, 4, "stack") == 1
    reader = DatasetReader(tmp_path)
    assert (reader.num_episodes, reader.num_frames, reader.tasks) == (2, 10, ("pick", "stack"))
    row = reader.episode_row(1)
    assert (row["dataset_from_index"], row["data/file_index"]) == (6, 1)
    np.testing.assert_array_equal(reader.episode(1).states[0], frame_values(1, 0)["state"])


@pytest.mark.parametrize("field, changes", [
    ("fps", {"fps": 15}),
    ("robot_type", {"robot_type": "other"}),
    ("joint_names", {"joint_names": ("shoulder", "elbow", "wrist")}),
    ("cameras", {"cameras": (("front", 48, 64),)}),
    ("cameras[front].shape", {"cameras": (("front", 64, 64), ("wrist", 32, 32))}),
])
def test_reopen_refuses_a_different_spec(tmp_path, field, changes):
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 2)
    spec = dataclasses.replace(SPEC, **changes)
    with pytest.raises(DatasetSpecMismatch, match=field.replace("[", r"\[").replace("]", r"\]")) as caught:
        DatasetWriter(tmp_path, spec)
    assert caught.value.field == field


def test_one_writer_per_folder(tmp_path):
    with DatasetWriter(tmp_path, SPEC), pytest.raises(DatasetError, match="another DatasetWriter"):
        DatasetWriter(tmp_path, SPEC)
    DatasetWriter(tmp_path, SPEC).close()  # released


def test_reopen_refuses_a_different_codec(tmp_path):
    DatasetWriter(tmp_path, SPEC).close()
    with pytest.raises(DatasetSpecMismatch, match="codec"):
        DatasetWriter(tmp_path, SPEC, codec="h264")


# ---------------------------------------------------------------- crash safety

CRASH_SCRIPT = """
import sys
from pathlib import Path

import numpy as np

from rise.data import DatasetSpec, DatasetWriter

spec = DatasetSpec(fps={fps}, robot_type="sim_arm", joint_names={joints!r}, cameras={cameras!r})
writer = DatasetWriter(Path(sys.argv[1]), spec)


def add(frame):
    images = {{name: np.full((h, w, 3), 10 * frame, np.uint8) for name, h, w in spec.cameras}}
    writer.add_frame(state=np.full(3, frame), action=np.zeros(3), images=images, state_capture_ns=frame,
                     image_capture_ns=dict.fromkeys(images, frame))


for task, frames in (("pick", 5), ("place", 4)):
    writer.start_episode(task)
    for frame in range(frames):
        add(frame)
    writer.end_episode(success=True)
writer.start_episode("pick")
for frame in range(300):  # until the encoders have written something (they buffer a few frames)
    add(frame)
    if len(list(writer.root.rglob("*.partial"))) == len(spec.cameras):
        break
print("mid-episode", flush=True)
sys.stdin.read()
"""


def test_sigkill_mid_episode_leaves_the_finished_episodes(tmp_path):
    root = tmp_path / "dataset"
    script = tmp_path / "crash_writer.py"
    script.write_text(CRASH_SCRIPT.format(fps=FPS, joints=JOINTS, cameras=CAMERAS))
    process = subprocess.Popen([sys.executable, str(script), str(root)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, env={**os.environ, "SVT_LOG": "1"})
    try:
        assert process.stdout.readline().strip() == b"mid-episode"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
        process.stdin.close()
        process.stdout.close()
    assert files_named(root, "*.partial"), "the killed writer should have left partial files"

    reader = DatasetReader(root)
    assert (reader.num_episodes, reader.num_frames) == (2, 9)
    assert reader.episode(1).images["front"].shape[0] == 4

    with DatasetWriter(root, SPEC) as writer:
        assert files_named(root, "*.partial") == []
        assert writer.num_episodes == 2
        assert record(writer, 2, 3, "pick") == 2
    reader = DatasetReader(root)
    assert (reader.num_episodes, reader.num_frames) == (3, 12)
    assert [len(reader.episode(i).images["wrist"]) for i in range(3)] == [5, 4, 3]


def test_stale_summary_is_rebuilt_on_open(tmp_path):
    """A crash after an episode's commit but before info.json was rewritten."""
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 3, "pick")
        old = {name: (tmp_path / "meta" / name).read_bytes() for name in ("info.json", "tasks.parquet")}
        record(writer, 1, 2, "place")
    for name, content in old.items():
        (tmp_path / "meta" / name).write_bytes(content)
    assert DatasetReader(tmp_path).num_episodes == 2  # the reader trusts meta/episodes
    DatasetWriter(tmp_path, SPEC).close()
    info = json.loads((tmp_path / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 5, 2)
    assert DatasetReader(tmp_path).tasks == ("pick", "place")


def test_files_renamed_but_not_committed_are_removed(tmp_path):
    """A crash after the episode's files were renamed into place but before its commit."""
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 3)
        record(writer, 1, 3)
    (tmp_path / "meta/episodes/chunk-000/file-001.parquet").unlink()
    stray = tmp_path / "videos/observation.images.front/chunk-000/file-007.mp4.partial"
    stray.write_bytes(b"junk")
    assert DatasetReader(tmp_path).num_episodes == 1
    with DatasetWriter(tmp_path, SPEC) as writer:
        assert writer.num_episodes == 1
    assert not (tmp_path / "data/chunk-000/file-001.parquet").exists()
    assert not (tmp_path / "videos/observation.images.wrist/chunk-000/file-001.mp4").exists()
    assert not stray.exists()
    assert json.loads((tmp_path / "meta/info.json").read_text())["total_frames"] == 3


# ---------------------------------------------------------------- discard and write errors


def test_discard_removes_the_episode(tmp_path):
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 3)
        writer.start_episode("pick")
        for frame in range(40):  # enough for SVT-AV1 (~35 frames of lookahead) to write to its file
            writer.add_frame(**frame_values(1, frame))
        assert files_named(tmp_path, "*.partial")
        writer.discard_episode()
        assert not writer.recording and files_named(tmp_path, "*.partial") == []
        assert record(writer, 1, 2) == 1
    assert DatasetReader(tmp_path).num_frames == 5


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _check_after_write_error(root: Path, writer: DatasetWriter) -> None:
    assert not writer.recording
    assert files_named(root, "*.partial") == []
    assert not (root / "data/chunk-000/file-001.parquet").exists()
    assert not (root / "meta/episodes/chunk-000/file-001.parquet").exists()
    reader = DatasetReader(root)
    assert reader.num_episodes == 1 and len(reader.episode(0).images["front"]) == 3


def test_encoder_error_abandons_the_episode(tmp_path, monkeypatch):
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 3)
        writer.start_episode("pick")
        for frame in range(40):  # the encoders have written to their partial files
            writer.add_frame(**frame_values(1, frame))
        assert files_named(tmp_path, "*.partial")
        monkeypatch.setattr(writer_module._VideoEncoder, "encode", _no_space)
        with pytest.raises(DatasetWriteError, match="No space left"):
            writer.add_frame(**frame_values(1, 40))
        _check_after_write_error(tmp_path, writer)
        monkeypatch.undo()
        assert record(writer, 1, 2) == 1


def test_data_file_error_abandons_the_episode(tmp_path, monkeypatch):
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 3)
        monkeypatch.setattr(writer_module, "_write_data_file", _no_space)
        with pytest.raises(DatasetWriteError, match="episode 1 failed"):
            record(writer, 1, 4)
        _check_after_write_error(tmp_path, writer)


def test_summary_error_rolls_the_commit_back(tmp_path, monkeypatch):
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 3)
        real = fmt.atomic_write_json

        def fail_on_info(path, document):
            if path.name == "info.json":
                _no_space()
            real(path, document)

        monkeypatch.setattr(fmt, "atomic_write_json", fail_on_info)
        with pytest.raises(DatasetWriteError, match="summary"):
            record(writer, 1, 2)
        _check_after_write_error(tmp_path, writer)
        monkeypatch.undo()
        assert record(writer, 1, 2) == 1
    assert DatasetReader(tmp_path).num_episodes == 2


# ---------------------------------------------------------------- input checks


def test_bad_frames_are_refused_without_ending_the_episode(tmp_path):
    with DatasetWriter(tmp_path, SPEC) as writer:
        writer.start_episode("pick")
        values = frame_values(0, 0)
        with pytest.raises(ValueError, match="state: expected 3 values"):
            writer.add_frame(**{**values, "state": np.zeros(2)})
        with pytest.raises(ValueError, match=r"images\['front'\]"):
            writer.add_frame(**{**values, "images": {**values["images"], "front": np.zeros((48, 64, 3))}})
        with pytest.raises(ValueError, match="no frames"):
            writer.end_episode(success=True)
        writer.add_frame(**values)
        with pytest.raises(ValueError, match="JSON"):
            writer.end_episode(success=True, metadata={"bad": object()})
        assert writer.end_episode(success=True) == 0


def test_spec_checks():
    with pytest.raises(ValueError, match="even"):
        DatasetSpec(fps=30, robot_type="x", joint_names=("a",), cameras=(("front", 33, 64),))
    with pytest.raises(ValueError, match="joint_names"):
        DatasetSpec(fps=30, robot_type="x", joint_names=("a", "a"), cameras=())


def test_reader_ignores_unreferenced_files_and_leaves_them(tmp_path):
    with DatasetWriter(tmp_path, SPEC) as writer:
        record(writer, 0, 3)
    orphan = tmp_path / "data/chunk-000/file-009.parquet"
    shutil.copy(tmp_path / "data/chunk-000/file-000.parquet", orphan)
    assert DatasetReader(tmp_path).num_frames == 3
    assert orphan.exists()
