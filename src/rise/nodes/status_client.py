"""Watch a running stack from the CLI (``rise demo``): is every node up, what has the recorder
saved. Not a node executable: a short-lived probe with its own rclpy context."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String
from std_srvs.srv import Trigger

from rise.nodes.monitor_node import STATUS_SERVICE
from rise.nodes.qos import LATCHED


class StackProbe:
    """``with StackProbe() as probe: probe.wait_until_up(60)``. ``between`` callbacks run
    between polls (the CLI supervises its node processes there)."""

    def __init__(self):
        self._context = Context()
        rclpy.init(context=self._context)
        self._node = rclpy.create_node("rise_cli_probe", context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self.recorder: list[dict] = []
        self._node.create_subscription(String, "/rise/recorder/status",
                                       lambda m: self.recorder.append(json.loads(m.data)), LATCHED)

    def __enter__(self) -> StackProbe:
        return self

    def __exit__(self, *exc) -> None:
        self._executor.shutdown()
        self._node.destroy_node()
        rclpy.try_shutdown(context=self._context)

    def wait_until_up(self, timeout_s: float, between: Callable[[], None] = lambda: None) -> dict:
        """Poll ``/rise/monitor/status`` until every expected node is alive; return the status.
        Raises TimeoutError with the last known status after ``timeout_s``."""
        client = self._node.create_client(Trigger, STATUS_SERVICE)
        deadline = time.monotonic() + timeout_s
        last: dict = {}
        while time.monotonic() < deadline:
            between()
            if client.wait_for_service(timeout_sec=0.5):
                future = client.call_async(Trigger.Request())
                self._executor.spin_until_future_complete(future, timeout_sec=2.0)
                if future.done() and future.result() is not None:
                    last = json.loads(future.result().message)
                    if future.result().success:
                        return last
            time.sleep(0.2)
        raise TimeoutError(f"stack not up after {timeout_s:g} s; last status: {last or 'none'}")

    def wait_for_episodes(self, count: int, timeout_s: float,
                          between: Callable[[], None] = lambda: None,
                          on_episode: Callable[[dict], None] = lambda episode: None) -> None:
        """Wait until the recorder saves ``count`` new episodes; ``on_episode`` gets each one's
        summary (index, frames, dropped, late, success) as it lands."""
        deadline = time.monotonic() + timeout_s
        baseline: int | None = None  # episodes in the dataset when we first heard the recorder
        reported: set[int] = set()
        read = 0
        while time.monotonic() < deadline:
            between()
            self._executor.spin_once(timeout_sec=0.1)
            for status in self.recorder[read:]:
                if baseline is None:
                    baseline = status["episodes"] - ("last_episode" in status)
                episode = status.get("last_episode")
                if episode and episode["index"] >= baseline and episode["index"] not in reported:
                    reported.add(episode["index"])
                    on_episode(episode)
            read = len(self.recorder)
            if len(reported) >= count:
                return
        raise TimeoutError(f"the recorder saved {len(reported)} of {count} episode(s) in {timeout_s:g} s")
