"""ament_python build of the `rise` package: `colcon build` on ROS 2, `pip install -e .` elsewhere."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "rise"
ROOT = Path(__file__).parent


def share_files(*folders: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing each folder, keeping its layout, under share/rise/."""
    entries: dict[str, list[str]] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                relative = path.relative_to(ROOT)
                entries.setdefault(f"share/{PACKAGE}/{relative.parent}", []).append(str(relative))
    return sorted(entries.items())


setup(
    # python_requires lives here, not in setup.cfg: colcon reads these arguments with
    # ast.literal_eval, which cannot read the SpecifierSet setuptools makes of setup.cfg's.
    # (This file must never spell the empty call, "setup" + "()": colcon would then take its
    # options from setup.cfg alone and miss data_files.)
    python_requires=">=3.10",
    packages=find_packages(where="src"),
    package_dir={"": "src"},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_files("launch", "config", "urdf"),
    ],
)
