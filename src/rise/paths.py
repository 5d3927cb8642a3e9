"""Where the package's installed data (config/, launch/, urdf/) lives.

Resolution order: a source checkout (editable install or running from the repository), the
ament index (colcon install on a ROS 2 machine), then ``<prefix>/share/rise`` (pip install).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

PACKAGE = "rise"


@functools.cache
def share_dir() -> Path:
    """The directory holding package.xml, config/, launch/ and urdf/."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "package.xml").is_file() and (checkout / "config").is_dir():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError):
        pass
    installed = Path(sys.prefix) / "share" / PACKAGE
    if (installed / "package.xml").is_file():
        return installed
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} share directory (looked in {checkout}, the ament index "
        f"and {installed}); reinstall the package"
    )


def resolve(path: str | Path) -> Path:
    """A path from a config file: absolute as given, else relative to the share directory."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else share_dir() / path
