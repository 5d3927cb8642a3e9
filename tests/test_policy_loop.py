"""Warm-up and the imagination loop on a toy dataset with tiny models (learned and oracle world model)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rise.models.checkpoint import verify
from rise.models.episodes import load_episodes
from rise.models.fit_value import load_value
from rise.policy.data import label_episodes, to_tensors
from rise.policy.improve import ImproveConfig, improve, read_metrics
from rise.policy.learner import PolicyLearner, ema_decay_at
from rise.policy.policy_io import Policy
from rise.policy.sim_eval import evaluate_policy, wilson_interval
from rise.policy.warmup import WarmupConfig, load_training_data, warmup
from toy_data import tiny_checkpoints, write_toy_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Toy data, tiny dynamics + value checkpoints and a 6-step warm-up policy."""
    root = tmp_path_factory.mktemp("loop")
    dataset = write_toy_dataset(root / "toy")
    dynamics, value = tiny_checkpoints(dataset, root / "ckpt")
    cfg = WarmupConfig(datasets=(str(dataset),), output=str(root / "ckpt" / "warmup"), value=str(value),
                       model="tiny", steps=6, batch_size=8, checkpoint_every=3)
    policy = warmup(cfg, progress=False)
    return {"dataset": dataset, "dynamics": dynamics, "value": value, "warmup": policy, "root": root}


def test_labels_give_demos_the_best_bin_and_spread_the_rest(world):
    episodes = load_episodes([world["dataset"]], (16, 16))
    value, _ = load_value(world["value"])
    labels = label_episodes(episodes, value, horizon=3, num_bins=10)
    for episode, bins in zip(episodes, labels.bins_per_episode, strict=True):
        if episode.is_demo:
            assert (bins == labels.bins.best).all()
    pairs = zip(episodes, labels.bins_per_episode, strict=True)
    rollouts = np.concatenate([b for e, b in pairs if not e.is_demo])
    assert len(set(rollouts.tolist())) > 2  # bins fitted to the rollouts' advantages use the range
    assert sum(labels.histogram()) == sum(e.length for e in episodes)


def test_warmup_checkpoint_is_a_verified_policy(world):
    folder = world["warmup"]
    manifest = verify(folder, kind="policy")
    assert manifest.step == 6 and "loss" in manifest.metrics
    policy = Policy.load(folder)
    assert policy.cameras == ("front", "wrist")
    chunk = policy.predict(np.zeros((2, 16, 16, 3), np.uint8), np.zeros(7, np.float32),
                           generator=torch.Generator().manual_seed(0))
    assert chunk.shape == (3, 7) and np.isfinite(chunk).all()
    labels = json.loads((folder.parent / "labels.json").read_text())
    assert labels["frames"] == 240 and len(labels["histogram"]) == 10


def _improve(world, output, **overrides) -> ImproveConfig:
    settings = dict(datasets=(str(world["dataset"]),), output=str(output), warmup=str(world["warmup"]),
                    value=str(world["value"]), dynamics=str(world["dynamics"]), iterations=2,
                    rollouts_per_iteration=2, feedback_steps=2, steps_per_iteration=3, batch_size=8,
                    policy_sampling_steps=2, world_model_sampling_steps=2, seed=5)
    return ImproveConfig(**{**settings, **overrides})


def test_loop_runs_two_iterations_and_a_resumed_run_matches(world, tmp_path):
    straight = improve(_improve(world, tmp_path / "a"), progress=False)
    improve(_improve(world, tmp_path / "b", iterations=1), progress=False)
    announced = []
    resumed = improve(_improve(world, tmp_path / "b"), progress=False,
                      on_checkpoint=lambda folder, metrics: announced.append((folder, metrics)))
    assert [m["iteration"] for _, m in announced] == [2]  # only the missing iteration ran
    rows = read_metrics(tmp_path / "a")
    assert [r["iteration"] for r in rows] == [1, 2]
    first = rows[0]
    assert first["rollouts"] == 2 and 2 <= first["chunks"] <= 6
    assert first["imagined_samples"] == first["chunks"]
    assert sum(first["bin_histogram"]) == first["imagined_samples"]
    assert (tmp_path / "a" / "improve.png").stat().st_size > 0
    a, b = (load_file(str(f / "model.safetensors")) for f in (straight, resumed))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # resumed == uninterrupted
    learner = PolicyLearner.resume(tmp_path / "a")
    assert learner.extra["iteration"] == 2 and learner.ema is not None


