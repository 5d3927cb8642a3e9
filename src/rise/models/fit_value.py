"""Training the progress value model on datasets: batches of frames, checkpoints, resume.

Example::

    cfg = ValueFitConfig(datasets=("rise_runs/data/pack",), output="rise_runs/checkpoints/value")
    folder = fit_value(cfg)       # resumes from output/latest.json if it exists

Successes and failures both come from the datasets (``rise collect --failing-fraction``). Batches
are uniform over frames plus a share of episode-end frames, where the ±1 rewards live. A
checkpoint folder holds ``config.json`` + ``model.safetensors``, ``trainer.safetensors`` (target
network, optimizer), ``training.json`` and ``manifest.json``; ``losses.jsonl`` in the run folder
logs the losses of every step. Under ``torchrun --nproc_per_node N`` the processes share each batch
(:mod:`rise.models.distributed`); ``batch_size`` must then be a multiple of N.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from rise.models.checkpoint import (
    DEFAULT_MAX_BYTES,
    CheckpointError,
    load_json,
    read_checkpoint,
    save_json,
    write_manifest,
)
from rise.models.distributed import Distributed, LossLog
from rise.models.episodes import EpisodeArrays, load_episodes, to_unit_range
from rise.models.fit_dynamics import LATEST, latest_checkpoint, split_episodes
from rise.models.value import BACKBONE_FILE, CONFIG_FILE, WEIGHTS_FILE, ValueModel, value_config
from rise.models.value_training import (
    ValueTrainer,
    ValueTrainingConfig,
    episode_dones,
    episode_rewards,
    progress_targets,
)


@dataclasses.dataclass(frozen=True)
class ValueFitConfig:
    datasets: tuple[str, ...]
    output: str
    model: str = "cpu_default"
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 3e-4
    progress_only_steps: int = 1000  # the paper: progress loss first, then progress + TD
    td_weight: float = 1.0
    gamma: float = 0.995
    terminal_fraction: float = 0.125  # share of each batch drawn from episode-end frames
    held_out_every: int = 10
    checkpoint_every: int = 500
    seed: int = 0
    pretrained: str | None = None  # a local transformers backbone folder


class ValueFrames:
    """Frames of episodes with their progress, reward and done labels; batches by step number."""

    def __init__(self, episodes: list[EpisodeArrays], terminal_fraction: float, seed: int):
        self.episodes = episodes
        self.index = [(e, t) for e, ep in enumerate(episodes) for t in range(ep.length)]
        self.terminal = [(e, ep.length - 1) for e, ep in enumerate(episodes)]
        self.labels = [(progress_targets(ep.length), episode_rewards(ep.length, ep.success),
                        episode_dones(ep.length)) for ep in episodes]
        self.terminal_fraction = terminal_fraction
        self.seed = seed

    def batch(self, step: int, size: int, rows: slice | None = None) -> dict:
        """The batch of step ``step``; ``rows``: only these rows of it (data-parallel training),
        with ``progress_normaliser`` set so that the ranks' mean progress loss is the global one."""
        rng = np.random.default_rng([self.seed, step])
        ends = int(round(size * self.terminal_fraction))
        picks = [self.index[i] for i in rng.integers(0, len(self.index), size - ends)]
        picks += [self.terminal[i] for i in rng.integers(0, len(self.terminal), ends)]
        extra = {}
        if rows is not None:
            successes = max(sum(bool(self.episodes[e].success) for e, _ in picks), 1)
            picks = picks[rows]
            extra["progress_normaliser"] = successes * len(picks) / size
        images = np.stack([self.episodes[e].images[t] for e, t in picks])
        following = np.stack([self.episodes[e].images[min(t + 1, self.episodes[e].length - 1)]
                              for e, t in picks])
        return {
            "images": to_unit_range(images), "next_images": to_unit_range(following),
            "progress": torch.tensor([self.labels[e][0][t] for e, t in picks], dtype=torch.float32),
            "is_success_episode": torch.tensor([self.episodes[e].success for e, _ in picks]),
            "reward": torch.tensor([self.labels[e][1][t] for e, t in picks], dtype=torch.float32),
            "done": torch.tensor([bool(self.labels[e][2][t]) for e, t in picks]),
            "instruction": [self.episodes[e].task for e, _ in picks],
            **extra,
        }


def load_value(folder: Path, expected_sha256: str | None = None, root: Path | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES):
    """(model, manifest) from a verified value checkpoint folder, built from the verified bytes."""
    checkpoint = read_checkpoint(folder, expected_sha256=expected_sha256, root=root, kind="value",
                                 max_bytes=max_bytes, keep=(CONFIG_FILE, BACKBONE_FILE, WEIGHTS_FILE))
    try:
        model = ValueModel.load(checkpoint)
    except RuntimeError as error:
        raise CheckpointError(f"{folder}: files do not fit together ({str(error).strip()[:200]})") from None
    return model.eval(), checkpoint.manifest


def fit_value(cfg: ValueFitConfig, progress: bool = True) -> Path:
    """Train (or resume) the value model; returns the last checkpoint folder."""
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    resume = latest_checkpoint(output)
    model = ValueModel.load(resume) if resume is not None else ValueModel(
        value_config(cfg.model, **({"pretrained_path": cfg.pretrained} if cfg.pretrained else {})))
    size = model.config.image_size
    train, _ = split_episodes(load_episodes(cfg.datasets, (size, size)), cfg.held_out_every)
    if not any(e.success for e in train):
        raise ValueError(f"{cfg.datasets}: the progress loss needs successful episodes")
    frames = ValueFrames(train, cfg.terminal_fraction, cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    with Distributed.from_env() as dist:
        rows = dist.rows(cfg.batch_size)  # this process's share of each global batch (torchrun)
        trainer = ValueTrainer(dist.wrap(model), optimizer, ValueTrainingConfig(
            progress_only_steps=cfg.progress_only_steps, td_weight=cfg.td_weight, gamma=cfg.gamma))
        start = 0
        if resume is not None:
            trainer.load_state_dict(load_file(str(resume / "trainer.safetensors")))
            start = int(load_json(resume / "training.json")["step"])
        model.train()
        log = LossLog(output, start, enabled=dist.is_main)
        history: list[dict] = []
        folder = resume
        started = time.monotonic()
        bar = tqdm(range(start, cfg.steps), desc="train value", unit="step",
                   disable=not (progress and dist.is_main), initial=start, total=cfg.steps)
        for step in bar:
            history.append(dist.mean(trainer.step(frames.batch(step, cfg.batch_size, rows))))
            log.write(step + 1, {k: v for k, v in history[-1].items() if "loss" in k})
            recent = {k: float(np.mean([h[k] for h in history[-50:]])) for k in history[-1]}
            bar.set_postfix({k: f"{v:.4f}" for k, v in recent.items() if "loss" in k})
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                folder = output / f"step_{done:06d}"
                if dist.is_main:
                    model.save(folder)
                    save_file(trainer.state_dict(), str(folder / "trainer.safetensors"))
                    save_json(folder / "training.json", {"step": done, "config": dataclasses.asdict(cfg)})
                    metrics = {**recent, "train_s": time.monotonic() - started}
                    manifest = write_manifest(folder, "value", done, metrics)
                    save_json(output / LATEST, {"folder": folder.name, "step": done,
                                                "sha256": manifest.sha256})
                dist.barrier()  # the other ranks go on once the checkpoint is complete
    return folder if folder is not None else latest_checkpoint(output)
