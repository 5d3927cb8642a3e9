"""StreamSynchronizer with synthetic stamps (jitter, missing, late and out-of-order samples) and
the Recorder core end to end into a dataset."""

from __future__ import annotations

import numpy as np
import pytest

from rise.data import (
    DatasetReader,
    DatasetSpec,
    DatasetWriter,
    EmptyEpisodeError,
    Recorder,
    StreamSynchronizer,
)

MS = 1_000_000
PERIOD_NS = 33 * MS  # ~30 Hz cameras


def camera_stamps(count: int, jitter_ms: float, seed: int, offset_ns: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(-jitter_ms, jitter_ms, count) * MS
    return [int(offset_ns + i * PERIOD_NS + j) for i, j in enumerate(jitter)]


def push_all(sync: StreamSynchronizer, samples: list[tuple[str, int, object]]) -> list:
    out = []
    for stream, stamp, payload in samples:
        out.extend(sync.push(stream, stamp, payload))
    return out


def by_time(*streams: list[tuple[str, int, object]]) -> list[tuple[str, int, object]]:
    return sorted((s for stream in streams for s in stream), key=lambda s: s[1])


def samples(stream: str, stamps: list[int]) -> list[tuple[str, int, object]]:
    return [(stream, stamp, (stream, i)) for i, stamp in enumerate(stamps)]


# ---------------------------------------------------------------- synchronizer


def test_jittered_streams_all_match_their_nearest_samples():
    front = camera_stamps(30, jitter_ms=3, seed=1)
    wrist = camera_stamps(30, jitter_ms=3, seed=2)
    joints = [i * 10 * MS + 1 for i in range(100)]  # 100 Hz
    sync = StreamSynchronizer("front", ["wrist", "joint_state"], tolerance_ns=8 * MS)
    matched = push_all(sync, by_time(samples("front", front), samples("wrist", wrist),
                                     samples("joint_state", joints)))
    matched += sync.flush()
    assert [m.stamp_ns for m in matched] == front
    assert sync.counters.matched == 30 and sync.counters.dropped == 0 and sync.counters.late == 0
    for i, m in enumerate(matched):
        assert m.payloads["front"] == ("front", i) and m.payloads["wrist"] == ("wrist", i)
        nearest_joint = min(joints, key=lambda t: abs(t - m.stamp_ns))
        assert m.stamps_ns["joint_state"] == nearest_joint


def test_the_result_does_not_depend_on_how_streams_interleave():
    front = camera_stamps(20, jitter_ms=2, seed=3)
    wrist = camera_stamps(20, jitter_ms=2, seed=4)
    joints = [i * 10 * MS for i in range(70)]
    streams = [samples("front", front), samples("wrist", wrist), samples("joint_state", joints)]
    results = []
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):  # whole streams one after another
        sync = StreamSynchronizer("front", ["wrist", "joint_state"], tolerance_ns=6 * MS,
                                  max_wait_ns=10**10, max_buffer=100)  # wait for everything
        matched = push_all(sync, [s for k in order for s in streams[k]]) + sync.flush()
        results.append([(m.stamp_ns, m.stamps_ns) for m in matched])
        assert sync.counters.late == 0
    assert results[0] == results[1] == results[2] and len(results[0]) == 20


def test_a_missing_frame_drops_its_reference_sample():
    front = [i * PERIOD_NS for i in range(10)]
    wrist = [t + 2 * MS for i, t in enumerate(front) if i != 4]
    sync = StreamSynchronizer("front", ["wrist"], tolerance_ns=5 * MS)
    matched = push_all(sync, by_time(samples("front", front), samples("wrist", wrist)))
    assert 4 * PERIOD_NS not in [m.stamp_ns for m in matched]
    matched += sync.flush()
    assert len(matched) == 9
    counters = sync.counters
    assert (counters.matched, counters.dropped, counters.dropped_by_stream) == (9, 1, {"wrist": 1})


def test_a_reference_sample_is_dropped_as_soon_as_a_stream_moves_past_its_window():
    sync = StreamSynchronizer("front", ["wrist"], tolerance_ns=5 * MS)
    assert sync.push("front", 100 * MS) == []
    assert sync.push("wrist", 90 * MS) == []  # before the window: keep waiting
    assert sync.pending == 1
    assert sync.push("wrist", 120 * MS) == []  # past 100 + 5 ms without a match
    assert sync.pending == 0 and sync.counters.dropped == 1


