"""The learning benchmark end to end at the smoke budget, its resume, and its report arithmetic."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rise.bench.budgets import BenchBudget, named_budget
from rise.bench.learning import ROWS, run_learning_bench
from rise.bench.report import write_report
from rise.bench.stages import StageLog

# the whole pipeline runs in the module fixture: about a minute alone, several on a loaded runner
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "box_close"
    result = run_learning_bench("box_close", root, named_budget("smoke"), workers=1, progress=False,
                                echo=None)
    return root, result


def test_pipeline_writes_the_table_curves_and_videos(bench):
    root, result = bench
    table = (root / "table.md").read_text()
    for label in ROWS.values():
        assert label in table
    assert "RISE − warm-up" in table and "Stage wall times" in table
    assert set(result["final"]) == set(ROWS)
    for row, points in result["curves"].items():
        assert [p["iteration"] for p in points] == [0, 1], row
        assert 0.0 <= points[-1]["success_rate"] <= 1.0
    held_out = json.loads((root / "stages.json").read_text())["collect_heldout"]["result"]
    assert held_out["episodes"] == 4 and held_out["dataset"].endswith("box_close_heldout")
    # every RISE row starts from the same advantage-conditioned warm-up, BC from its own
    assert result["curves"]["rise"][0]["policy"] == result["curves"]["recap"][0]["policy"]
    assert result["curves"]["warmup"][0]["policy"] != result["curves"]["recap"][0]["policy"]
    # every row ends at the same number of gradient steps
    budget = named_budget("smoke")
    assert {p[-1]["policy"].rsplit("step_", 1)[1] for p in result["curves"].values()} == {
        f"{budget.total_policy_steps:06d}"}
    assert (root / "learning_curves.png").stat().st_size > 0
    assert (root / "imagined_vs_real.mp4").stat().st_size > 0
    assert all(any((root / "videos" / row).glob("*.mp4")) for row in ROWS)
    assert {"value", "value_no_td", "dynamics", "dynamics_uniform"} <= set(result["world_model"])


def test_a_finished_run_resumes_without_retraining(bench):
    root, result = bench
    before = json.loads((root / "stages.json").read_text())
    again = run_learning_bench("box_close", root, named_budget("smoke"), workers=1, progress=False, echo=None)
    assert json.loads((root / "stages.json").read_text()) == before
    assert again["final"] == result["final"]


def test_other_settings_on_the_same_folder_are_refused(bench):
    root, _ = bench
    with pytest.raises(ValueError, match="seed"):
        run_learning_bench("box_close", root, named_budget("smoke"), seed=3, progress=False, echo=None)
    with pytest.raises(ValueError, match="unknown task|nope"):
        run_learning_bench("nope", root.parent / "x", named_budget("smoke"), progress=False, echo=None)


def test_budgets_are_checked():
    with pytest.raises(ValueError, match="did you mean 'small'"):
        named_budget("smal")
    smoke = named_budget("smoke")
    with pytest.raises(ValueError, match="warmup_steps"):
        dataclasses.replace(smoke, warmup_steps=5, steps_per_iteration=2)
    with pytest.raises(ValueError, match="eval_episodes"):
        dataclasses.replace(smoke, eval_episodes=0)
    assert named_budget("small").total_policy_steps == 600


def _point(successes: int, episodes: int = 20) -> dict:
    return {"policy": "p", "episodes": episodes, "successes": successes, "success_rate": successes / episodes,
            "wilson_95": [0.0, 1.0], "mean_score": 5.0, "seconds": 1.0, "iteration": 1}


def test_curve_points_share_the_first_seeds():
    from rise.bench.learning import subset

    episodes = [{"seed": 10 + i, "success": i in (0, 3), "score": i} for i in (3, 2, 1, 0)]
    result = {"policy": "p", "episodes": 4, "successes": 2, "success_rate": 0.5, "wilson_95": [0, 1],
              "mean_score": 1.5, "seconds": 1.0, "per_episode": episodes}
    first = subset(result, 2)
    assert [r["seed"] for r in first["per_episode"]] == [10, 11]
    assert first["successes"] == 1 and first["success_rate"] == 0.5 and first["mean_score"] == 0.5
    assert first["wilson_95"] == pytest.approx([0.0945, 0.9055], abs=1e-4)


def test_report_gaps_and_targets(tmp_path):
    budget: BenchBudget = named_budget("smoke")
    final = {"warmup": 4, "recap": 6, "rise": 13, "rise_oracle": 16, "rise_no_task_centric": 9,
             "rise_no_td": 8}
    curves = {row: [{**_point(2), "iteration": 0}, _point(n)] for row, n in final.items()}
    finals = {row: points[-1] for row, points in curves.items()}
    log = StageLog(tmp_path, echo=None)
    log.run("collect", lambda: {})
    result = write_report(tmp_path, "pack", budget, 0, ROWS, finals, curves, {}, log, "sim")
    assert result["gaps"]["rise_minus_warmup"] == pytest.approx(45.0)
    assert result["gaps"]["rise_minus_recap"] == pytest.approx(35.0)
    assert result["targets_met"] == {"rise_vs_warmup": True, "rise_vs_recap": True, "oracle_above_both": True}
    table = (tmp_path / "table.md").read_text()
    assert "| RISE, learned world model | 65 % (13/20) |" in table
    assert "+45 (met)" in table
    finals["rise"] = _point(10)
    result = write_report(tmp_path, "pack", budget, 0, ROWS, finals, curves, {}, log, "sim")
    assert result["targets_met"]["rise_vs_warmup"] is False  # +30 < +35
    assert "+30 (not met)" in (tmp_path / "table.md").read_text()
