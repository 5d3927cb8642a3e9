"""SIGKILL each node of ``rise up`` while it works: the runner reports it and restarts it, the arm
holds while its command source (or the arm bridge) is gone, the recorder keeps every finished
episode, and the trainer resumes after its last finished iteration. Each kill is noted for the
fault table (tests/fault_log.py) with its recovery time."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from fault_log import record
from rise.bringup import NODE_TABLE, Mode, NodeLaunch, plan
from rise.config import load_robot, robot_path
from rise.data import DatasetReader
from rise.models.checkpoint import verify
from rise.nodes.qos import COMMAND, LATCHED, STATE
from stack_runner import RunningStack
from support import call_service, spin_until
from test_policy_runtime import save_policy
from toy_data import trainer_setup

pytestmark = [pytest.mark.ros, pytest.mark.faults]
ROBOT = load_robot("sim")
NAMES = list(ROBOT.arm.joint_names)
SPECS = {spec.name: spec for spec in NODE_TABLE}


class Watch:
    """What the test node sees of the stack: arrival times and payloads of the topics it checks."""

    def __init__(self, node):
        self.joints: list[tuple[float, np.ndarray]] = []
        self.sent: list[float] = []
        self.policy: list[float] = []
        self.teleop: list[float] = []
        self.arm: list[tuple[float, dict]] = []
        node.create_subscription(JointState, "/joint_states", self._on_joints, STATE)
        node.create_subscription(JointTrajectory, "/rise/arm/command_sent",
                                 lambda _m: self.sent.append(time.monotonic()), COMMAND)
        node.create_subscription(JointTrajectory, "/rise/policy/command",
                                 lambda _m: self.policy.append(time.monotonic()), COMMAND)
        node.create_subscription(JointTrajectory, "/rise/teleop/command",
                                 lambda _m: self.teleop.append(time.monotonic()), COMMAND)
        node.create_subscription(String, "/rise/arm/status",
                                 lambda m: self.arm.append((time.monotonic(), json.loads(m.data))), LATCHED)

    def _on_joints(self, message: JointState) -> None:
        index = {name: i for i, name in enumerate(message.name)}
        if all(name in index for name in NAMES):
            self.joints.append((time.monotonic(), np.array([message.position[index[n]] for n in NAMES])))

    def pose(self) -> np.ndarray:
        return self.joints[-1][1]

    def motion(self, start: float, end: float) -> float:
        """Largest joint excursion between ``start`` and ``end`` (rad, m for the gripper)."""
        poses = np.array([pose for t, pose in self.joints if start <= t <= end])
        assert len(poses) > 5, "too few joint states to judge"
        return float((poses.max(axis=0) - poses.min(axis=0)).max())


def first_after(times: list[float], moment: float) -> float | None:
    return next((t for t in times if t > moment), None)


def kill_source(stack: RunningStack, executor, watch: Watch, name: str, times: list[float]) -> None:
    """SIGKILL the command source ``name``: once the arm bridge reports holding, the arm must stay
    still for 1 s while the source is silent; then the runner restarts it and its commands resume."""
    killed = stack.kill(name)

    def holding() -> bool:  # the latest status (published on changes): held for want of commands
        status = watch.arm[-1][1] if watch.arm else {}
        return (time.monotonic() > killed + 0.6 and status.get("held")
                and any("timeout" in reason or "inactive" in reason for reason in status["reasons"]))

    spin_until(executor, holding, 10, "the arm bridge to hold (command timeout, or never activated)")
    settle = time.monotonic() + 0.5  # the controller reaches the held target
    spin_until(executor, lambda: time.monotonic() > settle, 5, "the arm to settle")
    start = time.monotonic()
    spin_until(executor, lambda: time.monotonic() > start + 1.0, 5, "1 s of holding")
    back = first_after(times, killed + 0.2)
    assert back is None or back > start + 1.0, "the source came back before the hold could be observed"
    moved = watch.motion(start, start + 1.0)
    assert moved < 0.01, f"the arm moved {moved:.4f} while {name} was gone"
    stack.wait_restarted(name, starts=2)
    spin_until(executor, lambda: first_after(times, killed + 0.2), 60, f"{name} commands again")
    record(f"SIGKILL {name} node", "restarted; the arm held (< 0.01 rad) while it was gone",
           recovery_s=first_after(times, killed + 0.2) - killed)


@pytest.mark.timeout(300)
def test_killed_nodes_of_a_deploy_stack_restart_and_the_arm_holds_meanwhile(tmp_path, ros_node):
    node, executor = ros_node
    root = tmp_path / "ckpt"
    sha = save_policy(root / "policy" / "step_000001", seed=0)
    (root / "policy" / "latest.json").write_text(json.dumps({"folder": "step_000001", "sha256": sha}))
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(f"name: crash\ntask: box_close\ncheckpoint_dir: {root}\ndata_dir: {tmp_path}\n"
                          f"output_dir: {tmp_path / 'out'}\n")
    launches = plan(ROBOT, robot_path("sim"), Mode.DEPLOY, experiment, embedded=True)
    common = (("robot_config", str(robot_path("sim").resolve())), ("experiment_config", str(experiment)))
    launches.append(NodeLaunch(SPECS["teleop"], common + (("device", "leader_arm"),), respawn=True))
    watch = Watch(node)
    leader = node.create_publisher(JointState, "/leader/joint_states", STATE)
    select = node.create_publisher(String, "/rise/arm/select_source", LATCHED)
    leader_pose: list[np.ndarray] = []
    node.create_timer(0.02, lambda: leader.publish(JointState(name=NAMES, position=leader_pose[0].tolist()))
                      if leader_pose else None)

    with RunningStack(launches) as stack:
        spin_until(executor, lambda: len(watch.policy) > 30 and len(watch.sent) > 30, 120,
                   "the policy driving the simulated arm")

        # The policy dies: the bridge follows what it had, then holds; the runner restarts it.
        kill_source(stack, executor, watch, "policy", watch.policy)

        # Teleop (a leader arm) takes over, then dies: the same hold.
        leader_pose.append(watch.pose() + np.r_[0.05, 0, 0, 0, 0, 0, 0])
        select.publish(String(data="teleop"))
        spin_until(executor, lambda: watch.arm and watch.arm[-1][1]["source"] == "teleop"
                   and len(watch.teleop) > 5 and abs(watch.pose()[0] - leader_pose[0][0]) < 0.02, 60,
                   "the arm following the leader")
        kill_source(stack, executor, watch, "teleop", watch.teleop)

        # The arm bridge dies: no command reaches the controller, which holds the last one.
        killed = stack.kill("arm_bridge")
        spin_until(executor, lambda: time.monotonic() > killed + 1.0, 5, "1 s without the bridge")
        moved = watch.motion(killed + 0.2, killed + 1.0)
        assert moved < 0.01, f"the arm moved {moved:.4f} without the bridge"
        stack.wait_restarted("arm_bridge", starts=2)
        spin_until(executor, lambda: first_after(watch.sent, killed + 0.2), 60, "commands sent again")
        record("SIGKILL arm_bridge node", "restarted; the controller held the last command (< 0.01 rad)",
               recovery_s=first_after(watch.sent, killed + 0.2) - killed)

        # The simulator (the robot) dies: a new one comes up and publishes joint states again.
        killed = stack.kill("sim")
        stack.wait_restarted("sim", starts=2)
        spin_until(executor, lambda: watch.joints[-1][0] > killed + 0.5, 60, "joint states again")
        record("SIGKILL sim node", "restarted (a new scene); joint states resumed",
               recovery_s=next(t for t, _ in watch.joints if t > killed + 0.5) - killed)

        killed = stack.kill("monitor")
        stack.wait_restarted("monitor", starts=2)
        answer = call_service(node, executor, Trigger, "/rise/monitor/status", Trigger.Request(), 60)
        record("SIGKILL monitor node", "restarted; status answered", recovery_s=time.monotonic() - killed)
        assert json.loads(answer.message)["mode"] == "deploy"
    # Known open defect (see README "Reliability"): a policy process restarted after a SIGKILL now
    # and then aborts in native code while it stops (exit -6, "terminate called without an active
    # exception"), after its node was destroyed. It is counted in the fault table, not hidden.
    ended = [line for line in stack.lines if " ended with code " in line]
    aborted = [line for line in ended if line == "policy ended with code -6"]
    record("stop after a policy restart", "the restarted policy aborted at exit (SIGABRT, open defect)"
           if aborted else "every node exited 0")
    assert ended == aborted, "\n".join(stack.lines)


@pytest.mark.timeout(420)
def test_a_recorder_killed_mid_episode_keeps_every_finished_episode(tmp_path, ros_node):
    node, executor = ros_node
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(f"name: crash\ntask: box_close\ndata_dir: {tmp_path / 'data'}\n")
    launches = plan(ROBOT, robot_path("sim"), Mode.COLLECT, experiment, embedded=True)
    statuses: list[tuple[float, dict]] = []
    node.create_subscription(String, "/rise/recorder/status",
                             lambda m: statuses.append((time.monotonic(), json.loads(m.data))), LATCHED)
    with RunningStack(launches) as stack:
        spin_until(executor, lambda: statuses and statuses[-1][1]["episodes"] >= 1, 180,
                   "a first saved episode")
        spin_until(executor, lambda: statuses[-1][1]["recording"], 60, "the next episode to start")
        started = time.monotonic()
        spin_until(executor, lambda: time.monotonic() > started + 2.0, 5, "2 s into the episode")
        finished = statuses[-1][1]["episodes"]
        killed = stack.kill("recorder")
        stack.wait_restarted("recorder", starts=2)
        back = spin_until(executor, lambda: next((s for t, s in statuses if t > killed), None), 60,
                          "the restarted recorder's status")
        assert back["episodes"] == finished, back  # the finished ones are there, the killed one is not
        recovered_s = next(t for t, _ in statuses if t > killed) - killed
        spin_until(executor, lambda: statuses[-1][1]["episodes"] > finished, 180,
                   "an episode saved by the restarted recorder")
    assert stack.exit_code == 0, "\n".join(stack.lines)
    dataset = DatasetReader(tmp_path / "data" / "box_close")
    readable = sum(1 for i in range(dataset.num_episodes) if dataset.episode(i).length > 0)
    assert dataset.num_episodes == readable >= finished + 1
    record("SIGKILL recorder node mid-episode", "restarted; finished episodes intact, the unfinished "
           "one dropped; recording went on", data_lost=finished - min(readable, finished),
           recovery_s=recovered_s)


@pytest.mark.timeout(300)
def test_a_killed_trainer_resumes_after_its_last_iteration_and_the_world_model_comes_back(tmp_path, ros_node):
    node, executor = ros_node
    root, config = trainer_setup(tmp_path)
    common = (("experiment_config", str(config)),)
    launches = [
        NodeLaunch(SPECS["world_model"], common + (("sampling_steps", 2),), respawn=True),
        NodeLaunch(SPECS["trainer"], common + (("iterations", 4), ("rollouts", 2), ("steps_per_iteration", 2),
                                               ("batch_size", 8)), respawn=True),
    ]
    policies: list[tuple[float, dict]] = []
    node.create_subscription(String, "/rise/policy/checkpoint",
                             lambda m: policies.append((time.monotonic(), json.loads(m.data))), LATCHED)
    models: list[float] = []
    node.create_subscription(String, "/rise/world_model/checkpoint",
                             lambda _m: models.append(time.monotonic()), LATCHED)
    with RunningStack(launches) as stack:
        spin_until(executor, lambda: policies, 180, "the first policy announcement")
        killed = stack.kill("trainer")
        done = max(p["iteration"] for _, p in policies)
        stack.wait_restarted("trainer", starts=2)
        call_service(node, executor, Trigger, "/rise/trainer/status", Trigger.Request(), 60)
        recovered_s = time.monotonic() - killed
        spin_until(executor, lambda: policies[-1][1]["iteration"] == 4, 180, "the last iteration's policy")
        after = [p["iteration"] for t, p in policies if t > killed]
        assert after and after[-1] == 4, (done, after)
        assert min(after) >= done, f"iterations {after} repeated work finished before the kill ({done})"
        for _, announcement in policies:
            verify(announcement["path"], expected_sha256=announcement["sha256"], root=root, kind="policy")
        record("SIGKILL trainer node", "restarted; resumed after its last finished iteration",
               recovery_s=recovered_s)

        killed = stack.kill("world_model")
        stack.wait_restarted("world_model", starts=2)
        spin_until(executor, lambda: models[-1] > killed, 60, "the world model announced again")
        record("SIGKILL world_model node", "restarted; checkpoint re-announced",
               recovery_s=models[-1] - killed)
    assert stack.exit_code == 0, "\n".join(stack.lines)
