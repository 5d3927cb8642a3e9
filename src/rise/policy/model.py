"""Advantage-conditioned flow-matching policy: (views, state, advantage bin[, instruction]) -> H actions.

Observation tokens: every camera view is encoded by one transformers ``ViTModel`` (shared weights,
built from a ``ViTConfig`` or initialised from a *local* pretrained folder); its CLS token plus a
learned view embedding is the view's token. An MLP of the normalised joint state adds a state token,
an embedding of the advantage bin (``num_bins + 1`` rows, the last meaning "unknown") a bin token,
and optionally a hashed bag-of-words instruction a text token.

Action head (pi0-style flow matching): the H noisy action tokens (linear embedding + learned step
position, mixed with the flow-time embedding by an MLP) pass through ``head_depth`` transformer
layers that self-attend and cross-attend to the observation tokens, so the bin conditions every
action. Conventions as :mod:`rise.models.flow_matching`::

    x_t = (1 - t) * x0 + t * noise,   v = noise - x0,   sample: Euler from t = 1 (noise) to t = 0.

Actions and states enter and leave normalised (:class:`~rise.models.episodes.NormStats`); images are
float (B, V, 3, S, S) in [-1, 1]. :class:`~rise.policy.policy_io.Policy` wraps the model with its
normalisation and bins for deployment and saving.

Example::

    model = PolicyModel(policy_config("tiny"))
    loss = model.loss(images, state, actions, bins, generator=torch.Generator().manual_seed(0))
    actions = model.sample(images, state, bins, steps=10)     # (B, H, A) normalised
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rise.config.schema import FieldError, did_you_mean, setting
from rise.models.dynamics import ScalarEmbedder
from rise.models.flow_matching import interpolate
from rise.models.value import instruction_tokens

_VIT_SHAPE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "image_size", "patch_size")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Architecture of a :class:`PolicyModel` (saved in ``config.json`` beside the weights)."""

    image_size: int = setting(64, doc="square input side [px]; frames are resized to it", ge=8)
    num_views: int = setting(2, doc="camera views per observation (encoder weights shared)", ge=1)
    patch_size: int = setting(8, doc="ViT patch side [px]; must divide image_size", ge=1)
    hidden_size: int = setting(128, doc="ViT width (and of the observation tokens)", ge=8)
    layers: int = setting(4, doc="ViT transformer layers", ge=1)
    heads: int = setting(4, doc="attention heads in ViT and action head; divides both widths", ge=1)
    intermediate_size: int = setting(512, doc="ViT MLP width (usually 4 x hidden_size)", ge=1)
    state_dim: int = setting(7, doc="joint state size J (arm joints + gripper)", ge=1)
    action_dim: int = setting(7, doc="action size A (absolute joint targets)", ge=1)
    horizon: int = setting(8, doc="actions per chunk H", ge=1)
    head_width: int = setting(128, doc="width of the action head's transformer", ge=8)
    head_depth: int = setting(3, doc="action-head layers (self- + cross-attention + MLP each)", ge=1)
    num_bins: int = setting(10, doc="advantage bins; index num_bins means 'unknown'", ge=1)
    use_instruction: bool = setting(False, doc="add a hashed bag-of-words instruction token")
    instruction_buckets: int = setting(4096, doc="hash buckets of the instruction embedding table", ge=1)
    pretrained_path: str | None = setting(
        None, doc="local folder of a transformers ViT checkpoint to initialise the encoder from (no hub)"
    )

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise FieldError("patch_size", f"{self.patch_size} does not divide image_size {self.image_size}")
        if self.hidden_size % self.heads:
            raise FieldError("heads", f"{self.heads} does not divide hidden_size {self.hidden_size}")
        if self.head_width % self.heads:
            raise FieldError("heads", f"{self.heads} does not divide head_width {self.head_width}")

    def to_dict(self) -> dict:
        """Plain JSON-ready mapping."""
        return dataclasses.asdict(self)


POLICY_CONFIGS: dict[str, PolicyConfig] = {
    # 64 px, 2 views, ViT patch 8, width 128 x 4 layers, head 128 x 3: trains in minutes on 2 CPU cores.
    "cpu_default": PolicyConfig(),
    # Paper-scale (documentation; needs a GPU): ViT-base/16 at 224 px, 3 views, 14-D bimanual arm,
    # 50-step chunks. Set pretrained_path to a local ViT folder, e.g. a downloaded
    # google/vit-base-patch16-224-in21k.
    "large": PolicyConfig(
        image_size=224, num_views=3, patch_size=16, hidden_size=768, layers=12, heads=12,
        intermediate_size=3072, state_dim=14, action_dim=14, horizon=50, head_width=768, head_depth=6,
        use_instruction=True,
    ),
    # For tests and smoke runs: 16 px, patch 8, width 32, 1 layer (trains in seconds).
    "tiny": PolicyConfig(image_size=16, patch_size=8, hidden_size=32, layers=1, heads=2, intermediate_size=64,
                         horizon=3, head_width=32, head_depth=1, instruction_buckets=64),
}


