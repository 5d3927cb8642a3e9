"""``python -m rise.nodes.start <module> [args]``: how the embedded runner starts a node.

A node module's imports (torch, MuJoCo, ...) take a moment; a Ctrl-C or SIGTERM that arrives
before rclpy has installed its signal handlers would otherwise end the process with a
KeyboardInterrupt traceback and a failure code. Here either signal exits 0 until the node's own
``main`` takes over (``rclpy.init`` replaces these handlers).

While the node module is being imported a signal only sets a flag: an exception raised inside a C
extension's initialisation (MuJoCo's, for one) surfaces as ``ImportError: initialization
failed`` instead of a clean exit. Once the import is done the flag is honoured.
"""

from __future__ import annotations

import faulthandler
import importlib
import signal
import sys

_stop_requested: list[int] = []


def _note_stop(signum, _frame) -> None:
    _stop_requested.append(signum)


def _stop_while_starting(_signum, _frame) -> None:
    raise SystemExit(0)


def _install(handler) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def main() -> int:
    faulthandler.enable()  # a native crash (SIGSEGV, SIGABRT) prints every thread's Python stack
    _install(_note_stop)
    if len(sys.argv) < 2:
        print("usage: python -m rise.nodes.start <node module> [node arguments]", file=sys.stderr)
        return 2
    module = importlib.import_module(sys.argv[1])
    if _stop_requested:
        return 0
    _install(_stop_while_starting)
    return module.main(sys.argv[1:])  # the module name stands in for the program name


if __name__ == "__main__":
    raise SystemExit(main())
