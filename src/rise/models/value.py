"""Progress value model: V(camera views, instruction) -> scalar task progress.

A transformers vision backbone (ViT or SigLIP, built from a config, optionally initialised from a
*local* pretrained checkpoint) encodes every camera view with shared weights. Each view's pooled
feature gets a learned view embedding; an optional hashed instruction embedding adds one more token;
a small transformer layer attends across these tokens, and an MLP on their concatenation gives V.

Images enter as float (B, V, 3, H, W) in [-1, 1] (the normalisation ViT and SigLIP checkpoints
expect); :func:`preprocess_images` turns uint8 camera frames into that. Checkpoints are a folder
with ``config.json`` (:class:`ValueConfig`), ``backbone.json`` (the backbone's full transformers
config, so a pretrained-initialised backbone is rebuilt exactly) and ``model.safetensors``: never
pickle.

Example::

    config = value_config("cpu_default")
    model = ValueModel(config)
    v = model(torch.zeros(4, config.num_views, 3, 64, 64))   # (4,)
    model.save("ckpt/value")
    same = ValueModel.load("ckpt/value")
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from rise.config.schema import FieldError, did_you_mean, from_mapping, setting
from rise.models.checkpoint import Checkpoint
from rise.models.episodes import resize_frames, to_unit_range

CONFIG_FILE = "config.json"
BACKBONE_FILE = "backbone.json"  # the backbone's full transformers config (exact rebuild on load)
WEIGHTS_FILE = "model.safetensors"
_FORMAT = "rise-value-v1"
_WORD = re.compile(r"[a-z0-9]+")


class Backbone(str, enum.Enum):
    """Which transformers vision backbone encodes each view."""

    VIT = "vit"  # ViTModel; the view feature is the final CLS token
    SIGLIP = "siglip"  # SiglipVisionModel; the view feature is its attention-pooled output


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValueConfig:
    """Architecture of a :class:`ValueModel` (saved as ``config.json`` beside the weights)."""

    backbone: Backbone = setting(Backbone.VIT, doc="vision backbone family: 'vit' or 'siglip'")
    image_size: int = setting(64, doc="square input side [px]; frames are resized to it", ge=8)
    num_views: int = setting(2, doc="camera views per observation (weights shared across views)", ge=1)
    patch_size: int = setting(8, doc="backbone patch side [px]; must divide image_size", ge=1)
    hidden_size: int = setting(128, doc="backbone and fusion width", ge=8)
    layers: int = setting(4, doc="backbone transformer layers", ge=1)
    heads: int = setting(4, doc="attention heads in backbone and fusion; must divide hidden_size", ge=1)
    intermediate_size: int = setting(512, doc="backbone MLP width (usually 4 x hidden_size)", ge=1)
    fusion_layers: int = setting(1, doc="transformer layers attending across view tokens (0: none)", ge=0)
    head_hidden: int = setting(128, doc="hidden width of the MLP head that outputs V", ge=1)
    use_instruction: bool = setting(False, doc="add a hashed bag-of-words instruction token")
    instruction_buckets: int = setting(
        4096, doc="hash buckets of the instruction embedding table (words + whole text)", ge=1
    )
    pretrained_path: str | None = setting(
        None, doc="local folder of a transformers backbone checkpoint to initialise from (no hub)"
    )

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise FieldError("patch_size", f"{self.patch_size} does not divide image_size {self.image_size}")
        if self.hidden_size % self.heads:
            raise FieldError("heads", f"{self.heads} does not divide hidden_size {self.hidden_size}")

    def to_dict(self) -> dict:
        """Plain JSON-ready mapping (enums as their values)."""
        data = dataclasses.asdict(self)
        data["backbone"] = self.backbone.value
        return data


VALUE_CONFIGS: dict[str, ValueConfig] = {
    # 64 px, 2 views, ViT patch 8, width 128, 4 layers: ~1.0 M parameters (0.83 M backbone).
    "cpu_default": ValueConfig(),
    # Paper-scale: SigLIP-base/16 at 224 px, 3 views (about 93 M parameters). Set pretrained_path to
    # a local SigLIP(-vision) checkpoint folder, e.g. a downloaded google/siglip-base-patch16-224.
    "large": ValueConfig(
        backbone=Backbone.SIGLIP, image_size=224, num_views=3, patch_size=16, hidden_size=768,
        layers=12, heads=12, intermediate_size=3072, fusion_layers=2, head_hidden=512,
        use_instruction=True,
    ),
    # For tests and smoke runs: 16 px, 2 views, 1 layer (trains in well under a second).
    "tiny": ValueConfig(image_size=16, patch_size=8, hidden_size=32, layers=1, heads=2, intermediate_size=64,
                        head_hidden=32),
}


def value_config(name: str, **overrides) -> ValueConfig:
    """A named config (``cpu_default``, ``large`` or ``tiny``), with optional field overrides."""
    if name not in VALUE_CONFIGS:
        hint = did_you_mean(name, list(VALUE_CONFIGS))
        raise KeyError(f"unknown value config {name!r}{hint} (known: {', '.join(VALUE_CONFIGS)})")
    return dataclasses.replace(VALUE_CONFIGS[name], **overrides)


def preprocess_images(images: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 frames (..., H, W, 3) -> float (..., 3, image_size, image_size) in [-1, 1].

    Leading dimensions are kept (e.g. (B, V, H, W, 3) -> (B, V, 3, S, S)); frames of another size
    are resized by :func:`rise.models.episodes.resize_frames` (area averaging on the uint8 frames),
    exactly as the training data were.
    """
    frames = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (..., H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return to_unit_range(resize_frames(frames, (image_size, image_size)))


def instruction_tokens(text: str, buckets: int) -> list[int]:
    """Stable hash buckets of an instruction's lower-case words plus the whole text (crc32)."""
    words = _WORD.findall(text.lower())
    items = [f"w:{w}" for w in words] + [f"s:{' '.join(words)}"]
    return [zlib.crc32(item.encode()) % buckets for item in items]


def _build_backbone(config: ValueConfig, load_pretrained: bool, saved: dict | None = None) -> nn.Module:
    """The backbone: from ``saved`` (a full transformers config dict) when given, else from the
    pretrained folder when set and ``load_pretrained``, else from the value config's fields."""
    from transformers import SiglipVisionConfig, SiglipVisionModel, ViTConfig, ViTModel

    if config.backbone is Backbone.VIT:
        cls, config_cls, kwargs = ViTModel, ViTConfig, {"add_pooling_layer": False}
    else:
        cls, config_cls, kwargs = SiglipVisionModel, SiglipVisionConfig, {}
    if saved is not None:
        return cls(config_cls.from_dict(saved), **kwargs)
    if load_pretrained and config.pretrained_path is not None:
        model = cls.from_pretrained(config.pretrained_path, local_files_only=True, use_safetensors=True,
                                    **kwargs)
        got = model.config
        names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "image_size", "patch_size")
        found = tuple(getattr(got, n) for n in names)
        expected = (config.hidden_size, config.layers, config.heads, config.intermediate_size,
                    config.image_size, config.patch_size)
        if found != expected:
            raise ValueError(f"pretrained backbone {config.pretrained_path} has {'/'.join(names)} "
                             f"{found}, but the value config says {expected}")
        return model
    common = dict(hidden_size=config.hidden_size, num_hidden_layers=config.layers,
                  num_attention_heads=config.heads, intermediate_size=config.intermediate_size,
                  image_size=config.image_size, patch_size=config.patch_size, num_channels=3)
    if config.backbone is Backbone.VIT:
        common.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return cls(config_cls(**common), **kwargs)


