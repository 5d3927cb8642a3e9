"""The shared ``main()`` of every rise node: init, spin, and a clean exit on Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from rise.config import ConfigError
from rise.sim.env import RenderingUnavailable


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node with ``factory`` and spin it until shutdown; return the exit code.

    SIGINT and SIGTERM end the spin (rclpy's signal handlers) and exit 0. A config error is
    reported on one line and exits 2, without a traceback. After an orderly stop the process
    leaves at once (:func:`leave`), not returning to the interpreter's finalization.
    """
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        # The executor exists before the (slow) node construction: a SIGTERM during start-up then
        # interrupts the node, not the executor's __init__ (which rclpy reports as a traceback).
        executor = SingleThreadedExecutor()
        node = factory()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, RenderingUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except Exception:
        if rclpy.ok():  # else: stopped (SIGINT/SIGTERM) while the node was still starting up
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    leave(code)


def leave(code: int) -> None:
    """Exit now, skipping interpreter finalization: the node is destroyed and rclpy shut down, so
    nothing is left to clean up, while C++ static destructors run at finalization (torch's thread
    pools, the DDS library) now and then abort a process that stopped cleanly ("terminate called
    without an active exception", exit -6; seen on the policy node, 1 stop in ~3)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
