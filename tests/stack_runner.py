"""A node table slice run by the embedded runner inside a test, for fault injection.

``RunningStack(launches)`` starts the nodes (as ``rise up`` does, respawn included) and polls the
runner on a thread; ``kill(name)`` sends SIGKILL to a node's current process and returns the
monotonic time; ``wait_restarted(name)`` waits for the runner to report the death and start the
node again. Leaving the ``with`` block stops every node; ``exit_code`` is the runner's verdict.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence

from rise.bringup import NodeLaunch
from rise.ros_env import node_environment
from rise.runner import Runner
from support import wait_for


class RunningStack:
    def __init__(self, launches: Sequence[NodeLaunch]):
        self.lines: list[str] = []
        self.runner = Runner(launches, node_environment(os.environ), log=self.lines.append)
        self.exit_code: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.runner.poll()

    def __enter__(self) -> RunningStack:
        self.runner.start()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(5)
        self.exit_code = self.runner.stop()

    def starts(self, name: str) -> int:
        return sum(line.startswith(f"started {name} (pid") for line in self.lines)

    def kill(self, name: str) -> float:
        process = self.runner.processes[name]
        assert process is not None and process.poll() is None, f"{name} is not running"
        os.kill(process.pid, signal.SIGKILL)
        return time.monotonic()

    def wait_restarted(self, name: str, starts: int, timeout_s: float = 20.0) -> None:
        """Wait for the runner to report ``name`` killed and to start it for the ``starts``-th time."""
        reported = f"{name} exited with code -9; restarting"
        wait_for(lambda: any(line.startswith(reported) for line in self.lines), timeout_s,
                 f"the runner to report {name} killed")
        wait_for(lambda: self.starts(name) >= starts, timeout_s, f"the runner to restart {name}")
