"""``rise collect``: demos recorded in the simulator load back frame-exactly with plain readers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import av
import pyarrow.parquet as pq


def test_collect_writes_a_lerobot_dataset(tmp_path):
    root = tmp_path / "box_close"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    result = subprocess.run(
        [sys.executable, "-m", "rise.cli", "collect", "--task", "box_close", "--episodes", "3",
         "--failing-fraction", "0.34", "--seed", "4", "--output", str(root)],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert "frames dropped: 0, late: 0" in result.stdout
    assert re.search(r"scripted expert success: (\d+)/\1 \(100 %\)", result.stdout), result.stdout

    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3
    episodes = pq.read_table(root / "meta" / "episodes").to_pylist()
    assert len(episodes) == 3
    total = 0
    for episode in episodes:
        data = pq.read_table(root / "data" / f"chunk-{episode['data/chunk_index']:03d}"
                             / f"file-{episode['data/file_index']:03d}.parquet")
        rows = [r for r in data.column("episode_index").to_pylist() if r == episode["episode_index"]]
        assert len(rows) == episode["length"]
        total += episode["length"]
        for camera in ("front", "wrist"):
            key = f"observation.images.{camera}"
            path = (root / "videos" / key / f"chunk-{episode[f'videos/{key}/chunk_index']:03d}"
                    / f"file-{episode[f'videos/{key}/file_index']:03d}.mp4")
            with av.open(str(path)) as container:
                frames = sum(1 for _ in container.decode(video=0))
            assert frames == episode["length"], (camera, frames, episode["length"])
        metadata = json.loads(episode["rise_metadata"])
        assert metadata["sync"]["dropped"] == 0
        if metadata["expert"] == "scripted":
            assert episode["success"] is True
    assert total == info["total_frames"]
