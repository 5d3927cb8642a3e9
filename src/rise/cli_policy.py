"""``rise warmup`` and ``rise improve``: the advantage-conditioned policy and the imagination loop.

Examples::

    rise warmup --datasets rise_runs/data/pack --steps 2000          # labels from the latest value model
    rise improve --datasets rise_runs/data/pack --iterations 3       # learned world model
    rise improve --datasets rise_runs/data/pack --world-model sim --task pack   # simulator as oracle
    rise improve --rollout-workers 4 --ray                           # rollouts on 4 local Ray actors
    rise evaluate --task pack --episodes 50 --workers 8 --ray 10.0.0.5:6379     # on a Ray cluster

Defaults come from the experiment config: checkpoints under ``<checkpoint_dir>`` (``value``,
``dynamics``, ``policy_warmup``, ``policy``); an existing run folder is resumed.
"""

from __future__ import annotations

from pathlib import Path

from rise.cli_world_model import _datasets
from rise.config import load_experiment


def _latest(root: Path, kind: str, given: str | None) -> str | None:
    from rise.models.fit_dynamics import latest_checkpoint

    if given:
        return given
    folder = latest_checkpoint(root / kind)
    return None if folder is None else str(folder)


def cmd_warmup(args) -> int:
    from rise.policy.warmup import WarmupConfig, warmup

    experiment = load_experiment(args.config)
    root = Path(experiment.checkpoint_dir)
    value = None if args.behaviour_cloning else _latest(root, "value", args.value)
    if value is None and not args.behaviour_cloning:
        raise SystemExit(f"rise: error: --value: no value checkpoint under {root / 'value'} "
                         "(rise train-value, or --behaviour-cloning)")
    cfg = WarmupConfig(
        datasets=_datasets(args, experiment), output=args.output or str(root / "policy_warmup"),
        value=value, model=args.model, steps=args.steps, batch_size=args.batch_size,
        num_bins=args.num_bins, seed=experiment.seed if args.seed is None else args.seed,
        pretrained=args.pretrained)
    folder = warmup(cfg)
    from rise.models.distributed import Distributed

    if Distributed.from_env().is_main:  # once, also under torchrun
        print(f"warm-up policy checkpoint: {folder}")
    return 0


def cmd_improve(args) -> int:
    from rise.policy.fanout import FanoutError
    from rise.policy.improve import ImproveConfig, improve

    experiment = load_experiment(args.config)
    root = Path(experiment.checkpoint_dir)
    warm = _latest(root, "policy_warmup", args.warmup)
    value = _latest(root, "value", args.value)
    dynamics = _latest(root, "dynamics", args.dynamics) if args.world_model == "learned" else None
    for name, folder in (("--warmup", warm), ("--value", value)):
        if folder is None:
            raise SystemExit(f"rise: error: {name}: no checkpoint found under {root} (give the folder)")
    try:
        cfg = ImproveConfig(
            datasets=_datasets(args, experiment), output=args.output or str(root / "policy"), warmup=warm,
            value=value, dynamics=dynamics, world_model=args.world_model, task=args.task or experiment.task,
            robot=experiment.robot, iterations=args.iterations, rollouts_per_iteration=args.rollouts,
            feedback_steps=args.feedback_steps, offline_ratio=args.offline_ratio,
            steps_per_iteration=args.steps_per_iteration, batch_size=args.batch_size,
            uncertainty_samples=args.uncertainty_samples, uncertainty_threshold=args.uncertainty_threshold,
            seed=experiment.seed if args.seed is None else args.seed, rollout_workers=args.rollout_workers,
            ray_address=args.ray)
    except ValueError as error:
        raise SystemExit(f"rise: error: {error}") from None
    try:
        folder = improve(cfg)
    except FanoutError as error:
        raise SystemExit(f"rise: error: {error}") from None
    print(f"improved policy checkpoint: {folder}\nplot: {Path(cfg.output) / 'improve.png'}")
    return 0


def cmd_evaluate(args) -> int:
    import json

    from rise.policy.fanout import FanoutError
    from rise.policy.sim_eval import evaluate_policy

    experiment = load_experiment(args.config)
    root = Path(experiment.checkpoint_dir)
    folder = args.policy or _latest(root, "policy", None) or _latest(root, "policy_warmup", None)
    if folder is None:
        raise SystemExit(f"rise: error: --policy: no policy checkpoint under {root} (rise warmup / improve)")
    task = args.task or experiment.task
    output = Path(args.output or Path(experiment.output_dir) / "evaluate" / task)
    try:
        result = evaluate_policy(folder, task, args.episodes, seed=args.seed, workers=args.workers,
                                 execute=args.execute, videos=args.videos, output=output,
                                 ray_address=args.ray)
    except FanoutError as error:
        raise SystemExit(f"rise: error: {error}") from None
    output.mkdir(parents=True, exist_ok=True)
    (output / "result.json").write_text(json.dumps(result, indent=2))
    low, high = result["wilson_95"]
    print(f"{task}: {result['successes']}/{result['episodes']} = {100 * result['success_rate']:.0f} % "
          f"(95 % CI {100 * low:.0f}-{100 * high:.0f} %), mean score {result['mean_score']:.1f}/10, "
          f"{result['seconds']} s\nwritten: {output}/result.json and the videos")
    return 0


