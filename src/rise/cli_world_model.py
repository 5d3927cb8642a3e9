"""``rise train-dynamics``, ``rise train-value``, ``rise eval-world-model``.

Examples::

    rise train-dynamics --datasets rise_runs/data/pack --steps 3000
    rise train-value --datasets rise_runs/data/pack --steps 3000
    rise eval-world-model --datasets rise_runs/data/pack      # latest checkpoints of both

Defaults come from the experiment config: datasets ``<data_dir>/<task>``, checkpoints under
``<checkpoint_dir>/dynamics`` and ``<checkpoint_dir>/value``, outputs under ``<output_dir>``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rise.config import load_experiment


def _datasets(args, experiment) -> tuple[str, ...]:
    return tuple(args.datasets) if args.datasets else (str(Path(experiment.data_dir) / experiment.task),)


def _common(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--config", default=None, help="experiment config YAML (default: the shipped one)")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="DIR",
                        help="LeRobot dataset folders (default: <data_dir>/<task>)")
    parser.add_argument("--output", default=None, help=f"run folder (default: <checkpoint_dir>/{kind}); "
                        "an existing run is resumed from its latest checkpoint")
    parser.add_argument("--model", default="cpu_default", help="named model config (cpu_default, or the "
                        "large/paper config on a GPU machine)")
    parser.add_argument("--steps", type=int, default=3000, help="total optimiser steps (default: 3000)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="default: the experiment's seed")
    parser.add_argument("--pretrained", default=None, metavar="DIR",
                        help="initialise from a local pretrained checkpoint folder (never a hub)")
    parser.add_argument("--held-out-every", type=int, default=10, metavar="N",
                        help="every N-th episode is held out for eval-world-model (default: 10)")


def cmd_train_dynamics(args) -> int:
    from rise.models.fit_dynamics import DynamicsTrainConfig, train_dynamics

    experiment = load_experiment(args.config)
    cfg = DynamicsTrainConfig(
        datasets=_datasets(args, experiment),
        output=args.output or str(Path(experiment.checkpoint_dir) / "dynamics"),
        model=args.model, steps=args.steps, batch_size=args.batch_size or 8,
        groups_per_batch=None if args.groups_per_batch == 0 else args.groups_per_batch,
        group_by=args.group_by, seed=experiment.seed if args.seed is None else args.seed,
        pretrained=args.pretrained, held_out_every=args.held_out_every, lr_schedule=args.lr_schedule)
    folder = train_dynamics(cfg)
    if _main_process():  # once, also under torchrun
        print(f"dynamics checkpoint: {folder}")
    return 0


def cmd_train_value(args) -> int:
    from rise.models.fit_value import ValueFitConfig, fit_value

    experiment = load_experiment(args.config)
    cfg = ValueFitConfig(
        datasets=_datasets(args, experiment),
        output=args.output or str(Path(experiment.checkpoint_dir) / "value"),
        model=args.model, steps=args.steps, batch_size=args.batch_size or 32,
        progress_only_steps=args.progress_only_steps, td_weight=0.0 if args.no_td else 1.0,
        seed=experiment.seed if args.seed is None else args.seed, pretrained=args.pretrained,
        held_out_every=args.held_out_every)
    folder = fit_value(cfg)
    if _main_process():
        print(f"value checkpoint: {folder}")
    return 0


def cmd_eval_world_model(args) -> int:
    from rise.models.episodes import load_episodes
    from rise.models.evaluate import evaluate_dynamics, evaluate_value
    from rise.models.fit_dynamics import latest_checkpoint, load_dynamics, split_episodes
    from rise.models.fit_value import load_value

    experiment = load_experiment(args.config)
    root = Path(experiment.checkpoint_dir)
    output = Path(args.output or Path(experiment.output_dir) / "world_model_eval")
    output.mkdir(parents=True, exist_ok=True)
    datasets = _datasets(args, experiment)
    report: dict = {"datasets": list(datasets)}
    dynamics_folder = Path(args.dynamics) if args.dynamics else latest_checkpoint(root / "dynamics")
    if dynamics_folder is not None:
        model, stats, manifest = load_dynamics(dynamics_folder)
        size = tuple(model.config.image_size)
        _, held = split_episodes(load_episodes(datasets, size), args.held_out_every)
        report["dynamics"] = {"checkpoint": str(dynamics_folder), "step": manifest.step,
                              **evaluate_dynamics(model, stats, held, per_episode=args.windows,
                                                  sampling_steps=args.sampling_steps,
                                                  video=output / "imagined_vs_real.mp4")}
    value_folder = Path(args.value) if args.value else latest_checkpoint(root / "value")
    if value_folder is not None:
        model, manifest = load_value(value_folder)
        size = model.config.image_size
        _, held = split_episodes(load_episodes(datasets, (size, size)), args.held_out_every)
        report["value"] = {"checkpoint": str(value_folder), "step": manifest.step,
                           **evaluate_value(model, held, plot=output / "value_traces.png")}
    if "dynamics" not in report and "value" not in report:
        raise SystemExit(f"rise: error: no checkpoints under {root}/dynamics or {root}/value")
    (output / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written: {output}/report.json" + (", imagined_vs_real.mp4" if "dynamics" in report else "")
          + (", value_traces.png" if "value" in report else ""))
    return 0


def _main_process() -> bool:
    """False in the ranks > 0 of a torchrun job (they train, rank 0 reports)."""
    from rise.models.distributed import Distributed

    return Distributed.from_env().is_main


def add_commands(sub) -> None:
    dynamics = sub.add_parser("train-dynamics", help="train the controllable multi-view dynamics model",
                              description="Train (or resume) the dynamics world model on LeRobot datasets.")
    _common(dynamics, "dynamics")
    dynamics.add_argument("--groups-per-batch", type=int, default=2, metavar="N",
                          help="task-centric batching: draw each batch from N groups (0: uniform batches)")
    dynamics.add_argument("--group-by", choices=["episode", "task"], default="episode",
                          help="a group is a scene (episode) or a task (default: episode)")
    dynamics.add_argument("--lr-schedule", choices=["constant", "cosine"], default="cosine",
                          help="constant, or 100 warm-up steps then cosine decay to 10 %% (default: cosine)")
    dynamics.set_defaults(func=cmd_train_dynamics)

    value = sub.add_parser("train-value", help="train the progress value model",
                           description="Train (or resume) the progress value model: progress loss, then "
                           "progress + failure-aware TD loss.")
    _common(value, "value")
    value.add_argument("--progress-only-steps", type=int, default=1000,
                       help="steps with the progress loss alone before the TD loss joins (default: 1000)")
    value.add_argument("--no-td", action="store_true", help="progress loss only (ablation)")
    value.set_defaults(func=cmd_train_value)

    evaluate = sub.add_parser("eval-world-model", help="evaluate the world model on held-out episodes",
                              description="PSNR / SSIM / flow EPE of imagined frames against copy-last-frame "
                              "and shuffled-action baselines; value correlation and AUC; videos and plots.")
    evaluate.add_argument("--config", default=None, help="experiment config YAML")
    evaluate.add_argument("--datasets", nargs="+", default=None, metavar="DIR")
    evaluate.add_argument("--dynamics", default=None, metavar="DIR", help="checkpoint (default: the latest)")
    evaluate.add_argument("--value", default=None, metavar="DIR", help="checkpoint (default: the latest)")
    evaluate.add_argument("--output", default=None, help="default: <output_dir>/world_model_eval")
    evaluate.add_argument("--windows", type=int, default=4, help="windows per held-out episode (default: 4)")
    evaluate.add_argument("--sampling-steps", type=int, default=10, help="ODE steps per sample (default: 10)")
    evaluate.add_argument("--held-out-every", type=int, default=10, help="every n-th episode is held out")
    evaluate.set_defaults(func=cmd_eval_world_model)
