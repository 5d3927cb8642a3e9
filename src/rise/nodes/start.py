"""How every rise node process starts, whoever launches it.

- ``python -m rise.nodes.start <module> [args]``: the embedded runner behind ``rise up``.
- The node console scripts (``rise_sim``, ``rise_recorder``, ...; setup.cfg points each at the
  attribute of this module with its name): what ``ros2 launch rise bringup.launch.py`` and
  ``ros2 run rise <executable>`` start. Each maps to its node module through the node table.

Either way, before the node module is imported:

- the process is set to get SIGTERM when its launcher dies (PR_SET_PDEATHSIG), so no node is
  ever orphaned: ``ros2 launch`` exits on SIGTERM without stopping its processes, and a crashed
  or SIGKILLed launcher cannot stop anything;
- a Ctrl-C or SIGTERM that arrives while the (slow: torch, MuJoCo) imports run only sets a flag:
  an exception raised inside a C extension's initialisation (MuJoCo's, for one) would surface as
  ``ImportError: initialization failed`` or a KeyboardInterrupt traceback. Once the import is done
  the flag is honoured (exit 0), and from then on until the node's ``run_node`` takes over, a stop
  signal exits 0 at once.
"""

from __future__ import annotations

import faulthandler
import functools
import importlib
import signal
import sys
from collections.abc import Callable

from rise.runner import die_with_parent

_stop_requested: list[int] = []


def _note_stop(signum, _frame) -> None:
    _stop_requested.append(signum)


def _stop_while_starting(_signum, _frame) -> None:
    raise SystemExit(0)


def _install(handler) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def run_module(module_name: str, argv: list[str]) -> int:
    """Import the node module ``module_name`` and run its ``main(argv)`` (argv[0]: program name)."""
    faulthandler.enable()  # a native crash (SIGSEGV, SIGABRT) prints every thread's Python stack
    _install(_note_stop)
    die_with_parent()
    module = importlib.import_module(module_name)
    if _stop_requested:
        return 0
    _install(_stop_while_starting)
    return module.main(argv)


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python -m rise.nodes.start <node module> [node arguments]", file=sys.stderr)
        return 2
    return run_module(sys.argv[1], sys.argv[1:])  # the module name stands in for the program name


def _console_script(module_name: str) -> int:
    return run_module(module_name, sys.argv)


def __getattr__(name: str) -> Callable[[], int]:
    """``rise.nodes.start.rise_sim`` etc.: the console script of each rise node of the node table."""
    from rise.bringup import NODE_TABLE

    for spec in NODE_TABLE:
        if spec.embedded and spec.executable == name:
            return functools.partial(_console_script, spec.module)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
