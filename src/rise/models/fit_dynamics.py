"""Training the dynamics model: data, task-centric batches, checkpoints, resume.

Example::

    cfg = DynamicsTrainConfig(datasets=("rise_runs/data/pack",), output="rise_runs/checkpoints/dynamics",
                              steps=2000)
    folder = train_dynamics(cfg)           # resumes from output/latest.json if it exists

A checkpoint folder (``step_000500/``) holds the diffusers model (``config.json`` +
``diffusion_pytorch_model.safetensors``), ``normalization.json`` (action statistics),
``training.json`` + ``optimizer.*`` (to resume) and ``manifest.json`` (sha256 of every file).
Runs are deterministic for a seed: the batch of step s depends only on (seed, s). ``losses.jsonl``
in the run folder logs the loss of every step. Under ``torchrun --nproc_per_node N`` the processes
share each batch (:mod:`rise.models.distributed`); ``batch_size`` must then be a multiple of N.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rise.models.checkpoint import (
    DEFAULT_MAX_BYTES,
    CheckpointError,
    load_optimizer,
    read_checkpoint,
    save_json,
    save_optimizer,
    write_manifest,
)
from rise.models.distributed import Distributed, LossLog
from rise.models.dynamics import DynamicsModel, named_config
from rise.models.episodes import GroupedBatchSampler, NormStats, WindowDataset, load_episodes
from rise.models.flow_matching import training_step

LATEST = "latest.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"  # diffusers' name


@dataclasses.dataclass(frozen=True)
class DynamicsTrainConfig:
    datasets: tuple[str, ...]  # LeRobot dataset folders (one per task, e.g. from rise collect)
    output: str  # run folder: step_XXXXXX checkpoints and latest.json
    model: str = "cpu_default"  # named model config
    steps: int = 2000
    batch_size: int = 8
    learning_rate: float = 3e-4
    lr_schedule: str = "constant"  # or "cosine": 100 warm-up steps, then cosine decay to 10 % at ``steps``
    groups_per_batch: int | None = 2  # task-centric batching; None = uniform batches (ablation)
    group_by: str = "episode"  # scenes ("episode") or tasks ("task")
    cameras: tuple[str, ...] | None = None  # None: every camera of the dataset
    held_out_every: int = 10  # every n-th episode is held out for evaluation
    checkpoint_every: int = 500
    seed: int = 0
    pretrained: str | None = None  # a local checkpoint folder to start from


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_at(cfg: DynamicsTrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (a function of the step alone, so resuming
    reproduces it; resuming with a larger ``steps`` stretches the rest of a cosine schedule)."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    warmup = min(100, max(cfg.steps // 10, 1))
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    progress = min((step - warmup) / max(cfg.steps - warmup, 1), 1.0)
    return cfg.learning_rate * (0.1 + 0.45 * (1.0 + np.cos(np.pi * progress)))


def split_episodes(episodes, held_out_every: int):
    """(train, held_out): every ``held_out_every``-th episode of each dataset is held out."""
    held = [e for e in episodes if held_out_every and e.index % held_out_every == held_out_every - 1]
    train = [e for e in episodes if e not in held]
    return train, held


def latest_pointer(output: Path) -> tuple[Path, str | None] | None:
    """(folder, its manifest's sha256 as written, or None) from ``output/latest.json``; None when
    there is none. Raises :class:`CheckpointError` on an unreadable pointer or a folder that is not a
    plain name (``../x``, an absolute path)."""
    pointer = Path(output) / LATEST
    if not pointer.is_file():
        return None
    try:
        data = json.loads(pointer.read_text())
        name, sha256 = data["folder"], data.get("sha256")
        if not isinstance(name, str) or not isinstance(sha256, str | None):
            raise TypeError("'folder' and 'sha256' must be strings")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{pointer}: unreadable ({type(error).__name__}: {error})") from None
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise CheckpointError(f"{pointer}: folder {name!r} is not a plain folder name (refused)")
    return Path(output) / name, sha256


def latest_checkpoint(output: Path) -> Path | None:
    found = latest_pointer(output)
    return found[0] if found is not None else None


def load_dynamics(folder: Path, expected_sha256: str | None = None, root: Path | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES):
    """(model, action NormStats, manifest) from a verified checkpoint folder, built from the bytes
    that were verified (nothing is read twice, nothing unpickled)."""
    keep = ("config.json", WEIGHTS_FILE, "normalization.json")
    checkpoint = read_checkpoint(folder, expected_sha256=expected_sha256, root=root, kind="dynamics",
                                 max_bytes=max_bytes, keep=keep)
    try:
        model = DynamicsModel.from_config(checkpoint.json("config.json"))
        model.load_state_dict(checkpoint.tensors(WEIGHTS_FILE))
        stats = NormStats.from_dict(checkpoint.json("normalization.json"))
    except (RuntimeError, TypeError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{folder}: files do not fit together ({first})") from None
    return model.eval(), stats, checkpoint.manifest


def _save(model, optimizer, stats: NormStats, output: Path, step: int, metrics: dict, cfg) -> Path:
    folder = output / f"step_{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    stats.save(folder / "normalization.json")
    save_optimizer(folder, optimizer)
    save_json(folder / "training.json", {"step": step, "config": dataclasses.asdict(cfg)})
    manifest = write_manifest(folder, "dynamics", step, metrics)
    save_json(output / LATEST, {"folder": folder.name, "step": step, "sha256": manifest.sha256})
    return folder


def train_dynamics(cfg: DynamicsTrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and return the last checkpoint folder."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {cfg.lr_schedule!r}")
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    config = named_config(cfg.model)
    size = tuple(config["image_size"])
    episodes = load_episodes(cfg.datasets, size, cfg.cameras)
    train, _ = split_episodes(episodes, cfg.held_out_every)
    if not train:
        raise ValueError(f"no training episodes in {cfg.datasets}")
    resume = latest_checkpoint(output)
    if resume is not None:
        model, stats, manifest = load_dynamics(resume)
        start = manifest.step
    else:
        stats = NormStats.of(np.concatenate([e.actions for e in train]))
        model = DynamicsModel.from_pretrained_or_config(cfg.pretrained, **config)
        start = 0
    windows = WindowDataset(train, config["context_frames"], config["horizon"], stats, cfg.group_by)
    sampler = GroupedBatchSampler(windows.groups, cfg.batch_size, cfg.groups_per_batch, cfg.steps, cfg.seed)
    # beta2 0.95: with the default 0.999 the loss plateaus for hundreds of steps after its first drop
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=0.01)
    if resume is not None:
        load_optimizer(resume, optimizer)
    model.train()
    with Distributed.from_env() as dist:
        rows = dist.rows(cfg.batch_size)  # this process's share of each global batch (torchrun)
        trained = dist.wrap(model)
        log = LossLog(output, start, enabled=dist.is_main)
        losses: list[float] = []
        folder = resume
        bar = tqdm(range(start, cfg.steps), desc="train dynamics", unit="step",
                   disable=not (progress and dist.is_main), initial=start, total=cfg.steps)
        started = time.monotonic()
        for step in bar:
            indices = sampler.batch(step)
            batch = torch.utils.data.default_collate([windows[i] for i in indices[rows or slice(None)]])
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(cfg, step)
            loss = training_step(trained, batch, generator, rows=rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(dist.mean(loss.detach().item()))
            log.write(step + 1, {"loss": losses[-1]})
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                metrics = {"loss": float(np.mean(losses[-50:])), "train_s": time.monotonic() - started}
                folder = output / f"step_{done:06d}"
                if dist.is_main:
                    _save(model, optimizer, stats, output, done, metrics, cfg)
                dist.barrier()  # the other ranks go on once the checkpoint is complete
    return folder if folder is not None else latest_checkpoint(output)
