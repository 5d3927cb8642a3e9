"""``rise bench learning``: the paper's Table I on one simulated task, end to end.

Stages (each once, resumable; wall times in ``stages.json``):

1. collect scripted demos and perturbed rollouts in the simulator (a LeRobot dataset);
2. train the world model: value (progress + TD) and dynamics (task-centric batches), and the two
   ablation models: value without the TD loss, dynamics with uniform batches;
3. warm-up policies: behaviour cloning (every frame in the best bin) and advantage-conditioned
   (RECAP labels from the value model);
4. the rows, every policy trained for the same number of gradient steps
   (``warmup_steps + iterations * steps_per_iteration``):

   * ``warmup``: behaviour cloning only, continued on the real data;
   * ``recap``: advantage-conditioned on real data only, continued on the real data;
   * ``rise``: the imagination loop from the RECAP warm-up with the learned world model;
   * ``rise_oracle``: the same with the simulator as the world model (upper bound: no
     world-model error);
   * ``rise_no_task_centric`` / ``rise_no_td``: the loop with the ablated dynamics / value model;
5. evaluate every row's checkpoint after each iteration in the simulator (same seeds for every
   row), check the world models on fresh episodes (other seeds, half perturbed), and write the
   report.

Output folder: ``table.md``, ``results.json``, ``learning_curves.png``, ``imagined_vs_real.mp4``
(fresh real frames | imagined | imagined with shuffled actions), ``videos/<row>/`` (evaluation
episodes), ``data/`` and ``checkpoints/``.

Example::

    result = run_learning_bench("box_close", Path("rise_runs/bench/box_close"), named_budget("small"))
    print(result["table_path"])
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from rise.bench.budgets import BenchBudget
from rise.bench.report import plot_curves, write_report
from rise.bench.stages import StageLog

ROWS: dict[str, str] = {
    "warmup": "warm-up (behaviour cloning only)",
    "recap": "RECAP-style (advantage-conditioned, real data only)",
    "rise": "RISE, learned world model",
    "rise_oracle": "RISE, simulator as oracle world model",
    "rise_no_task_centric": "RISE without task-centric batching",
    "rise_no_td": "RISE without the TD loss",
}
EVAL_SEED = 100_000  # evaluation episodes use seeds EVAL_SEED + 1000 * seed + i, the same for every row


@dataclasses.dataclass(frozen=True)
class BenchPaths:
    root: Path
    task: str

    @property
    def data(self) -> Path:
        return self.root / "data" / self.task

    @property
    def heldout(self) -> Path:  # fresh episodes (other seeds, half perturbed) for the world-model check
        return self.root / "data" / f"{self.task}_heldout"

    def checkpoints(self, name: str) -> Path:
        return self.root / "checkpoints" / name


def run_learning_bench(task: str, output: Path, budget: BenchBudget, *, seed: int = 0, workers: int = 2,
                       robot: str = "sim", progress: bool = True, echo=print) -> dict:
    """Run (or resume) the whole pipeline for ``task``; returns the results (also in results.json)."""
    from rise.sim.tasks import make_task

    make_task(task)  # an unknown task is refused before anything runs
    paths = BenchPaths(Path(output), task)
    log = StageLog(paths.root, echo)
    settings = {"task": task, "budget": dataclasses.asdict(budget), "seed": seed, "robot": robot}
    _check_settings(paths.root, settings)
    torch.manual_seed(seed)
    log.run("collect", lambda: _collect(task, budget, paths.data, robot, seed, progress))
    models = _world_models(log, paths, budget, seed, progress)
    starts = _warmups(log, paths, budget, models["value"], seed, progress)
    runs = _rows(log, paths, budget, task, robot, models, starts, seed, progress)
    finals, curves = _evaluate(log, paths, budget, task, runs, starts, seed, workers)
    log.run("collect_heldout", lambda: _collect(task, budget, paths.heldout, robot, seed, progress,
                                                held_out=True))
    checks = log.run("world_model_heldout", lambda: _world_model_check(paths, models))
    plot_curves(paths.root / "learning_curves.png", curves, budget, task)
    return write_report(paths.root, task, budget, seed, ROWS, finals, curves, checks, log, robot)


def _check_settings(root: Path, settings: dict) -> None:
    path = root / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        if before != settings:
            changed = sorted(k for k in settings if before.get(k) != settings[k])
            raise ValueError(f"{root}: holds a run with other settings ({', '.join(changed)}); "
                             "use another --output or delete it")
    else:
        path.write_text(json.dumps(settings, indent=1))


def _collect(task, budget, root: Path, robot_name, seed, progress, held_out: bool = False) -> dict:
    from rise.config import load_robot
    from rise.data.collect import collect

    episodes, seed, failing = ((max(4, budget.episodes // 4), seed + 7919, 0.5) if held_out
                               else (budget.episodes, seed, budget.failing_fraction))
    report = collect(task, episodes, root, robot=load_robot(robot_name), seed=seed,
                     failing_fraction=failing, codec="h264", progress=progress)
    return {"dataset": str(report.root), "episodes": report.episodes, "frames": report.frames,
            "expert_successes": report.expert_successes, "perturbed_successes": report.perturbed_successes,
            "perturbed_episodes": report.perturbed_episodes}


def _world_models(log: StageLog, paths: BenchPaths, budget, seed, progress) -> dict[str, str]:
    from rise.models.fit_dynamics import DynamicsTrainConfig, train_dynamics
    from rise.models.fit_value import ValueFitConfig, fit_value

    data = (str(paths.data),)

    def value(name: str, td_weight: float):
        cfg = ValueFitConfig(datasets=data, output=str(paths.checkpoints(name)), model=budget.model,
                             steps=budget.value_steps, batch_size=budget.value_batch,
                             progress_only_steps=budget.progress_only_steps, td_weight=td_weight, seed=seed)
        return lambda: str(fit_value(cfg, progress=progress))

    def dynamics(name: str, groups: int | None):
        cfg = DynamicsTrainConfig(datasets=data, output=str(paths.checkpoints(name)), model=budget.model,
                                  steps=budget.dynamics_steps, batch_size=budget.dynamics_batch,
                                  lr_schedule="cosine", groups_per_batch=groups, seed=seed)
        return lambda: str(train_dynamics(cfg, progress=progress))

    return {"value": log.run("value", value("value", 1.0)),
            "value_no_td": log.run("value_no_td", value("value_no_td", 0.0)),
            "dynamics": log.run("dynamics", dynamics("dynamics", 2)),
            "dynamics_uniform": log.run("dynamics_uniform", dynamics("dynamics_uniform", None))}


def _warmup_config(paths: BenchPaths, budget, name: str, value: str | None, steps: int, seed: int):
    from rise.policy.warmup import WarmupConfig

    return WarmupConfig(datasets=(str(paths.data),), output=str(paths.checkpoints(name)), value=value,
                        model=budget.model, steps=steps, batch_size=budget.policy_batch,
                        checkpoint_every=budget.steps_per_iteration, seed=seed)


def _warmups(log: StageLog, paths: BenchPaths, budget, value: str, seed, progress) -> dict[str, str]:
    from rise.policy.warmup import warmup

    return {row: log.run(f"warmup_{row}", lambda row=row, v=v: str(warmup(
                _warmup_config(paths, budget, row, v, budget.warmup_steps, seed), progress=progress)))
            for row, v in (("warmup", None), ("recap", value))}


def _rows(log: StageLog, paths: BenchPaths, budget, task, robot, models, starts, seed, progress) -> dict:
    """Train every row to the same number of policy steps; the run folder of each row."""
    from rise.policy.improve import ImproveConfig, improve
    from rise.policy.warmup import warmup

    runs = {}
    for row, value in (("warmup", None), ("recap", models["value"])):
        cfg = _warmup_config(paths, budget, row, value, budget.total_policy_steps, seed)
        log.run(f"train_{row}", lambda cfg=cfg: str(warmup(cfg, progress=progress)))
        runs[row] = str(paths.checkpoints(row))
    variants = {"rise": {}, "rise_oracle": {"world_model": "sim", "dynamics": None},
                "rise_no_task_centric": {"dynamics": models["dynamics_uniform"]},
                "rise_no_td": {"value": models["value_no_td"]}}
    for row, changes in variants.items():
        cfg = ImproveConfig(**{
            "datasets": (str(paths.data),), "output": str(paths.checkpoints(row)), "warmup": starts["recap"],
            "value": models["value"], "dynamics": models["dynamics"], "task": task, "robot": robot,
            "iterations": budget.iterations, "rollouts_per_iteration": budget.rollouts_per_iteration,
            "feedback_steps": budget.feedback_steps, "steps_per_iteration": budget.steps_per_iteration,
            "batch_size": budget.policy_batch, "learning_rate": 3e-4,  # the warm-up's, as the real-data rows
            "world_model_sampling_steps": budget.world_model_sampling_steps,
            "uncertainty_samples": budget.uncertainty_samples, "seed": seed, **changes})
        log.run(f"improve_{row}", lambda cfg=cfg: str(improve(cfg, progress=progress)))
        runs[row] = str(paths.checkpoints(row))
    return runs


def _evaluate(log: StageLog, paths: BenchPaths, budget, task, runs, starts, seed, workers) -> tuple:
    """({row: final evaluation}, {row: [point per iteration 0..N]}). Every point of a curve is
    scored on the same first ``curve_episodes`` seeds (the final evaluation runs more)."""
    from rise.policy.sim_eval import evaluate_policy

    def point(name: str, folder: str, episodes: int, videos: int):
        def work():
            limit = {} if budget.max_ticks is None else {"max_ticks": budget.max_ticks}
            result = evaluate_policy(folder, task, episodes, seed=EVAL_SEED + 1000 * seed, workers=workers,
                                     flow_steps=budget.flow_steps, videos=videos, **limit,
                                     output=paths.root / "videos" / name.split("@")[0] if videos else None)
            return {k: result[k] for k in ("policy", "episodes", "successes", "success_rate", "wilson_95",
                                           "mean_score", "seconds", "per_episode")}
        return log.run(f"eval_{name}", work)

    start_points = {row: point(f"{row}@0", folder, budget.curve_episodes, 0)
                    for row, folder in starts.items()}
    curves: dict[str, list[dict]] = {}
    finals: dict[str, dict] = {}
    for row, run in runs.items():
        points = [{**start_points["warmup" if row == "warmup" else "recap"], "iteration": 0}]
        for iteration in range(1, budget.iterations + 1):
            final = iteration == budget.iterations
            step = budget.warmup_steps + iteration * budget.steps_per_iteration
            folder = str(Path(run) / f"step_{step:06d}")
            episodes = budget.eval_episodes if final else budget.curve_episodes
            result = point(f"{row}@{iteration}", folder, episodes, 1 if final else 0)
            if final:
                finals[row] = result
            points.append({**subset(result, budget.curve_episodes), "iteration": iteration})
        curves[row] = points
    return finals, curves


def subset(result: dict, episodes: int) -> dict:
    """An evaluation restricted to its first ``episodes`` episodes (seed order)."""
    from rise.policy.sim_eval import wilson_interval

    kept = sorted(result["per_episode"], key=lambda r: r["seed"])[:episodes]
    successes = sum(bool(r["success"]) for r in kept)
    return {**result, "episodes": len(kept), "successes": successes, "success_rate": successes / len(kept),
            "wilson_95": list(wilson_interval(successes, len(kept))),
            "mean_score": sum(r["score"] for r in kept) / len(kept), "per_episode": kept}


def _world_model_check(paths: BenchPaths, models: dict[str, str]) -> dict:
    """Value correlation/AUC and dynamics PSNR vs copy-last-frame on fresh episodes (collected with
    other seeds, half of them perturbed), for the models of the main row and of the ablations;
    writes imagined_vs_real.mp4."""
    from rise.models.episodes import load_episodes
    from rise.models.evaluate import evaluate_dynamics, evaluate_value
    from rise.models.fit_dynamics import load_dynamics
    from rise.models.fit_value import load_value

    report: dict = {}
    for name in ("value", "value_no_td"):
        model, _ = load_value(Path(models[name]))
        size = model.config.image_size
        episodes = load_episodes((str(paths.heldout),), (size, size))
        report[name] = {k: v for k, v in evaluate_value(model, episodes).items() if not isinstance(v, list)}
    for name in ("dynamics", "dynamics_uniform"):
        model, stats, _ = load_dynamics(Path(models[name]))
        episodes = load_episodes((str(paths.heldout),), tuple(model.config.image_size))
        video = paths.root / "imagined_vs_real.mp4" if name == "dynamics" else None
        metrics = evaluate_dynamics(model, stats, episodes, per_episode=4, video=video)
        report[name] = {k: v for k, v in metrics.items() if k != "per_view"}
    return report
