"""The ``rise`` command: help for every subcommand, and the read-only subcommands' output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rise.cli import build_parser, main


def subcommands() -> list[list[str]]:
    found = []

    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    found.append(prefix + [name])
                    walk(sub, prefix + [name])

    walk(build_parser(), [])
    return found


def test_subcommands_are_there():
    assert {"up", "demo", "nodes", "config"} <= {c[0] for c in subcommands()}


@pytest.mark.parametrize("command", [[]] + subcommands(), ids=lambda c: " ".join(c) or "rise")
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: rise" in capsys.readouterr().out


def test_console_script_runs():
    executable = Path(sys.executable).parent / "rise"
    rise = str(executable) if executable.exists() else shutil.which("rise")
    assert rise, "the rise console script is not installed (pip install -e .)"
    result = subprocess.run([rise, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "demo" in result.stdout


def test_nodes_json(capsys):
    assert main(["nodes", "--robot", "sim", "--mode", "improve", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [row["name"] for row in rows]
    assert names == ["monitor", "sim", "arm_bridge", "policy", "trainer", "world_model"]
    assert rows[0]["parameters"]["mode"] == "improve"
    by_name = dict(zip(names, rows, strict=True))
    assert by_name["arm_bridge"]["parameters"]["source"] == "policy"
    assert by_name["policy"]["parameters"]["enabled"] is True  # sim only: a real arm waits for enable


def test_config_check_and_fields(capsys):
    assert main(["config", "check"]) == 0
    assert "robot sim: 7 joints, cameras front, wrist, 30 Hz" in capsys.readouterr().out
    assert main(["config", "fields", "robot"]) == 0
    out = capsys.readouterr().out
    assert "arm.joints[].max_velocity" in out and "velocity limit" in out


def test_bad_mode_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["up", "--mode", "teleport"])
    assert exit_info.value.code == 2
    assert "argument --mode" in capsys.readouterr().err
