"""The shared ``main()`` of every rise node: init, spin, and a clean exit on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from rise.config import ConfigError
from rise.runner import CONFIG_ERROR_EXIT
from rise.sim.env import RenderingUnavailable


class StopSignals:
    """Notes SIGINT and SIGTERM instead of raising.

    Installed before ``rclpy.init``: rclpy's own handlers (installed by init) shut the context down
    and then call the handler they replaced, this one. So the first signal ends the spin between
    callbacks, and no signal, first or later, can raise KeyboardInterrupt in the middle of a
    callback or of the cleanup (a recorder closing its dataset). Later signals come often: Ctrl-C
    in a terminal reaches every launched node twice (from the terminal and from ``ros2 launch``),
    and launch escalates to SIGTERM after its timeout.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: list[int] = []
        for sig in self.SIGNALS:
            signal.signal(sig, self._note)

    def _note(self, signum, _frame) -> None:
        self.received.append(signum)


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node with ``factory`` and spin it until shutdown; return the exit code.

    SIGINT and SIGTERM end the spin (rclpy's signal handlers) and exit 0; further ones are ignored
    (:class:`StopSignals`). A stop signal during the node's construction lets it finish and
    then skips the spin. A config error is reported on one line and exits 2, without a
    traceback. After an orderly stop the process leaves at once (:func:`leave`), not returning
    to the interpreter's finalization.
    """
    stops = StopSignals()
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        # The executor exists before the (slow) node construction: a SIGTERM during start-up then
        # interrupts the node, not the executor's __init__ (which rclpy reports as a traceback).
        executor = SingleThreadedExecutor()
        node = factory()
        if not stops.received:
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, RenderingUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        code = CONFIG_ERROR_EXIT
    except Exception:
        if rclpy.ok() and not stops.received:  # else: stopped while the node was starting up
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
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # the launcher and its pipes may be gone
            stream.flush()
    os._exit(code)
