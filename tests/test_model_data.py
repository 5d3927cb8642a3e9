"""Training data for the world model: windows, normalisation, task-centric batches; checkpoints."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from rise.data import DatasetSpec, DatasetWriter
from rise.models.checkpoint import CheckpointError, load_optimizer, save_optimizer, verify, write_manifest
from rise.models.episodes import (
    GroupedBatchSampler,
    NormStats,
    WindowDataset,
    load_episodes,
    to_uint8,
    to_unit_range,
)

SPEC = DatasetSpec(fps=30, robot_type="sim", joint_names=("a", "b"), cameras=(("front", 16, 16),
                                                                               ("wrist", 8, 8)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "toy"
    with DatasetWriter(root, SPEC, codec="h264") as writer:
        for episode in range(3):
            writer.start_episode("toy task")
            for t in range(12):
                level = 20 * t + episode
                writer.add_frame(state=np.array([t, episode], np.float32),
                                 action=np.array([t + 0.5, -t], np.float32),
                                 images={"front": np.full((16, 16, 3), level, np.uint8),
                                         "wrist": np.full((8, 8, 3), 255 - level, np.uint8)},
                                 state_capture_ns=t, image_capture_ns={"front": t, "wrist": t})
            writer.end_episode(success=episode != 1)
    return root


def test_episodes_load_at_model_resolution(dataset):
    episodes = load_episodes([dataset], (8, 8))
    assert len(episodes) == 3 and [e.success for e in episodes] == [True, False, True]
    assert episodes[0].images.shape == (12, 2, 8, 8, 3)
    assert np.abs(episodes[0].images[5, 0].astype(int) - 100).max() <= 8  # front at t=5: level 100
    assert episodes[2].actions[3].tolist() == [3.5, -3.0]


def test_windows_align_context_actions_and_future(dataset):
    episodes = load_episodes([dataset], (8, 8))
    stats = NormStats.of(np.concatenate([e.actions for e in episodes]))
    windows = WindowDataset(episodes, context_frames=2, horizon=3, action_stats=stats)
    assert len(windows) == 3 * (12 - 3 - 1)
    item = windows[0]  # episode 0, t = 1: context frames 0-1, actions 1-3, future frames 2-4
    assert item["context"].shape == (2, 2, 3, 8, 8) and item["future"].shape == (2, 3, 3, 8, 8)
    levels = to_uint8(item["future"][0, :, :, 0, 0].unsqueeze(-1).unsqueeze(-1).expand(-1, 3, 1, 1))
    assert np.abs(levels[:, 0, 0, 0].astype(int) - [40, 60, 80]).max() <= 8
    actions = stats.denormalize(item["actions"])
    assert torch.allclose(actions[:, 0], torch.tensor([1.5, 2.5, 3.5]), atol=1e-4)


def test_unit_range_round_trip():
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8(to_unit_range(images)), images)


def test_norm_stats_round_trip(tmp_path):
    stats = NormStats.of(np.random.default_rng(1).normal(3, 2, (100, 4)))
    stats.save(tmp_path / "s.json")
    again = NormStats.load(tmp_path / "s.json")
    x = np.ones((5, 4), np.float32)
    assert np.allclose(again.denormalize(again.normalize(x)), x, atol=1e-5)


def test_task_centric_batches_draw_few_groups():
    groups = [f"task{i % 6}" for i in range(600)]
    centric = GroupedBatchSampler(groups, batch_size=32, groups_per_batch=2, batches_per_epoch=50, seed=0)
    uniform = GroupedBatchSampler(groups, batch_size=32, groups_per_batch=None, batches_per_epoch=50, seed=0)
    assert all(len({groups[i] for i in batch}) <= 2 for batch in centric)
    assert np.mean([len({groups[i] for i in batch}) for batch in uniform]) > 5
    same = [list(GroupedBatchSampler(groups, 8, 2, 3, seed=4)) for _ in range(2)]
    assert same[0] == same[1]


def make_checkpoint(folder):
    folder.mkdir(parents=True, exist_ok=True)
    model = torch.nn.Linear(3, 2)
    from safetensors.torch import save_file
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"in": 3}))
    return write_manifest(folder, "value", step=7, metrics={"auc": 0.95})


def test_checkpoint_verification(tmp_path):
    root = tmp_path / "checkpoints"
    good = make_checkpoint(root / "good")
    assert verify(root / "good", expected_sha256=good.sha256, root=root, kind="value").step == 7
    with pytest.raises(CheckpointError, match="does not match the announced"):
        verify(root / "good", expected_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="a 'value' checkpoint, expected 'policy'"):
        verify(root / "good", kind="policy")
    # Outside the root, also through a symlink.
    outside = make_checkpoint(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="outside the checkpoint root"):
        verify(tmp_path / "elsewhere", root=root, expected_sha256=outside.sha256)
    os.symlink(tmp_path / "elsewhere", root / "link")
    with pytest.raises(CheckpointError, match="outside the checkpoint root"):
        verify(root / "link", root=root)
    with pytest.raises(CheckpointError, match="outside the checkpoint root"):
        verify(root / ".." / "elsewhere", root=root)


def test_checkpoint_refuses_pickles_truncation_and_extras(tmp_path):
    folder = tmp_path / "ckpt"
    make_checkpoint(folder)
    (folder / "weights.pt").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="weights.pt: refused: only .safetensors and .json"):
        verify(folder)
    (folder / "weights.pt").unlink()
    (folder / "extra.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not listed in the manifest"):
        verify(folder)
    (folder / "extra.json").unlink()
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        verify(folder)
    (folder / "model.safetensors").write_bytes(data[:-10] + b"x" * 10)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        verify(folder)
    with pytest.raises(CheckpointError, match="bytes exceeds"):
        make_checkpoint(tmp_path / "big")
        verify(tmp_path / "big", max_bytes=10)


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    save_optimizer(tmp_path, optimizer)
    again = torch.optim.AdamW(model.parameters(), lr=5e-1)
    load_optimizer(tmp_path, again)
    assert again.param_groups[0]["lr"] == 1e-3
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(again.state_dict()["state"][0][key], optimizer.state_dict()["state"][0][key])
