"""The simulated tasks, mirroring the paper's: dynamic brick sorting, box closing, packing."""

from __future__ import annotations

from rise.config.schema import did_you_mean
from rise.sim.tasks.base import Expert, Task, TaskStatus
from rise.sim.tasks.box_close import BoxClose
from rise.sim.tasks.brick_sort import BrickSort
from rise.sim.tasks.pack import Pack

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (BrickSort, BoxClose, Pack)}


def make_task(name: str) -> Task:
    """A new task instance by name; unknown names are refused with the list of tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}{did_you_mean(name, list(TASKS))} "
                         f"(tasks: {', '.join(TASKS)})")
    return TASKS[name]()


__all__ = ["TASKS", "Expert", "Task", "TaskStatus", "make_task"]
