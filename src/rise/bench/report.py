"""The learning benchmark's report: ``table.md``, ``results.json`` and ``learning_curves.png``.

The table has one row per method (success %, 95 % Wilson interval, mean sub-goal score, wall time
of the row's own stages), the gaps the project chases (RISE vs warm-up and vs RECAP-style, the
oracle above both), a table of every stage's wall time, and the world-model checks that explain
a shortfall (value correlation/AUC, imagined vs copy-last-frame PSNR, with and without the
ablations).

Example::

    plot_curves(Path("bench/learning_curves.png"), curves, budget, "box_close")
"""

from __future__ import annotations

import json
from pathlib import Path

TARGET_VS_WARMUP = 35.0  # points the project chases: RISE >= warm-up + 35 and >= RECAP-style + 25
TARGET_VS_RECAP = 25.0
# the stages each row trains on top of the shared collect stage
ROW_STAGES = {
    "warmup": ("warmup_warmup", "train_warmup"),
    "recap": ("value", "warmup_recap", "train_recap"),
    "rise": ("value", "dynamics", "warmup_recap", "improve_rise"),
    "rise_oracle": ("value", "warmup_recap", "improve_rise_oracle"),
    "rise_no_task_centric": ("value", "dynamics_uniform", "warmup_recap", "improve_rise_no_task_centric"),
    "rise_no_td": ("value", "value_no_td", "dynamics", "warmup_recap", "improve_rise_no_td"),
}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}"


def write_report(root: Path, task: str, budget, seed: int, rows: dict[str, str], final: dict, curves: dict,
                 checks: dict, log, robot: str) -> dict:
    rate = {row: 100 * p["success_rate"] for row, p in final.items()}
    gaps = {"rise_minus_warmup": round(rate["rise"] - rate["warmup"], 1),
            "rise_minus_recap": round(rate["rise"] - rate["recap"], 1),
            "oracle_minus_warmup": round(rate["rise_oracle"] - rate["warmup"], 1),
            "oracle_minus_recap": round(rate["rise_oracle"] - rate["recap"], 1)}
    met = {"rise_vs_warmup": gaps["rise_minus_warmup"] >= TARGET_VS_WARMUP,
           "rise_vs_recap": gaps["rise_minus_recap"] >= TARGET_VS_RECAP,
           "oracle_above_both": rate["rise_oracle"] > max(rate["warmup"], rate["recap"])}
    lines = [f"# Learning benchmark: {task}", "",
             f"{budget.describe()}; seed {seed}; robot {robot}. Every policy row is trained for "
             f"{budget.total_policy_steps} gradient steps; evaluation episodes use the same seeds for "
             "every row.", "", "| row | success | 95 % CI | score /10 | train s | eval s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row, label in rows.items():
        p = final[row]
        low, high = p["wilson_95"]
        train_s = log.seconds(*ROW_STAGES[row])
        eval_s = log.seconds(*[f"eval_{row}@{i}" for i in range(1, budget.iterations + 1)])
        lines.append(f"| {label} | {_pct(p['success_rate'])} % ({p['successes']}/{p['episodes']}) | "
                     f"{_pct(low)}–{_pct(high)} % | {p['mean_score']:.1f} | {train_s:.0f} | {eval_s:.0f} |")
    verdict = {k: "met" if v else "not met" for k, v in met.items()}
    lines += ["", "Gaps (percentage points; target: RISE ≥ warm-up + 35, ≥ RECAP-style + 25, "
              "oracle above both):", "",
              f"- RISE − warm-up: {gaps['rise_minus_warmup']:+.0f} ({verdict['rise_vs_warmup']})",
              f"- RISE − RECAP-style: {gaps['rise_minus_recap']:+.0f} "
              f"({verdict['rise_vs_recap']})",
              f"- oracle − warm-up: {gaps['oracle_minus_warmup']:+.0f}, oracle − RECAP-style: "
              f"{gaps['oracle_minus_recap']:+.0f} ({'' if met['oracle_above_both'] else 'not '}above both)",
              "", f"Learning curves (success % after each iteration on the first {budget.curve_episodes} "
              "evaluation seeds; iteration 0 = the warm-up):", "",
              "| row | " + " | ".join(f"it {i}" for i in range(budget.iterations + 1)) + " |",
              "| --- |" + " --- |" * (budget.iterations + 1)]
    for row, label in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{_pct(p['success_rate'])}" for p in curves[row]) + " |")
    lines += ["", "World-model checks on fresh episodes (other seeds, half perturbed):", ""]
    lines += _check_lines(checks)
    lines += ["", "Stage wall times:", "", "| stage | s |", "| --- | --- |"]
    lines += [f"| {name} | {entry['seconds']:.0f} |" for name, entry in log.stages.items()]
    lines.append(f"| total | {sum(e['seconds'] for e in log.stages.values()):.0f} |")
    table = root / "table.md"
    table.write_text("\n".join(lines) + "\n")
    results = {"task": task, "seed": seed, "budget": budget.name, "final": final, "gaps": gaps,
               "targets_met": met,
               "curves": {row: [{k: p[k] for k in ("iteration", "success_rate", "wilson_95", "mean_score",
                                                   "episodes", "policy")} for p in points]
                          for row, points in curves.items()},
               "world_model": checks, "stages": {k: v["seconds"] for k, v in log.stages.items()},
               "table_path": str(table), "curves_path": str(root / "learning_curves.png"),
               "video_path": str(root / "imagined_vs_real.mp4"), "videos_dir": str(root / "videos")}
    (root / "results.json").write_text(json.dumps(results, indent=1))
    return results


def _check_lines(checks: dict) -> list[str]:
    lines = []
    for name in ("value", "value_no_td"):
        if name in checks:
            c = checks[name]
            lines.append(f"- {name}: progress correlation {c['progress_correlation']}, "
                         f"success AUC {c['success_auc']} ({c['episodes']} episodes)")
    for name in ("dynamics", "dynamics_uniform"):
        if name in checks:
            c = checks[name]
            lines.append(f"- {name}: PSNR imagined {c['imagined']['psnr']:.2f} / copy-last-frame "
                         f"{c['copy_last']['psnr']:.2f} / shuffled actions "
                         f"{c['shuffled_actions']['psnr']:.2f} dB; "
                         f"flow EPE {c['imagined']['flow_epe']:.3f} / {c['copy_last']['flow_epe']:.3f} / "
                         f"{c['shuffled_actions']['flow_epe']:.3f} ({c['windows']} windows)")
    return lines


def plot_curves(path: Path, curves: dict, budget, task: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for row, points in curves.items():
        iterations = [p["iteration"] for p in points]
        rates = [100 * p["success_rate"] for p in points]
        low = [100 * p["wilson_95"][0] for p in points]
        high = [100 * p["wilson_95"][1] for p in points]
        (line,) = axis.plot(iterations, rates, "o-", label=row)
        axis.fill_between(iterations, low, high, color=line.get_color(), alpha=0.08)
    axis.set_xlabel(f"iteration ({budget.steps_per_iteration} policy steps each)")
    axis.set_ylabel("success % (shaded: 95 % Wilson interval)")
    axis.set_ylim(-2, 102)
    axis.set_xticks(range(budget.iterations + 1))
    axis.set_title(f"{task}: success vs iteration (budget {budget.name})")
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
