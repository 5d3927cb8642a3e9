"""Data-parallel training under ``torchrun``: the same run, its global batch split over processes.

A plain process (no ``WORLD_SIZE``, or 1) gets a context that changes nothing. Under ``torchrun
--nproc_per_node N`` each process trains on rows ``rank::N`` of every step's global batch
(``batch_size``: a multiple of N), DDP averages the gradients (the one-process update of the global
batch), logged losses are averaged over processes, and only rank 0 writes checkpoints and shows a
progress bar; the others wait at a barrier until the checkpoint is complete.

Example::

    with Distributed.from_env() as dist:            # torchrun's WORLD_SIZE, RANK, LOCAL_RANK
        ddp = dist.wrap(model)                       # DistributedDataParallel when WORLD_SIZE > 1
        rows = dist.rows(batch_size)                 # slice(rank, batch_size, world), None alone
        for step in range(steps):
            batch = global_batch(step)               # a function of (seed, step): the same everywhere
            loss = loss_fn(ddp, batch if rows is None else batch[rows])
            loss.backward(); optimizer.step()
            logged = dist.mean(float(loss))          # the global batch's loss on every rank
            if dist.is_main: save_checkpoint()
            dist.barrier()                           # nobody reads a half-written checkpoint
    # in a shell: torchrun --nproc_per_node 2 -m rise.cli train-value --config experiment.yaml
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

LOSSES_FILE = "losses.jsonl"


class _Method(nn.Module):
    """``forward`` = ``module.<method>``: DDP must see the call that computes the loss."""

    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args, **kwargs):
        return getattr(self.module, self.method)(*args, **kwargs)


class Distributed:
    """This process's place in a torchrun job (``world`` processes, this one ``rank``)."""

    def __init__(self, world: int = 1, rank: int = 0, local_rank: int = 0):
        if not 0 <= rank < world:
            raise ValueError(f"RANK {rank} outside WORLD_SIZE {world}")
        self.world, self.rank, self.local_rank = world, rank, local_rank
        self.device, self._owns_group = torch.device("cpu"), False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Distributed:
        env = os.environ if env is None else env
        return cls(int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)))

    @property
    def enabled(self) -> bool:  # more than one process
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and logs and shows progress."""
        return self.rank == 0

    def __enter__(self) -> Distributed:
        return self

    def __exit__(self, *exc) -> None:  # leave the process group if this context joined it
        if self._owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
        self._owns_group = False

    def _start(self, device: torch.device | None = None) -> None:
        """Join the process group (once): nccl for a CUDA model when available, else gloo."""
        if not self.enabled or torch_dist.is_initialized():
            return
        if device is not None and device.type == "cuda" and torch_dist.is_nccl_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            backend = "nccl"
        else:
            backend = "gloo"
        torch_dist.init_process_group(backend, rank=self.rank, world_size=self.world)
        self._owns_group = True

    def rows(self, batch_size: int) -> slice | None:
        """This rank's rows of a global batch: ``slice(rank, batch_size, world)`` (equal shares, so
        the mean of the ranks' means is the global mean); None in a single process."""
        if not self.enabled:
            return None
        if batch_size % self.world:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {self.world} processes "
                             f"(WORLD_SIZE): use a multiple of {self.world}")
        return slice(self.rank, batch_size, self.world)

    def wrap(self, model: nn.Module, method: str | None = None) -> nn.Module:
        """``model`` alone, or DistributedDataParallel around it (around ``model.<method>`` as ``forward``
        when given, e.g. ``"loss"``; a CUDA model on cuda:LOCAL_RANK). Save ``model``, not the wrapper."""
        if not self.enabled:
            return model
        self._start(dev := next(model.parameters()).device)
        target = model if method is None else _Method(model, method)
        return DistributedDataParallel(target, device_ids=[self.local_rank] if dev.type == "cuda" else None)

    def mean(self, value):
        """A float, or a dict of floats, averaged over the ranks (unchanged in a single process)."""
        if not self.enabled:
            return value
        self._start()
        keys = list(value) if isinstance(value, Mapping) else None
        numbers = [float(value[k]) for k in keys] if keys is not None else [float(value)]
        torch_dist.all_reduce(tensor := torch.tensor(numbers, dtype=torch.float64, device=self.device))
        averaged = (tensor / self.world).tolist()
        return dict(zip(keys, averaged, strict=True)) if keys is not None else averaged[0]

    def barrier(self) -> None:  # every rank waits here until all arrive
        if self.enabled:
            self._start()
            torch_dist.barrier(device_ids=[self.local_rank] if self.device.type == "cuda" else None)


class LossLog:
    """``losses.jsonl`` in a run folder: one ``{"step": optimiser steps done, <loss>: ...}`` line per
    step, written by rank 0 only; lines past ``start`` (a resumed run redoes them) are dropped."""

    def __init__(self, run: Path, start: int, enabled: bool = True):
        self.path, self.enabled = Path(run) / LOSSES_FILE, enabled
        if enabled and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= start]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, losses: Mapping[str, float]) -> None:
        if self.enabled:
            with self.path.open("a") as file:
                file.write(json.dumps({"step": step, **{k: float(v) for k, v in losses.items()}}) + "\n")


def read_losses(run: Path) -> list[dict]:
    """The lines of a run folder's ``losses.jsonl`` (empty when there is none)."""
    text = (Path(run) / LOSSES_FILE).read_text() if (Path(run) / LOSSES_FILE).is_file() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