def policy_config(name: str, **overrides) -> PolicyConfig:
    """A named config (``cpu_default``, ``large`` or ``tiny``), with optional field overrides.

    Example::

        policy_config("tiny", action_dim=14, state_dim=14)
    """
    if name not in POLICY_CONFIGS:
        hint = did_you_mean(name, list(POLICY_CONFIGS))
        raise KeyError(f"unknown policy config {name!r}{hint} (known: {', '.join(POLICY_CONFIGS)})")
    return dataclasses.replace(POLICY_CONFIGS[name], **overrides)


def _build_vit(config: PolicyConfig, load_pretrained: bool, saved: dict | None = None) -> nn.Module:
    """The ViT: from ``saved`` (a full transformers config dict) when given, else from the pretrained
    folder when set and ``load_pretrained``, else from the policy config's fields."""
    from transformers import ViTConfig, ViTModel

    if saved is not None:
        return ViTModel(ViTConfig.from_dict(saved), add_pooling_layer=False)
    expected = (config.hidden_size, config.layers, config.heads, config.intermediate_size,
                config.image_size, config.patch_size)
    if load_pretrained and config.pretrained_path is not None:
        model = ViTModel.from_pretrained(config.pretrained_path, local_files_only=True,
                                         add_pooling_layer=False, use_safetensors=True)
        found = tuple(getattr(model.config, n) for n in _VIT_SHAPE)
        if found != expected:
            raise ValueError(f"pretrained_path {config.pretrained_path} has {'/'.join(_VIT_SHAPE)} {found}, "
                             f"but the policy config says {expected}")
        return model
    vit = ViTConfig(**dict(zip(_VIT_SHAPE, expected, strict=True)), num_channels=3, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    return ViTModel(vit, add_pooling_layer=False)


def _noise(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved next to ``like``."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=device).to(device=like.device, dtype=like.dtype)


class PolicyModel(nn.Module):
    """pi(actions | views, state, advantage bin[, instruction]) by flow matching (see the module doc).

    Args:
        config: the architecture.
        load_pretrained: initialise the ViT from ``config.pretrained_path`` when it is set
            (``local_files_only``); loading a saved policy passes False (the weights are all saved).
        backbone_config: the ViT's full transformers config as saved beside the weights (rebuilds a
            pretrained-initialised encoder exactly); None: from ``config``.
    """

    def __init__(self, config: PolicyConfig, *, load_pretrained: bool = True,
                 backbone_config: dict | None = None):
        super().__init__()
        self.config = config
        hidden, width = config.hidden_size, config.head_width
        self.backbone = _build_vit(config, load_pretrained, backbone_config)
        self.view_embedding = nn.Parameter(torch.randn(config.num_views, hidden) * 0.02)
        self.state_mlp = nn.Sequential(nn.Linear(config.state_dim, hidden), nn.GELU(),
                                       nn.Linear(hidden, hidden))
        self.bin_embedding = nn.Embedding(config.num_bins + 1, hidden)
        self.instruction_embedding = None
        if config.use_instruction:
            self.instruction_embedding = nn.EmbeddingBag(config.instruction_buckets, hidden, mode="mean")
        self.obs_proj = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, width))
        self.action_in = nn.Linear(config.action_dim, width)
        self.step_embedding = nn.Parameter(torch.randn(config.horizon, width) * 0.02)
        self.time_embedding = ScalarEmbedder(width)
        self.action_time_mlp = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width))
        layer = nn.TransformerDecoderLayer(width, config.heads, dim_feedforward=4 * width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.head = nn.TransformerDecoder(layer, config.head_depth)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, config.action_dim))

    @property
    def num_observation_tokens(self) -> int:
        """Views + state + bin (+ instruction)."""
        return self.config.num_views + 2 + int(self.config.use_instruction)

    def num_parameters(self) -> int:
        """Number of parameters (trainable or not)."""
        return sum(p.numel() for p in self.parameters())

    def _check(self, images: torch.Tensor, state: torch.Tensor, bins: torch.Tensor) -> None:
        cfg = self.config
        expected = (cfg.num_views, 3, cfg.image_size, cfg.image_size)
        if images.ndim != 5 or tuple(images.shape[1:]) != expected:
            shape = ", ".join(map(str, expected))
            raise ValueError(f"images: expected (B, {shape}), got {tuple(images.shape)}")
        b = images.shape[0]
        if tuple(state.shape) != (b, cfg.state_dim):
            raise ValueError(f"state: expected ({b}, {cfg.state_dim}), got {tuple(state.shape)}")
        if tuple(bins.shape) != (b,) or bins.dtype != torch.long:
            raise ValueError(f"bins: expected a long tensor ({b},), got {bins.dtype} {tuple(bins.shape)}")
        if bool(((bins < 0) | (bins > cfg.num_bins)).any()):
            raise ValueError(f"bins: expected indices in [0, {cfg.num_bins}] ({cfg.num_bins} = unknown), "
                             f"got {bins.tolist()}")

    def _instruction_token(self, instructions: Sequence[str] | None, batch: int, device) -> torch.Tensor:
        if instructions is None or isinstance(instructions, str) or len(instructions) != batch:
            raise ValueError(f"instructions: use_instruction is set, expected a list of {batch} strings")
        ids, offsets = [], []
        for text in instructions:
            offsets.append(len(ids))
            ids.extend(instruction_tokens(text, self.config.instruction_buckets))
        ids, offsets = torch.tensor(ids, device=device), torch.tensor(offsets, device=device)
        return self.instruction_embedding(ids, offsets)

    def encode(self, images: torch.Tensor, state: torch.Tensor, bins: torch.Tensor,
               instructions: Sequence[str] | None = None) -> torch.Tensor:
        """Observation tokens (B, num_observation_tokens, head_width) the action head attends to.

        ``instructions`` (B strings) is required when ``use_instruction`` is set, ignored otherwise.
        """
        self._check(images, state, bins)
        b, v = images.shape[:2]
        out = self.backbone(pixel_values=images.reshape(b * v, *images.shape[2:]))
        views = out.last_hidden_state[:, 0].reshape(b, v, -1) + self.view_embedding
        tokens = [views, self.state_mlp(state)[:, None], self.bin_embedding(bins)[:, None]]
        if self.instruction_embedding is not None:
            tokens.append(self._instruction_token(instructions, b, images.device)[:, None])
        return self.obs_proj(torch.cat(tokens, dim=1))

    def velocity(self, noisy_actions: torch.Tensor, t: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """The flow velocity (B, H, A) given observation tokens from :meth:`encode`."""
        cfg = self.config
        b = memory.shape[0]
        if tuple(noisy_actions.shape) != (b, cfg.horizon, cfg.action_dim):
            raise ValueError(f"noisy_actions: expected ({b}, {cfg.horizon}, {cfg.action_dim}), "
                             f"got {tuple(noisy_actions.shape)}")
        if tuple(t.shape) != (b,):
            raise ValueError(f"t: expected ({b},), got {tuple(t.shape)}")
        x = self.action_in(noisy_actions) + self.step_embedding
        time = self.time_embedding(t)[:, None].expand(-1, cfg.horizon, -1)
        x = self.action_time_mlp(torch.cat([x, time], dim=-1))
        return self.out(self.head(x, memory))

    def forward(self, noisy_actions: torch.Tensor, t: torch.Tensor, images: torch.Tensor, state: torch.Tensor,
                bins: torch.Tensor, instructions: Sequence[str] | None = None) -> torch.Tensor:
        """Velocity (B, H, A) at flow time ``t`` (B,) for noisy normalised actions (B, H, A).

        ``images`` (B, V, 3, S, S) in [-1, 1], ``state`` (B, J) normalised, ``bins`` (B,) long in
        ``[0, num_bins]`` (``num_bins``: unknown).
        """
        return self.velocity(noisy_actions, t, self.encode(images, state, bins, instructions))

    def loss(self, images: torch.Tensor, state: torch.Tensor, actions: torch.Tensor, bins: torch.Tensor,
             generator: torch.Generator | None = None,
             instructions: Sequence[str] | None = None, rows: slice | None = None) -> torch.Tensor:
        """Flow-matching loss ``MSE(v_pred, noise - actions)`` (pi0's) on normalised actions (B, H, A).

        ``t ~ U(0, 1)`` and the noise come from ``generator`` (reproducible runs); the caller does
        backward and the optimiser step (and any dropout of bins to ``num_bins``, unknown).
        ``rows``: data-parallel training, the inputs are these rows of a global batch of ``rows.stop``
        samples; t and the noise are drawn for the global batch and these rows kept (None: the
        inputs are the whole batch).
        """
        n = actions.shape[0] if rows is None else rows.stop
        keep = (lambda x: x) if rows is None else (lambda x: x[rows])
        if rows is not None and len(range(*rows.indices(n))) != actions.shape[0]:
            raise ValueError(f"rows {rows} of a global batch do not match the {actions.shape[0]} rows given")
        device = generator.device if generator is not None else torch.device("cpu")
        t = keep(torch.rand(n, generator=generator, device=device)).to(actions)
        x_t, target = interpolate(actions, keep(_noise((n, *actions.shape[1:]), generator, actions)), t)
        return F.mse_loss(self(x_t, t, images, state, bins, instructions), target)

    @torch.no_grad()
    def sample(self, images: torch.Tensor, state: torch.Tensor, bins: torch.Tensor, steps: int = 10,
               generator: torch.Generator | None = None,
               instructions: Sequence[str] | None = None) -> torch.Tensor:
        """Normalised actions (B, H, A): Euler integration of the flow from noise (t = 1) to t = 0.

        The observation is encoded once; ``steps`` head evaluations follow. The same ``generator``
        seed gives the same actions.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        memory = self.encode(images, state, bins, instructions)
        b = memory.shape[0]
        x = _noise((b, self.config.horizon, self.config.action_dim), generator, memory)
        times = torch.linspace(1.0, 0.0, steps + 1).tolist()
        for t, t_next in zip(times[:-1], times[1:], strict=True):
            v = self.velocity(x, torch.full((b,), t, device=x.device, dtype=x.dtype), memory)
            x = x + (t_next - t) * v
        return x