class ValueModel(nn.Module):
    """V(views, instruction): one scalar per observation (see the module docstring).

    Args:
        config: the architecture.
        load_pretrained: initialise the backbone from ``config.pretrained_path`` when it is set
            (``local_files_only``); :meth:`load` passes False because the checkpoint has all weights.
        backbone_config: the backbone's full transformers config as saved by :meth:`save` (so a
            backbone initialised from a pretrained folder is rebuilt exactly); None: from ``config``.
    """

    def __init__(self, config: ValueConfig, *, load_pretrained: bool = True,
                 backbone_config: dict | None = None):
        super().__init__()
        self.config = config
        width = config.hidden_size
        self.backbone = _build_backbone(config, load_pretrained, backbone_config)
        self.view_embedding = nn.Parameter(torch.randn(config.num_views, width) * 0.02)
        self.instruction_embedding = None
        if config.use_instruction:
            self.instruction_embedding = nn.EmbeddingBag(config.instruction_buckets, width, mode="mean")
        tokens = config.num_views + int(config.use_instruction)
        self.fusion = (
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(width, config.heads, dim_feedforward=2 * width, dropout=0.0,
                                           batch_first=True, norm_first=True),
                config.fusion_layers, enable_nested_tensor=False,
            )
            if config.fusion_layers else None
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Sequential(nn.Linear(tokens * width, config.head_hidden), nn.GELU(),
                                  nn.Linear(config.head_hidden, 1))

    def view_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, V, 3, S, S) in [-1, 1] -> (B, V, hidden) pooled backbone features (shared weights)."""
        b, v = images.shape[:2]
        out = self.backbone(pixel_values=images.reshape(b * v, *images.shape[2:]))
        vit = self.config.backbone is Backbone.VIT
        pooled = out.last_hidden_state[:, 0] if vit else out.pooler_output
        return pooled.reshape(b, v, -1)

    def _instruction_token(self, instruction: Sequence[str] | None, batch: int, device) -> torch.Tensor:
        if instruction is None or isinstance(instruction, str) or len(instruction) != batch:
            raise ValueError(f"use_instruction is set: expected a list of {batch} instruction strings")
        ids, offsets = [], []
        for text in instruction:
            offsets.append(len(ids))
            ids.extend(instruction_tokens(text, self.config.instruction_buckets))
        return self.instruction_embedding(torch.tensor(ids, device=device),
                                          torch.tensor(offsets, device=device))

    def forward(self, images: torch.Tensor, instruction: Sequence[str] | None = None) -> torch.Tensor:
        """Values (B,) for float images (B, V, 3, S, S) in [-1, 1].

        ``instruction`` (B strings) is required when ``config.use_instruction`` is set and ignored
        otherwise. V is unbounded (linear output); training targets lie in [-1, 1].
        """
        cfg = self.config
        expected = (cfg.num_views, 3, cfg.image_size, cfg.image_size)
        if images.ndim != 5 or tuple(images.shape[1:]) != expected:
            shape = ", ".join(map(str, expected))
            raise ValueError(f"expected images (B, {shape}), got {tuple(images.shape)}")
        tokens = self.view_features(images) + self.view_embedding
        if self.instruction_embedding is not None:
            text = self._instruction_token(instruction, images.shape[0], images.device)
            tokens = torch.cat([tokens, text[:, None]], dim=1)
        if self.fusion is not None:
            tokens = self.fusion(tokens)
        return self.head(self.norm(tokens).flatten(1)).squeeze(-1)

    def num_parameters(self) -> int:
        """Number of parameters (trainable or not)."""
        return sum(p.numel() for p in self.parameters())

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json``, ``backbone.json`` and ``model.safetensors`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": _FORMAT})
        files = {CONFIG_FILE: self.config.to_dict(), BACKBONE_FILE: self.backbone.config.to_dict()}
        for name, data in files.items():
            (folder / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path | Checkpoint, map_location: str | torch.device = "cpu") -> ValueModel:
        """Rebuild a model saved with :meth:`save` (the pretrained path is not read again), from a
        folder or from the verified bytes of :func:`~rise.models.checkpoint.read_checkpoint`."""
        source = folder if isinstance(folder, Checkpoint) else Checkpoint(Path(folder))
        config_path = str(Path(source.folder) / CONFIG_FILE)
        config = from_mapping(ValueConfig, source.json(CONFIG_FILE), source=config_path)
        backbone = source.json(BACKBONE_FILE) if source.has(BACKBONE_FILE) else None
        model = cls(config, load_pretrained=False, backbone_config=backbone)
        model.load_state_dict(source.tensors(WEIGHTS_FILE, device=map_location))
        return model.to(map_location)
