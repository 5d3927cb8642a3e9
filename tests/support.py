"""Helpers for tests: waiting with deadlines, calling a service, reading console scripts."""

from __future__ import annotations

import configparser
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, step_s: float = 0.05):
    """Poll ``predicate`` until truthy and return its value; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


def spin_until(executor, predicate: Callable[[], object], timeout_s: float, what: str):
    """Spin ``executor`` until ``predicate`` is truthy; fail naming ``what`` after the deadline."""

    def spun():
        executor.spin_once(timeout_sec=0.02)
        return predicate()

    return wait_for(spun, timeout_s, what, step_s=0.0)


def call_service(node, executor, srv_type, name: str, request, timeout_s: float = 20.0):
    """Call a service, retrying until a response arrives or ``timeout_s`` passes.

    A request sent right after a server (re)appears can be lost while discovery settles, so
    each attempt waits at most 2 s for its answer; the overall deadline bounds the whole call.
    """
    client = node.create_client(srv_type, name)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not client.wait_for_service(timeout_sec=0.2):
                continue
            future = client.call_async(request)
            executor.spin_until_future_complete(future, timeout_sec=min(2.0, timeout_s))
            if future.done() and future.result() is not None:
                return future.result()
            client.remove_pending_request(future)
        pytest.fail(f"no response from {name} within {timeout_s:g} s")
    finally:
        node.destroy_client(client)


def console_scripts() -> dict[str, str]:
    """setup.cfg's console scripts: name -> 'module:function'."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return {k.strip(): v.strip() for k, v in (line.split("=", 1) for line in lines)}


def read_lines(process: subprocess.Popen) -> list[str]:
    """Collect a text-mode process's output lines in the background; returns the growing list."""
    lines: list[str] = []

    def pump():
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def real_robot_yaml(tmp_path: Path, cameras: list[dict], name: str = "test_arm") -> Path:
    """A real robot with the sim arm (load_robot checks the joints against the URDF) and ``cameras``."""
    data = yaml.safe_load((ROOT / "config" / "robots" / "sim.yaml").read_text())
    data.update(name=name, kind="real", cameras=cameras)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
