"""What a fault-injection test saw, for the fault table (``benchmarks/fault_table.py``).

``record(fault, outcome, data_lost=0, recovery_s=None)`` appends one JSON line to the file named by
``RISE_FAULT_LOG`` and does nothing when it is unset, so the quick suite in CI runs the same tests
without writing anything. The benchmark runs ``pytest -m faults`` several times with the variable
set and prints, per fault: tries, outcomes, data lost and recovery times.
"""

from __future__ import annotations

import json
import os
import time

ENV = "RISE_FAULT_LOG"


def record(fault: str, outcome: str, data_lost: int = 0, recovery_s: float | None = None) -> None:
    """Note one try of ``fault``: what happened, how much data was lost, how long recovery took."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = {"fault": fault, "outcome": outcome, "data_lost": int(data_lost),
            "recovery_s": None if recovery_s is None else round(float(recovery_s), 3), "time": time.time()}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
