"""The MuJoCo simulator: scene, tasks with scripted experts, and a gymnasium-style interface.

Rendering is headless by default: without a display (and without a MUJOCO_GL choice of the
user's), MuJoCo renders through EGL (Mesa's software renderer works without a GPU).
"""

import os

if "MUJOCO_GL" not in os.environ and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ["MUJOCO_GL"] = "egl"
