"""Controllable multi-view dynamics model: K context frames of every view + H actions -> H future frames.

A pixel-space video transformer that returns the flow-matching velocity of the H future frames of
every camera view (see :mod:`rise.models.flow_matching` for the loss and the sampler). Each frame
(or ``temporal_patch`` consecutive frames) is cut into ``patch_size`` patches; a token is

    patch embedding + spatial position + frame-time (context 0..K-1, future K..K+H-1) + view
    (+ for future frame k: the encoded action of step k)

Views share every weight and are told apart only by the learned view embedding. Each block runs

    self-attention over all tokens of one view (space x time)
    -> cross-view attention (tokens at the same frame and patch attend across the views)
    -> cross-attention to the action tokens
    -> MLP

with DiT-style adaLN-Zero modulation from a per-frame conditioning vector: flow time ``t`` +
context-noise level + (future frames) the encoded action of that step. Actions (already normalised
with dataset statistics) go through a per-step MLP and one small transformer layer over the H steps;
they enter by cross-attention (as in the paper), by modulation and added to their own frame's tokens.

What the network predicts (``prediction_type``):

- ``"sample"`` (default): the clean future x0, as the last context frame + a predicted change
  (``residual_to_context``); the velocity returned is ``(x_t - x0) / max(t, MIN_T)``. With patches
  of 8x8x3 = 192 values and 128-wide tokens a network cannot pass the noise through, as predicting
  v = noise - x0 directly would require (cf. Li & He 2025, "Back to Basics: Let Denoising
  Generative Models Denoise"); starting from "nothing moves" it only learns what changes.
- ``"velocity"``: the velocity directly (the textbook parametrisation).

Example::

    model = DynamicsModel.from_named_config("cpu_default")
    v = model(x_t, context, actions, t)            # velocity, same shape as x_t
    model.save_pretrained("ckpt/dynamics")          # config.json + diffusion_pytorch_model.safetensors
    model = DynamicsModel.from_pretrained_or_config("ckpt/dynamics")
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

PREDICTION_TYPES = ("sample", "velocity")
MIN_T = 0.05
"""Smallest t used to turn a predicted x0 into a velocity (avoids dividing by ~0 near the data)."""
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    # Trains here in minutes: 64x64 px, 2 views, 2 context frames -> 8 future frames of 7-D actions;
    # tokens of 2 frames x 8x8 px (5 x 64 tokens per view), 2.3 M parameters, ~2 train steps/s at
    # batch 8 on 2 CPU cores (temporal_patch=1: ~0.8 steps/s).
    "cpu_default": dict(
        image_size=(64, 64), patch_size=8, in_channels=3, num_views=2, context_frames=2, horizon=8,
        action_dim=7, width=128, depth=4, heads=4, mlp_ratio=2.0, temporal_patch=2,
    ),
    # For tests and smoke runs: 16x16 px, 2 views, 2 context -> 3 future frames.
    "tiny": dict(
        image_size=(16, 16), patch_size=4, in_channels=3, num_views=2, context_frames=2, horizon=3,
        action_dim=7, width=32, depth=2, heads=2, mlp_ratio=2.0,
    ),
    # The paper's shape (3 views at 192x256, 4 context -> 25 future frames, 14-D dual-arm actions),
    # documented, not trained here. The paper fine-tunes a large pretrained video model (Genie
    # Envisioner) that denoises in a video-VAE latent; this is a pixel-space stand-in of 239 M
    # parameters (patch 16 -> 192 tokens per frame, 29 frames: 5568 tokens per view), sized like
    # DiT-B plus the cross-view and action layers.
    "paper": dict(
        image_size=(192, 256), patch_size=16, in_channels=3, num_views=3, context_frames=4, horizon=25,
        action_dim=14, width=768, depth=12, heads=12, mlp_ratio=4.0, temporal_patch=1,
    ),
}


def named_config(name: str) -> dict[str, Any]:
    """A copy of the named config's keyword arguments; a ValueError with a suggestion on a typo."""
    if name not in NAMED_CONFIGS:
        close = difflib.get_close_matches(name, list(NAMED_CONFIGS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dynamics config {name!r}{hint} (available: {', '.join(NAMED_CONFIGS)})")
    return dict(NAMED_CONFIGS[name])


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of scalars ``t`` in [0, 1] (scaled by 1000 like DiT timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_table(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(P, dim) sin-cos features of integer positions, entries in [-1, 1] (frequencies 1 .. 1/100)."""
    half = dim // 2
    freqs = 100.0 ** (-torch.arange(half, dtype=torch.float32) / max(half, 1))
    args = positions.float()[:, None] * freqs[None]
    table = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(table, (0, dim - table.shape[1]))


class ScalarEmbedder(nn.Module):
    """Sinusoidal features of a scalar per sample, then an MLP: (B,) -> (B, width)."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


def mlp(width: int, ratio: float) -> nn.Sequential:
    """Linear -> GELU -> Linear with a hidden width of ``ratio * width``."""
    hidden = int(width * ratio)
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))


class Attention(nn.Module):
    """Multi-head attention over the second-to-last axis; ``context`` given -> cross-attention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (N, L, D), ``context`` (N, S, D) or None -> (N, L, D)."""
        k, v = self.kv(x if context is None else context).chunk(2, dim=-1)
        q, k, v = (a.unflatten(-1, (self.heads, -1)).transpose(1, 2) for a in (self.q(x), k, v))
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class ActionEncoder(nn.Module):
    """Normalised actions (B, H, A) -> action tokens (B, H, width): per-step MLP + one transformer layer.

    The layer is pre-norm self-attention + MLP over the H steps (written out rather than
    ``nn.TransformerEncoderLayer``, whose eval-mode fast path changes the last bits of the output).
    """

    def __init__(self, action_dim: int, horizon: int, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.step_mlp = nn.Sequential(nn.Linear(action_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.step_pos = nn.Parameter(torch.zeros(horizon, width))
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = mlp(width, mlp_ratio)
        self.norm_out = nn.LayerNorm(width)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        x = self.step_mlp(actions) + self.step_pos
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return self.norm_out(x)


def _per_frame(c: torch.Tensor) -> torch.Tensor:
    """Per-frame conditioning (B, F, D) -> (B, 1, F, 1, D), to broadcast over views and patches."""
    return c[:, None, :, None]


class DynamicsBlock(nn.Module):
    """Self-attention per view -> cross-view attention -> action cross-attention -> MLP, adaLN-Zero.

    The adaLN shift/scale/gate come from a per-frame conditioning vector (flow time + that frame's
    action), so each future frame's tokens are modulated by the action that leads to it.
    """

    SUBLAYERS = 4

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norms = nn.ModuleList(
            nn.LayerNorm(width, elementwise_affine=False) for _ in range(self.SUBLAYERS)
        )
        self.self_attn = Attention(width, heads)
        self.view_attn = Attention(width, heads)
        self.action_attn = Attention(width, heads)
        self.mlp = mlp(width, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * self.SUBLAYERS * width))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, action_tokens: torch.Tensor) -> torch.Tensor:
        """``x`` (B, V, F, N, D) tokens; ``cond`` (B, F, D) per frame; ``action_tokens`` (B, H, D)."""
        b, views, frames, patches, dim = x.shape
        tokens = frames * patches
        mods = [_per_frame(m) for m in self.ada(cond).chunk(3 * self.SUBLAYERS, dim=-1)]

        def sub(i: int) -> torch.Tensor:
            return self.norms[i](x) * (1 + mods[3 * i + 1]) + mods[3 * i]

        h = self.self_attn(sub(0).reshape(b * views, tokens, dim))
        x = x + mods[2] * h.view(x.shape)
        h = self.view_attn(sub(1).permute(0, 2, 3, 1, 4).reshape(b * tokens, views, dim))
        x = x + mods[5] * h.view(b, frames, patches, views, dim).permute(0, 3, 1, 2, 4)
        h = self.action_attn(sub(2).reshape(b, views * tokens, dim), action_tokens)
        x = x + mods[8] * h.view(x.shape)
        return x + mods[11] * self.mlp(sub(3))


class DynamicsModel(ModelMixin, ConfigMixin):
    """Flow-matching velocity of H future frames of V views, given K context frames and H actions.

    Args:
        image_size: frame (height, width) in pixels; both divisible by ``patch_size``.
        patch_size: side of the square patches a frame is cut into (one token each).
        in_channels: image channels (3 for RGB).
        num_views: camera views V; they share all weights except the view embedding.
        context_frames: K past frames per view given as context.
        horizon: H future frames (= action steps) predicted per view.
        action_dim: A, size of one normalised action.
        width: token width D.
        depth: number of blocks.
        heads: attention heads (``width`` divisible by it).
        mlp_ratio: hidden width of the MLPs relative to ``width``.
        temporal_patch: consecutive frames per token (tubelet length tp); K and H must be multiples.
            2 halves the tokens (about 2-3x faster on CPU) at some cost in temporal detail.
        prediction_type: ``"sample"`` (predict x0, return the implied velocity) or ``"velocity"``.
        residual_to_context: with ``"sample"``, predict x0 as the last context frame + a change.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        image_size: tuple[int, int] | list[int] = (64, 64),
        patch_size: int = 8,
        in_channels: int = 3,
        num_views: int = 2,
        context_frames: int = 2,
        horizon: int = 8,
        action_dim: int = 7,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        temporal_patch: int = 1,
        prediction_type: str = "sample",
        residual_to_context: bool = True,
    ):
        super().__init__()
        h, w = (int(s) for s in image_size)
        self.register_to_config(image_size=[h, w])  # as JSON will give it back: exact config round trip
        if h % patch_size or w % patch_size:
            raise ValueError(f"image_size {h}x{w} is not divisible by patch_size {patch_size}")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        if min(num_views, context_frames, horizon, action_dim, depth, temporal_patch) < 1:
            raise ValueError("num_views, context_frames, horizon, action_dim, depth and temporal_patch "
                             "must be >= 1")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if context_frames % temporal_patch or horizon % temporal_patch:
            raise ValueError(f"context_frames {context_frames} and horizon {horizon} must be multiples of "
                             f"temporal_patch {temporal_patch}")
        self.grid = (h // patch_size, w // patch_size)
        num_patches = self.grid[0] * self.grid[1]
        patch_dim = temporal_patch * patch_size * patch_size * in_channels
        self.patch_embed = nn.Linear(patch_dim, width)
        self.pos_embed = nn.Parameter(torch.zeros(num_patches, width))
        self.frame_embed = nn.Parameter(torch.zeros((context_frames + horizon) // temporal_patch, width))
        self.view_embed = nn.Parameter(torch.zeros(num_views, width))
        self.time_embed = ScalarEmbedder(width)
        self.context_noise_embed = ScalarEmbedder(width)
        self.action_encoder = ActionEncoder(action_dim, horizon, width, heads, mlp_ratio)
        self.action_to_frame = nn.Linear(temporal_patch * width, width)
        self.blocks = nn.ModuleList(DynamicsBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.final = nn.Linear(width, patch_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier linears, sin-cos position/frame/view tables, zero adaLN and output layers (adaLN-Zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Position-like embeddings start as sin-cos tables of unit-scale entries (as DiT's fixed ones):
        # with tiny random ones, zero-initialised output layers sit at a saddle where the model
        # predicts spatially constant frames for hundreds of steps.
        with torch.no_grad():
            gh, gw = self.grid
            rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
            half = self.pos_embed.shape[1] // 2
            self.pos_embed.copy_(torch.cat([sincos_table(rows.flatten(), half),
                                            sincos_table(cols.flatten(), self.pos_embed.shape[1] - half)], 1))
            for table in (self.frame_embed, self.view_embed, self.action_encoder.step_pos):
                table.copy_(sincos_table(torch.arange(table.shape[0]), table.shape[1]))
        for linear in [blk.ada[-1] for blk in self.blocks] + [self.final_ada[-1], self.final]:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    @classmethod
    def from_named_config(cls, name: str, **overrides: Any) -> DynamicsModel:
        """A freshly initialised model from a named config (``cpu_default``, ``paper``) and overrides."""
        return cls(**{**named_config(name), **overrides})

    @classmethod
    def from_pretrained_or_config(cls, path: str | Path | None, **config: Any) -> DynamicsModel:
        """Load a local checkpoint folder, or build from ``config`` when ``path`` is None.

        With a path, ``config`` entries override the saved config; weights whose shape then no longer
        fits (e.g. the view embedding when ``num_views`` changes) are freshly initialised, the rest is
        loaded. Never contacts a hub (``local_files_only=True``).
        """
        if path is None:
            return cls(**config)
        if not Path(path).is_dir():
            raise FileNotFoundError(f"no dynamics checkpoint folder at {path}")
        if not config:
            return cls.from_pretrained(path, local_files_only=True, use_safetensors=True)
        return cls.from_pretrained(
            path, local_files_only=True, use_safetensors=True, ignore_mismatched_sizes=True,
            low_cpu_mem_usage=False, **config,
        )

    def _patchify(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, V, F, C, h, w) -> (B, V, F / tp, N, tp * C * p * p): one row per spatio-temporal patch."""
        b, v, f, c = frames.shape[:4]
        tp, p, (gh, gw) = self.config.temporal_patch, self.config.patch_size, self.grid
        x = frames.reshape(b, v, f // tp, tp, c, gh, p, gw, p).permute(0, 1, 2, 5, 7, 3, 4, 6, 8)
        return x.reshape(b, v, f // tp, gh * gw, tp * c * p * p)

    def _unpatchify(self, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Inverse of :meth:`_patchify`: (B, V, F / tp, N, tp * C * p * p) -> ``shape`` (B, V, F, C, h, w)."""
        b, v, f, c = shape[:4]
        tp, p, (gh, gw) = self.config.temporal_patch, self.config.patch_size, self.grid
        x = x.reshape(b, v, f // tp, gh, gw, tp, c, p, p).permute(0, 1, 2, 5, 6, 3, 7, 4, 8)
        return x.reshape(shape)

    def _check(self, x_t: torch.Tensor, context: torch.Tensor, actions: torch.Tensor) -> None:
        cfg, b = self.config, x_t.shape[0]
        frame = (cfg.in_channels, *(int(s) for s in cfg.image_size))
        for name, tensor, shape in (("x_t", x_t, (b, cfg.num_views, cfg.horizon, *frame)),
                                    ("context", context, (b, cfg.num_views, cfg.context_frames, *frame)),
                                    ("actions", actions, (b, cfg.horizon, cfg.action_dim))):
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name} must be {shape}, got {tuple(tensor.shape)}")

    def forward(
        self,
        x_t: torch.Tensor,
        context: torch.Tensor,
        actions: torch.Tensor,
        t: torch.Tensor,
        context_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the velocity.

        Args:
            x_t: noisy future frames (B, V, H, C, h, w).
            context: context frames (B, V, K, C, h, w) in [-1, 1].
            actions: normalised actions (B, H, A).
            t: flow time (B,) in [0, 1]; 0 = data, 1 = pure noise.
            context_noise: std (B,) of the Gaussian noise added to the context (augmentation);
                None means clean context (0).

        Returns:
            The velocity (B, V, H, C, h, w).
        """
        self._check(x_t, context, actions)
        b, views, horizon, chans, h, w = x_t.shape
        k = context.shape[2]
        if context_noise is None:
            context_noise = torch.zeros(b, device=x_t.device)
        tp = self.config.temporal_patch
        action_tokens = self.action_encoder(actions)
        per_step = self.action_to_frame(action_tokens.reshape(b, horizon // tp, -1))  # (B, H/tp, D)
        per_frame = F.pad(per_step, (0, 0, k // tp, 0))  # (B, (K+H)/tp, D); zeros for context frames
        cond = (self.time_embed(t) + self.context_noise_embed(context_noise))[:, None] + per_frame
        x = self.patch_embed(self._patchify(torch.cat([context, x_t], dim=2)))  # (B, V, (K+H)/tp, N, D)
        x = x + self.pos_embed + self.frame_embed[:, None] + self.view_embed[:, None, None]
        x = x + _per_frame(per_frame)
        for block in self.blocks:
            x = block(x, cond, action_tokens)
        x, cond = x[:, :, k // tp:], cond[:, k // tp:]
        shift, scale = (_per_frame(m) for m in self.final_ada(cond).chunk(2, dim=-1))
        out = self.final(self.final_norm(x) * (1 + scale) + shift)  # (B, V, H/tp, N, tp*C*p*p)
        out = self._unpatchify(out, (b, views, horizon, chans, h, w))
        if self.config.prediction_type == "velocity":
            return out
        if self.config.residual_to_context:
            out = out + context[:, :, -1:]
        return (x_t - out) / t.clamp(min=MIN_T).view(-1, 1, 1, 1, 1, 1)
