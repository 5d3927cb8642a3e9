"""Checkpoint trust (issue 7, item 4). An announced checkpoint is loaded only from inside the
checkpoint root (no ``..``, no symbolic links out of it), only as safetensors + JSON (a pickle is
never unpickled), only when the sha256 of its manifest matches the announcement and every file
matches the manifest, only within the size bound; a truncated file is refused. Each refusal names
the file and the reason, and the running policy / world model keeps going.

One list of bad-checkpoint recipes (``CASES``) drives the ROS-free matrix and the node tests (one
node start per node for all cases)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from safetensors.torch import save_file
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from fault_log import record
from rise.models.checkpoint import CheckpointError, file_sha256, read_checkpoint, verify, write_manifest
from rise.models.fit_dynamics import latest_checkpoint, latest_pointer
from rise.nodes.qos import LATCHED
from rise.policy.policy_io import Policy
from support import call_service, spin_until, wait_for
from test_policy_node import running_policy_node, spin_for
from test_policy_runtime import save_policy
from toy_data import tiny_checkpoints, write_toy_dataset

pytestmark = pytest.mark.faults
BOUND_MB = 2  # the size bound the tests configure [MiB]; every good checkpoint here is smaller
BOUND = BOUND_MB * 1024**2
MARKER = "UNPICKLED"  # created next to the checkpoint root if anything ever unpickles the trap
WEIGHTS = ("model.safetensors", "diffusion_pytorch_model.safetensors")


# -- bad checkpoints, each made from a good one (root/<kind>/<good>) -------------------------------
@dataclasses.dataclass
class _Trap:
    """Unpickling this creates ``marker``: proof that nothing unpickled it."""

    marker: str

    def __reduce__(self):
        return open, (self.marker, "w")


def _trap(good: Path) -> bytes:
    return pickle.dumps(_Trap(str(good.parent.parent.parent / MARKER)))


def _kind(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["kind"]


def _sha(folder: Path) -> str:
    return file_sha256(folder / "manifest.json")


def _weights(folder: Path) -> Path:
    return next(folder / name for name in WEIGHTS if (folder / name).exists())


def _copy(good: Path, name: str) -> Path:
    return Path(shutil.copytree(good, good.parent / name))


def _outside(good: Path, name: str) -> Path:
    """A valid copy next to the checkpoint root (outside it)."""
    return Path(shutil.copytree(good, good.parent.parent.parent / "outside" / name))


def _resign(folder: Path, kind: str | None = None) -> str:
    """An attacker who rewrites the manifest too and announces its sha256."""
    return write_manifest(folder, kind or _kind(folder), step=1).sha256


def traversal(good, name):
    return good.parent / ".." / ".." / "outside" / name, _sha(_outside(good, name))


def symlinked_folder(good, name):
    outside = _outside(good, name)
    (good.parent / name).symlink_to(outside, target_is_directory=True)
    return good.parent / name, _sha(outside)


def symlinked(file: str | None):
    def make(good, name):
        folder = _copy(good, name)
        path = folder / file if file else _weights(folder)
        target = shutil.copy(path, good.parent.parent.parent / f"{name}_{path.name}")
        path.unlink()
        path.symlink_to(target)
        return folder, _sha(folder)
    return make


def extra_pickle(suffix: str):
    def make(good, name):
        folder = _copy(good, name)
        (folder / f"weights{suffix}").write_bytes(_trap(good))
        return folder, _sha(folder)
    return make


def pickle_as_safetensors(good, name):
    folder = _copy(good, name)
    _weights(folder).write_bytes(_trap(good))
    return folder, _resign(folder)


def altered(good, name):
    folder = _copy(good, name)
    data = bytearray(_weights(folder).read_bytes())
    data[len(data) // 2] ^= 0xFF
    _weights(folder).write_bytes(bytes(data))
    return folder, _sha(folder)


def oversized(good, name):
    folder = _copy(good, name)
    (folder / "padding.json").write_text(json.dumps("x" * BOUND))
    return folder, _resign(folder)


def truncated(file: str | None, resign: bool = False):
    def make(good, name):
        folder = _copy(good, name)
        path = folder / file if file else _weights(folder)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return folder, _resign(folder) if resign else _sha(folder)
    return make


def manifest_entry(entry: str):
    def make(good, name):
        folder = _copy(good, name)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"][entry] = {"sha256": "0" * 64, "bytes": 1}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder, _sha(folder)
    return make


def other_kind(good, name):
    folder = _copy(good, name)
    return folder, _resign(folder, "dynamics" if _kind(folder) != "dynamics" else "policy")


@dataclasses.dataclass(frozen=True)
class Case:
    fault: str  # as in the fault table
    reason: str  # a regex the refusal must match
    make: Callable[[Path, str], tuple[Path, str]]  # (good folder, new name) -> (folder, sha256 to announce)


CASES = [
    Case("path traversal out of the root", "outside the checkpoint root|not a plain folder name", traversal),
    Case("symlinked folder out of the root", "outside the checkpoint root", symlinked_folder),
    Case("symlinked weights file out of the root", "symbolic links are refused", symlinked(None)),
    Case("symlinked manifest out of the root", "symbolic links are refused", symlinked("manifest.json")),
    *[Case(f"pickle file weights{s} in the folder", rf"weights\{s}: refused: only \.safetensors and \.json",
           extra_pickle(s)) for s in (".pt", ".pkl", ".bin")],
    Case("pickle renamed to .safetensors, manifest re-signed", "not a safetensors file",
         pickle_as_safetensors),
    Case("manifest sha256 differs from the announcement", "does not match the announced",
         lambda good, name: (_copy(good, name), "0" * 64)),
    Case("weights altered after the manifest", "sha256 mismatch", altered),
    Case("over the size bound", "exceeds the .*-byte bound", oversized),
    Case("truncated safetensors file", r"truncated\?", truncated(None)),
    Case("truncated safetensors file, manifest re-signed", r"truncated\?", truncated(None, resign=True)),
    Case("truncated manifest", "not a rise-checkpoint/1 manifest", truncated("manifest.json", resign=False)),
    Case("manifest entry '../x.safetensors'", "not a plain file name", manifest_entry("../x.safetensors")),
    Case("manifest entry with an absolute path", "not a plain file name", manifest_entry("/tmp/x.json")),
    Case("kind mismatch", "checkpoint, expected '", other_kind),
    Case("no such folder", "not a checkpoint folder", lambda good, name: (good.parent / name, "0" * 64)),
]
IDS = [case.fault for case in CASES]


# -- ROS-free ---------------------------------------------------------------------------------------
@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("something tried to unpickle a checkpoint file")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)


def make_checkpoint(folder: Path) -> str:
    folder.mkdir(parents=True)
    save_file(torch.nn.Linear(64, 64).state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"width": 64}))
    return write_manifest(folder, "policy", step=1).sha256


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_verification_refuses_an_untrusted_checkpoint(case, tmp_path, no_unpickling):
    root = tmp_path / "root"
    good = root / "policy" / "good"
    sha = make_checkpoint(good)
    assert read_checkpoint(good, expected_sha256=sha, root=root, kind="policy", max_bytes=BOUND).data
    folder, announced = case.make(good, "bad")
    for check in (verify, read_checkpoint):
        with pytest.raises(CheckpointError, match=case.reason) as refused:
            check(folder, expected_sha256=announced, root=root, kind="policy", max_bytes=BOUND)
        assert "bad" in str(refused.value)  # names the file
    assert not (tmp_path / MARKER).exists()
    record(f"checkpoint verify: {case.fault}", "refused before loading")


@pytest.mark.parametrize("text, reason", [
    ("{not json", "unreadable"), ('["step_000001"]', "unreadable"),
    ('{"sha256": "ab"}', "unreadable.*folder"),
    ('{"folder": "../../elsewhere", "sha256": "ab"}', "folder .* is not a plain folder name"),
    ('{"folder": "/etc", "sha256": "ab"}', "folder .* is not a plain folder name"),
])
def test_a_bad_latest_pointer_is_refused(tmp_path, text, reason):
    (tmp_path / "latest.json").write_text(text)
    with pytest.raises(CheckpointError, match=rf"latest\.json: {reason}"):
        latest_pointer(tmp_path)


def test_a_policy_is_built_from_the_verified_bytes_not_the_disk(tmp_path):
    root = tmp_path / "root"
    folder = root / "policy" / "a"
    sha = save_policy(folder, seed=0)
    checkpoint = read_checkpoint(folder, expected_sha256=sha, root=root, kind="policy")
    verified = Policy.load(checkpoint).model.state_dict()
    shutil.rmtree(folder)  # swapped between verification and loading (time of check, time of use)
    save_policy(folder, seed=1)
    swapped = Policy.load(folder).model.state_dict()
    loaded = Policy.load(checkpoint).model.state_dict()
    assert all(torch.equal(verified[k], v) for k, v in loaded.items())
    assert not all(torch.equal(swapped[k], v) for k, v in loaded.items())
    record("checkpoint swapped after verification", "verified bytes loaded, swap ignored")


# -- nodes ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def spinning(node_under_test, context):
    """``node_under_test`` on its own executor thread (as in its own process); destroyed after."""
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node_under_test)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node_under_test
    finally:
        executor.shutdown()
        thread.join(10)
        node_under_test.destroy_node()


def experiment_yaml(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(f"name: t\ncheckpoint_dir: {root}\ndata_dir: {tmp_path}\noutput_dir: {tmp_path / 'out'}\n"
                    f"max_checkpoint_mb: {BOUND_MB}\n")
    return path


@pytest.mark.ros
def test_policy_node_refuses_untrusted_checkpoints_and_keeps_commanding(ros_node, tmp_path):
    with running_policy_node(ros_node, tmp_path, f"max_checkpoint_mb: {BOUND_MB}\n") as running:
        node, executor, root, sha_a, commands, statuses = running
        enable = SetBool.Request(data=True)
        assert call_service(node, executor, SetBool, "/rise/policy/enable", enable).success
        spin_until(executor, lambda: len(commands) >= 5, 20, "commands after enable")
        announcer = node.create_publisher(String, "/rise/policy/checkpoint", LATCHED)
        spin_until(executor, lambda: announcer.get_subscription_count() > 0, 15, "the checkpoint topic")
        good = root / "policy" / "b"
        save_policy(good, seed=1, step=2)  # never announced itself: the bad ones are made from it
        first_status, first_command, started = len(statuses), len(commands), time.monotonic()

        def refused(marker: str) -> str:
            return spin_until(executor, lambda: marker in (statuses[-1]["last_refusal"] or "")
                              and statuses[-1]["last_refusal"], 10, f"the refusal naming {marker}")

        for i, case in enumerate(CASES):
            folder, sha = case.make(good, f"case{i:02d}")
            announcer.publish(String(data=json.dumps({"path": str(folder), "sha256": sha, "iteration": i})))
            assert re.search(case.reason, refused(f"case{i:02d}")), case.fault
            record(f"policy checkpoint: {case.fault}", "refused, old policy kept running")
        for fault, text in (("announcement not JSON", "{not json"),
                            ("announcement without sha256", json.dumps({"path": "policy/b"})),
                            ("announcement path not a string", json.dumps({"path": 3, "sha256": "0" * 64}))):
            announcer.publish(String(data=text))
            assert "announcement refused" in refused(text)
            record(f"policy checkpoint: {fault}", "refused, old policy kept running")

        spin_for(executor, 0.5)
        assert all(s["active_sha256"] == sha_a for s in statuses[first_status:])
        times = np.array([t for t, _ in commands[first_command:]])
        assert len(times) > 0.5 * 30.0 * (times[-1] - started), "commands thinned out during the refusals"
        assert np.diff(times).max() < 0.5, f"commands paused {np.diff(times).max():.2f} s"
    assert not (tmp_path / MARKER).exists()


@pytest.fixture(scope="module")
def world_checkpoints(tmp_path_factory):
    """A toy dataset and tiny dynamics + value checkpoints, trained once for this module."""
    base = tmp_path_factory.mktemp("world")
    dataset = write_toy_dataset(base / "data" / "toy")
    tiny_checkpoints(dataset, base / "ckpt")
    return dataset, base / "ckpt"


@pytest.mark.ros
def test_world_model_node_refuses_untrusted_checkpoints_and_keeps_serving(ros_node, tmp_path,
                                                                          world_checkpoints):
    from rise.nodes.world_model_node import WorldModelNode

    node, executor = ros_node
    dataset, trained = world_checkpoints
    root = Path(shutil.copytree(trained, tmp_path / "ckpt"))
    announcements: list[dict] = []
    node.create_subscription(String, "/rise/world_model/checkpoint",
                             lambda m: announcements.append(json.loads(m.data)), LATCHED)
    world = WorldModelNode(context=node.context, parameter_overrides=[
        Parameter("experiment_config", value=str(experiment_yaml(tmp_path, root))),
        Parameter("imagine.dataset", value=str(dataset)), Parameter("imagine.frame", value=2),
        Parameter("imagine.chunks", value=1), Parameter("sampling_steps", value=2)])
    with spinning(world, node.context):
        spin_until(executor, lambda: announcements, 20, "the world model's announcement")
        loaded, heard = world.world_model, len(announcements)

        def reload_refused(kind: str, pointer: dict | str, fault: str, reason: str, name: str = "") -> None:
            latest = root / kind / "latest.json"
            good_pointer = latest.read_text()
            latest.write_text(pointer if isinstance(pointer, str) else json.dumps(pointer))
            answer = call_service(node, executor, Trigger, "/rise/world_model/reload", Trigger.Request(), 30)
            latest.write_text(good_pointer)
            assert not answer.success and re.search(reason, answer.message) and name in answer.message, fault
            assert world.world_model is loaded
            record(f"world-model checkpoint: {fault}", "refused, old world model kept serving")

        for kind, cases in (("dynamics", CASES), ("value", CASES[:5])):
            good = latest_checkpoint(root / kind)
            for i, case in enumerate(cases):
                folder, sha = case.make(good, f"{kind}{i:02d}")
                pointer = {"folder": os.path.relpath(folder, root / kind), "step": 9, "sha256": sha}
                reload_refused(kind, pointer, f"{kind} {case.fault}", case.reason, f"{kind}{i:02d}")
        reload_refused("dynamics", "{not json", "latest.json not JSON", "latest.json: unreadable")
        reload_refused("dynamics", {"folder": good.name}, "latest.json without sha256", "no sha256")
        reload_refused("dynamics", {"sha256": "0" * 64}, "latest.json without folder", "unreadable.*folder")

        answer = call_service(node, executor, Trigger, "/rise/world_model/imagine", Trigger.Request(), 60)
        assert answer.success, answer.message
        spin_for(executor, 0.2)
        assert len(announcements) == heard  # nothing new was announced
    assert not (tmp_path / MARKER).exists()


@pytest.mark.ros
def test_trainer_refuses_untrusted_world_models_and_keeps_the_good_one(ros_node, tmp_path, world_checkpoints):
    from rise.nodes.trainer_node import TrainerNode

    node, executor = ros_node
    root = Path(shutil.copytree(world_checkpoints[1], tmp_path / "ckpt"))
    trainer = TrainerNode(context=node.context, parameter_overrides=[
        Parameter("experiment_config", value=str(experiment_yaml(tmp_path, root))),
        Parameter("autostart", value=False)])
    announcer = node.create_publisher(String, "/rise/world_model/checkpoint", LATCHED)
    folders = {kind: latest_checkpoint(root / kind) for kind in ("dynamics", "value")}
    good = {kind: {"path": str(f), "sha256": verify(f).sha256} for kind, f in folders.items()}

    def status() -> dict:
        answer = call_service(node, executor, Trigger, "/rise/trainer/status", Trigger.Request())
        return json.loads(answer.message)

    def refused(announcement: str, marker: str) -> str:
        announcer.publish(String(data=announcement))
        return wait_for(lambda: marker in ((state := status())["error"] or "") and state["error"], 10,
                        f"the refusal naming {marker}")

    with spinning(trainer, node.context):
        spin_until(executor, lambda: announcer.get_subscription_count() > 0, 15, "the trainer's subscription")
        announcer.publish(String(data=json.dumps(good)))
        kept = wait_for(lambda: status()["world_model"], 10, "the good world model")
        for i, case in enumerate(CASES):
            folder, sha = case.make(folders["dynamics"], f"case{i:02d}")
            bad = {**good, "dynamics": {"path": str(folder), "sha256": sha}}
            assert re.search(case.reason, refused(json.dumps(bad), f"case{i:02d}")), case.fault
            assert status()["world_model"] == kept
            record(f"trainer world model: {case.fault}", "refused, announced world model kept")
        for fault, text in (("announcement not JSON", "{not json"),
                            ("announcement without value", json.dumps({"dynamics": good["dynamics"]}))):
            assert "world model refused" in refused(text, text)
            record(f"trainer world model: {fault}", "refused, announced world model kept")
        assert status()["world_model"] == kept
    assert not (tmp_path / MARKER).exists()
