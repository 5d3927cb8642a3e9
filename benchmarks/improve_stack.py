"""Improve mode end to end in sim: the trainer announces a policy, the policy node swaps to it while
it drives the simulated arm. Prints the swap time and the control ticks missed during the swap.

The experiment config must name a checkpoint root holding ``value/``, ``dynamics/`` and
``policy_warmup/`` runs and a data folder with ``<task>/`` (the trainer's offline data), e.g. after

    rise collect --task box_close --episodes 40 --failing-fraction 0.3
    rise train-dynamics --datasets rise_runs/data/box_close && rise train-value --datasets ...
    rise warmup --datasets rise_runs/data/box_close

Run: ``python benchmarks/improve_stack.py --config my_experiment.yaml`` (``--json`` for one line).
It starts ``rise up --mode improve`` (sim, arm bridge, policy, world model, trainer, monitor) with
the embedded runner in a private ROS domain and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rise.ros_env import isolate_this_process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="experiment config YAML (see the module docstring)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="rise-improve-"))
    isolate_this_process(folder / "ros_log")

    import rclpy
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from rise.nodes.qos import COMMAND, LATCHED

    stack = subprocess.Popen([sys.executable, "-m", "rise.cli", "up", "--robot", "sim", "--mode", "improve",
                              "--config", str(Path(args.config).resolve())], stdout=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node("bench_improve_stack")
    statuses: list[tuple[float, dict]] = []
    announcements: list[tuple[float, dict]] = []
    commands: list[tuple[float, list[float]]] = []
    node.create_subscription(String, "/rise/policy/status",
                             lambda m: statuses.append((time.monotonic(), json.loads(m.data))), LATCHED)
    node.create_subscription(String, "/rise/policy/checkpoint",
                             lambda m: announcements.append((time.monotonic(), json.loads(m.data))), LATCHED)
    node.create_subscription(JointTrajectory, "/rise/arm/command_sent",
                             lambda m: commands.append((time.monotonic(), list(m.points[0].positions)))
                             if m.points else None, COMMAND)
    deadline = time.monotonic() + args.timeout

    def spin_until(predicate, what: str):
        while not predicate():
            if time.monotonic() > deadline or stack.poll() is not None:
                raise SystemExit(f"improve stack: gave up waiting for {what} "
                                 f"(stack exit code {stack.poll()})")
            rclpy.spin_once(node, timeout_sec=0.05)

    try:
        spin_until(lambda: statuses and statuses[-1][1]["active_sha256"] and statuses[-1][1]["ticks"] > 30,
                   "the policy node to run the warm-up policy")
        first = statuses[-1][1]
        spin_until(lambda: announcements and announcements[-1][1]["sha256"] != first["active_sha256"],
                   "the trainer's first policy announcement")
        announced_at, announcement = announcements[-1]
        before = statuses[-1][1]
        spin_until(lambda: statuses[-1][1]["active_sha256"] == announcement["sha256"], "the swap")
        live_at, after = statuses[-1]
        settle = time.monotonic() + 3.0  # keep driving the arm a moment after the swap
        spin_until(lambda: time.monotonic() > settle, "the arm after the swap")
        window = [t for t, _ in commands if announced_at - 1.0 <= t <= live_at + 1.0]
        gaps = [b - a for a, b in zip(window, window[1:], strict=False)]
        moved = max((abs(a - b) for (_, p), (_, q) in zip(commands, commands[1:], strict=False)
                     for a, b in zip(p, q, strict=True)), default=0.0)
        figures = {
            "warmup_policy": first["active_path"], "new_policy": announcement["path"],
            "iteration": announcement["iteration"],
            "swap_ms_announcement_to_live": after["last_swap_ms"],
            "swap_observed_ms": round((live_at - announced_at) * 1e3, 1),
            "missed_ticks_during_swap": after["last_swap_missed_ticks"],
            "missed_ticks_around_swap": after["missed_ticks"] - before["missed_ticks"],
            "ticks": after["ticks"], "missed_ticks_total": after["missed_ticks"],
            "commands_sent": len(commands), "max_command_gap_ms_around_swap": round(max(gaps) * 1e3, 1)
            if gaps else None, "max_command_step_rad": round(moved, 4),
            "inference_ms_p50": after["inference_ms_p50"],
        }
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stack.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:34s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
