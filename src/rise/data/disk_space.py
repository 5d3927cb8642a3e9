"""Free disk space while recording: the guard that stops an episode before the disk is full.

:class:`FreeSpaceGuard` asks the filesystem of the dataset folder how much space is free
(``shutil.disk_usage``, one ``statvfs`` call) at most once per ``interval_s``, so checking it on
every frame costs nothing. :func:`is_disk_full` tells a full-disk error (``ENOSPC``, ``EDQUOT``
or the guard's own :class:`LowDiskSpace`) from other write errors.

Example::

    guard = FreeSpaceGuard(Path("datasets/demo"), min_free_disk_mb=500)
    shortfall = guard.shortfall()       # None, or "only 312.4 MiB free on ..., below the minimum ..."
"""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path

MB = 1024**2  # bytes in the "MB" of min_free_disk_mb: a MiB, as df -h counts
CHECK_INTERVAL_S = 1.0  # how often a recording episode looks at the free space [s]
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class LowDiskSpace(OSError):
    """The dataset's filesystem has less free space than the configured minimum."""


def is_disk_full(exc: BaseException | None) -> bool:
    """True for "no space left on device", "disk quota exceeded" and :class:`LowDiskSpace`."""
    return isinstance(exc, LowDiskSpace) or (isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS)


class FreeSpaceGuard:
    """Compares the free space of ``folder``'s filesystem with ``min_free_disk_mb`` (0: off)."""

    def __init__(self, folder: Path, min_free_disk_mb: float = 0.0, interval_s: float = CHECK_INTERVAL_S):
        self.folder = Path(folder)
        self.interval_s = float(interval_s)
        self.min_free_disk_mb = min_free_disk_mb
        self._next_check_s = 0.0

    @property
    def min_free_disk_mb(self) -> float:
        """Minimum free space [MiB]; recording refuses to start or stops below it (0: no minimum)."""
        return self._min_free_disk_mb

    @min_free_disk_mb.setter
    def min_free_disk_mb(self, value: float) -> None:
        if not value >= 0:  # also refuses NaN
            raise ValueError(f"min_free_disk_mb: expected a value >= 0, got {value!r}")
        self._min_free_disk_mb = float(value)

    def free_mb(self) -> float:
        """Free space on the folder's filesystem for unprivileged writers [MiB]."""
        return shutil.disk_usage(self.folder).free / MB

    def shortfall(self) -> str | None:
        """None when there is enough free space (or no minimum), else a message saying how much."""
        if self._min_free_disk_mb <= 0:
            return None
        free = self.free_mb()
        if free >= self._min_free_disk_mb:
            return None
        return (f"only {free:.1f} MiB free on the filesystem of {self.folder}, below the minimum of "
                f"{self._min_free_disk_mb:g} MiB (min_free_disk_mb)")

    def check_due(self) -> LowDiskSpace | None:
        """:meth:`shortfall` as an error, looked at most once per ``interval_s`` (else None)."""
        now = time.monotonic()
        if now < self._next_check_s:
            return None
        self._next_check_s = now + self.interval_s
        message = self.shortfall()
        return None if message is None else LowDiskSpace(message)
