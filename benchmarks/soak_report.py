"""The soak's summary and plots (``benchmarks/soak.py`` writes the rows; this reads them back)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def memory_growth(rows: list[dict]) -> dict[str, dict]:
    """Per node: RSS after the first row (start-up done) and at the end, growth and its slope."""
    growth = {}
    steady = rows[1:] if len(rows) > 2 else rows
    for name in rows[-1]["nodes"] if rows else []:
        points = [(r["minute"], r["nodes"][name]["rss_mb"]) for r in steady if name in r["nodes"]]
        points = [(m, v) for m, v in points if np.isfinite(v)]
        if not points:
            continue
        minutes, rss = np.array(points).T
        slope = float(np.polyfit(minutes, rss, 1)[0]) * 60 if len(points) > 2 else None
        growth[name] = {"rss_start_mb": float(rss[0]), "rss_end_mb": float(rss[-1]),
                        "growth_mb": round(float(rss[-1] - rss[0]), 1),
                        "slope_mb_per_hour": None if slope is None else round(slope, 1)}
    return growth


def read_back(data: Path) -> dict:
    """Every episode of every dataset under ``data``: how many read back, and their frames."""
    from rise.data import DatasetReader

    result = {"episodes": 0, "unreadable": [], "frames": 0}
    for info in sorted(data.glob("*/meta/info.json")):
        reader = DatasetReader(info.parent.parent)
        for index in range(reader.num_episodes):
            try:
                result["frames"] += reader.episode(index).length
                result["episodes"] += 1
            except Exception as error:  # any failure to read back counts as lost data
                result["unreadable"].append(f"{info.parent.parent.name}/{index}: {error}")
    return result


def worst(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return max(values) if values else None


def summarise(mode: str, rows: list[dict], folder: Path, exit_code: int, checkpoints: list[Path]) -> dict:
    summary: dict = {"mode": mode, "minutes": rows[-1]["minute"] if rows else 0.0, "rows": len(rows),
                     "rise_up_exit_code": exit_code, "memory": memory_growth(rows),
                     "command_sent_p99_ms_worst": worst(rows, "command_sent_p99_ms"),
                     "command_sent_per_s": round(sum(r["command_sent"] for r in rows)
                                                 / max(1e-9, 60 * rows[-1]["minute"]), 1) if rows else None}
    if mode == "collect":
        frames, dropped = sum(r["frames"] for r in rows), sum(r["dropped"] for r in rows)
        stored = read_back(folder / "data")
        summary.update(episodes=sum(r["episodes"] for r in rows), frames=frames, dropped=dropped,
                       late=sum(r["late"] for r in rows),
                       dropped_pct=round(100 * dropped / max(1, frames + dropped), 3),
                       capture_to_recorder_p99_ms_worst=worst(rows, "capture_to_recorder_p99_ms"),
                       read_back=stored)
        summary["ok"] = exit_code == 0 and stored["episodes"] > 0 and not stored["unreadable"]
    else:
        last = rows[-1] if rows else {}
        summary.update(swaps_requested=last.get("swaps_requested"), ticks=last.get("ticks"),
                       missed_ticks=last.get("missed_ticks"), last_swap_ms=last.get("last_swap_ms"),
                       refusals=sorted({r["last_refusal"] for r in rows if r.get("last_refusal")}),
                       policy_command_p99_ms_worst=worst(rows, "policy_command_p99_ms"),
                       inference_ms_p50=last.get("inference_ms_p50"),
                       # the policy node counts its start-up load as a swap
                       swaps_done=None if last.get("swaps") is None else last["swaps"] - 1,
                       policies_seen=sorted({r["active_path"] for r in rows if r.get("active_path")}))
        summary["ok"] = (exit_code == 0 and not summary["refusals"] and bool(last.get("ticks"))
                         and (summary["swaps_done"] or 0) >= (summary["swaps_requested"] or 0) - 1)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(mode, rows, folder / "soak.png")
    return summary


def plot(mode: str, rows: list[dict], path: Path) -> None:
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minute"] for r in rows]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in rows[-1]["nodes"]:
        axes[0].plot(minutes, [r["nodes"].get(name, {}).get("rss_mb", np.nan) for r in rows], label=name)
    axes[0].set(title="resident memory per node", xlabel="minute", ylabel="MB")
    axes[0].legend(fontsize=7)
    if mode == "collect":
        axes[1].plot(minutes, [r["frames"] for r in rows], label="frames recorded")
        axes[1].plot(minutes, [r["dropped"] for r in rows], label="dropped")
        axes[1].plot(minutes, [r["late"] for r in rows], label="late")
        axes[1].set(title="per row (episodes saved in it)", xlabel="minute")
        latency = [r["capture_to_recorder_p99_ms"] for r in rows]
        axes[2].plot(minutes, [np.nan if v is None else v for v in latency], label="capture -> recorder p99")
    else:
        missed = [r.get("missed_ticks") or 0 for r in rows]
        axes[1].plot(minutes, np.diff([0, *missed]), label="missed control ticks")
        axes[1].plot(minutes, [r.get("last_swap_ms") or np.nan for r in rows], label="last swap ms")
        axes[1].set(title="policy node", xlabel="minute")
        axes[2].plot(minutes, [r.get("policy_command_p99_ms") or np.nan for r in rows],
                     label="/rise/policy/command period p99")
    axes[2].plot(minutes, [r.get("command_sent_p99_ms") or np.nan for r in rows],
                 label="/rise/arm/command_sent period p99")
    axes[2].set(title="p99 (ms)", xlabel="minute")
    for axis in axes[1:]:
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
