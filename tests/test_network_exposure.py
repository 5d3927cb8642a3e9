"""Network exposure: with the default localhost profile a node's sockets are bound to the loopback
address only (nothing reachable from another host); with ``--network default`` they are not (the
check does see exposure). Sockets are read from /proc: the node's socket inodes in /proc/<pid>/fd,
their local addresses in /proc/net/{udp,udp6,tcp,tcp6}."""

from __future__ import annotations

import os
import socket
import struct
import sys
from pathlib import Path

import pytest

from fault_log import record
from rise.ros_env import Network, node_environment
from support import wait_for

pytestmark = [pytest.mark.ros, pytest.mark.faults,
              pytest.mark.skipif(not Path("/proc/net/udp").exists(), reason="needs Linux /proc")]
MONITOR = [sys.executable, "-m", "rise.nodes.monitor_node", "--ros-args", "-p", "period_s:=0.2"]


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def local_address(hex_address: str) -> str:
    address, _port = hex_address.split(":")
    if len(address) == 8:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(address, 16)))
    words = struct.pack("<4I", *(int(address[i:i + 8], 16) for i in range(0, 32, 8)))
    return socket.inet_ntop(socket.AF_INET6, words)


def bound_addresses(pid: int) -> dict[str, set[str]]:
    """Local addresses of the process's IP sockets, by protocol."""
    inodes = socket_inodes(pid)
    found: dict[str, set[str]] = {}
    for table in ("udp", "udp6", "tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                found.setdefault(table, set()).add(local_address(fields[1]))
    return found


def exposed(addresses: dict[str, set[str]]) -> set[str]:
    return {a for found in addresses.values() for a in found if a not in ("127.0.0.1", "::1")}


@pytest.mark.parametrize("network", [Network.LOCALHOST, Network.DEFAULT])
def test_a_node_listens_only_on_loopback_unless_the_network_is_opened(network, spawn):
    base = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    process = spawn(MONITOR, env=node_environment(base, network))
    addresses = wait_for(lambda: process.poll() is None and bound_addresses(process.pid), 30,
                         "the node's DDS sockets")
    wait_for(lambda: len(bound_addresses(process.pid).get("udp", ())) >= 1, 10, "UDP sockets")
    addresses = bound_addresses(process.pid)
    if network is Network.LOCALHOST:
        assert not exposed(addresses), f"sockets reachable from other hosts: {addresses}"
        record("network: node sockets with the localhost profile", "bound to 127.0.0.1 only")
    else:
        assert exposed(addresses), addresses  # e.g. 0.0.0.0 for discovery: the check sees exposure
