"""Checkpoints: folders of safetensors + JSON, a manifest of sha256 hashes, and one place that
decides whether a checkpoint may be loaded.

A checkpoint folder holds only ``*.safetensors`` and ``*.json`` files and ``manifest.json``:
``{"format", "kind", "step", "metrics", "files": {name: {"sha256", "bytes"}}}``. Its identity is the
sha256 of ``manifest.json`` (what announcements carry). :func:`verify` refuses, with a message
that names the file: a folder outside the allowed root (path traversal, symlinks out of it),
symbolic links and non-regular files inside it, files of other types (a pickle is refused by
name, never opened), manifest entries that are not plain file names (``../x``, absolute paths),
missing or extra files, sizes over the bound, truncated or altered files (size and hash
mismatch, a safetensors header that does not fit its file, unreadable JSON), a kind other than
the expected one and a manifest whose hash differs from the announced one. Nothing here unpickles.

:func:`read_checkpoint` does the same checks and keeps the bytes it hashed: a loader that builds
its model from the returned :class:`Checkpoint` never reads the disk again, so a file swapped
after verification is never loaded.

Example::

    checkpoint = read_checkpoint(folder, expected_sha256=announced, root=root, kind="policy")
    config = checkpoint.json("config.json")
    model.load_state_dict(checkpoint.tensors("model.safetensors"))
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

FORMAT = "rise-checkpoint/1"
MANIFEST = "manifest.json"
ALLOWED_SUFFIXES = (".safetensors", ".json")
DEFAULT_MAX_BYTES = 8 * 1024**3  # a checkpoint folder larger than this is refused
MAX_MANIFEST_BYTES = 1 << 20  # a manifest larger than this is refused unread
MAX_SAFETENSORS_HEADER = 100 * 1024**2  # the safetensors library's own header limit
_BLOCK = 1 << 20
_SHA256_HEX = frozenset("0123456789abcdef")


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


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's files for a loader. From :func:`read_checkpoint`: verified, with the bytes that
    were hashed (``manifest`` and ``data`` set). From a plain folder (``Checkpoint(folder)``): the
    files are read from disk when asked for, unverified (local folders a user names)."""

    folder: Path
    manifest: Manifest | None = None
    data: Mapping[str, bytes] | None = dataclasses.field(default=None, repr=False)

    def has(self, name: str) -> bool:
        return name in self.data if self.data is not None else (Path(self.folder) / name).is_file()

    def read(self, name: str) -> bytes:
        path = Path(self.folder) / name
        if self.data is not None:
            if name not in self.data:
                why = "not in the manifest" if self.manifest is None or name not in self.manifest.files \
                    else "verified, but not kept by read_checkpoint"
                raise CheckpointError(f"{path}: missing ({why})")
            return self.data[name]
        try:
            return path.read_bytes()
        except OSError as error:
            raise CheckpointError(f"{path}: unreadable ({error.strerror or error})") from None

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{Path(self.folder) / name}: not readable JSON ({error})") from None

    def tensors(self, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The tensors of a safetensors file (parsed from bytes: nothing is unpickled)."""
        try:
            tensors = load_safetensors_bytes(self.read(name))
        except SafetensorError as error:
            path = Path(self.folder) / name
            raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from None
        return {key: value.to(device) for key, value in tensors.items()} if str(device) != "cpu" else tensors


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
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
    except (ValueError, OSError):
        return False


def verify(folder: str | Path, *, expected_sha256: str | None = None, root: str | Path | None = None,
           kind: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Manifest:
    """Check a checkpoint folder before anything in it is read as weights; returns its manifest.

    Args:
        folder: the checkpoint folder.
        expected_sha256: the announced sha256 of its ``manifest.json`` (None: not checked).
        root: the folder must lie inside it once links are resolved (None: anywhere).
        kind: the manifest's kind must be this (``policy``, ``dynamics``, ``value``; None: any).
        max_bytes: bound on the sum of the file sizes.
    """
    return _check(Path(folder), expected_sha256, root, kind, max_bytes, keep=frozenset()).manifest


def read_checkpoint(folder: str | Path, *, expected_sha256: str | None = None, root: str | Path | None = None,
                    kind: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                    keep: Iterable[str] | None = None) -> Checkpoint:
    """:func:`verify` (same arguments), keeping the bytes it hashed: load from the result, not the disk.
    ``keep``: the files a loader needs (None: all); the others are only verified (e.g. optimizer state)."""
    return _check(Path(folder), expected_sha256, root, kind, max_bytes,
                  keep=None if keep is None else frozenset(keep))


def _check(folder: Path, expected_sha256, root, kind, max_bytes: int, keep: frozenset | None) -> Checkpoint:
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder")
    if root is not None and not _inside(folder, Path(root)):
        raise CheckpointError(f"{folder}: outside the checkpoint root {root} (after resolving links)")
    try:  # everything below is opened relative to this descriptor, never through a link
        dir_fd = os.open(folder.resolve(strict=True), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise CheckpointError(f"{folder}: not a checkpoint folder") from None
    try:
        manifest_path = folder / MANIFEST
        fd, size = _open_regular(dir_fd, manifest_path)
        if size > MAX_MANIFEST_BYTES:
            os.close(fd)
            raise CheckpointError(f"{manifest_path}: implausibly large ({size} bytes)")
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
        sha = hashlib.sha256(raw).hexdigest()
        if expected_sha256 is not None and sha != expected_sha256:
            raise CheckpointError(f"{manifest_path}: sha256 {sha} does not match the announced "
                                  f"{expected_sha256}")
        manifest = _parse_manifest(manifest_path, raw)
        if kind is not None and manifest.get("kind") != kind:
            raise CheckpointError(f"{folder}: a {manifest.get('kind')!r} checkpoint, expected {kind!r}")
        files = manifest["files"]
        present = {name for name in os.listdir(dir_fd) if name != MANIFEST and not name.startswith(".")}
        for name in sorted(present | set(files)):
            if Path(name).suffix not in ALLOWED_SUFFIXES:
                raise CheckpointError(f"{folder / name}: refused: only .safetensors and .json files are "
                                      "loaded (pickles are never opened)")
            if name not in files:
                raise CheckpointError(f"{folder / name}: not listed in the manifest")
            if name not in present:
                raise CheckpointError(f"{folder / name}: listed in the manifest but missing")
        total = sum(entry["bytes"] for entry in files.values())
        if total > max_bytes:
            raise CheckpointError(f"{folder}: {total} bytes exceeds the {max_bytes}-byte bound")
        data = {name: _read_entry(dir_fd, folder / name, entry, keep is None or name in keep)
                for name, entry in files.items()}
    finally:
        os.close(dir_fd)
    result = Manifest(folder, sha, str(manifest.get("kind", "")), int(manifest.get("step", 0)),
                      manifest.get("metrics") or {}, files)
    kept = {name: value for name, value in data.items() if value is not None}
    return Checkpoint(folder, result, kept if keep is None or keep else None)


def _parse_manifest(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format') if isinstance(manifest, dict) else None!r}")
        if not isinstance(manifest["files"], dict) or not isinstance(manifest.get("metrics", {}), dict):
            raise TypeError("'files' and 'metrics' must be objects")
        int(manifest.get("step", 0))
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: not a {FORMAT} manifest (truncated or altered? {error})") from None
    for name, entry in manifest["files"].items():
        if name in ("", ".", "..", MANIFEST) or name.startswith(".") or any(c in name for c in "/\\\0"):
            raise CheckpointError(f"{path}: entry {name!r} is not a plain file name of the folder "
                                  "(path separators, '..' and hidden names are refused)")
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _SHA256_HEX
                and type(size) is int and size >= 0):
            raise CheckpointError(f"{path}: entry {name!r} needs a sha256 (64 hex digits) and a byte count")
    return manifest


def _open_regular(dir_fd: int, path: Path) -> tuple[int, int]:
    """(descriptor, size) of a regular file of the folder; links, folders, FIFOs and devices refused."""
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CheckpointError(f"{path}: symbolic links are refused") from None
        if error.errno == errno.ENOENT:
            raise CheckpointError(f"{path}: missing (not a rise checkpoint?)") from None
        raise CheckpointError(f"{path}: unreadable ({error.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise CheckpointError(f"{path}: not a regular file")
    return fd, info.st_size


def _read_entry(dir_fd: int, path: Path, entry: dict[str, Any], keep: bool) -> bytes | None:
    """Read a file once: its size, hash and format checked; its bytes when ``keep`` (JSON always)."""
    expected = entry["bytes"]
    fd, size = _open_regular(dir_fd, path)
    if size != expected:
        os.close(fd)
        raise CheckpointError(f"{path}: {size} bytes, the manifest says {expected} (truncated?)")
    digest, parts, head, total = hashlib.sha256(), [], b"", 0
    is_json, is_safetensors = path.suffix == ".json", path.suffix == ".safetensors"
    with os.fdopen(fd, "rb", buffering=0) as handle:
        while block := handle.read(min(_BLOCK, expected + 1 - total)):
            if is_safetensors:
                head = _extend_head(head, total, block)
            total += len(block)
            if total > expected:
                raise CheckpointError(f"{path}: grew past the {expected} bytes of the manifest while read")
            digest.update(block)
            if keep or is_json:
                parts.append(block)
    if total < expected:
        raise CheckpointError(f"{path}: {total} bytes, the manifest says {expected} (truncated?)")
    if digest.hexdigest() != entry["sha256"]:
        raise CheckpointError(f"{path}: sha256 mismatch (corrupt or altered)")
    if is_safetensors and (problem := _safetensors_problem(head, total)):
        raise CheckpointError(f"{path}: {problem}")
    data = b"".join(parts)
    if is_json:
        try:
            json.loads(data)
        except ValueError as error:
            raise CheckpointError(f"{path}: not readable JSON (truncated? {error})") from None
    return data if keep else None


def _extend_head(head: bytes, pos: int, block: bytes) -> bytes:
    """The first bytes of a safetensors file, up to the end of its header, gathered block by block
    (``pos``: where ``block`` starts in the file)."""
    for _ in range(2):  # the 8-byte header length, then the header it announces
        length = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
        need = 8 + min(length, MAX_SAFETENSORS_HEADER)
        if pos <= len(head) < need:
            head += block[len(head) - pos:need - pos]
    return head


def _safetensors_problem(head: bytes, size: int) -> str | None:
    """Why a file is not a whole safetensors file (a pickle, a truncated file); None when it is."""
    if len(head) < 8:
        return "too short for a safetensors file (truncated?)"
    length = int.from_bytes(head[:8], "little")
    if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
        return f"not a safetensors file: its header claims {length} bytes, the file has {size} (truncated?)"
    try:
        header = json.loads(head[8:8 + length])
        end = max((int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"),
                  default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return "not a safetensors file: unreadable header"
    if end != size - 8 - length:
        return f"tensor data ends at byte {end}, the file holds {size - 8 - length} (truncated?)"
    return None


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


def load_optimizer(folder: Path | Checkpoint, optimizer: torch.optim.Optimizer,
                   name: str = "optimizer") -> None:
    """Restore :func:`save_optimizer`'s state from a folder or a :func:`read_checkpoint` result."""
    source = folder if isinstance(folder, Checkpoint) else Checkpoint(Path(folder))
    tensors = source.tensors(f"{name}.safetensors")
    meta = source.json(f"{name}.json")
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
