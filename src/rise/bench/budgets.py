"""Compute budgets of the learning benchmark (``rise bench learning --budget NAME``).

A budget fixes every size the pipeline trains and evaluates with, so a table is reproducible from
(task, budget, seed). Figures in the comments are wall times on a 2-core CPU machine.

Example::

    budget = named_budget("small")
    budget.total_policy_steps     # warm-up + improvement steps every policy row gets
"""

from __future__ import annotations

import dataclasses
import difflib


@dataclasses.dataclass(frozen=True)
class BenchBudget:
    name: str
    model: str  # named config of the value, dynamics and policy models (same horizon for all)
    episodes: int  # collected episodes: scripted demos plus perturbed (mostly failing) rollouts
    failing_fraction: float
    value_steps: int
    progress_only_steps: int  # value: progress loss alone first, then progress + TD
    dynamics_steps: int
    warmup_steps: int  # the starting point of every improvement row
    iterations: int  # improvement iterations (every policy row trains steps_per_iteration per iteration)
    steps_per_iteration: int
    rollouts_per_iteration: int
    feedback_steps: int
    world_model_sampling_steps: int
    uncertainty_samples: int
    eval_episodes: int  # final evaluation of each row (the table)
    curve_episodes: int  # evaluation of the intermediate checkpoints (learning curves)
    flow_steps: int = 10  # policy flow-matching steps at evaluation
    max_ticks: int | None = None  # cut evaluation episodes short (tests only; None: the task's limit)
    value_batch: int = 32
    dynamics_batch: int = 8
    policy_batch: int = 32

    def __post_init__(self):
        for field in ("episodes", "value_steps", "dynamics_steps", "warmup_steps", "iterations",
                      "steps_per_iteration", "rollouts_per_iteration", "eval_episodes", "curve_episodes"):
            if getattr(self, field) < 1:
                raise ValueError(f"budget {self.name}: {field} must be >= 1, got {getattr(self, field)}")
        if self.warmup_steps % self.steps_per_iteration:
            raise ValueError(f"budget {self.name}: warmup_steps ({self.warmup_steps}) must be a multiple of "
                             f"steps_per_iteration ({self.steps_per_iteration}) so checkpoints line up")

    @property
    def total_policy_steps(self) -> int:
        return self.warmup_steps + self.iterations * self.steps_per_iteration

    def describe(self) -> str:
        return (f"budget {self.name}: {self.model} models; {self.episodes} episodes collected "
                f"({100 * self.failing_fraction:.0f} % perturbed); value {self.value_steps} steps, dynamics "
                f"{self.dynamics_steps} steps; warm-up {self.warmup_steps} steps, then {self.iterations} "
                f"iteration(s) x {self.steps_per_iteration} steps ({self.rollouts_per_iteration} imagined "
                f"rollouts each); evaluation {self.eval_episodes} episodes per row")


BUDGETS: dict[str, BenchBudget] = {
    # The test suite's end-to-end run: tiny models, seconds per stage; numbers mean nothing.
    "smoke": BenchBudget(
        name="smoke", model="tiny", episodes=3, failing_fraction=0.34, value_steps=4, progress_only_steps=2,
        dynamics_steps=4, warmup_steps=4, iterations=1, steps_per_iteration=2, rollouts_per_iteration=1,
        feedback_steps=1, world_model_sampling_steps=2, uncertainty_samples=1, eval_episodes=1,
        curve_episodes=1, flow_steps=2, max_ticks=30, value_batch=8, dynamics_batch=4, policy_batch=8),
    # The README's first command and the documented tables: cpu_default models, ~25 min per task.
    "small": BenchBudget(
        name="small", model="cpu_default", episodes=24, failing_fraction=0.3, value_steps=300,
        progress_only_steps=150, dynamics_steps=200, warmup_steps=400, iterations=2, steps_per_iteration=100,
        rollouts_per_iteration=8, feedback_steps=2, world_model_sampling_steps=4, uncertainty_samples=1,
        eval_episodes=24, curve_episodes=12, flow_steps=5),
    # A longer run (a few hours per task here, minutes on a GPU).
    "medium": BenchBudget(
        name="medium", model="cpu_default", episodes=60, failing_fraction=0.3, value_steps=3000,
        progress_only_steps=1000, dynamics_steps=3000, warmup_steps=1500, iterations=5,
        steps_per_iteration=300, rollouts_per_iteration=16, feedback_steps=2, world_model_sampling_steps=10,
        uncertainty_samples=2, eval_episodes=40, curve_episodes=20),
}


def named_budget(name: str) -> BenchBudget:
    if name not in BUDGETS:
        close = difflib.get_close_matches(name, list(BUDGETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"--budget: unknown budget {name!r}{hint}; known: {', '.join(BUDGETS)}")
    return BUDGETS[name]
