"""Rectified-flow training loss and Euler sampling for :class:`~rise.models.dynamics.DynamicsModel`.

Convention (the same as diffusers' ``FlowMatchEulerDiscreteScheduler``, with ``t`` = its sigma)::

    x_t = (1 - t) * x0 + t * noise        t = 0: data, t = 1: pure noise
    v   = noise - x0                       the model returns v (whatever it predicts inside)

Sampling integrates dx/dt = v from t = 1 (noise) down to t = 0 (data) with Euler steps.

The loss is measured in sample space by default, ``MSE(x0_pred, x0)`` with ``x0_pred = x_t - t v_pred``
(:attr:`LossSpace.SAMPLE`). The plain velocity MSE weights the error on x0 by 1/t^2, so most of the
gradient goes to nearly clean inputs; on the toy clips of the tests the model then took several
times longer to learn where things move, which is decided from almost pure noise in the first
sampling steps (with the velocity loss, 400 steps still left the samples near copy-last-frame;
with this one, 300 steps put them 8-16 dB above it). ``LossSpace.VELOCITY`` is the textbook
``MSE(v_pred, v)``.

During training the context frames get Gaussian noise of a random std ~ U(0, ``context_noise_max``)
per sample, and the model is told that std, so it learns to cope with blurred or noisy context:
the imagined frames it is later fed back are not perfect either.

Example::

    loss = training_step(model, {"context": c, "future": f, "actions": a}, generator)
    loss.backward()
    frames = sample(model, c, a, steps=10, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rise.models.dynamics import MIN_T


class TimeSampling(enum.Enum):
    """How training draws the flow time t."""

    UNIFORM = "uniform"
    """t ~ U(0, 1)."""
    LOGIT_NORMAL = "logit_normal"
    """t = sigmoid(n), n ~ N(mean, std): more weight on mid-range t (SD3's choice)."""


class LossSpace(enum.Enum):
    """Where the squared error is measured."""

    SAMPLE = "sample"
    """MSE(x0_pred, x0) with x0_pred = x_t - t v_pred: every t weighted alike in pixel space."""
    VELOCITY = "velocity"
    """MSE(v_pred, v): errors on x0 weighted by 1/t^2 (rectified flow's textbook loss)."""


@dataclasses.dataclass(frozen=True)
class FlowMatchingConfig:
    """Settings of the training loss."""

    loss_space: LossSpace = LossSpace.SAMPLE
    """Measure the error on x0 (default) or on the velocity."""
    time_sampling: TimeSampling = TimeSampling.UNIFORM
    """Distribution of the flow time t during training."""
    logit_mean: float = 0.0
    """Mean of the normal behind logit-normal t."""
    logit_std: float = 1.0
    """Std of the normal behind logit-normal t."""
    context_noise_max: float = 0.1
    """Context frames get Gaussian noise of std ~ U(0, this) per sample (in [-1, 1] pixel units)."""

    def __post_init__(self) -> None:
        if self.logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {self.logit_std}")
        if self.context_noise_max < 0:
            raise ValueError(f"context_noise_max must be >= 0, got {self.context_noise_max}")


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved next to ``like``."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=device).to(device=like.device, dtype=like.dtype)


def _rand(n: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, device=device).to(device=like.device, dtype=like.dtype)


def sample_time(n: int, config: FlowMatchingConfig, generator: torch.Generator | None,
                like: torch.Tensor) -> torch.Tensor:
    """Draw ``n`` flow times in (0, 1) according to ``config.time_sampling``."""
    if config.time_sampling is TimeSampling.UNIFORM:
        return _rand(n, generator, like)
    normal = _randn((n,), generator, like)
    return torch.sigmoid(config.logit_mean + config.logit_std * normal)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The noisy sample ``x_t = (1 - t) x0 + t noise`` and its velocity target ``noise - x0``."""
    tb = t.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - tb) * x0 + tb * noise, noise - x0


def flow_matching_loss(
    model: nn.Module,
    context: torch.Tensor,
    future: torch.Tensor,
    actions: torch.Tensor,
    generator: torch.Generator | None = None,
    config: FlowMatchingConfig | None = None,
    rows: slice | None = None,
) -> torch.Tensor:
    """The flow-matching loss (see :class:`LossSpace`), with context-noise augmentation.

    Args:
        model: a :class:`DynamicsModel` (or anything with its ``forward`` signature).
        context: (B, V, K, C, h, w) frames in [-1, 1].
        future: (B, V, H, C, h, w) target frames in [-1, 1].
        actions: (B, H, A) normalised actions.
        generator: source of all randomness (t, noise, context noise), for reproducible runs.
        config: time distribution and context-noise level (None: the defaults).
        rows: data-parallel training: the tensors are these rows of a global batch of
            ``rows.stop`` samples (e.g. ``slice(rank, batch_size, world)``); the randomness is drawn
            for the global batch and these rows of it are kept, so every sample sees the noise it
            would in a single process. None: the tensors are the whole batch.
    """
    config = config or FlowMatchingConfig()
    n, keep = _global_rows(future.shape[0], rows)
    t = keep(sample_time(n, config, generator, future))
    x_t, target = interpolate(future, keep(_randn((n, *future.shape[1:]), generator, future)), t)
    ctx_std = keep(_rand(n, generator, context)) * config.context_noise_max
    ctx_noise = keep(_randn((n, *context.shape[1:]), generator, context))
    noisy_context = context + ctx_std.view(-1, *([1] * (context.dim() - 1))) * ctx_noise
    v_pred = model(x_t, noisy_context, actions, t, context_noise=ctx_std)
    if config.loss_space is LossSpace.VELOCITY:
        return F.mse_loss(v_pred, target)
    # x0 = x_t - t v; a sample-predicting DynamicsModel divides by max(t, MIN_T), so undo exactly that
    module = model.module if isinstance(model, DistributedDataParallel) else model
    if getattr(getattr(module, "config", None), "prediction_type", "velocity") == "sample":
        t = t.clamp(min=MIN_T)
    return F.mse_loss(x_t - t.view(-1, *([1] * (future.dim() - 1))) * v_pred, future)


def _global_rows(b: int, rows: slice | None):
    """(global batch size, a function keeping this process's rows of a global draw)."""
    if rows is None:
        return b, lambda x: x
    if rows.stop is None or len(range(*rows.indices(rows.stop))) != b:
        raise ValueError(f"rows {rows} of a global batch do not match the {b} rows given")
    return rows.stop, lambda x: x[rows]


def training_step(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    generator: torch.Generator | None = None,
    config: FlowMatchingConfig | None = None,
    rows: slice | None = None,
) -> torch.Tensor:
    """The loss of one batch (the caller does backward and the optimiser step).

    ``batch`` holds ``context`` (B, V, K, 3, h, w) and ``future`` (B, V, H, 3, h, w) floats in [-1, 1]
    and ``actions`` (B, H, A) normalised; they are moved to the model's device. ``model`` may be
    wrapped in DistributedDataParallel; ``rows``: see :func:`flow_matching_loss`.
    """
    missing = {"context", "future", "actions"} - set(batch)
    if missing:
        raise KeyError(f"batch lacks {sorted(missing)}")
    param = next(model.parameters())
    context, future, actions = (batch[k].to(device=param.device, dtype=param.dtype)
                                for k in ("context", "future", "actions"))
    return flow_matching_loss(model, context, future, actions, generator, config, rows)


@torch.no_grad()
def sample(
    model: nn.Module,
    context: torch.Tensor,
    actions: torch.Tensor,
    steps: int = 10,
    generator: torch.Generator | None = None,
    context_noise: float = 0.0,
    scheduler: FlowMatchEulerDiscreteScheduler | None = None,
) -> torch.Tensor:
    """Generate the future frames (B, V, H, C, h, w) in [-1, 1] by integrating the flow from noise.

    Args:
        model: a :class:`DynamicsModel`.
        context: (B, V, K, C, h, w) frames in [-1, 1] (real, or earlier imagined frames); moved to
            the model's device, as are the actions and the result.
        actions: (B, H, A) normalised actions.
        steps: Euler steps (model evaluations).
        generator: seeds the starting noise; the same seed gives the same frames.
        context_noise: the context-noise level to tell the model (0: clean context; a small value
            such as 0.02 can help when ``context`` is itself imagined).
        scheduler: optional diffusers ``FlowMatchEulerDiscreteScheduler`` (its time ``shift`` etc.
            then apply); None uses plain uniform Euler steps from t = 1 to 0.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    cfg = model.config
    param = next(model.parameters())
    context, actions = (x.to(device=param.device, dtype=param.dtype) for x in (context, actions))
    b = context.shape[0]
    shape = (b, cfg.num_views, cfg.horizon, cfg.in_channels, *(int(s) for s in cfg.image_size))
    x = _randn(shape, generator, context)
    ctx_std = torch.full((b,), float(context_noise), device=context.device, dtype=context.dtype)
    if scheduler is None:
        times = torch.linspace(1.0, 0.0, steps + 1).tolist()
        for t, t_next in zip(times[:-1], times[1:], strict=True):
            v = model(x, context, actions, torch.full((b,), t, device=x.device, dtype=x.dtype), ctx_std)
            x = x + (t_next - t) * v
    else:
        scheduler.set_timesteps(steps, device=x.device)
        for i, timestep in enumerate(scheduler.timesteps):
            t = scheduler.sigmas[i].to(device=x.device, dtype=x.dtype).expand(b)
            v = model(x, context, actions, t, ctx_std)
            x = scheduler.step(v, timestep, x, return_dict=False)[0]
    return x.clamp(-1.0, 1.0)
