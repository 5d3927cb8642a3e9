"""``python process_reaper.py REPORT.json -- COMMAND...``: run COMMAND and account for every process
it leaves behind.

This process becomes a child subreaper (PR_SET_CHILD_SUBREAPER), so descendants orphaned when
COMMAND dies are re-parented here instead of to init: their exit codes are collected, and one that
is still running ``--grace-s`` after COMMAND ended is an orphan, recorded and killed. COMMAND
starts in a session of its own (a test can signal its process group like a terminal's Ctrl-C) with
SIGINT at its default disposition; its first output line is ``process_reaper: pid N``.

REPORT.json: ``{"code": COMMAND's exit code, "exited": [{"pid", "cmd", "code"}],
"orphans": [{"pid", "cmd"}]}``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every live descendant of ``root`` (re-parented ones included)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        parents[int(entry.name)] = int(fields[1])
        commands[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = commands[pid]
                frontier.append(pid)
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("report", type=Path)
    parser.add_argument("--grace-s", type=float, default=30.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the test signals COMMAND, not this process
    child = subprocess.Popen(command, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    print(f"process_reaper: pid {child.pid}", flush=True)
    known: dict[int, str] = {child.pid: " ".join(command)}
    exited: list[dict] = []
    orphans: list[dict] = []
    code = None
    ended_at = None
    while True:
        known.update(_descendants(os.getpid()))
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break  # nothing left
        if pid:
            exit_code = os.waitstatus_to_exitcode(status)
            if pid == child.pid:
                code, ended_at = exit_code, time.monotonic()
                child.returncode = exit_code  # reaped here, not by Popen
            else:
                exited.append({"pid": pid, "cmd": known.get(pid, "?"), "code": exit_code})
            continue
        if ended_at is not None and time.monotonic() - ended_at > args.grace_s:
            for pid, cmd in _descendants(os.getpid()).items():
                orphans.append({"pid": pid, "cmd": cmd})
                os.kill(pid, signal.SIGKILL)
            ended_at = float("inf")  # killed: reap them, then stop
        time.sleep(0.05)
    args.report.write_text(json.dumps({"code": code, "exited": exited, "orphans": orphans}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
