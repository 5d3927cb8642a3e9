"""Summarise warm-up evaluations (``rise evaluate`` result.json files) into a table and a plot.

    python benchmarks/warmup_summary.py OUT_DIR TASK[:VARIANT]=EVAL_DIR [...]

Each EVAL_DIR holds one ``result.json``; VARIANT names a condition (e.g. the code it was
evaluated with). Writes ``OUT_DIR/results.json`` (the rows), ``table.md``
(success with its 95 % Wilson interval and the mean score per task and checkpoint step) and
``learning_curves.png`` (success vs warm-up steps per task, with the intervals). Checkpoints of
one task evaluated on the same seeds are also compared pairwise (exact McNemar test on the
discordant seeds).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def mcnemar_p(a: list[bool], b: list[bool]) -> tuple[int, int, float]:
    """(a-only successes, b-only successes, two-sided exact McNemar p) on paired outcomes."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    n, k = only_a + only_b, min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    return only_a, only_b, p


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("runs", nargs="+", metavar="TASK[:VARIANT]=EVAL_DIR")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        label, folder = run.split("=", 1)
        task, _, variant = label.partition(":")
        result = json.loads((Path(folder) / "result.json").read_text())
        rows.append({"task": task, "variant": variant, "step": result["policy_step"],
                     "episodes": result["episodes"],
                     "successes": result["successes"], "success_rate": result["success_rate"],
                     "wilson_95": result["wilson_95"], "mean_score": result["mean_score"],
                     "seeds": [e["seed"] for e in result["per_episode"]],
                     "outcomes": [e["success"] for e in result["per_episode"]]})
    rows.sort(key=lambda r: (r["task"], r["variant"], r["step"]))
    args.output.mkdir(parents=True, exist_ok=True)
    lines = ["| task | variant | warm-up steps | success | 95 % CI | mean score /10 | episodes (seeds) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        low, high = r["wilson_95"]
        lines.append(f"| {r['task']} | {r['variant'] or '-'} | {r['step']} | "
                     f"{100 * r['success_rate']:.0f} % | {100 * low:.0f}-{100 * high:.0f} % | "
                     f"{r['mean_score']:.1f} | "
                     f"{r['episodes']} ({min(r['seeds'])}-{max(r['seeds'])}) |")
    pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]
             if a["task"] == b["task"] and a["seeds"] == b["seeds"]]
    if pairs:
        lines += ["", "Paired comparisons (same seeds; exact McNemar):", "",
                  "| task | A vs B (step, variant) | A-only / B-only successes | p |",
                  "| --- | --- | --- | --- |"]
        for a, b in pairs:
            only_a, only_b, p = mcnemar_p(a["outcomes"], b["outcomes"])
            lines.append(f"| {a['task']} | {a['step']} {a['variant']} vs {b['step']} {b['variant']} | "
                         f"{only_a} / {only_b} | {p:.2f} |")
    (args.output / "table.md").write_text("\n".join(lines) + "\n")
    (args.output / "results.json").write_text(json.dumps(rows, indent=1))
    figure, axis = plt.subplots(figsize=(6, 4))
    for task, variant in sorted({(r["task"], r["variant"]) for r in rows}):
        mine = [r for r in rows if (r["task"], r["variant"]) == (task, variant)]
        steps = [r["step"] for r in mine]
        rates = [100 * r["success_rate"] for r in mine]
        errors = [[100 * (r["success_rate"] - r["wilson_95"][0]) for r in mine],
                  [100 * (r["wilson_95"][1] - r["success_rate"]) for r in mine]]
        axis.errorbar(steps, rates, yerr=errors, marker="o", capsize=4,
                      label=f"{task} ({variant})" if variant else task)
    axis.axhline(30, color="grey", linestyle="--", linewidth=1, label="target 30 %")
    axis.set(xlabel="warm-up steps (batch 32)", ylabel="success % (95 % Wilson)", ylim=(0, 100),
             title="Behaviour-cloning warm-up, 100 evaluation episodes per point")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.output / "learning_curves.png", dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
