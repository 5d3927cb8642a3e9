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
