"""Soak: ``rise up`` under load for a long time, with figures recorded every minute.

    .venv/bin/python benchmarks/soak.py collect [--minutes 30] [--cameras 3] [--size 640x480]
    .venv/bin/python benchmarks/soak.py deploy  [--minutes 30] [--swap-every 60]

``collect``: the sim robot with ``--cameras`` MuJoCo cameras (front, wrist, side) at ``--size``
records unattended scripted-expert episodes through the recorder node (h264). ``deploy``: two
small behaviour-cloned policies are trained first (a few steps; their quality does not matter
here), the policy node drives the simulated arm, and every ``--swap-every`` seconds the other
checkpoint is announced on /rise/policy/checkpoint, so the node verifies and hot-swaps it.

Every ``--interval`` seconds (60) one row goes to ``<output>/soak.jsonl`` and the console: per node
resident memory (RSS) and CPU, and for the mode: frames recorded / dropped / late and the
recorder's p99 capture -> recorder latency (collect), swaps done, swap time, missed control ticks
and p99 command period (deploy), plus the p99 period of /rise/arm/command_sent. At the end every
recorded episode is read back, a summary (drops, memory growth from the first full minute to the
last, worst p99s) goes to ``summary.json`` and plots to ``soak.png``. Runs in a private ROS domain
with the localhost DDS profile. ``tests/test_soak.py`` runs it for seconds in CI and, with
``-m soak``, for the full 30 minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from rise import paths
from rise.ros_env import isolate_this_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_report import summarise  # noqa: E402 (the soak's summary and plots, beside this file)

SIM_CAMERAS = ("front", "wrist", "side")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024


def run(command: list[str], log: Path) -> None:
    with open(log, "a") as out:
        if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode:
            raise SystemExit(f"failed: {' '.join(command)} (see {log})")


def robot_yaml(folder: Path, cameras: int, size: tuple[int, int]) -> Path:
    sim = yaml.safe_load((paths.share_dir() / "config" / "robots" / "sim.yaml").read_text())
    sim.update(name="soak_sim", description=f"soak: {cameras} sim cameras at {size[0]}x{size[1]}")
    sim["urdf"] = str(paths.resolve(sim["urdf"]))
    sim["cameras"] = [{"name": name, "driver": "sim", "width": size[0], "height": size[1], "fps": 30.0}
                      for name in SIM_CAMERAS[:cameras]]
    path = folder / "robot.yaml"
    path.write_text(yaml.safe_dump(sim))
    return path


def experiment_yaml(folder: Path, **fields) -> Path:
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "soak", "task": "box_close", "data_dir": str(folder / "data"),
                                    "checkpoint_dir": str(folder / "ckpt"),
                                    "output_dir": str(folder / "out"), **fields}))
    return path


def prepare_policies(folder: Path, experiment: Path) -> list[Path]:
    """Two small behaviour-cloned policies (seeds 0 and 1) to swap between."""
    rise = [sys.executable, "-m", "rise.cli"]
    log = folder / "prepare.log"
    run([*rise, "collect", "--config", str(experiment), "--episodes", "2", "--codec", "h264"], log)
    folders = []
    for seed, name in ((0, "policy_warmup"), (1, "policy_alt")):
        run([*rise, "warmup", "--config", str(experiment), "--behaviour-cloning", "--steps", "5",
             "--seed", str(seed), "--output", str(folder / "ckpt" / name)], log)
        folders.append(next((folder / "ckpt" / name).glob("step_*")))
    return folders


def announcement(checkpoint: Path, iteration: int) -> str:
    sha = hashlib.sha256((checkpoint / "manifest.json").read_bytes()).hexdigest()
    return json.dumps({"path": str(checkpoint), "sha256": sha, "iteration": iteration, "metrics": {}})


def node_processes(parent: int) -> dict[str, int]:
    """pid of each node the runner started, by node name (from ``__node:=<name>``)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) != parent:
            continue
        names = [a.decode().split(":=", 1)[1] for a in args if a.startswith(b"__node:=")]
        if names:
            found[names[0]] = int(entry.name)
    return found


