"""Trainer node: runs the imagination loop on the announced world model and announces each policy.

- Subscribes ``/rise/world_model/checkpoint`` (std_msgs/String JSON, transient local, from the
  world-model node): the dynamics and value checkpoints to practise in. Each one is verified
  (:func:`rise.models.checkpoint.verify`: the announced sha256 of its manifest, inside the
  checkpoint root, safetensors/JSON only, at most ``max_checkpoint_mb``) when announced, and the
  loop loads it checking the announced sha256 again (built from the bytes that were hashed). A bad
  announcement is refused with the file and the reason; a running loop keeps its world model.
- Runs :func:`rise.policy.improve.improve` on a worker thread (never in a callback), starting from
  the warm-up policy (parameter ``warmup``, default the latest under ``<checkpoint_dir>/policy_warmup``)
  and resuming its run folder ``<checkpoint_dir>/policy``.
- ``/rise/policy/checkpoint`` (std_msgs/String JSON, transient local): each new policy checkpoint,
  ``{"path", "sha256", "iteration", "metrics"}`` — the policy node hot-swaps to it.
- ``/rise/trainer/start`` and ``/rise/trainer/pause`` (std_srvs/Trigger): start (or resume after a
  pause) and pause between training steps; ``/rise/trainer/status`` (std_srvs/Trigger): JSON state.
  With ``autostart`` (default true) the loop starts as soon as a world model is announced.

Run: ``ros2 run rise rise_trainer --ros-args -p iterations:=3``
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from pathlib import Path

from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from rise.models.checkpoint import CheckpointError, verify
from rise.models.fit_dynamics import latest_checkpoint
from rise.nodes.node_main import run_node
from rise.nodes.parameters import declare, declare_configs
from rise.nodes.qos import LATCHED
from rise.policy.improve import ImproveConfig, improve


class TrainerNode(Node):
    """``node_kwargs`` go to rclpy's Node (tests pass a context and parameter overrides)."""

    def __init__(self, **node_kwargs):
        super().__init__("trainer", **node_kwargs)
        self.robot, experiment = declare_configs(self)
        self._root = Path(experiment.checkpoint_dir)
        self._experiment = experiment
        self._max_bytes = experiment.max_checkpoint_bytes
        get = lambda name, default, text: declare(self, name, default, text)  # noqa: E731
        self._settings = {
            "datasets": get("datasets", [str(Path(experiment.data_dir) / experiment.task)],
                            "offline datasets (start states and labelled data)"),
            "warmup": get("warmup", "", "warm-up policy folder (empty: the latest under "
                          "<checkpoint_dir>/policy_warmup)"),
            "output": get("output", str(self._root / "policy"), "run folder of the loop (resumed)"),
            "world_model": get("world_model", "learned", "learned, or sim (the simulator as oracle)"),
            "iterations": get("iterations", 3, "iterations of the loop"),
            "rollouts": get("rollouts", 16, "imagined rollouts per iteration"),
            "steps_per_iteration": get("steps_per_iteration", 200, "learner steps per iteration"),
            "batch_size": get("batch_size", 32, "learner batch size"),
            "offline_ratio": get("offline_ratio", 0.6, "offline share of each batch"),
            "feedback_steps": get("feedback_steps", 2,
                                  "imagined frames fed back at most this often in a row"),
        }
        self._autostart = get("autostart", True, "start the loop when a world model is announced")
        self._lock = threading.Lock()
        self._pause = threading.Event()
        self._worker: threading.Thread | None = None
        self._world_model: dict | None = None
        self._state = {"state": "waiting for a world model", "iteration": 0, "last_policy": None,
                       "error": None, "world_model": None}
        self._announce = self.create_publisher(String, "/rise/policy/checkpoint", LATCHED)
        self.create_subscription(String, "/rise/world_model/checkpoint", self._on_world_model, LATCHED)
        self.create_service(Trigger, "/rise/trainer/start", self._on_start)
        self.create_service(Trigger, "/rise/trainer/pause", self._on_pause)
        self.create_service(Trigger, "/rise/trainer/status", self._on_status)
        self.get_logger().info("trainer ready: waiting for /rise/world_model/checkpoint")

    # -- world model ------------------------------------------------------------------------
    def _on_world_model(self, message: String) -> None:
        try:
            announcement = json.loads(message.data)
            for part in ("dynamics", "value"):
                entry = announcement[part]
                if not isinstance(entry["path"], str) or not isinstance(entry["sha256"], str):
                    raise TypeError(f"{part}: 'path' and 'sha256' must be strings")
                verify(entry["path"], expected_sha256=entry["sha256"], root=self._root, kind=part,
                       max_bytes=self._max_bytes)
        except (ValueError, KeyError, TypeError) as error:  # CheckpointError names the file and reason
            reason = error if isinstance(error, CheckpointError) else (
                f"expected JSON with dynamics and value {{path, sha256}} ({error!r}): {message.data[:200]!r}")
            self.get_logger().error(f"world-model announcement refused: {reason}")
            with self._lock:
                self._state["error"] = f"world model refused: {reason}"
            return
        with self._lock:
            self._world_model = announcement
            self._state["world_model"] = {p: announcement[p]["sha256"][:12] for p in ("dynamics", "value")}
        self.get_logger().info(f"world model: dynamics {announcement['dynamics']['path']}, "
                               f"value {announcement['value']['path']}")
        if self._autostart:
            self.start()

    # -- the loop -----------------------------------------------------------------------------
    def start(self) -> tuple[bool, str]:
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                was_paused = self._pause.is_set()
                self._pause.clear()
                self._state["state"] = "running"
                return True, "resumed" if was_paused else "already running"
            if self._world_model is None and self._settings["world_model"] == "learned":
                return False, "no world model announced yet on /rise/world_model/checkpoint"
            try:
                warm = self._settings["warmup"] or latest_checkpoint(self._root / "policy_warmup")
            except ValueError as error:  # CheckpointError: an unreadable latest.json
                return False, f"cannot start: {error}"
            if not warm:
                return False, f"no warm-up policy under {self._root / 'policy_warmup'} (rise warmup)"
            world = self._world_model or {}
            value = world.get("value", {}).get("path") or str(latest_checkpoint(self._root / "value"))
            s = self._settings
            try:
                cfg = ImproveConfig(
                    datasets=tuple(s["datasets"]), output=s["output"], warmup=str(warm), value=value,
                    dynamics=world.get("dynamics", {}).get("path"), world_model=s["world_model"],
                    value_sha256=world.get("value", {}).get("sha256"),
                    dynamics_sha256=world.get("dynamics", {}).get("sha256"),
                    task=self._experiment.task, robot=self._experiment.robot, iterations=s["iterations"],
                    rollouts_per_iteration=s["rollouts"], steps_per_iteration=s["steps_per_iteration"],
                    batch_size=s["batch_size"], offline_ratio=s["offline_ratio"],
                    feedback_steps=s["feedback_steps"], seed=self._experiment.seed)
            except ValueError as error:
                return False, f"cannot start: {error}"
            self._pause.clear()
            self._state.update(state="running", error=None)
            self._worker = threading.Thread(target=self._run, args=(cfg,), name="rise-trainer", daemon=True)
            self._worker.start()
            return True, f"started: {cfg.iterations} iterations from {warm}"

    def _run(self, cfg: ImproveConfig) -> None:
        started = time.monotonic()
        try:
            improve(cfg, progress=False, pause=self._pause, on_checkpoint=self._publish)
            with self._lock:
                self._state["state"] = f"finished in {time.monotonic() - started:.0f} s"
        except Exception as error:  # the node stays up and reports; the run folder keeps its checkpoints
            self.get_logger().error(f"imagination loop failed: {error}\n{traceback.format_exc(limit=3)}")
            with self._lock:
                self._state.update(state="failed", error=str(error))

    def _publish(self, folder: Path, metrics: dict) -> None:
        manifest = verify(folder, kind="policy")
        announcement = {"path": str(folder), "sha256": manifest.sha256, "iteration": metrics["iteration"],
                        "metrics": {k: v for k, v in metrics.items() if k != "bin_histogram"}}
        self._announce.publish(String(data=json.dumps(announcement)))
        with self._lock:
            self._state.update(iteration=metrics["iteration"], last_policy=announcement)
        self.get_logger().info(f"policy checkpoint announced: iteration {metrics['iteration']}, {folder}")

    # -- services -----------------------------------------------------------------------------
    def _on_start(self, _request, response):
        response.success, response.message = self.start()
        return response

    def _on_pause(self, _request, response):
        with self._lock:
            running = self._worker is not None and self._worker.is_alive()
            if running:
                self._pause.set()
                self._state["state"] = "paused"
        response.success = running
        response.message = "paused (between steps)" if running else "not running"
        return response

    def _on_status(self, _request, response):
        with self._lock:
            response.message = json.dumps(self._state)
        response.success = True
        return response

    def destroy_node(self) -> None:
        self._pause.clear()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(TrainerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
