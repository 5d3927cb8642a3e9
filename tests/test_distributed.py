"""Data-parallel training: each stage under ``torchrun`` with 2 CPU processes (gloo) follows the
loss trajectory of the single-process run, and rank 0 alone writes the checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed

from rise.models.checkpoint import verify
from rise.models.distributed import LOSSES_FILE, Distributed, LossLog, read_losses
from rise.models.dynamics import DynamicsModel, named_config
from rise.models.fit_dynamics import DynamicsTrainConfig, train_dynamics
from rise.models.fit_value import ValueFitConfig, fit_value
from rise.models.flow_matching import training_step
from rise.policy.warmup import WarmupConfig, warmup
from toy_data import write_toy_dataset

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)

STEPS = 5
# Gradients are averaged by a gloo all-reduce and the logged loss is the mean of the ranks' means:
# the same sums in another order, so float32 rounding differs by ~1e-7 relative per step.
RTOL = 1e-3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy", episodes=6, length=16)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    config = root / "exp.yaml"
    config.write_text(f"name: t\ndata_dir: {root}\ncheckpoint_dir: {root / 'ckpt'}\n"
                      f"output_dir: {root / 'out'}\n")
    return config


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:  # all held open at once: n distinct ports
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_torchrun(args: list[str], port: int, cwd: Path) -> subprocess.Popen:
    """``torchrun --nproc_per_node 2 -m rise.cli <args>`` on CPU, one torch thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "rise.cli", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(process: subprocess.Popen, timeout: float) -> None:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"torchrun {process.args[-12:]} timed out:\n{output[-3000:]}")
    assert process.returncode == 0, output[-6000:]


def check_same_run(one: Path, two: Path, kind: str) -> float:
    """Loss trajectories alike within RTOL, one checkpoint set in ``two``; the max relative difference."""
    first, second = read_losses(one), read_losses(two)
    assert [r["step"] for r in first] == [r["step"] for r in second] == list(range(1, STEPS + 1))
    worst, worst_abs = 0.0, 0.0
    for key in (k for k in first[0] if k != "step"):
        a = np.array([r[key] for r in first])
        b = np.array([r[key] for r in second])
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=1e-6, err_msg=f"{kind} {key}")
        worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12))))
        worst_abs = max(worst_abs, float(np.max(np.abs(a - b))))
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert [p.name for p in two.glob("step_*")] == [f"step_{STEPS:06d}"]
    assert json.loads((two / "latest.json").read_text())["folder"] == f"step_{STEPS:06d}"
    assert verify(two / f"step_{STEPS:06d}", kind=kind).step == STEPS
    print(f"{kind}: 1 vs 2 processes, max loss difference {worst_abs:.2e} ({worst:.2e} relative)")
    return worst


def test_value_dynamics_and_warmup_match_single_process_under_torchrun(dataset, experiment, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--config", str(experiment), "--datasets", str(dataset), "--model", "tiny",
              "--steps", str(STEPS), "--seed", "0"]
    # the single-process runs in this process; the value checkpoint labels both warm-up runs
    value = fit_value(ValueFitConfig(datasets=(str(dataset),), output=str(one / "value"), model="tiny",
                                     steps=STEPS, batch_size=8, progress_only_steps=2), progress=False)
    ports = _free_ports(3)
    runs = {  # the three 2-process runs side by side: most of their time is imports
        "value": start_torchrun(["train-value", *common, "--output", str(two / "value"), "--batch-size", "8",
                                 "--progress-only-steps", "2"], ports[0], tmp_path),
        "dynamics": start_torchrun(["train-dynamics", *common, "--output", str(two / "dynamics"),
                                    "--batch-size", "4"], ports[1], tmp_path),
        "policy": start_torchrun(["warmup", *common, "--output", str(two / "policy"), "--value", str(value),
                                  "--batch-size", "8"], ports[2], tmp_path),
    }
    try:
        train_dynamics(DynamicsTrainConfig(datasets=(str(dataset),), output=str(one / "dynamics"),
                                           model="tiny", steps=STEPS, batch_size=4, lr_schedule="cosine"),
                       progress=False)
        warmup(WarmupConfig(datasets=(str(dataset),), output=str(one / "policy"), value=str(value),
                            model="tiny", steps=STEPS, batch_size=8), progress=False)
        for process in runs.values():
            finish(process, timeout=240)
    finally:
        for process in runs.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    for kind in runs:
        check_same_run(one / kind, two / kind, kind)
    assert all(r["td_loss"] > 0 for r in read_losses(two / "value")[2:])  # the TD phase was reached


def test_rows_of_a_global_batch_see_the_single_process_noise():
    """Flow matching: the two halves' mean loss is the whole batch's loss (same per-sample noise)."""
    torch.manual_seed(0)
    model = DynamicsModel(**named_config("tiny"))
    cfg = model.config
    size = tuple(int(s) for s in cfg.image_size)
    batch = {"context": torch.rand(4, cfg.num_views, cfg.context_frames, 3, *size) * 2 - 1,
             "future": torch.rand(4, cfg.num_views, cfg.horizon, 3, *size) * 2 - 1,
             "actions": torch.randn(4, cfg.horizon, cfg.action_dim)}
    whole = training_step(model, batch, torch.Generator().manual_seed(5))
    halves = [training_step(model, {k: v[rows] for k, v in batch.items()}, torch.Generator().manual_seed(5),
                            rows=rows) for rows in (slice(0, 4, 2), slice(1, 4, 2))]
    torch.testing.assert_close(sum(halves) / 2, whole, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="rows"):
        training_step(model, batch, torch.Generator(), rows=slice(0, 4, 2))


def test_single_process_context_changes_nothing(tmp_path):
    alone = Distributed.from_env({})
    assert not alone.enabled and alone.is_main and alone.rows(7) is None
    model = torch.nn.Linear(2, 2)
    assert alone.wrap(model) is model and alone.mean({"loss": 0.5}) == {"loss": 0.5}
    alone.barrier()
    pair = Distributed.from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert pair.rows(8) == slice(1, 8, 2) and not pair.is_main
    with pytest.raises(ValueError, match="batch_size 7"):
        pair.rows(7)
    log = LossLog(tmp_path, start=0)
    for step in (1, 2, 3):
        log.write(step, {"loss": step / 10})
    LossLog(tmp_path, start=2)  # a run resumed from step 2 redoes step 3
    assert [r["step"] for r in read_losses(tmp_path)] == [1, 2] and (tmp_path / LOSSES_FILE).is_file()
    LossLog(tmp_path / "elsewhere", start=0, enabled=False).write(1, {"loss": 1.0})
    assert not (tmp_path / "elsewhere").exists()
