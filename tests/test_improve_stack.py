"""Improve mode in sim through the embedded runner: trainer -> policy checkpoint -> hot-swap on the arm."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rise.policy.warmup import WarmupConfig, warmup
from support import ROOT
from toy_data import tiny_checkpoints, write_toy_dataset


@pytest.mark.ros
@pytest.mark.stack
@pytest.mark.timeout(600)
def test_trainer_policy_reaches_the_simulated_arm_through_a_hot_swap(tmp_path):
    dataset = write_toy_dataset(tmp_path / "data" / "box_close")
    root = tmp_path / "ckpt"
    _, value = tiny_checkpoints(dataset, root)
    warmup(WarmupConfig(datasets=(str(dataset),), output=str(root / "policy_warmup"), value=str(value),
                        model="tiny", steps=2, batch_size=8), progress=False)
    config = tmp_path / "exp.yaml"
    config.write_text(f"name: t\ntask: box_close\ndata_dir: {tmp_path / 'data'}\ncheckpoint_dir: {root}\n"
                      f"output_dir: {tmp_path / 'out'}\n")
    # Six nodes share this machine's 2 cores: one torch thread each, or torch's spinning threads
    # slow the trainer several-fold (what a user of a small machine sets too).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "improve_stack.py"), "--config",
                             str(config), "--json", "--timeout", "420"],
                            capture_output=True, text=True, timeout=500, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["warmup_policy"].startswith(str(root / "policy_warmup"))
    assert figures["new_policy"].startswith(str(root / "policy")) and figures["iteration"] == 1
    # Timing figures (swap time, ticks missed, command gaps) are printed by the benchmark and
    # reported from a quiet machine; on a loaded 2-core CI runner they are not asserted.
    assert figures["swap_ms_announcement_to_live"] > 0 and figures["missed_ticks_during_swap"] >= 0
    assert figures["commands_sent"] > 30 and figures["max_command_step_rad"] > 0  # the policy drives the arm
