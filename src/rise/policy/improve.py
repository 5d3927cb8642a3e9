"""The imagination loop (``rise improve``): the policy practises in the world model.

Each iteration: imagined rollouts from real start states (the EMA rollout policy asks for the best
bin; imagined frames are fed back at most ``feedback_steps`` times in a row), their chunks are
labelled with binned advantages, and the learner trains on them mixed with the offline labelled
data (``offline_ratio`` of each batch). The world model is the learned one (dynamics + value
checkpoints) or, with ``world_model="sim"``, the simulator itself as an oracle. Rollout chunks
whose imagined frames disagree across dynamics samples by more than ``uncertainty_threshold``
are cut. Each rollout has its own seed; with ``rollout_workers`` > 1 they run in that many
processes, or Ray actors with ``ray_address`` (:class:`~rise.policy.rollouts.RolloutWorkers`).

Every iteration ends with a checkpoint (``step_XXXXXX/``, latest.json with the iteration), a line
in ``metrics.jsonl`` and a refreshed ``improve.png`` (loss, mean advantage, bin histogram). A run
resumes after its last finished iteration, imagined samples included (``imagined.safetensors``).

Example::

    cfg = ImproveConfig(datasets=("runs/data/pack",), output="runs/ckpt/policy",
                        warmup="runs/ckpt/policy_warmup/step_002000", value="runs/ckpt/value/step_003000",
                        dynamics="runs/ckpt/dynamics/step_004500", iterations=3)
    folder = improve(cfg)
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from rise.config import load_robot
from rise.models.episodes import load_episodes
from rise.models.fit_dynamics import latest_checkpoint, load_dynamics
from rise.models.fit_value import load_value
from rise.policy.data import SampleBuffer, mixed_batch, to_tensors
from rise.policy.fanout import folder_files, write_files
from rise.policy.learner import PolicyLearner
from rise.policy.rollouts import ExpertStart, RolloutStats, RolloutWorkers, rollout_seeds, run_rollouts
from rise.policy.warmup import WarmupConfig, load_training_data

WORLD_MODELS = ("learned", "sim")
BUFFER_FILE = "imagined.safetensors"
METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class ImproveConfig:
    datasets: tuple[str, ...]  # the offline data (start states + labelled samples)
    output: str  # run folder
    warmup: str  # the warm-up policy checkpoint folder to start from
    value: str  # value checkpoint folder (frozen)
    dynamics: str | None = None  # dynamics checkpoint folder (world_model "learned")
    world_model: str = "learned"  # "learned", or "sim": the simulator as an oracle world model
    task: str | None = None  # the sim task (world_model "sim")
    robot: str = "sim"  # robot config (joint names, control rate)
    iterations: int = 3
    rollouts_per_iteration: int = 16
    feedback_steps: int = 2  # imagined frames fed back as the observation, at most this many times in a row
    offline_ratio: float = 0.6  # share of each training batch from the offline labelled data
    steps_per_iteration: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-4
    ema_decay: float = 0.995  # the rollout policy is this EMA of the learner
    unknown_fraction: float = 0.1
    policy_sampling_steps: int = 10
    world_model_sampling_steps: int = 10
    uncertainty_samples: int = 2  # dynamics samples per chunk to measure disagreement (1: off)
    uncertainty_threshold: float | None = None  # cut chunks above it (pixel std in [-1, 1] units)
    seed: int = 0
    rollout_workers: int = 1  # processes (or Ray actors) the rollouts are spread over; 1: this process
    ray_address: str | None = None  # rollout workers as Ray actors: "local" or a cluster address
    value_sha256: str | None = None  # the announced sha256 of the value manifest (None: not checked)
    dynamics_sha256: str | None = None  # the announced sha256 of the dynamics manifest (None: not checked)

    def __post_init__(self):
        if self.world_model not in WORLD_MODELS:
            raise ValueError(f"world_model: expected one of {WORLD_MODELS}, got {self.world_model!r}")
        if self.world_model == "learned" and not self.dynamics:
            raise ValueError("dynamics: a dynamics checkpoint is needed with world_model 'learned'")
        if self.world_model == "sim" and not self.task:
            raise ValueError("task: the sim task is needed with world_model 'sim'")
        if not 0.0 <= self.offline_ratio <= 1.0:
            raise ValueError(f"offline_ratio must be in [0, 1], got {self.offline_ratio}")
        for name in ("iterations", "rollouts_per_iteration", "steps_per_iteration", "batch_size",
                     "uncertainty_samples", "rollout_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def make_environment(cfg: ImproveConfig, episodes, cameras, joint_names, control_rate_hz: float,
                     horizon: int):
    """The environment rollouts run in: the learned imagination or the simulator (oracle)."""
    if cfg.world_model == "sim":
        from rise.sim.env import SimEnv

        return ExpertStart(SimEnv(cfg.task))
    from rise.imagination.world_model_env import ImaginationEnv, WorldModel

    dynamics, stats, _ = load_dynamics(Path(cfg.dynamics), expected_sha256=cfg.dynamics_sha256)
    if int(dynamics.config.horizon) != horizon:
        raise ValueError(f"dynamics: {cfg.dynamics} imagines {dynamics.config.horizon} steps per chunk, the "
                         f"policy proposes {horizon}; train them with the same horizon")
    value, _ = load_value(Path(cfg.value), expected_sha256=cfg.value_sha256)
    world_model = WorldModel(dynamics, stats, value, sampling_steps=cfg.world_model_sampling_steps)
    size = tuple(dynamics.config.image_size)
    if episodes[0].images.shape[2:4] != size:
        episodes = load_episodes(cfg.datasets, size, cameras)
    return ImaginationEnv(world_model, episodes, cameras, joint_names, control_rate_hz,
                          uncertainty_samples=cfg.uncertainty_samples)


def start_rollout_workers(cfg: ImproveConfig, episodes, cameras, joint_names, control_rate_hz: float,
                          horizon: int) -> RolloutWorkers:
    """The workers of a fanned-out run (``rollout_workers`` > 1 or ``ray_address``). Each builds the
    environment and value model once, from checkpoint files and start episodes shipped to it (no
    shared filesystem needed)."""
    files = {"value": folder_files(cfg.value), "dynamics": None}
    if cfg.world_model == "learned":
        from rise.models.dynamics import DynamicsModel

        files["dynamics"] = folder_files(cfg.dynamics)
        size = tuple(DynamicsModel.load_config(str(cfg.dynamics))["image_size"])
        if episodes[0].images.shape[2:4] != size:  # resized here, so workers need not read the datasets
            episodes = load_episodes(cfg.datasets, size, cameras)
    else:
        episodes = None  # the simulator starts from its own states
    args = (cfg, files, episodes, tuple(cameras), tuple(joint_names), control_rate_hz, horizon)
    return RolloutWorkers(_build_world, args, workers=cfg.rollout_workers, ray_address=cfg.ray_address)


def _build_world(cfg: ImproveConfig, files: dict, episodes, cameras, joint_names, control_rate_hz: float,
                 horizon: int) -> tuple:
    """(environment, value model) in a rollout worker, from the shipped checkpoint files."""
    with tempfile.TemporaryDirectory(prefix="rise-world-") as tmp:
        paths = {name: str(write_files(data, Path(tmp) / name)) for name, data in files.items() if data}
        cfg = dataclasses.replace(cfg, value=paths["value"], dynamics=paths.get("dynamics"))
        env = make_environment(cfg, episodes, cameras, joint_names, control_rate_hz, horizon)
        value_model, _ = load_value(Path(cfg.value), expected_sha256=cfg.value_sha256)
    return env, value_model


def _save_buffer(path: Path, buffer: SampleBuffer) -> None:
    if buffer.arrays is None:
        return
    tmp = path.with_suffix(".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in buffer.arrays.items()}, str(tmp))
    tmp.replace(path)


def improve(cfg: ImproveConfig, progress: bool = True, pause: threading.Event | None = None,
            on_checkpoint: Callable[[Path, dict], None] | None = None) -> Path:
    """Run (or resume) the loop; returns the last checkpoint folder.

    ``pause`` (set = pause) is checked between training steps and rollouts; ``on_checkpoint`` is
    called with each new checkpoint folder and that iteration's metrics (the trainer node announces
    them).
    """
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    learner = PolicyLearner.resume(output, cfg.learning_rate)
    if learner is None:
        learner = PolicyLearner.load(Path(cfg.warmup), cfg.learning_rate)
        learner.extra = {"stage": "improve", "iteration": 0, "warmup": str(cfg.warmup)}
    learner.keep_ema(cfg.ema_decay)
    policy = learner.policy
    buffer = SampleBuffer()
    if (output / BUFFER_FILE).is_file() and latest_checkpoint(output) is not None:
        buffer.add(load_file(str(output / BUFFER_FILE)))
    warm = WarmupConfig(datasets=cfg.datasets, output=str(output), value=cfg.value,
                        num_bins=policy.bins.num_bins, cameras=policy.cameras)
    # labelled with the policy's own bins (the warm-up's), so real and imagined labels agree
    episodes, _, offline = load_training_data(warm, policy.config.horizon, policy.config.image_size,
                                              policy.bins)
    robot = load_robot(cfg.robot)
    workers = env = value_model = None
    if cfg.rollout_workers > 1 or cfg.ray_address is not None:
        workers = start_rollout_workers(cfg, episodes, policy.cameras, robot.arm.joint_names,
                                        robot.control_rate_hz, policy.config.horizon)
    else:
        env = make_environment(cfg, episodes, policy.cameras, robot.arm.joint_names, robot.control_rate_hz,
                               policy.config.horizon)
        value_model, _ = load_value(Path(cfg.value), expected_sha256=cfg.value_sha256)
    folder = latest_checkpoint(output)
    start_iteration = int(learner.extra.get("iteration", 0))
    for iteration in range(start_iteration + 1, cfg.iterations + 1):
        started = time.monotonic()
        rng = np.random.default_rng([cfg.seed, iteration])
        stats = RolloutStats()
        seeds = rollout_seeds(rng, cfg.rollouts_per_iteration)  # one each: the same samples however split
        settings = {"feedback_steps": cfg.feedback_steps, "stats": stats,
                    "policy_steps": cfg.policy_sampling_steps,
                    "uncertainty_threshold": cfg.uncertainty_threshold}
        if workers is not None:  # one batch over the workers (the current rollout policy is shipped)
            _wait(pause)
            samples = workers.run(learner.rollout_policy, seeds, **settings)
            if samples is not None:
                buffer.add(samples)
        else:
            for seed in tqdm(seeds, desc=f"iteration {iteration}: imagine", unit="rollout",
                             disable=not progress):
                _wait(pause)
                samples = run_rollouts(env, learner.rollout_policy, value_model, seeds=[seed], **settings)
                if samples is not None:
                    buffer.add(samples)
        imagine_s = time.monotonic() - started
        losses = []
        for step in tqdm(range(cfg.steps_per_iteration), desc=f"iteration {iteration}: train", unit="step",
                         disable=not progress):
            _wait(pause)
            batch_rng = np.random.default_rng([cfg.seed, iteration, step])
            batch = mixed_batch(batch_rng, cfg.batch_size, offline, buffer, cfg.offline_ratio)
            tensors = to_tensors(batch, policy.state_stats, policy.action_stats, policy.config.image_size,
                                 batch_rng, cfg.unknown_fraction, policy.bins.unknown)
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration * 10_007 + step)
            losses.append(learner.step(tensors, generator))
        bins = np.bincount(buffer.arrays["bins"], minlength=policy.bins.num_bins + 1).tolist() \
            if buffer.arrays is not None else []
        metrics = {"iteration": iteration, "loss": float(np.mean(losses)), **stats.summary(),
                   "imagined_samples": len(buffer), "bin_histogram": bins,
                   "imagine_s": round(imagine_s, 1),
                   "train_s": round(time.monotonic() - started - imagine_s, 1)}
        learner.extra["iteration"] = iteration
        _save_buffer(output / BUFFER_FILE, buffer)
        folder = learner.save(output, metrics)
        with open(output / METRICS_FILE, "a", encoding="utf-8") as log:
            log.write(json.dumps(metrics) + "\n")
        plot_run(output)
        if on_checkpoint is not None:
            on_checkpoint(folder, metrics)
    if hasattr(env, "close"):
        env.close()
    if workers is not None:
        workers.close()
    return folder


def _wait(pause: threading.Event | None) -> None:
    while pause is not None and pause.is_set():
        time.sleep(0.05)


def read_metrics(output: Path) -> list[dict]:
    path = Path(output) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(output: Path) -> Path | None:
    """``improve.png``: loss, mean imagined advantage and cut chunks per iteration, and the bin histogram."""
    rows = read_metrics(output)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [r["iteration"] for r in rows]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(iterations, [r["loss"] for r in rows], "o-")
    axes[0].set_title("learner loss")
    axes[1].plot(iterations, [r["mean_advantage"] for r in rows], "o-", label="mean advantage")
    axes[1].plot(iterations, [r["cut"] / max(r["chunks"] + r["cut"], 1) for r in rows], "s--",
                 label="share of chunks cut (uncertainty)")
    axes[1].legend()
    axes[1].set_title("imagined rollouts")
    histogram = rows[-1]["bin_histogram"]
    axes[2].bar(range(len(histogram)), histogram)
    axes[2].set_title(f"bins of imagined samples (last = unknown), iteration {iterations[-1]}")
    for axis in axes[:2]:
        axis.set_xlabel("iteration")
    path = Path(output) / "improve.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
