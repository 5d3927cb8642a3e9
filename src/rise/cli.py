"""The ``rise`` command.

Examples::

    rise demo                                  # the ROS stack alive, then the whole learning pipeline
    rise up --robot sim --mode collect         # run the collect-mode nodes until Ctrl-C
    rise nodes --robot sim --mode deploy       # what a mode would start
    rise config check --robot sim              # validate config files
    rise config fields robot                   # every robot config key, documented
    rise collect --task pack --episodes 20     # demos in the simulator
    rise train-dynamics / train-value / eval-world-model   # the world model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rise import paths
from rise.bringup import Mode, NodeLaunch, load_bringup_configs, plan_bringup
from rise.cli_bench import add_commands as add_bench_commands
from rise.cli_policy import add_commands as add_policy_commands
from rise.cli_world_model import add_commands as add_world_model_commands
from rise.config import (
    ConfigError,
    ExperimentConfig,
    RobotConfig,
    robot_names,
)
from rise.config.schema import describe_fields
from rise.ros_env import Network, node_environment


def _add_robot_args(parser: argparse.ArgumentParser, mode: bool = True) -> None:
    parser.add_argument("--robot", default=None,
                        help="robot config name or YAML path (default: the experiment's robot; "
                        f"shipped: {', '.join(robot_names())})")
    parser.add_argument("--config", default=None,
                        help="experiment config YAML (default: config/experiments/default.yaml)")
    if mode:
        parser.add_argument("--mode", type=Mode, choices=list(Mode), default=Mode.COLLECT,
                            metavar="{" + ",".join(m.value for m in Mode) + "}",
                            help="collect demos, deploy a policy, or improve it (default: collect)")


def _add_network_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--network", type=Network, choices=list(Network), default=Network.LOCALHOST,
                        metavar="{localhost,default}",
                        help="DDS reach: localhost keeps all traffic on this host (default); "
                        "default uses the RMW's or your own DDS settings")


def _load(args) -> tuple[RobotConfig, Path, ExperimentConfig, Path]:
    configs = load_bringup_configs(args.robot, args.config)
    return configs.robot, configs.robot_file, configs.experiment, configs.experiment_file


def _plan(args, mode: Mode) -> list[NodeLaunch]:
    return plan_bringup(load_bringup_configs(args.robot, args.config), mode, embedded=True,
                        no_respawn=getattr(args, "no_respawn", None) or ())


def cmd_up(args) -> int:
    from rise.runner import Runner

    launches = _plan(args, args.mode)
    print(f"[rise up] mode {args.mode.value}: {', '.join(l.name for l in launches)}", flush=True)
    runner = Runner(launches, node_environment(os.environ, args.network))
    return runner.run(duration_s=args.duration)


def cmd_demo(args) -> int:
    from rise.runner import Runner

    launches = _plan(args, Mode.COLLECT)
    env = node_environment(os.environ, Network.LOCALHOST)
    os.environ.update(env)  # this process watches the stack, on the same DDS settings
    from rise.nodes.status_client import StackProbe

    runner = Runner(launches, env)
    started = time.monotonic()
    if not args.stack_only:
        print("1/2 the ROS 2 stack: the simulated robot's collect mode, one demonstration recorded "
              "through ROS", flush=True)

    def saved(episode: dict) -> None:
        latency = ", ".join(f"{c} p99 {v['p99']} ms" for c, v in episode.get("latency_ms", {}).items())
        print(f"  episode {episode['index']} saved: {episode['frames']} frames, success "
              f"{episode['success']}, {episode['dropped']} dropped, {episode['late']} late"
              f"{'; ' + latency if latency else ''}", flush=True)

    try:
        runner.start()
        with StackProbe() as probe:
            status = probe.wait_until_up(timeout_s=args.timeout, between=runner.poll)
            print(f"\nstack up in {time.monotonic() - started:.1f} s: robot {status['robot']}, "
                  f"mode {status['mode']}")
            for name in status["alive"]:
                print(f"  alive  {name}")
            print(f"recording {args.episodes} episode(s): the scripted expert drives the arm through "
                  "the arm bridge, the recorder writes a LeRobot dataset", flush=True)
            probe.wait_for_episodes(args.episodes, timeout_s=args.timeout + 60 * args.episodes,
                                    between=runner.poll, on_episode=saved)
            root = probe.recorder[-1].get("root", "")
            print(f"dataset: {root}\n")
    except TimeoutError as error:
        print(f"rise: error: {error}", file=sys.stderr)
        runner.stop()
        return 1
    except KeyboardInterrupt:
        runner.stop()
        return 130
    code = runner.stop()
    if code or args.stack_only:
        return code
    from rise.cli_bench import cmd_bench_learning

    print(f"2/2 the learning pipeline on {args.task} (budget {args.budget}; a stopped run resumes): collect "
          "demos and failing rollouts -> train the world model -> warm up -> improve in imagination -> "
          "evaluate every row in the simulator\n", flush=True)
    bench = argparse.Namespace(config=args.config, task=args.task, budget=args.budget, seed=None,
                               workers=args.workers, output=None)
    return cmd_bench_learning(bench)


def cmd_collect(args) -> int:
    from rise.data.collect import collect
    from rise.data.writer import DatasetWriteError
    from rise.sim.tasks import make_task

    robot, _, experiment, _ = _load(args)
    task = args.task or experiment.task
    make_task(task)  # an unknown task is refused before anything is written
    root = Path(args.output) if args.output else Path(experiment.data_dir) / task
    try:
        report = collect(task, args.episodes, root, robot=robot, seed=experiment.seed if args.seed is None
                         else args.seed, failing_fraction=args.failing_fraction, codec=args.codec,
                         min_free_disk_mb=experiment.min_free_disk_mb)
    except DatasetWriteError as error:  # a full disk, say: the episodes saved before it are kept
        print(f"rise collect: error: {error}", file=sys.stderr)
        return 1
    print(f"dataset: {report.root} ({report.episodes} episodes, {report.frames} frames, "
          f"{report.wall_s:.0f} s)")
    print(f"scripted expert success: {report.expert_successes}/{report.expert_episodes} "
          f"({100 * report.expert_success_rate:.0f} %)")
    if report.perturbed_episodes:
        print(f"perturbed rollouts: {report.perturbed_successes}/{report.perturbed_episodes} succeeded")
    print(f"frames dropped: {report.dropped}, late: {report.late}")
    return 0


def cmd_nodes(args) -> int:
    launches = _plan(args, args.mode)
    if args.json:
        print(json.dumps([{"name": l.name, "package": l.spec.package,
                           "executable": l.spec.executable, "respawn": l.spec.respawn,
                           "parameters": dict(l.parameters)} for l in launches], indent=2))
        return 0
    for launch in launches:
        respawn = " (respawn)" if launch.spec.respawn else ""
        print(f"{launch.name:<24} {launch.spec.package}/{launch.spec.executable}{respawn}")
        print(f"{'':<24} {launch.spec.description}")
    return 0


def cmd_config_check(args) -> int:
    robot, robot_file, experiment, experiment_file = _load(args)
    print(f"ok: {robot_file} (robot {robot.name}: {len(robot.arm.all_joints)} joints, "
          f"cameras {', '.join(robot.camera_names)}, {robot.control_rate_hz:g} Hz)")
    print(f"ok: {experiment_file} (experiment {experiment.name}, seed {experiment.seed})")
    return 0


def cmd_config_fields(args) -> int:
    cls = RobotConfig if args.kind == "robot" else ExperimentConfig
    for key, kind, doc in describe_fields(cls):
        print(f"{key:<28} {kind:<22} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rise", description="RISE for ROS 2: robot policies that improve in imagination.",
        epilog=f"package data: {paths.share_dir()}",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    up = sub.add_parser("up", help="start the node table for a mode (embedded runner)",
                        description="Start the nodes of a mode on this machine; Ctrl-C or "
                        "SIGTERM stops them all. The same table as `ros2 launch rise "
                        "bringup.launch.py`.")
    _add_robot_args(up)
    _add_network_arg(up)
    up.add_argument("--duration", type=float, default=None, metavar="S",
                    help="stop after S seconds (default: run until stopped)")
    up.add_argument("--no-respawn", nargs="+", default=None, metavar="NODE",
                    help="nodes to leave down when they die (default: every rise node is restarted)")
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="the main job on the embedded default (simulated robot)",
                          description="Bring up the simulated robot's collect stack, wait until "
                          "every node reports alive, record demos through ROS with the scripted "
                          "expert as the teleop device, and stop; then run the learning pipeline "
                          "(rise bench learning) on one task and print its table.")
    _add_robot_args(demo, mode=False)
    demo.add_argument("--episodes", type=int, default=1, metavar="N",
                      help="episodes to record before stopping (default: 1)")
    demo.add_argument("--timeout", type=float, default=60.0, metavar="S",
                      help="give up if the stack is not up after S seconds (default: 60)")
    demo.add_argument("--task", default="box_close",
                      help="task of the learning pipeline (default: box_close, the quickest)")
    demo.add_argument("--budget", default="small",
                      help="compute budget of the learning pipeline: small (default, ~25 min on 2 cores), "
                      "medium (hours), smoke (a minute, meaningless numbers)")
    demo.add_argument("--workers", type=int, default=2, help="processes for the evaluation episodes")
    demo.add_argument("--stack-only", action="store_true",
                      help="only bring the ROS stack up, record, and stop (no learning pipeline)")
    demo.set_defaults(func=cmd_demo)

    collect = sub.add_parser("collect", help="record demos in the simulator with the scripted expert",
                             description="Collect episodes headless in the simulator (scripted expert, "
                             "optionally perturbed failing rollouts) into a LeRobot v3 dataset, "
                             "through the recorder's code path.")
    _add_robot_args(collect, mode=False)
    collect.add_argument("--task", default=None, help="brick_sort, box_close or pack (default: the "
                         "experiment's task)")
    collect.add_argument("--episodes", type=int, default=20, help="episodes to record (default: 20)")
    collect.add_argument("--failing-fraction", type=float, default=0.0, metavar="F",
                         help="fraction of episodes run by a perturbed expert, for failures (default: 0)")
    collect.add_argument("--output", default=None, help="dataset folder (default: <data_dir>/<task>; "
                         "an existing dataset is appended to)")
    collect.add_argument("--seed", type=int, default=None, help="default: the experiment's seed")
    collect.add_argument("--codec", default="libsvtav1", choices=["libsvtav1", "h264", "mpeg4"],
                         help="video codec (default: libsvtav1, LeRobot's)")
    collect.set_defaults(func=cmd_collect)

    add_world_model_commands(sub)
    add_policy_commands(sub)
    add_bench_commands(sub)

    nodes = sub.add_parser("nodes", help="list the nodes a mode starts",
                           description="Print the node table rows for a robot and mode.")
    _add_robot_args(nodes)
    nodes.add_argument("--json", action="store_true", help="machine-readable output")
    nodes.set_defaults(func=cmd_nodes)

    config = sub.add_parser("config", help="validate and document config files",
                            description="Validate config files or list their documented keys.")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="action")
    check = config_sub.add_parser("check", help="validate a robot and an experiment config",
                                  description="Load and validate the configs; exit 2 on error.")
    _add_robot_args(check, mode=False)
    check.set_defaults(func=cmd_config_check)
    fields = config_sub.add_parser("fields", help="list every key of a config kind",
                                   description="Print each key, its type and its meaning.")
    fields.add_argument("kind", choices=["robot", "experiment"])
    fields.set_defaults(func=cmd_config_fields)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as error:
        print(f"rise: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