def test_a_late_frame_is_counted_and_does_not_change_decisions():
    sync = StreamSynchronizer("front", ["wrist"], tolerance_ns=5 * MS)
    out = push_all(sync, [("front", 0, "f0"), ("front", 33 * MS, "f1"), ("wrist", 1 * MS, "w0"),
                          ("wrist", 34 * MS, "w1"), ("front", 66 * MS, "f2"), ("wrist", 67 * MS, "w2")])
    assert [m.payloads["wrist"] for m in out] == ["w0", "w1", "w2"]
    assert sync.push("wrist", 32 * MS, "w1-duplicate-late") == []  # window of f1 already decided
    assert sync.push("front", 20 * MS, "f-late") == []  # older than the last decided reference
    counters = sync.counters
    assert counters.late == 2 and counters.late_by_stream == {"front": 1, "wrist": 1}
    assert counters.matched == 3


def test_out_of_order_arrival_within_an_undecided_window_is_used():
    sync = StreamSynchronizer("front", ["wrist"], tolerance_ns=10 * MS)
    assert sync.push("front", 133 * MS, "f1") == []
    assert sync.push("front", 100 * MS, "f0") == []  # older reference sample arriving second
    assert sync.push("wrist", 98 * MS, "a") == []  # not at 100 ms yet: a nearer one may follow
    assert sync.push("wrist", 94 * MS, "b") == []  # out of order, but its window is undecided
    out = sync.push("wrist", 131 * MS, "c")  # reached 100 ms: f0 gets the nearest, "a"
    assert [(m.payloads["front"], m.payloads["wrist"]) for m in out] == [("f0", "a")]
    out = sync.push("wrist", 140 * MS, "d")
    assert [(m.payloads["front"], m.payloads["wrist"]) for m in out] == [("f1", "c")]
    assert sync.counters.late == 0 and sync.counters.matched == 2


def test_a_silent_stream_is_given_up_after_max_wait_and_buffers_stay_bounded():
    sync = StreamSynchronizer("front", ["wrist"], tolerance_ns=5 * MS, max_wait_ns=100 * MS, max_buffer=8)
    for i in range(200):
        sync.push("front", i * PERIOD_NS, i)
        assert sync.pending <= 8
    dropped = sync.counters.dropped
    assert dropped >= 190 and sync.counters.dropped_by_stream == {"wrist": dropped}
    late_wrist = sync.push("wrist", 5 * PERIOD_NS)  # its window was given up long ago
    assert late_wrist == [] and sync.counters.late == 1
    flood = StreamSynchronizer("front", ["joint_state"], tolerance_ns=5 * MS, max_buffer=8)
    for i in range(1000):
        flood.push("joint_state", i * MS)
    assert len(flood._buffers["joint_state"].stamps) <= 8


def test_flush_decides_what_is_pending_and_unknown_streams_are_refused():
    sync = StreamSynchronizer("tick", ["front", "joint_state"], tolerance_ns=5 * MS)
    sync.push("tick", 0)
    sync.push("front", 1 * MS, "img")
    sync.push("joint_state", -1 * MS, "q")
    assert sync.pending == 1
    [matched] = sync.flush()
    assert matched.payloads == {"tick": None, "front": "img", "joint_state": "q"}
    with pytest.raises(KeyError, match="unknown stream"):
        sync.push("rear", 0)
    with pytest.raises(ValueError):
        StreamSynchronizer("front", ["front"], tolerance_ns=1)


# ---------------------------------------------------------------- recorder core

JOINTS = ("j1", "j2")
CAMERAS = (("front", 32, 32), ("wrist", 16, 16))
SPEC = DatasetSpec(fps=30, robot_type="sim", joint_names=JOINTS, cameras=CAMERAS)


def gray(shape: tuple[int, int], level: int) -> np.ndarray:
    return np.full((*shape, 3), level, np.uint8)


def feed_episode(recorder: Recorder, count: int, skip_wrist: int | None = None) -> dict:
    """Synthetic streams: jittered cameras, 100 Hz joint state, a command 3 ms after each frame."""
    front = camera_stamps(count, jitter_ms=2, seed=5, offset_ns=10**15)
    wrist = camera_stamps(count, jitter_ms=2, seed=6, offset_ns=10**15)
    events = []
    for i, (f, w) in enumerate(zip(front, wrist, strict=True)):
        events.append((f, "front", gray((32, 32), 8 * i)))
        if i != skip_wrist:
            events.append((w, "wrist", gray((16, 16), 8 * i)))
        if i >= 2:  # the first command answers frame 2
            events.append((f + 3 * MS, "command", np.array([100 + i, -i], np.float32)))
    for k in range(count * 4):
        t = 10**15 - 20 * MS + k * 10 * MS
        events.append((t, "joint_state", np.array([k, 0.5 * k], np.float32)))
    for stamp, stream, payload in sorted(events, key=lambda e: e[0]):
        recorder.on_sample(stream, stamp, payload)
    return {"front": front, "wrist": wrist}


