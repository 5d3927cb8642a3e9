"""Policy runtime (no ROS): verified hot swaps between control ticks, refusals that keep the running
policy, rollback, and the chunk blender's arithmetic and continuity."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rise.models.checkpoint import verify
from rise.models.episodes import NormStats
from rise.policy.advantage import AdvantageBins
from rise.policy.blend import ChunkBlender
from rise.policy.model import PolicyModel, policy_config
from rise.policy.policy_io import WEIGHTS_FILE, Policy
from rise.policy.runtime import PolicyRuntime, PolicySwapError

CAMERAS = ("front", "wrist")
PERIOD_S = 1 / 30


def save_policy(folder: Path, seed: int, step: int = 1, **overrides) -> str:
    """Save a freshly initialised tiny policy (2 cameras, 7 joints) with a manifest; its sha256."""
    torch.manual_seed(seed)
    config = policy_config("tiny", **overrides)
    rng = np.random.default_rng(seed)
    stats = [NormStats(rng.normal(0, 0.1, d).astype(np.float32), np.full(d, 0.1, np.float32))
             for d in (config.state_dim, config.action_dim)]
    bins = AdvantageBins.uniform(config.num_bins)
    policy = Policy(PolicyModel(config).eval(), *stats, bins, cameras=CAMERAS)
    policy.save(folder, step=step, metrics={"seed": seed})
    return verify(folder).sha256


def observation(seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = {name: rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for name in CAMERAS}
    return images, np.zeros(7, np.float32)


def run_ticks(runtime: PolicyRuntime, count: int) -> list:
    """``count`` ticks one control period apart (the worker predicts meanwhile)."""
    rows = []
    for _ in range(count):
        rows.append(runtime.tick())
        time.sleep(PERIOD_S)
    return rows


@pytest.fixture
def running(tmp_path):
    """A runtime driving checkpoint A (enabled, producing targets), the root and A's sha256."""
    root = tmp_path / "checkpoints"
    sha = save_policy(root / "policy" / "a", seed=0)
    runtime = PolicyRuntime(action_dim=7, cameras=CAMERAS, period_s=PERIOD_S, steps=2).start()
    runtime.observe(*observation())
    request = runtime.load_candidate(root / "policy" / "a", sha, root)
    assert request.wait(30) and request.error is None
    runtime.set_enabled(True)
    deadline = time.monotonic() + 20
    while runtime.tick() is None:
        assert time.monotonic() < deadline, "no targets from the first policy"
        time.sleep(PERIOD_S)
    assert runtime.active.sha256 == sha
    yield runtime, root, sha
    runtime.close()


def test_a_good_checkpoint_swaps_between_ticks_and_rollback_returns(running):
    runtime, root, sha_a = running
    sha_b = save_policy(root / "policy" / "b", seed=1, step=2)
    request = runtime.load_candidate(root / "policy" / "b", sha_b, root)
    assert request.wait(30) and request.error is None
    assert runtime.active.sha256 == sha_a  # ready, but live only at the next tick
    rows = runtime.tick()
    assert runtime.active.sha256 == sha_b and runtime.previous.sha256 == sha_a
    assert rows is not None and rows.shape[1] == 7  # the old plan keeps flowing while B thinks
    swap = runtime.swaps[-1]
    assert swap.sha256 == sha_b and swap.announced_s <= swap.ready_s <= swap.live_s and swap.swap_ms > 0
    chunks = runtime.chunks
    assert all(r is not None for r in run_ticks(runtime, 10)) and runtime.chunks > chunks
    status = runtime.status()
    assert status["active_sha256"] == sha_b and status["active_step"] == 2 and status["last_swap_ms"] > 0

    assert runtime.rollback() == sha_a
    assert runtime.active.sha256 == sha_a and runtime.previous is None
    with pytest.raises(PolicySwapError, match="no previous policy"):
        runtime.rollback()


