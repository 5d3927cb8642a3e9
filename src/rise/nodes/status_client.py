"""Ask the monitor node whether the stack is up (used by ``rise demo``); not a node executable."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import rclpy
from rclpy.context import Context
from std_srvs.srv import Trigger

from rise.nodes.monitor_node import STATUS_SERVICE


def wait_until_up(timeout_s: float, between: Callable[[], None] = lambda: None) -> dict:
    """Poll ``/rise/monitor/status`` until every expected node is alive; return the status.

    ``between`` runs between attempts (the CLI uses it to supervise the node processes).
    Raises TimeoutError with the last known status after ``timeout_s``.
    """
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("rise_cli_status", context=context)
    try:
        client = node.create_client(Trigger, STATUS_SERVICE)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + timeout_s
        last: dict = {}
        while time.monotonic() < deadline:
            between()
            if client.wait_for_service(timeout_sec=0.5):
                future = client.call_async(Trigger.Request())
                executor.spin_until_future_complete(future, timeout_sec=2.0)
                if future.done() and future.result() is not None:
                    last = json.loads(future.result().message)
                    if future.result().success:
                        return last
            time.sleep(0.2)
        raise TimeoutError(f"stack not up after {timeout_s:g} s; last status: {last or 'none'}")
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