def usage(pid: int) -> tuple[float, float]:
    """(resident memory MB, CPU seconds) of a process; (nan, nan) once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan"), float("nan")
    return int(stat[21]) * PAGE_KB / 1024, (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def p99_ms(intervals_s: list[float]) -> float | None:
    return round(float(np.percentile(intervals_s, 99)) * 1e3, 1) if intervals_s else None


class Probe:
    """The harness's ROS node: collects what each minute's row reports."""

    def __init__(self):
        import rclpy
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        from rise.nodes.qos import COMMAND, LATCHED

        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("soak_probe")
        self.recorder: list[dict] = []  # each newly saved episode's summary
        self.policy: dict = {}
        self.sent_s: list[float] = []
        self.policy_s: list[float] = []
        self.node.create_subscription(String, "/rise/recorder/status", self._on_recorder, LATCHED)
        self.node.create_subscription(String, "/rise/policy/status",
                                      lambda m: self.policy.update(json.loads(m.data)), LATCHED)
        self.node.create_subscription(JointTrajectory, "/rise/arm/command_sent",
                                      lambda _m: self.sent_s.append(time.monotonic()), COMMAND)
        self.node.create_subscription(JointTrajectory, "/rise/policy/command",
                                      lambda _m: self.policy_s.append(time.monotonic()), COMMAND)
        self.announce = self.node.create_publisher(String, "/rise/policy/checkpoint", LATCHED)
        self.String = String
        self._seen_episode = -1

    def _on_recorder(self, message) -> None:
        status = json.loads(message.data)
        last = status.get("last_episode")
        if last and last["index"] > self._seen_episode:
            self._seen_episode = last["index"]
            self.recorder.append(last)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)

    def take(self) -> tuple[list[dict], list[float], list[float]]:
        """Episodes saved and command periods since the last call."""
        episodes, self.recorder = self.recorder, []
        sent, policy = list(np.diff(self.sent_s)), list(np.diff(self.policy_s))
        self.sent_s, self.policy_s = self.sent_s[-1:], self.policy_s[-1:]
        return episodes, sent, policy

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def collect_row(episodes: list[dict]) -> dict:
    latencies = [stats.get("p99") for e in episodes for stats in e.get("latency_ms", {}).values()]
    latencies = [value for value in latencies if value is not None]
    return {"episodes": len(episodes), "frames": sum(e["frames"] for e in episodes),
            "dropped": sum(e["dropped"] for e in episodes), "late": sum(e["late"] for e in episodes),
            "capture_to_recorder_p99_ms": max(latencies) if latencies else None}


def stop(stack: subprocess.Popen) -> int:
    stack.send_signal(signal.SIGTERM)
    try:
        return stack.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stack.kill()
        return -9


class Soak:
    """One soak run: the stack, the probe, and a row every ``interval`` seconds."""

    def __init__(self, args, folder: Path, stack: subprocess.Popen, probe: Probe, checkpoints: list[Path]):
        self.args, self.folder, self.stack, self.probe = args, folder, stack, probe
        self.checkpoints = checkpoints
        self.rows: list[dict] = []
        self.swaps = 0
        self._cpu: dict[str, float] = {}

    def run(self) -> None:
        started = time.monotonic()
        end = started + self.args.minutes * 60
        next_swap = started + self.args.swap_every
        while time.monotonic() < end:
            row_end = min(started + (len(self.rows) + 1) * self.args.interval, end)
            while time.monotonic() < row_end:
                if self.stack.poll() is not None:
                    log = (self.folder / "stack.log").read_text(errors="replace").splitlines()[-20:]
                    raise SystemExit(f"rise up ended with code {self.stack.returncode}; the end of "
                                     f"{self.folder / 'stack.log'}:\n" + "\n".join(log))
                if self.checkpoints and time.monotonic() >= next_swap:
                    self.swaps += 1
                    data = announcement(self.checkpoints[self.swaps % 2], self.swaps)
                    self.probe.announce.publish(self.probe.String(data=data))
                    next_swap += self.args.swap_every
                self.probe.spin_for(min(0.5, max(0.0, row_end - time.monotonic())))
            self._row((time.monotonic() - started) / 60)

    def _row(self, minute: float) -> None:
        episodes, sent, policy = self.probe.take()
        row = {"minute": round(minute, 2), "nodes": {}}
        for name, pid in sorted(node_processes(self.stack.pid).items()):
            rss, cpu = usage(pid)
            used = cpu - self._cpu.get(name, cpu)
            row["nodes"][name] = {"rss_mb": round(rss, 1), "cpu_pct": round(100 * used / self.args.interval)}
            self._cpu[name] = cpu
        row["rss_total_mb"] = round(sum(n["rss_mb"] for n in row["nodes"].values()), 1)
        row["command_sent_p99_ms"] = p99_ms(sent)
        row["command_sent"] = len(sent)
        if self.args.mode == "collect":
            row.update(collect_row(episodes))
        else:
            status = dict(self.probe.policy)
            row.update({key: status.get(key) for key in ("active_path", "swaps", "ticks", "missed_ticks",
                                                         "last_swap_ms", "last_refusal", "inference_ms_p50")})
            row.update(swaps_requested=self.swaps, policy_command_p99_ms=p99_ms(policy))
        self.rows.append(row)
        with open(self.folder / "soak.jsonl", "a") as out:
            out.write(json.dumps(row) + "\n")
        print("[soak] " + json.dumps({k: v for k, v in row.items() if k != "nodes"}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["collect", "deploy"])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per recorded row (default 60)")
    parser.add_argument("--cameras", type=int, default=3, choices=[1, 2, 3], help="collect: sim cameras")
    parser.add_argument("--size", default="640x480", help="collect: camera size WxH (default 640x480)")
    parser.add_argument("--swap-every", type=float, default=60.0, help="deploy: seconds between swaps")
    parser.add_argument("--output", default=None, help="folder for the figures (default: a temp folder)")
    args = parser.parse_args(argv)
    folder = Path(args.output or tempfile.mkdtemp(prefix=f"rise-soak-{args.mode}-")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    reservation = isolate_this_process(folder / "ros_log")  # held (its lock) until the soak ends
    width, height = (int(v) for v in args.size.lower().split("x"))
    experiment = experiment_yaml(folder)
    if args.mode == "collect":
        robot, checkpoints = robot_yaml(folder, args.cameras, (width, height)), []
    else:
        print("[soak] training two small policies to swap between ...", flush=True)
        checkpoints = prepare_policies(folder, experiment)
        robot = paths.share_dir() / "config" / "robots" / "sim.yaml"
    print(f"[soak] {args.mode} for {args.minutes:g} min, a row every {args.interval:g} s -> {folder}",
          flush=True)
    with open(folder / "stack.log", "w") as log:
        stack = subprocess.Popen([sys.executable, "-m", "rise.cli", "up", "--mode", args.mode,
                                  "--robot", str(robot), "--config", str(experiment)],
                                 stdout=log, stderr=subprocess.STDOUT)
        probe = Probe()
        soak = Soak(args, folder, stack, probe, checkpoints)
        try:
            soak.run()
        finally:
            code = stop(stack)
            probe.close()
    reservation.release()
    summary = summarise(args.mode, soak.rows, folder, code, checkpoints)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