def flip_a_byte(folder: Path) -> None:
    path = folder / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("problem, reason", [
    ("corrupt", "model.safetensors: sha256 mismatch"),
    ("wrong_sha", "does not match the announced"),
    ("outside_root", "outside the checkpoint root"),
    ("pickle", "extra.pkl: refused: only .safetensors and .json"),
    ("wrong_robot", "action_dim 6, but the robot takes 7"),
])
def test_a_bad_checkpoint_is_refused_and_the_old_policy_keeps_running(running, tmp_path, problem, reason):
    runtime, root, sha_a = running
    folder = (tmp_path / "elsewhere" if problem == "outside_root" else root / "policy") / "bad"
    sha = save_policy(folder, seed=2, **({"action_dim": 6} if problem == "wrong_robot" else {}))
    if problem == "corrupt":
        flip_a_byte(folder)
    if problem == "wrong_sha":
        sha = "0" * 64
    if problem == "pickle":
        (folder / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    events = []
    runtime._on_event = lambda kind, message: events.append((kind, message))
    request = runtime.load_candidate(folder, sha, root)
    assert request.wait(30)
    assert request.error is not None and reason in request.error and str(folder) in request.error
    assert events == [("refused", request.error)]
    chunks = runtime.chunks
    rows = run_ticks(runtime, 10)
    assert runtime.active.sha256 == sha_a and runtime.previous is None
    assert all(r is not None and np.all(np.isfinite(r)) for r in rows)
    assert runtime.chunks > chunks  # still predicting
    assert runtime.status()["last_refusal"] == request.error


def test_disabled_runtime_gives_nothing(running):
    runtime, _, _ = running
    runtime.set_enabled(False)
    assert all(rows is None for rows in run_ticks(runtime, 3))
    runtime.set_enabled(True)
    deadline = time.monotonic() + 20
    while runtime.tick() is None:  # enabled again: a fresh chunk, faded in from the joint state
        assert time.monotonic() < deadline, "no targets after enabling again"
        time.sleep(PERIOD_S)


def test_a_tick_late_by_more_than_a_period_counts_as_missed():
    runtime = PolicyRuntime(period_s=0.1)
    for t in (0.0, 0.1, 0.28, 0.4, 0.5, 0.85):  # 0.18 s: late, not missed; 0.35 s: 2 missed
        assert runtime.tick(t) is None  # no policy
    assert runtime.ticks == 6 and runtime.missed_ticks == 2


def test_a_swap_records_the_ticks_missed_while_it_loaded(tmp_path):
    clock = [0.0]
    runtime = PolicyRuntime(period_s=0.1, clock=lambda: clock[0])
    runtime.tick()
    save_policy(tmp_path / "a", seed=1)
    request = runtime.load_candidate(tmp_path / "a")
    assert request.wait(30) and request.error is None
    clock[0] = 0.35  # 0.35 s after the last tick: 2 ticks missed; this tick makes the candidate live
    runtime.tick()
    (record,) = runtime.swaps
    assert record.missed_ticks == 2 and runtime.status()["last_swap_missed_ticks"] == 2
    assert record.swap_ms == pytest.approx(350.0)


# --- chunk blending ------------------------------------------------------------------------------

def column(values) -> np.ndarray:
    return np.asarray(values, dtype=float)[:, None]


def test_blender_cross_fades_a_new_chunk_over_the_old_ones_remaining_steps():
    blender = ChunkBlender(action_dim=1)
    assert blender.pop() is None  # nothing planned, nothing to hold
    assert blender.add(column([0, 1, 2, 3]))  # the first chunk is taken as it is
    assert blender.pop()[0] == 0 and blender.pop()[0] == 1 and len(blender) == 2
    blender.add(column([10, 10, 10, 10]))  # overlap 2: weights 1/3, 2/3
    np.testing.assert_allclose(blender.plan[:, 0], [2 * 2 / 3 + 10 / 3, 3 / 3 + 20 / 3, 10, 10])
    for expected in (14 / 3, 23 / 3, 10, 10, 10, 10):  # then the last target is held
        assert blender.pop()[0] == pytest.approx(expected)


def test_blender_skips_the_past_fades_from_the_start_pose_and_checks_input():
    blender = ChunkBlender(action_dim=2, min_fade=3)
    blender.reset(start=np.array([0.0, 1.0]))
    # Two ticks passed while the chunk was predicted: rows 0-1 are dropped; the start pose is
    # padded to the 3-tick minimum fade (weights 1/4, 2/4, 3/4).
    assert blender.add(np.array([[9, 9], [9, 9], [4, 5], [8, 9], [12, 13], [16, 17]], float), skip=2)
    np.testing.assert_allclose(blender.plan, [[1, 2], [4, 5], [9, 10], [16, 17]])
    assert not blender.add(np.ones((3, 2)), skip=3)  # entirely in the past: plan unchanged
    np.testing.assert_allclose(blender.plan[0], [1, 2])
    with pytest.raises(ValueError, match=r"expected shape \(H, 2\)"):
        blender.add(np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        blender.add(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="min_fade"):
        ChunkBlender(action_dim=2, min_fade=0)


def test_blending_keeps_chunk_boundaries_smooth():
    """Chunks = a smooth path + a per-chunk offset in [-D, D] (prediction noise). Re-planned every
    H/2 ticks with an H/2 fade, no step exceeds the path's own step + 2 D / (fade + 1); switching
    chunks without blending jumps by up to 2 D."""
    rng = np.random.default_rng(0)
    horizon, every, offset = 8, 4, 0.5
    path = np.cumsum(rng.uniform(-0.02, 0.02, (400, 3)), axis=0)
    step = np.abs(np.diff(path, axis=0)).max()
    outputs = {True: [], False: []}
    for blend in (True, False):
        rng = np.random.default_rng(1)
        blender = ChunkBlender(action_dim=3, min_fade=every)
        for t in range(len(path) - horizon):
            if t % every == 0:
                chunk = path[t:t + horizon] + rng.uniform(-offset, offset, 3)
                if blend:
                    blender.add(chunk)
                else:
                    blender.reset()
                    blender.add(chunk)
            outputs[blend].append(blender.pop())
    jumps = {blend: np.abs(np.diff(np.array(rows), axis=0)).max() for blend, rows in outputs.items()}
    bound = step + 2 * offset / (every + 1)
    assert jumps[True] <= bound + 1e-9
    assert jumps[False] > 2 * bound  # the test would catch a blender that did nothing


def test_an_older_announcement_that_finishes_later_is_not_made_live(running):
    runtime, root, sha_a = running
    sha_b = save_policy(root / "policy" / "b", seed=1, step=2)
    announced = time.monotonic()
    assert runtime.load_candidate(root / "policy" / "b", sha_b, root, announced_s=announced).wait(30)
    runtime.tick()
    assert runtime.active.sha256 == sha_b
    late = runtime.load_candidate(root / "policy" / "a", sha_a, root, announced_s=announced - 1.0)
    assert late.wait(30) and "superseded by a newer announcement" in late.error
    runtime.tick()
    assert runtime.active.sha256 == sha_b
