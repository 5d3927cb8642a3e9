"""This checkout built the way a ROS 2 machine builds it: ``colcon build`` in a scratch workspace.

``build_workspace(tmp)`` copies the checkout to ``<tmp>/src/rise`` (no .venv, no build output) and
runs the same command as docker/Dockerfile; ``Workspace.env`` is the environment after
``source install/setup.bash``, as a user's shell has it. Nothing here imports launch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import ROOT

# The build command of docker/Dockerfile (tests/test_colcon_build.py checks they agree).
COLCON_BUILD = ["colcon", "build", "--packages-select", "rise", "--event-handlers", "console_direct-"]
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".venv.lock", "build", "install", "log",
                                     "rise_runs", "__pycache__", ".pytest_cache", ".ruff_cache")
VENV_BIN = Path(sys.executable).parent  # colcon, ros2, launch_test: console scripts of this venv


@dataclasses.dataclass(frozen=True)
class Workspace:
    root: Path
    build_output: str
    env: dict[str, str]

    @property
    def install(self) -> Path:
        return self.root / "install" / "rise"

    @property
    def lib(self) -> Path:
        """Where ROS 2 expects the package's executables (ros2 run / launch_ros)."""
        return self.install / "lib" / "rise"

    @property
    def share(self) -> Path:
        return self.install / "share" / "rise"


def build_workspace(root: Path, *extra_args: str) -> Workspace:
    """colcon-build this checkout into ``root`` (``extra_args``: e.g. --symlink-install)."""
    shutil.copytree(ROOT, root / "src" / "rise", ignore=_NOT_COPIED, symlinks=True)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([*COLCON_BUILD, *extra_args], cwd=root, env=env, capture_output=True,
                            text=True, timeout=300)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"colcon build failed ({result.returncode}):\n{output}")
    return Workspace(root, output, sourced_environment(root / "install" / "setup.bash", env))


def sourced_environment(setup_bash: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment after ``source <setup_bash>`` in bash."""
    result = subprocess.run(["bash", "-c", f'source "{setup_bash}" && env -0'], env=env,
                            capture_output=True, timeout=60, check=True)
    pairs = (entry.split("=", 1) for entry in result.stdout.decode().split("\0") if "=" in entry)
    return dict(pairs)


def missing_launch_tooling() -> str | None:
    """Why the real ``ros2 launch`` cannot run here, or None when it can."""
    missing = [name for name in ("launch", "launch_ros", "launch_testing", "ros2launch")
               if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f"ROS 2 launch tooling not installed in this venv (missing: {', '.join(missing)}): "
            "it is not on any package registry; scripts/setup_venv.sh installs it from the wheels "
            "in $RISE_ROS2_LAUNCH_WHEELS or ../shared/wheels/ros2-launch beside the checkout, "
            "and found none (a ROS 2 machine has it from the distribution)")
