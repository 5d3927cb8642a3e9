"""Policy on the robot: inference latency, control-loop jitter with inference on the worker thread,
and hot-swap time (announcement -> live).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/policy_latency.py [--config cpu_default] [--seconds 10]

1. ``--calls`` predictions at batch 1 on 96 px frames (untrained weights: the cost is the same).
2. A ``--rate`` Hz control loop (absolute-deadline sleeps, like a ROS timer) driving
   :class:`rise.policy.runtime.PolicyRuntime` for ``--seconds`` while its worker predicts chunks;
   tick jitter is |interval - period|, a tick is missed when it comes more than a period late.
3. During that loop, ``--swaps`` freshly saved checkpoints are announced one after another
   (verified, loaded, dry-run in the background, live at the next tick); each swap is timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rise.models.checkpoint import verify
from rise.models.episodes import NormStats
from rise.policy.advantage import AdvantageBins
from rise.policy.model import PolicyModel, policy_config
from rise.policy.policy_io import Policy
from rise.policy.runtime import PolicyRuntime


def build_policy(config_name: str, seed: int) -> Policy:
    torch.manual_seed(seed)
    config = policy_config(config_name)
    stats = [NormStats(np.zeros(d, np.float32), np.full(d, 0.1, np.float32))
             for d in (config.state_dim, config.action_dim)]
    cameras = tuple(f"camera{i}" for i in range(config.num_views))
    return Policy(PolicyModel(config).eval(), *stats, AdvantageBins.uniform(config.num_bins), cameras=cameras)


def percentiles(values_s, scale: float = 1e3) -> str:
    values = np.asarray(values_s, dtype=float) * scale
    return f"p50 {np.percentile(values, 50):7.2f} ms  p99 {np.percentile(values, 99):7.2f} ms  " \
           f"max {values.max():7.2f} ms  (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu_default", help="named policy config")
    parser.add_argument("--seconds", type=float, default=10.0, help="control-loop duration [s]")
    parser.add_argument("--calls", type=int, default=50, help="predictions timed in part 1")
    parser.add_argument("--steps", type=int, default=10, help="flow (Euler) steps per prediction")
    parser.add_argument("--rate", type=float, default=30.0, help="control rate [Hz]")
    parser.add_argument("--swaps", type=int, default=5, help="checkpoints announced during the loop")
    parser.add_argument("--image-size", type=int, default=96, help="camera frame side [px]")
    args = parser.parse_args()

    policy = build_policy(args.config, seed=0)
    cfg = policy.config
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
              for c in policy.cameras}
    state = np.zeros(cfg.state_dim, np.float32)
    params = sum(p.numel() for p in policy.model.parameters()) / 1e6
    print(f"{args.config}: {params:.2f} M params, {cfg.num_views} views {cfg.image_size} px, "
          f"H={cfg.horizon}, {args.steps} flow steps, {torch.get_num_threads()} torch threads")

    policy.predict(images, state, steps=args.steps)  # warm up
    latencies = []
    for _ in range(args.calls):
        started = time.perf_counter()
        policy.predict(images, state, steps=args.steps)
        latencies.append(time.perf_counter() - started)
    print(f"inference (batch 1):      {percentiles(latencies)}")

    period = 1.0 / args.rate
    with tempfile.TemporaryDirectory(prefix="rise-policy-bench-") as tmp:
        root = Path(tmp)
        folders = []
        for i in range(args.swaps):
            folder = root / "policy" / f"step_{i + 1:06d}"
            build_policy(args.config, seed=i + 1).save(folder, step=i + 1)
            folders.append((folder, verify(folder).sha256))
        runtime = PolicyRuntime(action_dim=cfg.action_dim, cameras=policy.cameras, period_s=period,
                                steps=args.steps).start()
        runtime.set_policy(policy)
        runtime.observe(images, state)
        runtime.set_enabled(True)
        ticks = int(args.seconds * args.rate)
        announce_at = {int(ticks * (i + 1) / (args.swaps + 1)): f for i, f in enumerate(folders)}
        requests = []
        next_s = time.monotonic()
        for tick in range(ticks):
            runtime.tick()
            if tick in announce_at:
                folder, sha = announce_at[tick]
                requests.append(runtime.load_candidate(folder, expected_sha256=sha, root=root))
            next_s += period
            time.sleep(max(0.0, next_s - time.monotonic()))
        runtime.close()
    jitter = np.abs(np.asarray(runtime.intervals_s) - period)
    print(f"control tick jitter @ {args.rate:g} Hz: {percentiles(jitter)}; {runtime.missed_ticks} missed "
          f"of {runtime.ticks} ticks")
    print(f"inference on the worker:  {percentiles(runtime.inference_s)}; {runtime.chunks} chunks")
    refused = [r.error for r in requests if r.error]
    swaps = [s.swap_ms / 1e3 for s in runtime.swaps[1:]]  # [0] is the in-memory start policy
    loads = [(s.ready_s - s.announced_s) for s in runtime.swaps[1:]]
    if swaps:
        print(f"swap announcement->live:  {percentiles(swaps)}")
        print(f"  of which verify+load+dry run: {percentiles(loads)}")
    print(f"swaps: {len(swaps)} live, {len(refused)} refused, {args.swaps - len(swaps) - len(refused)} "
          "still loading at the end" + (f"; refused: {refused}" if refused else ""))


if __name__ == "__main__":
    main()
