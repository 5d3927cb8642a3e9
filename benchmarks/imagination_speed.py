"""Imagination throughput: imagined control steps per second for a batch of rollouts.

    .venv/bin/python benchmarks/imagination_speed.py [--model cpu_default] [--batch 8] [--steps 10]

Times one imagined chunk (H steps of every view) for a batch of rollouts with the dynamics model
(weights do not change the cost: freshly initialised) plus the value model on every imagined
frame, and prints imagined control steps/s and the ratio to the robot's control rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rise.imagination.world_model_env import WorldModel
from rise.models.dynamics import DynamicsModel, named_config
from rise.models.episodes import NormStats
from rise.models.value import ValueModel, value_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cpu_default")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=10, help="ODE steps per chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--control-rate", type=float, default=30.0)
    args = parser.parse_args()
    config = named_config(args.model)
    dynamics = DynamicsModel(**config).eval()
    value = ValueModel(value_config("cpu_default" if args.model == "cpu_default" else "large")).eval()
    stats = NormStats(np.zeros(config["action_dim"], np.float32), np.ones(config["action_dim"], np.float32))
    world = WorldModel(dynamics, stats, value if value.config.image_size == config["image_size"][0] else None,
                       sampling_steps=args.steps)
    v, k, h = config["num_views"], config["context_frames"], config["horizon"]
    size = tuple(config["image_size"])
    print(f"{args.model}: {sum(p.numel() for p in dynamics.parameters()) / 1e6:.2f} M params, {v} views "
          f"{size[0]}x{size[1]}, K={k}, H={h}, {args.steps} ODE steps, {torch.get_num_threads()} threads")
    for batch in args.batch:
        context = torch.rand(batch, v, k, 3, *size) * 2 - 1
        actions = np.zeros((batch, h, config["action_dim"]), np.float32)
        world.values(world.imagine(context, actions))  # warm up
        start = time.perf_counter()
        for _ in range(args.repeats):
            world.values(world.imagine(context, actions))
        seconds = (time.perf_counter() - start) / args.repeats
        rate = batch * h / seconds
        print(f"  batch {batch:3d}: {seconds:6.2f} s per chunk -> {rate:7.1f} imagined control steps/s "
              f"= {rate / args.control_rate:5.2f}x the {args.control_rate:g} Hz control rate")


if __name__ == "__main__":
    main()
