"""A resumable list of pipeline stages: each runs once, its wall time and result go to ``stages.json``.

A stage that finished is not run again when the pipeline is restarted on the same folder (a killed
run picks up at the stage it was in; the trainers inside resume from their own checkpoints).

Example::

    log = StageLog(Path("bench/box_close"))
    data = log.run("collect", lambda: str(collect_demos()))
    log.seconds("collect")
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES_FILE = "stages.json"


class StageLog:
    def __init__(self, root: Path, echo: Callable[[str], None] | None = print):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / STAGES_FILE
        self.echo = echo
        self.stages: dict[str, dict] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def run(self, name: str, work: Callable[[], Any]) -> Any:
        """The result of stage ``name``: recorded, or computed now (``work`` returns JSON-able data)."""
        if name in self.stages:
            return self.stages[name]["result"]
        if self.echo:
            self.echo(f"[bench] stage {name} ...")
        started = time.monotonic()
        result = work()
        seconds = round(time.monotonic() - started, 1)
        self.stages[name] = {"seconds": seconds, "result": result}
        self._save()
        if self.echo:
            self.echo(f"[bench] stage {name} done in {seconds:.0f} s")
        return result

    def seconds(self, *names: str) -> float:
        return round(sum(self.stages[n]["seconds"] for n in names if n in self.stages), 1)

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stages, indent=1))
        os.replace(tmp, self.path)
