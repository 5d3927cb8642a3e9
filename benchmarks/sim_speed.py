"""Simulator speed: physics steps/s, camera render rate, and full control ticks/s per task.

    .venv/bin/python benchmarks/sim_speed.py [--seconds 5] [--size 96]

Prints one line per figure. CPU only; MuJoCo renders offscreen through EGL (Mesa llvmpipe here).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import mujoco
import numpy as np

from rise.config import load_robot
from rise.sim.env import SimEnv
from rise.sim.tasks import TASKS


def rate(fn, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--size", type=int, default=96, help="camera width and height [px]")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    robot = load_robot("sim")
    robot = dataclasses.replace(robot, cameras=tuple(
        dataclasses.replace(c, width=args.size, height=args.size) for c in robot.cameras))
    for task in sorted(TASKS):
        with SimEnv(task, robot) as env:
            env.reset(seed=0)
            physics = rate(lambda e=env: mujoco.mj_step(e.model, e.data), args.seconds / 2)
            renders = rate(env.render, args.seconds / 2) * len(robot.cameras)
            expert = env.task.expert(env, np.random.default_rng(0))

            def tick(e=env):
                nonlocal expert
                _, _, terminated, truncated, _ = e.step(expert.act(e))
                if terminated or truncated:
                    e.reset()
                    expert = e.task.expert(e, np.random.default_rng(1))

            ticks = rate(tick, args.seconds)
        print(f"{task:<11} physics {physics:8.0f} steps/s | render {renders:6.0f} frames/s at "
              f"{args.size}x{args.size} | expert ticks with {len(robot.cameras)} cameras {ticks:6.1f}/s "
              f"= {ticks / robot.control_rate_hz:5.1f}x real time")


if __name__ == "__main__":
    main()
