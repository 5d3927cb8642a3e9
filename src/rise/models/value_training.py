"""Training maths of the progress value model: targets, the two-phase loss, a trainer, metrics.

Targets, per episode of length L (frames t = 0 .. L-1):

* progress: ``t / T`` with ``T = L - 1``, so the first frame is 0 and the last 1 (a one-frame
  episode is 1.0); regressed on successful episodes only;
* reward: 0 mid-episode, +1 at the last frame of a success, -1 at the last frame of a failure;
  ``done`` is True at the last frame only;
* TD target: ``r`` at a terminal frame (no bootstrap through the episode end), elsewhere
  ``r + gamma * V_target(s')``, where V_target is an EMA copy of the model (the target network) or
  the online model under stop-gradient (``ValueTrainingConfig.target``).

Loss at optimiser step k: ``progress_mse + w(k) * td_mse`` with ``w(k) = 0`` for
``k < progress_only_steps`` and ``td_weight`` after (the paper: progress first, then both).

Example::

    trainer = ValueTrainer(model, torch.optim.AdamW(model.parameters(), 3e-4), ValueTrainingConfig())
    for batch in batches:  # dict: images, next_images, progress, is_success_episode, reward, done
        losses = trainer.step(batch)
    save_file(trainer.state_dict(), "trainer.safetensors")  # flat tensors: safetensors-ready
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rise.config.schema import setting


class TargetMode(str, enum.Enum):
    """Where the bootstrap value V(s') of the TD target comes from."""

    EMA = "ema"  # a target network: an exponential moving average of the model's weights
    STOP_GRADIENT = "stop_gradient"  # the online model itself, without gradient


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValueTrainingConfig:
    """Loss weights, phase schedule and target network of value training."""

    progress_only_steps: int = setting(2000, doc="optimiser steps with the progress loss alone", ge=0)
    td_weight: float = setting(1.0, doc="weight of the TD loss after the progress-only phase", ge=0)
    gamma: float = setting(0.995, doc="discount of the TD target", ge=0, le=1)
    target: TargetMode = setting(TargetMode.EMA, doc="bootstrap from 'ema' target network or 'stop_gradient'")
    target_ema: float = setting(
        0.995, doc="target network decay: target <- ema * target + (1 - ema) * model, every step", ge=0, le=1
    )
    max_grad_norm: float = setting(1.0, doc="gradient norm clip (0: no clipping)", ge=0)


def progress_targets(lengths: int | Sequence[int]) -> np.ndarray:
    """Concatenated ``t / (L - 1)`` for episodes of the given lengths (float32; a 1-frame episode: 1.0)."""
    lengths = [lengths] if isinstance(lengths, (int, np.integer)) else list(lengths)
    parts = []
    for length in lengths:
        if length < 1:
            raise ValueError(f"episode length must be >= 1, got {length}")
        parts.append(np.ones(1) if length == 1 else np.arange(length) / (length - 1))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def episode_rewards(length: int, success: bool) -> np.ndarray:
    """(length,) float32: 0 everywhere except the last frame, +1 for a success and -1 for a failure."""
    if length < 1:
        raise ValueError(f"episode length must be >= 1, got {length}")
    rewards = np.zeros(length, np.float32)
    rewards[-1] = 1.0 if success else -1.0
    return rewards


def episode_dones(length: int) -> np.ndarray:
    """(length,) bool: True at the last frame only."""
    if length < 1:
        raise ValueError(f"episode length must be >= 1, got {length}")
    dones = np.zeros(length, bool)
    dones[-1] = True
    return dones


def td_targets(values_next_target: Any, rewards: Any, dones: Any, gamma: float = 0.995) -> torch.Tensor:
    """``r`` where ``done`` (no bootstrap), else ``r + gamma * V_target(s')``; detached float tensor."""
    v_next = torch.as_tensor(values_next_target, dtype=torch.float32).detach()
    r = torch.as_tensor(rewards, dtype=torch.float32, device=v_next.device)
    done = torch.as_tensor(dones, device=v_next.device).bool()
    if not (v_next.shape == r.shape == done.shape):
        raise ValueError(f"shapes differ: values {tuple(v_next.shape)}, rewards {tuple(r.shape)}, "
                         f"dones {tuple(done.shape)}")
    return torch.where(done, r, r + gamma * v_next)


class ValueLoss:
    """Progress MSE on successful episodes plus the phase-weighted TD MSE (module docstring)."""

    def __init__(self, config: ValueTrainingConfig):
        self.config = config

    def td_weight_at(self, step: int) -> float:
        """TD weight at optimiser step ``step`` (0-based): 0 in the progress-only phase."""
        return 0.0 if step < self.config.progress_only_steps else self.config.td_weight

    def __call__(self, values: torch.Tensor, batch: Mapping[str, Any], step: int,
                 values_next_target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Losses for predictions ``values`` (B,) on ``batch``.

        ``values_next_target`` (B,) is V_target(s'); needed only when the TD weight is above 0 (in
        the progress-only phase the TD term is not computed and ``td_loss`` reads 0). Returns
        ``loss`` (to backpropagate), ``progress_loss``, ``td_loss`` and ``td_weight``.
        """
        device = values.device
        progress = torch.as_tensor(batch["progress"], dtype=torch.float32, device=device)
        success = torch.as_tensor(batch["is_success_episode"], device=device).bool()
        squared = (values - progress) ** 2 * success
        normaliser = batch.get("progress_normaliser")  # data-parallel: a share of the global count
        progress_loss = squared.sum() / (success.sum().clamp(min=1) if normaliser is None else normaliser)
        weight = self.td_weight_at(step)
        td_loss = values.new_zeros(())
        if weight > 0:
            if values_next_target is None:
                raise ValueError(f"step {step} is past the progress-only phase: values_next_target is needed")
            target = td_targets(values_next_target, batch["reward"], batch["done"], self.config.gamma)
            td_loss = F.mse_loss(values, target.to(device))
        return {"loss": progress_loss + weight * td_loss, "progress_loss": progress_loss.detach(),
                "td_loss": td_loss.detach(), "td_weight": torch.tensor(weight)}


class ValueTrainer:
    """One optimiser step per call on a batch dict; keeps the target network and the step count.

    Batch keys: ``images`` and ``next_images`` (B, V, 3, S, S) float in [-1, 1], ``progress`` (B,),
    ``is_success_episode`` (B,) bool, ``reward`` (B,), ``done`` (B,) bool, and ``instruction``
    (B strings) when the model uses instructions. At a terminal frame ``next_images`` is ignored
    (any frame will do, e.g. the same one). An optional ``progress_normaliser`` (float) replaces the
    progress loss's count of successful-episode frames (data-parallel shares of a global batch).

    ``model`` may be wrapped in DistributedDataParallel: the forward pass goes through the wrapper,
    the target network and the state dicts use the wrapped module.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 config: ValueTrainingConfig | None = None):
        self.model = model
        self.module = model.module if isinstance(model, DistributedDataParallel) else model
        self.optimizer = optimizer
        self.config = config or ValueTrainingConfig()
        self.loss = ValueLoss(self.config)
        self.step_count = 0
        self.target_model: nn.Module | None = None
        if self.config.target is TargetMode.EMA:
            self.target_model = copy.deepcopy(self.module).eval().requires_grad_(False)

    def _bootstrap_model(self) -> nn.Module:
        return self.target_model if self.target_model is not None else self.module

    def step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """Forward, loss, backward, clip, optimiser step, target update; returns the losses as floats."""
        device = next(self.model.parameters()).device
        instruction = batch.get("instruction")
        self.model.train()
        values = self.model(torch.as_tensor(batch["images"], device=device), instruction)
        next_values = None
        if self.loss.td_weight_at(self.step_count) > 0:
            with torch.no_grad():
                next_values = self._bootstrap_model()(torch.as_tensor(batch["next_images"], device=device),
                                                      instruction)
        losses = self.loss(values, batch, self.step_count, next_values)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.config.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.update_target()
        self.step_count += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def update_target(self) -> None:
        """target <- ema * target + (1 - ema) * model (parameters); buffers are copied."""
        if self.target_model is None:
            return
        weight = 1.0 - self.config.target_ema
        for target, online in zip(self.target_model.parameters(), self.module.parameters(), strict=True):
            target.lerp_(online, weight)
        for target, online in zip(self.target_model.buffers(), self.module.buffers(), strict=True):
            target.copy_(online)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat ``{name: tensor}`` (step, model, target network, optimiser): ready for safetensors."""
        state = {"step": torch.tensor(self.step_count, dtype=torch.int64)}
        state.update(_prefixed("model.", self.module.state_dict()))
        if self.target_model is not None:
            state.update(_prefixed("target.", self.target_model.state_dict()))
        state.update(_flatten_optimizer(self.optimizer.state_dict()))
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` gave (the optimiser must have the same parameter groups)."""
        self.step_count = int(state["step"])
        self.module.load_state_dict(_unprefixed("model.", state))
        if self.target_model is not None:
            self.target_model.load_state_dict(_unprefixed("target.", state))
        self.optimizer.load_state_dict(_unflatten_optimizer(state, self.optimizer.state_dict()))


def _prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _unprefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_number_sequence(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(map(_is_number, value))


def _flatten_optimizer(opt_state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Optimiser tensors and numeric hyper-parameters as ``optimizer.state.<i>.<key>`` /
    ``optimizer.param_groups.<g>.<key>`` tensors (``params`` lists, flags and None are left out:
    they come from the optimiser the state is loaded into)."""
    flat: dict[str, torch.Tensor] = {}
    for index, entries in opt_state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                flat[f"optimizer.state.{index}.{key}"] = value.detach().cpu().contiguous()
            elif _is_number(value):
                flat[f"optimizer.state.{index}.{key}"] = torch.tensor(value, dtype=torch.float64)
    for group_index, group in enumerate(opt_state["param_groups"]):
        for key, value in group.items():
            name = f"optimizer.param_groups.{group_index}.{key}"
            if _is_number(value):
                flat[name] = torch.tensor(float(value), dtype=torch.float64)
            elif key != "params" and _is_number_sequence(value):
                flat[name] = torch.tensor([float(v) for v in value], dtype=torch.float64)
    return flat


def _unflatten_optimizer(state: Mapping[str, torch.Tensor], template: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_flatten_optimizer` on the structure of the live optimiser's ``template``."""
    opt_state: dict[int, dict[str, Any]] = {}
    prefix = "optimizer.state."
    for name, value in state.items():
        if name.startswith(prefix):
            index, key = name[len(prefix):].split(".", 1)
            opt_state.setdefault(int(index), {})[key] = value
    groups = []
    for group_index, group in enumerate(template["param_groups"]):
        group = dict(group)
        for key, old in group.items():
            value = state.get(f"optimizer.param_groups.{group_index}.{key}")
            if value is None:
                continue
            if isinstance(old, (tuple, list)):
                group[key] = type(old)(value.tolist())
            else:
                group[key] = type(old)(value.item())
        groups.append(group)
    return {"state": opt_state, "param_groups": groups}


def progress_correlation(values: Any, progress: Any) -> float:
    """Pearson correlation of V with t/T (use frames of held-out successful episodes); nan if constant."""
    v = np.asarray(values, dtype=np.float64).ravel()
    p = np.asarray(progress, dtype=np.float64).ravel()
    if v.shape != p.shape or v.size < 2:
        raise ValueError(f"need two equal-length arrays of >= 2 values, got {v.size} and {p.size}")
    v, p = v - v.mean(), p - p.mean()
    denominator = np.sqrt((v * v).sum() * (p * p).sum())
    return float((v * p).sum() / denominator) if denominator > 0 else float("nan")


def success_auc(final_values: Any, success_labels: Any) -> float:
    """ROC AUC of final-frame V separating successes (True) from failures: the Mann-Whitney rank
    statistic with average ranks for ties (1.0 perfect, 0.5 chance or all tied, 0.0 reversed)."""
    scores = np.asarray(final_values, dtype=np.float64).ravel()
    labels = np.asarray(success_labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} values but {labels.size} labels")
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs at least one success and one failure")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based average ranks
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))
