"""Warm-up (``rise warmup``): train the advantage-conditioned policy on the offline dataset.

The RECAP recipe: every frame of the real episodes is labelled with the frozen value model
(A_t = mean V(t+1 .. t+H) - V(t), binned; demonstrations get the best bin) and the policy learns
(observation, bin) -> action chunk. This is also the "RECAP-style" baseline of the learning
benchmark; with ``num_bins=1`` (every sample in one bin) it is plain behaviour cloning.

Example::

    cfg = WarmupConfig(datasets=("rise_runs/data/pack",), value="rise_runs/checkpoints/value/step_003000",
                       output="rise_runs/checkpoints/policy_warmup", steps=2000)
    folder = warmup(cfg)            # resumes from output/latest.json when it exists

``losses.jsonl`` in the run folder logs the loss of every step. Under ``torchrun --nproc_per_node N``
the processes share each batch (:mod:`rise.models.distributed`); ``batch_size`` must be a multiple of N.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rise.data import DatasetReader
from rise.models.checkpoint import save_json
from rise.models.distributed import Distributed, LossLog
from rise.models.episodes import NormStats, load_episodes
from rise.models.fit_dynamics import latest_checkpoint
from rise.models.fit_value import load_value
from rise.policy.advantage import AdvantageBins
from rise.policy.data import Labels, OfflineSamples, label_episodes, to_tensors
from rise.policy.learner import PolicyLearner
from rise.policy.model import PolicyModel, policy_config
from rise.policy.policy_io import Policy


@dataclasses.dataclass(frozen=True)
class WarmupConfig:
    datasets: tuple[str, ...]  # LeRobot dataset folders
    output: str  # run folder: step_XXXXXX checkpoints and latest.json
    value: str | None  # value checkpoint folder for the labels; None: every frame gets the best bin (BC)
    # behaviour cloning (value None) imitates the successful demonstrations only, never perturbed or
    # failed episodes; with a value model every episode is used (labels tell good from bad)
    demos_only: bool = True
    model: str = "cpu_default"  # named policy config
    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 3e-4
    num_bins: int = 10
    unknown_fraction: float = 0.1  # share of samples shown the "unknown" bin
    ema_decay: float | None = 0.995  # the EMA copy is the policy that is deployed and rolls out
    cameras: tuple[str, ...] | None = None  # None: every camera of the dataset, in its order
    checkpoint_every: int = 500
    seed: int = 0
    pretrained: str | None = None  # local folder of a transformers ViT for the vision encoder


def load_training_data(cfg: WarmupConfig, horizon: int, image_size: int, bins: AdvantageBins | None = None):
    """(episodes, labels, offline samples) for a warm-up or improve run (``bins``: label with these
    instead of bins fitted to the data's advantages)."""
    episodes = load_episodes(cfg.datasets, (image_size, image_size), cfg.cameras)
    if not episodes:
        raise ValueError(f"no episodes in {cfg.datasets}")
    if cfg.value is not None:
        value_model, _ = load_value(Path(cfg.value))
        labels = label_episodes(episodes, value_model, horizon, cfg.num_bins, bins=bins)
    else:  # behaviour cloning: one bin for everything
        if cfg.demos_only:
            episodes = [e for e in episodes if e.is_demo and e.success]
            if not episodes:
                raise ValueError(f"no successful demonstrations in {cfg.datasets} to imitate")
        bins = AdvantageBins.uniform(cfg.num_bins)
        zeros = [np.zeros(e.length, np.float32) for e in episodes]
        labels = Labels(bins, zeros, zeros, [np.full(e.length, bins.best, np.int64) for e in episodes])
    return episodes, labels, OfflineSamples(episodes, labels.bins_per_episode, horizon)


def new_policy(cfg: WarmupConfig, episodes, labels, cameras) -> Policy:
    """A freshly initialised policy sized for the data, with its normalisation statistics."""
    states = np.concatenate([e.states for e in episodes])
    actions = np.concatenate([e.actions for e in episodes])
    config = policy_config(cfg.model, state_dim=states.shape[1], action_dim=actions.shape[1],
                           num_views=episodes[0].images.shape[1], num_bins=cfg.num_bins,
                           pretrained_path=cfg.pretrained)
    return Policy(PolicyModel(config), NormStats.of(states), NormStats.of(actions), labels.bins, cameras)


def warmup(cfg: WarmupConfig, progress: bool = True) -> Path:
    """Train (or resume) the warm-up policy; returns the last checkpoint folder."""
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    learner = PolicyLearner.resume(output, cfg.learning_rate)
    template = learner.policy.config if learner else policy_config(cfg.model)
    episodes, labels, offline = load_training_data(cfg, template.horizon, template.image_size)
    if learner is None:
        cameras = cfg.cameras or DatasetReader(Path(cfg.datasets[0])).spec.camera_names
        learner = PolicyLearner(new_policy(cfg, episodes, labels, tuple(cameras)), cfg.learning_rate,
                                cfg.ema_decay, extra={"stage": "warmup"})
        if Distributed.from_env().is_main:
            save_json(output / "labels.json", {"bins": labels.bins.to_dict(),
                                               "histogram": labels.histogram(), "frames": len(offline)})
    policy = learner.policy
    with Distributed.from_env() as dist:
        rows = dist.rows(cfg.batch_size)  # this process's share of each global batch (torchrun)
        learner.loss_module = dist.wrap(policy.model, "loss") if dist.enabled else None
        log = LossLog(output, learner.step_count, enabled=dist.is_main)
        losses: list[float] = []
        started = time.monotonic()
        folder = None
        bar = tqdm(range(learner.step_count, cfg.steps), desc="warm-up policy", unit="step",
                   disable=not (progress and dist.is_main), initial=learner.step_count, total=cfg.steps)
        for step in bar:
            rng = np.random.default_rng([cfg.seed, step])
            batch = to_tensors(offline.draw(rng, cfg.batch_size), policy.state_stats, policy.action_stats,
                               policy.config.image_size, rng, cfg.unknown_fraction, policy.bins.unknown)
            if rows is not None:
                batch = {k: v[rows] for k, v in batch.items()}
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            losses.append(dist.mean(learner.step(batch, generator, rows)))
            log.write(learner.step_count, {"loss": losses[-1]})
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if learner.step_count % cfg.checkpoint_every == 0 or learner.step_count == cfg.steps:
                folder = output / f"step_{learner.step_count:06d}"
                if dist.is_main:
                    learner.save(output, {"loss": float(np.mean(losses[-50:])),
                                          "train_s": round(time.monotonic() - started, 1)})
                dist.barrier()  # the other ranks go on once the checkpoint is complete
        learner.loss_module = None
    if folder is None:
        folder = latest_checkpoint(output)
    return folder