def test_recorder_end_to_end(tmp_path):
    with DatasetWriter(tmp_path, SPEC, codec="h264") as writer:
        recorder = Recorder(writer, tolerance_ns=6 * MS)
        recorder.on_sample("front", 0, gray((32, 32), 0))  # outside an episode: ignored
        recorder.start_episode("pick")
        stamps = feed_episode(recorder, 24, skip_wrist=7)
        report = recorder.stop_episode(success=True, metadata={"operator": "ana"})
    assert (report.episode_index, report.frames, report.dropped, report.late) == (0, 23, 1, 0)
    assert report.dropped_by_stream == {"wrist": 1, "joint_state": 0}
    assert report.duration_s == pytest.approx((stamps["front"][-1] - stamps["front"][0]) / 1e9)

    episode = DatasetReader(tmp_path).episode(0)
    kept = [i for i in range(24) if i != 7]
    assert episode.length == 23 and episode.success is True
    assert episode.metadata["operator"] == "ana"
    assert episode.metadata["sync"]["dropped"] == 1 and episode.metadata["sync"]["reference"] == "front"
    assert episode.capture_ns["front"].tolist() == [stamps["front"][i] for i in kept]
    assert episode.capture_ns["wrist"].tolist() == [stamps["wrist"][i] for i in kept]
    assert np.all(np.abs(episode.capture_ns["state"] - episode.capture_ns["front"]) <= 5 * MS)
    # Before the first command the action is the state; afterwards the command that answered the frame.
    np.testing.assert_array_equal(episode.actions[:2], episode.states[:2])
    np.testing.assert_array_equal(episode.actions[2:], [[100 + i, -i] for i in kept[2:]])
    levels = episode.images["wrist"].reshape(23, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [8 * i for i in kept], atol=3)


def test_recorder_with_a_tick_reference_and_an_empty_episode(tmp_path):
    with DatasetWriter(tmp_path, SPEC, codec="h264") as writer:
        recorder = Recorder(writer, tolerance_ns=4 * MS, reference="tick")
        assert recorder.streams == ("tick", "front", "wrist", "joint_state", "command")
        recorder.start_episode("pick")
        recorder.on_sample("front", 0, gray((32, 32), 0))
        with pytest.raises(EmptyEpisodeError):
            recorder.stop_episode(success=False)
        assert not recorder.recording and not writer.recording and writer.num_episodes == 0
        recorder.start_episode("pick")
        for i in range(5):
            t = i * PERIOD_NS
            recorder.on_sample("tick", t)
            recorder.on_sample("front", t + MS, gray((32, 32), 10 * i))
            recorder.on_sample("wrist", t - MS, gray((16, 16), 10 * i))
            recorder.on_sample("joint_state", t, np.array([i, i], np.float32))
        report = recorder.stop_episode(success=True)
        with pytest.raises(KeyError):
            recorder.on_sample("rear", 0)
    assert report.frames == 5 and report.dropped == 0
    assert DatasetReader(tmp_path).episode(0).states[:, 0].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.faults
def test_a_camera_gap_is_in_the_episode_metadata_and_other_streams_are_unaffected(tmp_path):
    """The wrist camera is silent for 1 s mid-episode and again for the last 0.7 s: both gaps are in
    the metadata; the front camera and the joint state have none."""
    with DatasetWriter(tmp_path, SPEC, codec="h264") as writer:
        recorder = Recorder(writer, tolerance_ns=6 * MS)
        recorder.start_episode("pick")
        count = 90  # 3 s at 30 Hz
        silent = set(range(30, 60)) | set(range(70, 90))
        for i in range(count):
            t = i * PERIOD_NS
            recorder.on_sample("joint_state", t, np.array([i, i], np.float32))
            recorder.on_sample("front", t, gray((32, 32), i))
            if i not in silent:
                recorder.on_sample("wrist", t, gray((16, 16), i))
        recorder.stop_episode(success=True)
    gaps = DatasetReader(tmp_path).episode(0).metadata["sync"]["gaps"]
    assert list(gaps) == ["wrist"]
    assert [(g["start_ns"], g["end_ns"]) for g in gaps["wrist"]] == [(29 * PERIOD_NS, 60 * PERIOD_NS),
                                                                     (69 * PERIOD_NS, 89 * PERIOD_NS)]
    assert gaps["wrist"][0]["seconds"] == pytest.approx(31 * PERIOD_NS / 1e9, abs=1e-3)
