"""Experiment configuration (``config/experiments/*.yaml``): what a run uses and where it writes."""

from __future__ import annotations

import dataclasses
import re

from rise.config.schema import FieldError, setting

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """One experiment: the robot it runs on, its seed, and its data and output folders."""

    name: str = setting(doc="experiment name, used in output folder names")
    robot: str = setting("sim", doc="robot config name (config/robots/<robot>.yaml)")
    task: str = setting("brick_sort", doc="simulated task: brick_sort, box_close or pack")
    seed: int = setting(0, doc="random seed for everything the run samples", ge=0, lt=2**32)
    data_dir: str = setting("rise_runs/data", doc="datasets folder (relative: to the cwd)")
    min_free_disk_mb: float = setting(
        500.0, ge=0, doc="recording refuses to start, and stops an episode cleanly, when the datasets "
        "folder's filesystem has less free space [MiB] (0: no minimum)"
    )
    checkpoint_dir: str = setting(
        "rise_runs/checkpoints", doc="checkpoint root; nodes load checkpoints only from here"
    )
    output_dir: str = setting("rise_runs/output", doc="plots, videos and reports")
    max_checkpoint_mb: float = setting(
        8192.0, doc="nodes refuse a checkpoint folder larger than this [MiB] unread", gt=0
    )

    @property
    def max_checkpoint_bytes(self) -> int:
        """:attr:`max_checkpoint_mb` in bytes."""
        return int(self.max_checkpoint_mb * 1024**2)

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise FieldError("name", f"expected letters, digits, '_', '-' or '.', got {self.name!r}")
