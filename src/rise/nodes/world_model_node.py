"""World-model node: serves the dynamics + value models, announces checkpoints, imagines previews.

- Loads the latest checkpoints under ``<checkpoint_dir>/dynamics`` and ``<checkpoint_dir>/value``,
  as their ``latest.json`` names them (``{"folder", "sha256"}``, written by training), through
  :func:`rise.models.checkpoint.read_checkpoint`: the sha256 of the manifest must match the one in
  ``latest.json``, the folder must lie inside the checkpoint root after resolving links, hold only
  safetensors/JSON and at most the experiment's ``max_checkpoint_mb``; the models are built from the
  bytes that were hashed. A checkpoint that fails is refused with the file and the reason (log and
  the reload answer) and the loaded world model stays in use.
- ``/rise/world_model/checkpoint`` (std_msgs/String, JSON, transient local): each loaded world
  model: ``{"dynamics": {"path", "sha256", "step", "metrics"}, "value": {...}}``.
- ``/rise/world_model/reload`` (std_srvs/Trigger): load the newest checkpoints now.
- ``/rise/world_model/imagine`` (std_srvs/Trigger): imagine a preview from the request set on the
  parameters ``imagine.dataset``, ``imagine.episode``, ``imagine.frame`` (a real start state) with
  the recorded actions that followed it, for ``imagine.chunks`` chunks; writes an mp4 (real |
  imagined per view) under ``<output_dir>/imagine/`` and answers with JSON: the path and the value
  trace. (Standard service types only: no custom interface package to build.)

Run: ``ros2 run rise rise_world_model``
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from rise.imagination.world_model_env import ImaginationEnv, WorldModel
from rise.models.checkpoint import CheckpointError
from rise.models.episodes import load_episodes
from rise.models.evaluate import write_side_by_side
from rise.models.fit_dynamics import latest_pointer, load_dynamics
from rise.models.fit_value import load_value
from rise.nodes.node_main import run_node
from rise.nodes.parameters import declare, declare_configs
from rise.nodes.qos import LATCHED


class WorldModelNode(Node):
    """``node_kwargs`` go to rclpy's Node (tests pass a context and parameter overrides)."""

    def __init__(self, **node_kwargs):
        super().__init__("world_model", **node_kwargs)
        self.robot, experiment = declare_configs(self)
        self._root = Path(experiment.checkpoint_dir)
        self._max_bytes = experiment.max_checkpoint_bytes
        self._output = Path(experiment.output_dir) / "imagine"
        self._default_dataset = str(Path(experiment.data_dir) / experiment.task)
        self._sampling_steps = declare(self, "sampling_steps", 10, "ODE steps per imagined chunk")
        for name, default, text in (("imagine.dataset", "", "dataset folder (empty: <data_dir>/<task>)"),
                                    ("imagine.episode", 0, "episode to start from"),
                                    ("imagine.frame", 1, "frame to start from"),
                                    ("imagine.chunks", 2, "chunks to imagine (imagined frames fed back)")):
            declare(self, name, default, text, read_only=False)
        self.world_model: WorldModel | None = None
        self._announcement: dict = {}
        self._announce = self.create_publisher(String, "/rise/world_model/checkpoint", LATCHED)
        self.create_service(Trigger, "/rise/world_model/reload", self._on_reload)
        self.create_service(Trigger, "/rise/world_model/imagine", self._on_imagine)
        ok, message = self.reload()
        (self.get_logger().info if ok else self.get_logger().warning)(message)

    def reload(self) -> tuple[bool, str]:
        """Load the newest verified checkpoints; on any refusal keep what is loaded."""
        try:
            dynamics_latest = self._latest("dynamics")
            if dynamics_latest is None:
                return False, (f"no dynamics checkpoint under {self._root / 'dynamics'} yet "
                               "(rise train-dynamics)")
            dynamics, stats, dynamics_manifest = load_dynamics(*dynamics_latest, root=self._root,
                                                               max_bytes=self._max_bytes)
            value, value_manifest = None, None
            if (value_latest := self._latest("value")) is not None:
                value, value_manifest = load_value(*value_latest, root=self._root, max_bytes=self._max_bytes)
        except Exception as error:  # whatever fails refuses the checkpoint, never the loaded model
            if not isinstance(error, ValueError | OSError):  # CheckpointError names the file itself
                error = repr(error)
            self.get_logger().error(f"checkpoint refused, keeping the loaded world model: {error}")
            return False, f"refused: {error}"
        self.world_model = WorldModel(dynamics, stats, value, sampling_steps=self._sampling_steps)
        loaded = (("dynamics", dynamics_manifest), ("value", value_manifest))
        self._announcement = {name: {"path": str(m.folder), "sha256": m.sha256, "step": m.step,
                                     "metrics": m.metrics} for name, m in loaded if m}
        self._announce.publish(String(data=json.dumps(self._announcement)))
        return True, f"world model loaded: dynamics step {dynamics_manifest.step}" + (
            f", value step {value_manifest.step}" if value_manifest else ", no value model")

    def _latest(self, kind: str) -> tuple[Path, str] | None:
        """(folder, sha256) named by ``<root>/<kind>/latest.json``; a pointer without a sha256 is refused."""
        found = latest_pointer(self._root / kind)
        if found is not None and not found[1]:
            raise CheckpointError(f"{self._root / kind / 'latest.json'}: no sha256 of the manifest (refused)")
        return found

    def _on_reload(self, _request, response):
        response.success, response.message = self.reload()
        return response

    def _on_imagine(self, _request, response):
        if self.world_model is None:
            response.success, response.message = False, "no world model loaded"
            return response
        try:
            response.message = json.dumps(self.imagine())
            response.success = True
        except (ValueError, OSError, IndexError) as error:
            response.success, response.message = False, f"imagine failed: {error}"
        return response

    def imagine(self) -> dict:
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        dataset = get("imagine.dataset") or self._default_dataset
        model = self.world_model
        size = tuple(model.dynamics.config.image_size)
        episode_index, frame = int(get("imagine.episode")), int(get("imagine.frame"))
        chunks = int(get("imagine.chunks"))
        episodes = load_episodes([dataset], size)
        if not 0 <= episode_index < len(episodes):
            raise ValueError(f"imagine.episode: {dataset} has {len(episodes)} episodes")
        episode = episodes[episode_index]
        env = ImaginationEnv(model, [episode], self.robot.camera_names, self.robot.arm.joint_names,
                             self.robot.control_rate_hz)
        started = time.monotonic()
        _, info = env.reset(seed=0, start=(0, frame))
        values, imagined, real = [info["value"]], [], []
        h = model.horizon
        for chunk in range(chunks):
            t = frame + chunk * h
            if t + h >= episode.length:
                break
            observations, _, _, _, step_info = env.step_chunk(episode.actions[t:t + h])
            values += step_info["values"]
            imagined += [np.stack([o["images"][c] for c in self.robot.camera_names]) for o in observations]
            real += list(episode.images[t + 1:t + 1 + h])
        if not imagined:
            raise ValueError(f"imagine.frame: no room for a chunk of {h} after frame {frame}")
        self._output.mkdir(parents=True, exist_ok=True)
        path = self._output / f"{Path(dataset).name}_ep{episode_index}_f{frame}.mp4"
        write_side_by_side(path, [(np.stack(real), np.stack(imagined))])
        return {"video": str(path), "values": [round(float(v), 4) for v in values],
                "frames": len(imagined), "seconds": round(time.monotonic() - started, 2)}


def main(args=None) -> int:
    return run_node(WorldModelNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
