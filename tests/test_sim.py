"""The simulator's Python interface, its tasks and scripted experts, and trajectory following."""

from __future__ import annotations

import numpy as np
import pytest

from rise.hardware.trajectory import TrajectoryError, TrajectoryFollower
from rise.sim.env import SimEnv
from rise.sim.perturb import PerturbedExpert
from rise.sim.tasks import TASKS, make_task


@pytest.fixture(scope="module")
def env():
    with SimEnv("brick_sort") as env:
        yield env


def run_expert(env: SimEnv, seed: int, perturbed: bool = False) -> dict:
    env.reset(seed=seed)
    expert = env.task.expert(env, np.random.default_rng(seed))
    if perturbed:
        expert = PerturbedExpert(expert, np.random.default_rng(seed), fumble_probability=1.0,
                                 max_ticks=env.task.max_steps)
    while True:
        _, reward, terminated, truncated, info = env.step(expert.act(env))
        if terminated or truncated:
            assert reward == float(info["success"])
            return info


def test_reset_and_step_follow_the_gymnasium_shape(env):
    observation, info = env.reset(seed=3)
    assert observation["state"].dtype == np.float32 and observation["state"].shape == (7,)
    assert set(observation["images"]) == {"front", "wrist"}
    for image in observation["images"].values():
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert info["tick"] == 0 and not info["success"] and info["score"] == 0
    target = np.array(env.robot.arm.home)
    target[0] += 0.05
    observation, reward, terminated, truncated, info = env.step(target)
    assert info["tick"] == 1 and reward == 0.0 and not terminated and not truncated
    assert observation["time_s"] == pytest.approx(1 / 30, rel=1e-6)


def test_arm_tracks_position_targets(env):
    env.reset(seed=0)
    target = np.array(env.robot.arm.home)
    target[:3] += [0.3, 0.2, -0.2]
    for _ in range(45):
        env.step(target)
    assert np.allclose(env.joint_positions()[:3], target[:3], atol=0.02)


def test_bad_actions_are_refused(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(7, np.nan))


def test_resets_are_randomised_and_reproducible(env):
    first = env.reset(seed=11)[0]["images"]["front"]
    again = env.reset(seed=11)[0]["images"]["front"]
    other = env.reset(seed=12)[0]["images"]["front"]
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)  # bins, bricks and belt speed are drawn per episode


@pytest.mark.parametrize("task", sorted(TASKS))
def test_scripted_expert_succeeds(task):
    with SimEnv(task, render=False) as env:
        results = [run_expert(env, seed) for seed in range(3)]
    assert all(r["success"] and r["score"] == 10 for r in results), results


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_fumbling_expert_scores_less(task):
    with SimEnv(task, render=False) as env:
        info = run_expert(env, seed=5, perturbed=True)
    assert info["score"] < 10 or not info["success"]


def test_unknown_task_suggests():
    with pytest.raises(ValueError, match="did you mean 'pack'"):
        make_task("pakc")


def test_trajectory_follower_interpolates_in_time():
    follower = TrajectoryFollower(["a", "b"], np.array([0.0, 0.0]))
    follower.set(["a"], [1.0, 2.0], [[1.0], [3.0]], start_s=0.0, now_s=10.0)
    assert follower.sample(10.0) == pytest.approx([0.0, 0.0])
    assert follower.sample(10.5) == pytest.approx([0.5, 0.0])  # partial goal: b holds
    assert follower.sample(11.5) == pytest.approx([2.0, 0.0])
    assert follower.sample(99.0) == pytest.approx([3.0, 0.0])


@pytest.mark.parametrize("names, times, points, message", [
    (["x"], [1.0], [[0.0]], "unknown joints"),
    (["a", "a"], [1.0], [[0.0, 0.0]], "duplicate"),
    (["a"], [], [], "no points"),
    (["a"], [1.0, 1.0], [[0.0], [1.0]], "strictly increasing"),
    (["a"], [1.0], [[float("nan")]], "NaN"),
    (["a", "b"], [1.0], [[0.0]], "positions"),
])
def test_trajectory_follower_refuses_bad_trajectories(names, times, points, message):
    follower = TrajectoryFollower(["a", "b"], np.zeros(2))
    with pytest.raises(TrajectoryError, match=message):
        follower.set(names, times, points, start_s=0.0, now_s=0.0)
    assert follower.sample(5.0) == pytest.approx([0.0, 0.0])
