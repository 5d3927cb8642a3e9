"""The policy learner: the trained network, its EMA copy (the rollout policy), the optimiser, and
checkpoints that a resumed run continues from exactly.

A checkpoint folder ``step_000500/`` holds the policy files of :class:`~rise.policy.policy_io.Policy`
(the *EMA* weights when an EMA is kept: that is the policy to deploy), ``learner.safetensors``
(the raw learner weights), ``optimizer.*``, ``training.json`` and ``manifest.json`` (sha256 of
every file, written last). ``latest.json`` in the run folder names the newest one.

Example::

    learner = PolicyLearner.create(policy, learning_rate=3e-4, ema_decay=0.995)
    loss = learner.step(tensors)                     # one optimiser step on a batch
    folder = learner.save(run, step=500, metrics={"loss": loss}, extra={"iteration": 1})
    learner = PolicyLearner.resume(run)              # the same state again
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from rise.models.checkpoint import (
    load_optimizer,
    read_checkpoint,
    save_json,
    save_optimizer,
    write_manifest,
)
from rise.models.fit_dynamics import LATEST, latest_checkpoint
from rise.policy.policy_io import Policy

LEARNER_FILE = "learner.safetensors"
TRAINING_FILE = "training.json"


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay after optimiser step ``step`` (1, 2, ...): ``min(decay, (1 + step) / (10 + step))``.

    The warm-up keeps the EMA from averaging in the random initial weights: with a fixed 0.995 they
    would still make up 61 % of it after 100 steps and 13 % after 400; here the EMA follows the
    learner closely at first and reaches the full decay after ~1,800 steps."""
    return min(decay, (1.0 + step) / (10.0 + step))


class PolicyLearner:
    """A :class:`Policy` being trained, with an optional EMA copy of its weights."""

    def __init__(self, policy: Policy, learning_rate: float = 3e-4, ema_decay: float | None = None,
                 step: int = 0, extra: dict[str, Any] | None = None):
        self.policy = policy
        self.ema_decay = ema_decay
        self.ema = None
        if ema_decay is not None:
            self.keep_ema(ema_decay)
        self.optimizer = torch.optim.AdamW(policy.model.parameters(), lr=learning_rate, betas=(0.9, 0.95),
                                           weight_decay=0.01)
        self.step_count = step
        self.extra = dict(extra or {})
        self.loss_module: torch.nn.Module | None = None  # data-parallel: DDP around model.loss

    def keep_ema(self, decay: float) -> None:
        """Keep (or start, from the current weights) an EMA copy with this decay."""
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.ema_decay = decay
        if self.ema is None:
            self.ema = copy.deepcopy(self.policy.model).eval()
            for parameter in self.ema.parameters():
                parameter.requires_grad_(False)

    @property
    def rollout_policy(self) -> Policy:
        """The policy that acts: the EMA weights when kept, else the learner's own."""
        if self.ema is None:
            return self.policy
        return Policy(self.ema, self.policy.state_stats, self.policy.action_stats, self.policy.bins,
                      self.policy.cameras)

    def step(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
             rows: slice | None = None) -> float:
        """One optimiser step on a batch of model inputs (see :func:`rise.policy.data.to_tensors`).

        Data-parallel training: ``loss_module`` is DistributedDataParallel around the model's
        ``loss`` and ``batch`` holds ``rows`` of the global batch (see :meth:`PolicyModel.loss`)."""
        model = self.policy.model
        model.train()
        compute = model.loss if self.loss_module is None else self.loss_module
        loss = compute(batch["images"], batch["state"], batch["actions"], batch["bins"],
                       generator=generator, **({} if rows is None else {"rows": rows}))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.optimizer.step()
        self.step_count += 1
        if self.ema is not None:
            decay = ema_decay_at(self.step_count, self.ema_decay)
            with torch.no_grad():
                for target, source in zip(self.ema.parameters(), model.parameters(), strict=True):
                    target.lerp_(source, 1.0 - decay)
        return float(loss.detach())

    def save(self, run: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write ``step_XXXXXX/`` under ``run`` and point ``latest.json`` at it."""
        run = Path(run)
        folder = run / f"step_{self.step_count:06d}"
        self.rollout_policy.save(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.policy.model.state_dict().items()},
                  str(folder / LEARNER_FILE))
        save_optimizer(folder, self.optimizer)
        save_json(folder / TRAINING_FILE, {"step": self.step_count, "ema_decay": self.ema_decay,
                                           "extra": self.extra})
        manifest = write_manifest(folder, "policy", self.step_count, metrics)
        save_json(run / LATEST, {"folder": folder.name, "step": self.step_count, "sha256": manifest.sha256,
                                 **self.extra})
        return folder

    @classmethod
    def load(cls, folder: str | Path, learning_rate: float = 3e-4, root: Path | None = None) -> PolicyLearner:
        """A learner from a verified checkpoint folder (weights, EMA, optimiser and counters), built
        from the bytes that were verified."""
        checkpoint = read_checkpoint(folder, root=root, kind="policy")
        deployed = Policy.load(checkpoint)
        training = checkpoint.json(TRAINING_FILE)
        learner = cls(deployed, learning_rate, training.get("ema_decay"), int(training["step"]),
                      training.get("extra"))
        if learner.ema is not None:  # the saved policy weights are the EMA; the learner's are apart
            learner.ema.load_state_dict(deployed.model.state_dict())
            deployed.model.load_state_dict(checkpoint.tensors(LEARNER_FILE))
        load_optimizer(checkpoint, learner.optimizer)
        for group in learner.optimizer.param_groups:
            group["lr"] = learning_rate
        return learner

    @classmethod
    def resume(cls, run: str | Path, learning_rate: float = 3e-4) -> PolicyLearner | None:
        """The learner of ``run``'s newest checkpoint, or None when there is none yet."""
        folder = latest_checkpoint(Path(run))
        return None if folder is None else cls.load(folder, learning_rate)
