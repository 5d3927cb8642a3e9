"""Environment for ROS 2 processes: DDS profile, domain isolation, log folder. No rclpy here.

``node_environment`` is what the embedded runner gives every node. ``DomainReservation`` hands a
process a ROS_DOMAIN_ID that no other process on this machine holds (a lock file per domain), so
two test suites running at once never see each other's nodes.
"""

from __future__ import annotations

import enum
import fcntl
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path

from rise import paths

DDS_PROFILE = "config/dds/fastdds_localhost.xml"
# Fast DDS maps a domain to UDP ports 7400 + 250 * domain: domains above 232 overflow the range.
TEST_DOMAIN_RANGE = range(100, 233)


class Network(str, enum.Enum):
    """How far DDS traffic reaches."""

    LOCALHOST = "localhost"  # shared memory + loopback only (config/dds/fastdds_localhost.xml)
    DEFAULT = "default"  # the RMW's defaults or the user's own DDS configuration


def node_environment(base: Mapping[str, str], network: Network = Network.LOCALHOST) -> dict:
    """The environment for a node process started from ``base`` (usually os.environ)."""
    env = dict(base)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if network is Network.LOCALHOST:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(paths.share_dir() / DDS_PROFILE)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class DomainReservation:
    """Holds a ROS_DOMAIN_ID exclusively (until ``release`` or process exit) via a lock file."""

    def __init__(self, lock_dir: Path | None = None, domains: range = TEST_DOMAIN_RANGE):
        self._lock_dir = lock_dir or Path(tempfile.gettempdir()) / "rise-ros-domains"
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        candidates = list(domains)
        random.Random(os.getpid()).shuffle(candidates)
        for domain in candidates:
            handle = open(self._lock_dir / f"{domain}.lock", "w")  # noqa: SIM115 - held open
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self.domain_id = domain
            self._handle = handle
            return
        raise RuntimeError(f"no free ROS_DOMAIN_ID in {domains} (locks in {self._lock_dir})")

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def isolate_this_process(log_dir: Path) -> DomainReservation:
    """Give this process (and the nodes it starts) a private domain, the localhost DDS profile and
    a private ROS log folder. Call before ``rclpy.init``."""
    reservation = DomainReservation()
    os.environ.update(node_environment(os.environ, Network.LOCALHOST))
    os.environ["ROS_DOMAIN_ID"] = str(reservation.domain_id)
    os.environ["ROS_LOG_DIR"] = str(log_dir)
    return reservation
