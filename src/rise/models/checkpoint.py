"""Checkpoints: folders of safetensors + JSON, a manifest of sha256 hashes, and one place that
decides whether a checkpoint may be loaded.

A checkpoint folder holds only ``*.safetensors`` and ``*.json`` files and ``manifest.json``:
``{"format", "kind", "step", "metrics", "files": {name: {"sha256", "bytes"}}}``. Its identity is the
sha256 of ``manifest.json`` (what announcements carry). :func:`verify` refuses, with a message
that names the file: anything outside the allowed root (path traversal, symlinks out of it),
files of other types (a pickle is refused by name, never opened), missing or extra files, sizes
over the bound, truncated or altered files (hash mismatch), and a manifest whose hash differs
from the announced one. Nothing here unpickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

FORMAT = "rise-checkpoint/1"
MANIFEST = "manifest.json"
ALLOWED_SUFFIXES = (".safetensors", ".json")
DEFAULT_MAX_BYTES = 8 * 1024**3  # a checkpoint folder larger than this is refused


class CheckpointError(ValueError):
    """A checkpoint that must not be loaded; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    folder: Path
    sha256: str  # of manifest.json: the checkpoint's identity
    kind: str
    step: int
    metrics: dict[str, Any]
    files: dict[str, dict[str, Any]]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def write_manifest(folder: Path, kind: str, step: int, metrics: dict[str, Any] | None = None) -> Manifest:
    """Hash every file of ``folder`` into its manifest (written last, atomically); returns it."""
    folder = Path(folder)
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name == MANIFEST or path.name.startswith("."):
            continue
        if path.suffix not in ALLOWED_SUFFIXES or not path.is_file():
            raise CheckpointError(f"{path}: checkpoints hold only safetensors and JSON files")
        files[path.name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "kind": kind, "step": int(step), "metrics": metrics or {}, "files": files}
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    _atomic_write(folder / MANIFEST, data)
    return Manifest(folder, hashlib.sha256(data).hexdigest(), kind, int(step), manifest["metrics"], files)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve(strict=True).relative_to(root.resolve(strict=True))
        return True
    except (ValueError, FileNotFoundError):
        return False


def verify(folder: str | Path, *, expected_sha256: str | None = None, root: str | Path | None = None,
           kind: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Manifest:
    """Check a checkpoint folder before anything in it is read as weights; returns its manifest."""
    folder = Path(folder)
    if root is not None and not _inside(folder, Path(root)):
        raise CheckpointError(f"{folder}: outside the checkpoint root {root} (after resolving links)")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing (not a rise checkpoint)")
    if manifest_path.stat().st_size > 1 << 20:
        raise CheckpointError(f"{manifest_path}: implausibly large ({manifest_path.stat().st_size} bytes)")
    data = manifest_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        raise CheckpointError(f"{manifest_path}: sha256 {sha} does not match the announced {expected_sha256}")
    try:
        manifest = json.loads(data)
        files = manifest["files"]
        if manifest.get("format") != FORMAT:
            raise KeyError("format")
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path}: not a {FORMAT} manifest ({error})") from None
    if kind is not None and manifest.get("kind") != kind:
        raise CheckpointError(f"{folder}: a {manifest.get('kind')!r} checkpoint, expected {kind!r}")
    present = {p.name for p in folder.iterdir() if p.name != MANIFEST and not p.name.startswith(".")}
    for name in sorted(present | set(files)):
        path = folder / name
        if Path(name).suffix not in ALLOWED_SUFFIXES:
            raise CheckpointError(f"{path}: refused: only .safetensors and .json files are loaded "
                                  "(pickles are never opened)")
        if name not in files:
            raise CheckpointError(f"{path}: not listed in the manifest")
        if name not in present:
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        if path.is_symlink() or (root is not None and not _inside(path, Path(root))):
            raise CheckpointError(f"{path}: symbolic links are refused")
    total = sum(int(entry["bytes"]) for entry in files.values())
    if total > max_bytes:
        raise CheckpointError(f"{folder}: {total} bytes exceeds the {max_bytes}-byte bound")
    for name, entry in files.items():
        path = folder / name
        size = path.stat().st_size
        if size != int(entry["bytes"]):
            raise CheckpointError(f"{path}: {size} bytes, the manifest says {entry['bytes']} (truncated?)")
        if file_sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{path}: sha256 mismatch (corrupt or altered)")
    return Manifest(folder, sha, manifest.get("kind", ""), int(manifest.get("step", 0)),
                    manifest.get("metrics", {}), files)


def save_json(path: Path, value: Any) -> None:
    _atomic_write(Path(path), json.dumps(value, indent=2, sort_keys=True).encode())


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_optimizer(folder: Path, optimizer: torch.optim.Optimizer, name: str = "optimizer") -> None:
    """An optimizer's state as ``<name>.safetensors`` (tensors) + ``<name>.json`` (the rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(Path(folder) / f"{name}.safetensors"))
    save_json(Path(folder) / f"{name}.json", {"param_groups": state["param_groups"], "scalars": scalars})


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer, name: str = "optimizer") -> None:
    tensors = load_file(str(Path(folder) / f"{name}.safetensors"))
    meta = load_json(Path(folder) / f"{name}.json")
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