def add_commands(sub) -> None:
    ev = sub.add_parser("evaluate", help="success rate of a policy checkpoint in the simulator",
                        description="Run N simulated episodes of a policy (headless, no ROS): success rate "
                        "with its 95 % Wilson interval, mean sub-goal score, videos.")
    ev.add_argument("--config", default=None, help="experiment config YAML")
    ev.add_argument("--policy", default=None, metavar="DIR",
                    help="policy checkpoint (default: the latest improved one, else the warm-up)")
    ev.add_argument("--task", default=None, help="brick_sort, box_close or pack (default: the experiment's)")
    ev.add_argument("--episodes", type=int, default=20)
    ev.add_argument("--seed", type=int, default=1000, help="seed of the first episode (then +1)")
    ev.add_argument("--workers", type=int, default=1,
                    help="processes (with --ray: Ray actors) to spread the episodes over")
    ev.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="run the workers on Ray: bare, a local instance; or a cluster address (host:port, "
                    "ray://host:port, auto). The checkpoint's files are shipped to the workers")
    ev.add_argument("--execute", type=int, default=None, help="chunk steps run before re-planning "
                    "(default: half the horizon)")
    ev.add_argument("--videos", type=int, default=2, help="episodes saved as mp4 (default: 2)")
    ev.add_argument("--output", default=None, help="default: <output_dir>/evaluate/<task>")
    ev.set_defaults(func=cmd_evaluate)

    warm = sub.add_parser("warmup", help="train the advantage-conditioned policy on the offline data",
                          description="Warm-up (RECAP recipe): label every frame with the value model's "
                          "binned advantage (demos: the best bin) and train the policy on them.")
    warm.add_argument("--config", default=None, help="experiment config YAML")
    warm.add_argument("--datasets", nargs="+", default=None, metavar="DIR")
    warm.add_argument("--value", default=None, metavar="DIR", help="value checkpoint (default: the latest)")
    warm.add_argument("--behaviour-cloning", action="store_true",
                      help="no value model: every frame in the best bin (the BC baseline)")
    warm.add_argument("--output", default=None, help="run folder (default: <checkpoint_dir>/policy_warmup)")
    warm.add_argument("--model", default="cpu_default", help="named policy config (cpu_default, large, tiny)")
    warm.add_argument("--steps", type=int, default=2000)
    warm.add_argument("--batch-size", type=int, default=32)
    warm.add_argument("--num-bins", type=int, default=10)
    warm.add_argument("--seed", type=int, default=None)
    warm.add_argument("--pretrained", default=None, metavar="DIR",
                      help="local ViT checkpoint for the encoder")
    warm.set_defaults(func=cmd_warmup)

    imp = sub.add_parser("improve", help="improve the policy by practising in the world model",
                         description="The RISE imagination loop: rollouts in the world model, binned "
                         "advantages, training on imagined + offline data; a checkpoint per iteration.")
    imp.add_argument("--config", default=None, help="experiment config YAML")
    imp.add_argument("--datasets", nargs="+", default=None, metavar="DIR")
    imp.add_argument("--warmup", default=None, metavar="DIR", help="warm-up policy (default: the latest)")
    imp.add_argument("--value", default=None, metavar="DIR", help="value checkpoint (default: the latest)")
    imp.add_argument("--dynamics", default=None, metavar="DIR",
                     help="dynamics checkpoint (default: the latest)")
    imp.add_argument("--world-model", choices=["learned", "sim"], default="learned",
                     help="the learned world model, or the simulator as an oracle (default: learned)")
    imp.add_argument("--task", default=None,
                     help="sim task for --world-model sim (default: the experiment's)")
    imp.add_argument("--output", default=None, help="run folder (default: <checkpoint_dir>/policy)")
    imp.add_argument("--iterations", type=int, default=3)
    imp.add_argument("--rollouts", type=int, default=16, help="rollouts per iteration (default: 16)")
    imp.add_argument("--feedback-steps", type=int, default=2,
                     help="imagined frames fed back as observation at most this many times in a row")
    imp.add_argument("--offline-ratio", type=float, default=0.6, help="offline share of each batch")
    imp.add_argument("--steps-per-iteration", type=int, default=200)
    imp.add_argument("--batch-size", type=int, default=32)
    imp.add_argument("--uncertainty-samples", type=int, default=2,
                     help="dynamics samples per chunk to measure their disagreement (1: off)")
    imp.add_argument("--uncertainty-threshold", type=float, default=None,
                     help="cut imagined chunks whose disagreement passes this (pixel std, [-1, 1] units)")
    imp.add_argument("--seed", type=int, default=None)
    imp.add_argument("--rollout-workers", type=int, default=1, metavar="N",
                     help="processes (with --ray: Ray actors) to spread each iteration's rollouts over")
    imp.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="run the rollout workers on Ray: bare, a local instance; or a cluster address "
                     "(host:port, ray://host:port, auto). Checkpoints and start states are shipped to them")
    imp.set_defaults(func=cmd_improve)
