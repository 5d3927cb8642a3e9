"""Evaluation and imagined rollouts fanned out over a local Ray instance give what one process gives."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import numpy as np
import pytest
from safetensors.numpy import load_file

from rise.cli import build_parser
from rise.policy.fanout import Fanout, FanoutError
from rise.policy.improve import BUFFER_FILE, ImproveConfig, improve, read_metrics
from rise.policy.sim_eval import evaluate_policy
from rise.policy.warmup import WarmupConfig, warmup
from toy_data import tiny_checkpoints, write_toy_dataset

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module, in a short temporary folder."""
    ray = pytest.importorskip("ray")
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    saved = {k: os.environ.get(k) for k in (*RAY_ENV, "RAY_TMPDIR")}
    os.environ.update({**RAY_ENV, "RAY_TMPDIR": folder})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=folder)
    yield ray
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fanout")
    dataset = write_toy_dataset(root / "toy")
    dynamics, value = tiny_checkpoints(dataset, root / "ckpt")
    policy = warmup(WarmupConfig(datasets=(str(dataset),), output=str(root / "ckpt" / "warmup"),
                                 value=str(value), model="tiny", steps=2, batch_size=8), progress=False)
    return {"dataset": dataset, "dynamics": dynamics, "value": value, "policy": policy}


def test_a_bad_ray_address_fails_fast_and_names_the_option(monkeypatch):
    with pytest.raises(FanoutError, match=r"ray_address.*no Ray cluster reachable at '127\.0\.0\.1:1'"):
        Fanout(2, ray_address="127.0.0.1:1")
    with pytest.raises(FanoutError, match="ray_address.*not 'local', 'auto', host:port"):
        Fanout(2, ray_address="nowhere")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(FanoutError, match="ray_address.*needs the ray package"):
        Fanout(2, ray_address="local")


def test_cli_ray_flag_defaults_to_a_local_instance():
    parser = build_parser()
    assert parser.parse_args(["evaluate"]).ray is None
    assert parser.parse_args(["evaluate", "--ray"]).ray == "local"
    assert parser.parse_args(["evaluate", "--ray", "10.0.0.5:6379"]).ray == "10.0.0.5:6379"
    args = parser.parse_args(["improve", "--rollout-workers", "4", "--ray"])
    assert (args.rollout_workers, args.ray) == (4, "local")


def test_evaluation_on_ray_matches_one_process(world, ray_local):
    """Two Ray actors, one episode each, get the checkpoint as bytes; each episode depends only on its
    seed, so the results are those of one process running both."""
    settings = dict(episodes=2, execute=3, flow_steps=2, videos=0, seed=7, max_ticks=100)
    alone = evaluate_policy(world["policy"], "box_close", workers=1, **settings)
    fanned = evaluate_policy(world["policy"], "box_close", workers=2, ray_address="local", **settings)
    assert fanned["per_episode"] == alone["per_episode"]
    assert [e["seed"] for e in fanned["per_episode"]] == [7, 8]
    assert all(0 < e["ticks"] <= 100 for e in fanned["per_episode"])
    assert (fanned["successes"], fanned["mean_score"]) == (alone["successes"], alone["mean_score"])
    assert ray_local.is_initialized()  # an instance the caller started is left running


def test_rollouts_on_two_ray_actors_give_the_samples_of_one_process(world, ray_local, tmp_path):
    """An improve iteration with its rollouts on two Ray actors (each built the learned world model from
    shipped checkpoint bytes, got the rollout policy's bytes and two of the seeds) imagines the same
    samples as one process, so it also trains to the same weights."""
    settings = dict(datasets=(str(world["dataset"]),), warmup=str(world["policy"]), value=str(world["value"]),
                    dynamics=str(world["dynamics"]), iterations=1, rollouts_per_iteration=4, feedback_steps=1,
                    steps_per_iteration=2, batch_size=8, policy_sampling_steps=2,
                    world_model_sampling_steps=2, seed=5)
    alone = improve(ImproveConfig(output=str(tmp_path / "alone"), **settings), progress=False)
    fanned = improve(ImproveConfig(output=str(tmp_path / "ray"), rollout_workers=2, ray_address="local",
                                   **settings), progress=False)
    (row_alone,), (row_ray,) = read_metrics(tmp_path / "alone"), read_metrics(tmp_path / "ray")
    assert row_ray["rollouts"] == 4 and row_ray["chunks"] == row_alone["chunks"] > 0
    assert row_ray["bin_histogram"] == row_alone["bin_histogram"]
    assert row_ray["mean_advantage"] == pytest.approx(row_alone["mean_advantage"], abs=1e-5)
    a, b = (load_file(str(run / BUFFER_FILE)) for run in (tmp_path / "alone", tmp_path / "ray"))
    assert all(np.allclose(a[k], b[k], atol=1e-5) for k in a)
    a, b = (load_file(str(folder / "model.safetensors")) for folder in (alone, fanned))
    assert all(np.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_more_ray_workers_than_cpus_is_refused_not_left_waiting(ray_local):
    with pytest.raises(FanoutError, match="3 workers need 3 CPUs, the Ray cluster has 2"):
        Fanout(3, ray_address="local")
    assert ray_local.is_initialized()  # the instance it joined is left as it was