def test_uncertain_chunks_are_cut(world, tmp_path):
    improve(_improve(world, tmp_path, iterations=1, uncertainty_samples=2, uncertainty_threshold=0.0),
            progress=False)
    (row,) = read_metrics(tmp_path)
    assert row["cut"] == 2 and row["chunks"] == 0 and row["imagined_samples"] == 0  # first chunk of each cut
    assert row["mean_uncertainty"] > 0


def test_the_simulator_runs_the_same_loop_as_an_oracle(world, tmp_path):
    folder = improve(_improve(world, tmp_path, world_model="sim", task="box_close", dynamics=None,
                              iterations=1, feedback_steps=1), progress=False)
    (row,) = read_metrics(tmp_path)
    assert row["rollouts"] == 2 and row["chunks"] >= 2 and row["cut"] == 0
    assert verify(folder, kind="policy").metrics["iteration"] == 1


def test_bad_loop_settings_name_the_field(world, tmp_path):
    with pytest.raises(ValueError, match="offline_ratio"):
        _improve(world, tmp_path, offline_ratio=1.5)
    with pytest.raises(ValueError, match="dynamics"):
        _improve(world, tmp_path, dynamics=None)
    with pytest.raises(ValueError, match="task"):
        _improve(world, tmp_path, world_model="sim")


def test_wilson_interval_against_hand_computed_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(17, 20) == pytest.approx((0.6396, 0.9476), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


def test_evaluate_runs_simulated_episodes_and_writes_videos(world, tmp_path):
    result = evaluate_policy(world["warmup"], "box_close", episodes=2, execute=3, flow_steps=2, videos=1,
                             output=tmp_path)
    assert result["episodes"] == 2 and 0 <= result["successes"] <= 2
    low, high = result["wilson_95"]
    assert 0.0 <= low <= result["success_rate"] <= high <= 1.0
    assert all(0 <= e["score"] <= 10 and e["ticks"] > 0 for e in result["per_episode"])
    assert [p.name for p in tmp_path.glob("*.mp4")] == ["box_close_seed1000.mp4"]


def test_behaviour_cloning_imitates_the_successful_demonstrations_only(world, tmp_path):
    cfg = WarmupConfig(datasets=(str(world["dataset"]),), output=str(tmp_path / "bc"), value=None,
                       model="tiny", steps=1, batch_size=8)
    folder = warmup(cfg, progress=False)
    episodes = load_episodes([world["dataset"]], (16, 16))
    demos = [e for e in episodes if e.is_demo and e.success]
    assert 0 < len(demos) < len(episodes)  # the toy set has perturbed failures to leave out
    labels = json.loads((folder.parent / "labels.json").read_text())
    assert labels["frames"] == sum(e.length for e in demos)
    everything = dataclasses.replace(cfg, output=str(tmp_path / "bc_all"), demos_only=False)
    labels = json.loads((warmup(everything, progress=False).parent / "labels.json").read_text())
    assert labels["frames"] == sum(e.length for e in episodes)


def test_the_ema_does_not_keep_the_random_initial_weights(world, tmp_path):
    assert ema_decay_at(1, 0.995) == pytest.approx(2 / 11)
    assert ema_decay_at(5000, 0.995) == 0.995
    learner = PolicyLearner.load(world["warmup"])
    fresh = PolicyLearner(Policy(type(learner.policy.model)(learner.policy.config),
                                 learner.policy.state_stats, learner.policy.action_stats,
                                 learner.policy.bins, learner.policy.cameras), ema_decay=0.995)
    initial = torch.cat([p.detach().flatten().clone() for p in fresh.ema.parameters()])
    episodes, _, offline = load_training_data(
        WarmupConfig(datasets=(str(world["dataset"]),), output="", value=None), 3, 16)
    rng = np.random.default_rng(0)
    for step in range(20):
        batch = to_tensors(offline.draw(rng, 8), fresh.policy.state_stats, fresh.policy.action_stats,
                           16, rng, 0.0, fresh.policy.bins.unknown)
        fresh.step(batch, torch.Generator().manual_seed(step))
    learned = torch.cat([p.detach().flatten() for p in fresh.policy.model.parameters()])
    ema = torch.cat([p.detach().flatten() for p in fresh.ema.parameters()])
    # with a fixed 0.995 the EMA would still be ~90 % the initial weights after 20 steps
    assert (ema - initial).norm() > 0.5 * (learned - initial).norm()
