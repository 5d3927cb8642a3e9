"""The deployable policy: a :class:`PolicyModel` with its state/action normalisation and advantage
bins, camera frames and absolute joints in, absolute joint targets out; saved as JSON + safetensors.

A policy folder holds::

    config.json           {"format": "rise-policy-v1", "cameras": [...] | null, "config": PolicyConfig}
    backbone.json         the ViT's full transformers config (exact rebuild of a pretrained encoder)
    model.safetensors     every weight (safetensors only: nothing is ever unpickled)
    normalization.json    {"state": NormStats, "action": NormStats}
    bins.json             AdvantageBins
    manifest.json         only when save() is given a step (rise.models.checkpoint.write_manifest)

:meth:`Policy.load` reads those files only, refuses a folder holding any other kind of file (a
``.pt`` or ``.pkl`` is refused by name, never opened) and names the missing or bad file. It does not
check the manifest's hashes: callers that receive a checkpoint from elsewhere load from
:func:`rise.models.checkpoint.read_checkpoint` (``Policy.load(read_checkpoint(folder, ...))``), which
verifies the files and hands over the very bytes it hashed.

Example::

    policy = Policy(PolicyModel(policy_config("tiny")), state_stats, action_stats,
                    AdvantageBins.uniform(10), cameras=("front", "wrist"))
    targets = policy.predict({"front": front_rgb, "wrist": wrist_rgb}, joints)   # (H, A) absolute
    policy.save("ckpt/policy", step=1000)
    same = Policy.load("ckpt/policy")
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from rise.config.schema import ConfigError, from_mapping
from rise.models.checkpoint import ALLOWED_SUFFIXES, Checkpoint, CheckpointError, write_manifest
from rise.models.episodes import NormStats
from rise.models.value import preprocess_images
from rise.policy.advantage import AdvantageBins
from rise.policy.model import PolicyConfig, PolicyModel

CONFIG_FILE = "config.json"
BACKBONE_FILE = "backbone.json"
WEIGHTS_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.json"
BINS_FILE = "bins.json"
FILES = (CONFIG_FILE, BACKBONE_FILE, WEIGHTS_FILE, NORMALIZATION_FILE, BINS_FILE)
FORMAT = "rise-policy-v1"


@dataclasses.dataclass(eq=False)
class Policy:
    """A policy ready to run: model, normalisation, bins and (optionally) the camera order.

    Args:
        model: the network (its device is where :meth:`predict` runs).
        state_stats: normalisation of the joint state (J,).
        action_stats: normalisation of the actions (A,).
        bins: the advantage bins the model was trained with (``num_bins`` must match the config).
        cameras: camera names in view order, needed to pass frames as a dict; None: arrays only.
    """

    model: PolicyModel
    state_stats: NormStats
    action_stats: NormStats
    bins: AdvantageBins
    cameras: tuple[str, ...] | None = None

    def __post_init__(self):
        cfg = self.model.config
        for name, stats, dim in (("state_stats", self.state_stats, cfg.state_dim),
                                 ("action_stats", self.action_stats, cfg.action_dim)):
            if np.shape(stats.mean) != (dim,) or np.shape(stats.std) != (dim,):
                raise ValueError(f"{name}: expected mean and std of shape ({dim},), got "
                                 f"{np.shape(stats.mean)} and {np.shape(stats.std)}")
        if self.bins.num_bins != cfg.num_bins:
            raise ValueError(f"bins: {self.bins.num_bins} bins, but the model has num_bins={cfg.num_bins}")
        if self.cameras is not None:
            self.cameras = tuple(self.cameras)
            if len(self.cameras) != cfg.num_views or len(set(self.cameras)) != len(self.cameras):
                raise ValueError(f"cameras: expected {cfg.num_views} distinct names, "
                                 f"got {list(self.cameras)}")

    @property
    def config(self) -> PolicyConfig:
        return self.model.config

    def _images(self, images: Mapping[str, np.ndarray] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """(1, V, 3, S, S) in [-1, 1] from a dict of uint8 frames or a (V, h, w, 3) uint8 array."""
        size, views = self.config.image_size, self.config.num_views
        if isinstance(images, Mapping):
            if self.cameras is None:
                raise ValueError("images: this policy has no camera names; pass a (V, h, w, 3) array "
                                 "in training view order")
            missing = [c for c in self.cameras if c not in images]
            if missing:
                raise ValueError(f"images: no frame for camera {missing} (expected {list(self.cameras)})")
            frames = torch.stack([preprocess_images(images[c], size) for c in self.cameras])
        else:
            frames = preprocess_images(images, size)
        if tuple(frames.shape) != (views, 3, size, size):
            raise ValueError(f"images: expected {views} frames (h, w, 3), got {tuple(frames.shape[:-3])}")
        return frames[None]

    def predict(self, images: Mapping[str, np.ndarray] | np.ndarray, state: Sequence[float] | np.ndarray,
                bin: int | None = None, steps: int = 10, generator: torch.Generator | None = None,
                instruction: str | None = None) -> np.ndarray:
        """Absolute joint targets (H, A) float32 for one observation.

        Args:
            images: uint8 frames (h, w, 3) by camera name, or an array (V, h, w, 3) in view order;
                frames are resized to the model's input size.
            state: absolute joint state (J,).
            bin: advantage bin to ask for (None: ``bins.best``; ``bins.unknown``: unconditioned).
            steps: Euler steps of the flow.
            generator: seeds the starting noise (same seed, same actions).
            instruction: the task text, required when the model uses instructions.
        """
        cfg = self.config
        bin = self.bins.best if bin is None else bin
        integer = isinstance(bin, (int, np.integer)) and not isinstance(bin, bool)
        if not integer or not 0 <= bin <= self.bins.unknown:
            raise ValueError(f"bin: expected an integer in [0, {self.bins.unknown}], got {bin!r}")
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (cfg.state_dim,):
            raise ValueError(f"state: expected shape ({cfg.state_dim},), got {state.shape}")
        param = next(self.model.parameters())
        pixels = self._images(images).to(device=param.device, dtype=param.dtype)
        x = torch.as_tensor(self.state_stats.normalize(state)[None], device=param.device, dtype=param.dtype)
        bins = torch.tensor([int(bin)], dtype=torch.long, device=param.device)
        texts = [instruction] if instruction is not None else None
        was_training = self.model.training
        self.model.eval()
        try:
            actions = self.model.sample(pixels, x, bins, steps=steps, generator=generator, instructions=texts)
        finally:
            self.model.train(was_training)
        return self.action_stats.denormalize(actions[0].float().cpu().numpy()).astype(np.float32)

    def save(self, folder: str | Path, *, step: int | None = None,
             metrics: dict[str, Any] | None = None) -> Path:
        """Write the policy files into ``folder``; with ``step``, also ``manifest.json`` (written last,
        kind ``policy``, with ``metrics``). Without it, the caller writes the manifest if wanted."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT})
        cameras = list(self.cameras) if self.cameras is not None else None
        files = {
            CONFIG_FILE: {"format": FORMAT, "cameras": cameras, "config": self.config.to_dict()},
            BACKBONE_FILE: self.model.backbone.config.to_dict(),
            NORMALIZATION_FILE: {"state": self.state_stats.to_dict(), "action": self.action_stats.to_dict()},
            BINS_FILE: self.bins.to_dict(),
        }
        for name, data in files.items():
            (folder / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if step is not None:
            write_manifest(folder, "policy", step, metrics)
        return folder

    @classmethod
    def load(cls, folder: str | Path | Checkpoint, map_location: str | torch.device = "cpu") -> Policy:
        """Rebuild a policy saved with :meth:`save` (the pretrained path is not read again), from a
        folder or from the verified bytes of :func:`~rise.models.checkpoint.read_checkpoint`.

        Raises :class:`~rise.models.checkpoint.CheckpointError` naming the file on a missing file,
        a file of another type, bad JSON or mismatched weights.
        """
        source = folder if isinstance(folder, Checkpoint) else Checkpoint(Path(folder))
        folder = Path(source.folder)
        if source.data is None:
            if not folder.is_dir():
                raise CheckpointError(f"{folder}: not a policy folder")
            for path in sorted(folder.iterdir()):
                if not path.name.startswith(".") and path.suffix not in ALLOWED_SUFFIXES:
                    raise CheckpointError(f"{path}: refused: only .safetensors and .json files are loaded "
                                          "(pickles are never opened)")
        for name in FILES:
            if not source.has(name):
                raise CheckpointError(f"{folder / name}: missing (a policy folder holds {', '.join(FILES)})")
        head = source.json(CONFIG_FILE)
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            got = head.get("format") if isinstance(head, dict) else None
            raise CheckpointError(f"{folder / CONFIG_FILE}: format {got!r}, expected {FORMAT!r}")
        try:
            config = from_mapping(PolicyConfig, head.get("config"), source=str(folder / CONFIG_FILE))
        except ConfigError as error:
            raise CheckpointError(str(error)) from None
        cameras = head.get("cameras")
        norm = source.json(NORMALIZATION_FILE)
        try:
            state_stats = NormStats.from_dict(norm["state"])
            action_stats = NormStats.from_dict(norm["action"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{folder / NORMALIZATION_FILE}: expected state and action mean/std "
                                  f"({type(error).__name__}: {error})") from None
        try:
            bins = AdvantageBins.from_dict(source.json(BINS_FILE))
        except ValueError as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{folder / BINS_FILE}: invalid ({error})") from None
        model = PolicyModel(config, load_pretrained=False, backbone_config=source.json(BACKBONE_FILE))
        weights = source.tensors(WEIGHTS_FILE, device=map_location)
        try:
            model.load_state_dict(weights)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: does not fit config.json ({first})") from None
        try:
            return cls(model.to(map_location).eval(), state_stats, action_stats, bins,
                       tuple(cameras) if cameras is not None else None)
        except ValueError as error:
            raise CheckpointError(f"{folder}: inconsistent files ({error})") from None
