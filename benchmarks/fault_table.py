"""The fault table: run the fault-injection tests (``pytest -m faults``) several times and tabulate.

    .venv/bin/python benchmarks/fault_table.py [--runs 3] [--output fault_table.md] [-- -k crash]

Every fault test notes each fault it injects (tests/fault_log.py: fault, what happened, data lost,
recovery time) in a JSON-lines log when ``RISE_FAULT_LOG`` is set; this runs the suite ``--runs``
times with it set and prints one row per fault: tries, outcomes, data lost (must be 0), and the
median / worst recovery time. Failed test runs are counted and their pytest summary is shown.
Arguments after ``--`` go to pytest.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_suite(log: Path, extra: list[str]) -> tuple[int, list[str]]:
    """One ``pytest -m faults`` run; (exit code, its summary line and the FAILED/ERROR lines)."""
    env = {**os.environ, "RISE_FAULT_LOG": str(log)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "faults", *extra]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    if result.returncode:  # keep the whole output of a failing run for a look
        kept = log.with_name(f"failed-run-{time.time_ns()}.log")
        kept.write_text(result.stdout + result.stderr)
        failed.append(f"(output: {kept})")
    return result.returncode, lines[-1:] + failed


def table(entries: list[dict], runs: int) -> str:
    by_fault: dict[str, list[dict]] = collections.defaultdict(list)
    for entry in entries:
        by_fault[entry["fault"]].append(entry)
    lines = ["| fault | tries | what happened | data lost | recovery median / worst |",
             "|---|---:|---|---:|---|"]
    for fault in sorted(by_fault):
        tries = by_fault[fault]
        outcomes = collections.Counter(t["outcome"] for t in tries)
        outcome = "; ".join(text + (f" (x{n})" if len(outcomes) > 1 else "") for text, n in outcomes.items())
        recovery = [t["recovery_s"] for t in tries if t["recovery_s"] is not None]
        timing = f"{np.median(recovery):.2f} s / {max(recovery):.2f} s" if recovery else "—"
        lost = sum(t["data_lost"] for t in tries)
        lines.append(f"| {fault} | {len(tries)} | {outcome} | {lost} | {timing} |")
    lines.append(f"\n{len(by_fault)} faults, {len(entries)} tries over {runs} runs of `pytest -m faults`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", default=None, help="also write the table (markdown) here")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    log = Path(tempfile.mkdtemp(prefix="rise-faults-")) / "faults.jsonl"
    failures = 0
    for run in range(1, args.runs + 1):
        started = time.monotonic()
        code, summary = run_suite(log, extra)
        failures += code != 0
        print(f"run {run}/{args.runs}: {summary[0] if summary else ''} ({time.monotonic() - started:.0f} s)",
              *summary[1:], sep="\n  ", flush=True)
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    text = table(entries, args.runs)
    if failures:
        text += f"\n{failures} of {args.runs} runs had a failing test (see above)."
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 1 if failures or not entries else 0


if __name__ == "__main__":
    raise SystemExit(main())
