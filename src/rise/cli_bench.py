"""``rise bench learning``: the whole pipeline for one task and the paper's table.

Examples::

    rise bench learning --task box_close                      # budget "small": ~25 min on 2 cores
    rise bench learning --task pack --budget medium --workers 8
    rise bench learning --task box_close --output rise_runs/bench/box_close   # resumes a stopped run
"""

from __future__ import annotations

from pathlib import Path

from rise.config import load_experiment


def cmd_bench_learning(args) -> int:
    from rise.bench.budgets import named_budget
    from rise.bench.learning import run_learning_bench

    experiment = load_experiment(args.config)
    task = args.task or experiment.task
    try:
        budget = named_budget(args.budget)
    except ValueError as error:
        raise SystemExit(f"rise: error: {error}") from None
    output = Path(args.output or Path(experiment.output_dir) / "bench" / f"{task}_{budget.name}").resolve()
    seed = experiment.seed if args.seed is None else args.seed
    print(f"learning benchmark: task {task}, seed {seed}, output {output}\n{budget.describe()}", flush=True)
    try:
        result = run_learning_bench(task, output, budget, seed=seed, workers=args.workers,
                                    robot=experiment.robot)
    except ValueError as error:
        raise SystemExit(f"rise: error: {error}") from None
    print("\n" + Path(result["table_path"]).read_text())
    print(f"table: {result['table_path']}\nlearning curves: {result['curves_path']}\n"
          f"imagined vs real (fresh episodes): {result['video_path']}\n"
          f"evaluation videos: {result['videos_dir']}/\n"
          f"all figures: {output / 'results.json'}")
    return 0


def add_commands(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks: the learning table (Table I) per task",
                           description="Benchmarks that measure the product.")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    learn = kinds.add_parser(
        "learning", help="collect -> world model -> warm-up -> RISE loop -> evaluate, with baselines "
        "and ablations",
        description="The full pipeline on one simulated task with fixed seeds and a named compute budget; "
        "writes table.md, learning_curves.png, imagined_vs_real.mp4 and evaluation videos. A stopped run "
        "resumes at its unfinished stage.")
    learn.add_argument("--config", default=None, help="experiment config YAML (task, seed, output_dir)")
    learn.add_argument("--task", default=None,
                       help="brick_sort, box_close or pack (default: the experiment's)")
    learn.add_argument("--budget", default="small",
                       help="smoke (a minute, meaningless numbers), small (default, ~25 min on 2 cores), "
                       "medium (hours)")
    learn.add_argument("--seed", type=int, default=None, help="default: the experiment's seed")
    learn.add_argument("--workers", type=int, default=2, help="processes for the evaluation episodes")
    learn.add_argument("--output", default=None, help="default: <output_dir>/bench/<task>_<budget>")
    learn.set_defaults(func=cmd_bench_learning)
