"""``rise.nodes.start``: a stop signal while a node module is still importing ends it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

SLOW_NODE = '''
import sys, time
print("importing", flush=True)
time.sleep(3)
def main(argv):
    print("main ran", flush=True)
    return 5
'''


def test_sigterm_during_import_exits_zero_without_running_main(tmp_path):
    (tmp_path / "slow_node.py").write_text(SLOW_NODE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    process = subprocess.Popen([sys.executable, "-m", "rise.nodes.start", "slow_node"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout.readline().strip() == "importing"
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "main ran" not in output and "Traceback" not in output, output
    assert time.monotonic() - started < 10


def test_without_a_signal_the_node_main_runs(tmp_path):
    (tmp_path / "slow_node.py").write_text(SLOW_NODE.replace("time.sleep(3)", ""))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run([sys.executable, "-m", "rise.nodes.start", "slow_node"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 5 and "main ran" in result.stdout, result.stdout + result.stderr


SLOW_CLEANUP_NODE = '''
import os, time
from pathlib import Path
from rclpy.node import Node
from rise.nodes.node_main import run_node

class SlowCleanup(Node):
    def __init__(self):
        super().__init__("slow_cleanup")
        self.create_timer(0.05, self._tick)
        self._ticks = 0

    def _tick(self):
        self._ticks += 1
        if self._ticks == 1:
            print("spinning", flush=True)

    def destroy_node(self):
        print("cleaning up", flush=True)
        time.sleep(1.5)  # a recorder closing its dataset
        Path(os.environ["CLEANUP_MARKER"]).write_text("done")
        return super().destroy_node()

def main(argv):
    return run_node(SlowCleanup, argv)
'''


def test_signals_during_cleanup_are_ignored_until_it_is_done(tmp_path):
    """Ctrl-C in a terminal reaches a launched node twice (terminal and launch), and launch
    escalates to SIGTERM: none of the later signals may cut the cleanup short."""
    (tmp_path / "slow_cleanup_node.py").write_text(SLOW_CLEANUP_NODE)
    marker = tmp_path / "cleanup_done"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
           "CLEANUP_MARKER": str(marker)}
    process = subprocess.Popen([sys.executable, "-m", "rise.nodes.start", "slow_cleanup_node"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout.readline().strip() == "spinning"
        process.send_signal(signal.SIGINT)
        assert process.stdout.readline().strip() == "cleaning up"
        process.send_signal(signal.SIGINT)
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    assert marker.read_text() == "done"
