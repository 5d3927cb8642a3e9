"""Embedded runner: starts the node table's nodes as processes where ``ros2 launch`` is missing.

Each node runs as ``python -m <module> --ros-args -r __node:=<name> -p k:=v ...``, the same
parameters the launch file passes. The runner reports nodes that die, restarts those marked
``respawn`` (not after exit code 2: the node refused its configuration or environment), and on
Ctrl-C / SIGTERM stops every node: SIGINT, then SIGTERM, then SIGKILL after deadlines. Nodes also
die with the runner (PR_SET_PDEATHSIG), so none is ever orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from rise.bringup import NodeLaunch

_PR_SET_PDEATHSIG = 1
# A node's exit code for a refused configuration (rise.nodes.node_main): restarting cannot help.
CONFIG_ERROR_EXIT = 2


def die_with_parent() -> None:
    """Get SIGTERM when the parent process dies (Linux; elsewhere a no-op). Every node process
    calls it first thing (``rise.nodes.start``); the runner also sets it before exec. (No check
    that the parent is still there: in a container the launcher is often pid 1.)"""
    # Not on Linux (no libc.so.6): nodes are still stopped by the runner's own shutdown.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def ros_args(launch: NodeLaunch) -> list[str]:
    """``--ros-args`` for a node: its name and parameters (values as YAML, like ``ros2 run``)."""
    args = ["--ros-args", "-r", f"__node:={launch.name}"]
    for key, value in launch.parameters:
        args += ["-p", f"{key}:={json.dumps(value) if not isinstance(value, str) else value}"]
    return args


def node_command(launch: NodeLaunch) -> list[str]:
    if not launch.spec.embedded:
        raise ValueError(f"node {launch.name!r} belongs to package {launch.spec.package!r} and "
                         "needs a ROS 2 install; use `ros2 launch rise bringup.launch.py`")
    return [sys.executable, "-m", "rise.nodes.start", launch.spec.module, *ros_args(launch)]


@dataclasses.dataclass
class _Child:
    launch: NodeLaunch
    process: subprocess.Popen | None = None
    restarts: int = 0
    restart_at: float | None = None  # monotonic time of a pending respawn
    exit_code: int | None = None


class Runner:
    """Runs a list of node launches until stopped."""

    def __init__(
        self,
        launches: Sequence[NodeLaunch],
        env: Mapping[str, str],
        log: Callable[[str], None] = lambda line: print(f"[rise up] {line}", flush=True),
        stop_timeout_s: float = 10.0,
    ):
        self._children = [_Child(launch) for launch in launches]
        self._env = dict(env)
        self._log = log
        self._stop_timeout_s = stop_timeout_s
        self._stopping = False

    @property
    def processes(self) -> dict[str, subprocess.Popen | None]:
        return {c.launch.name: c.process for c in self._children}

    def start(self) -> None:
        for child in self._children:
            self._spawn(child)

    def _spawn(self, child: _Child) -> None:
        child.process = subprocess.Popen(
            node_command(child.launch),
            env=self._env,
            preexec_fn=die_with_parent,
            process_group=0,  # Ctrl-C reaches the runner only; it forwards the stop to the nodes
        )
        child.restart_at = None
        self._log(f"started {child.launch.name} (pid {child.process.pid})")

    def poll(self) -> None:
        """Notice nodes that exited; respawn those that should be once their delay is over."""
        now = time.monotonic()
        for child in self._children:
            if child.restart_at is not None and now >= child.restart_at and not self._stopping:
                child.restarts += 1
                self._spawn(child)
                continue
            if child.process is None or child.restart_at is not None:
                continue
            code = child.process.poll()
            if code is None:
                continue
            child.exit_code = code
            spec = child.launch.spec
            if code == CONFIG_ERROR_EXIT and child.launch.respawn:
                self._log(f"{child.launch.name} exited with code {code} (it refused its configuration "
                          "or environment, see its error above): not restarting it")
                child.process = None
            elif child.launch.respawn and not self._stopping:
                child.restart_at = now + spec.respawn_delay_s
                self._log(f"{child.launch.name} exited with code {code}; restarting in "
                          f"{spec.respawn_delay_s:g} s (restart {child.restarts + 1})")
            else:
                self._log(f"{child.launch.name} exited with code {code}")
                child.process = None

    def alive(self) -> list[str]:
        return [c.launch.name for c in self._children
                if (c.process is not None and c.process.poll() is None) or c.restart_at]

    def run(self, duration_s: float | None = None, on_tick: Callable[[], None] | None = None) -> int:
        """Start, supervise until Ctrl-C / SIGTERM / ``duration_s`` / all nodes gone, then stop."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def request_stop(signum, _frame):
            self._log(f"{signal.Signals(signum).name} received: stopping")
            self._stopping = True

        for sig in previous:
            signal.signal(sig, request_stop)
        try:
            self.start()
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not self._stopping:
                self.poll()
                if on_tick is not None:
                    on_tick()
                if not self.alive():
                    self._log("no node is running any more")
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            return self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> int:
        """Stop all nodes; 0 when each exited cleanly, 1 otherwise."""
        self._stopping = True
        running = [c for c in self._children if c.process is not None and c.process.poll() is None]
        sigint_wait_s = max([self._stop_timeout_s, *(c.launch.spec.stop_timeout_s for c in running)])
        for sig, wait_s in ((signal.SIGINT, sigint_wait_s), (signal.SIGTERM, 3.0),
                            (signal.SIGKILL, 3.0)):
            for child in running:
                if child.process.poll() is None:
                    child.process.send_signal(sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(c.process.poll() is None for c in running):
                time.sleep(0.05)
            if sig is not signal.SIGINT:
                late = [c.launch.name for c in running if c.process.returncode == -sig]
                if late:
                    self._log(f"sent {sig.name} to {', '.join(late)}")
            if all(c.process.poll() is not None for c in running):
                break
        failed = False
        for child in self._children:
            code = child.process.returncode if child.process is not None else child.exit_code
            if code not in (0, None):
                failed = True
                self._log(f"{child.launch.name} ended with code {code}")
        self._log("all nodes stopped")
        return 1 if failed else 0
