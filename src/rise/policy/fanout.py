"""Fan shard jobs out: in this process, over a pool of processes, or over Ray actors.

A :class:`Fanout` has ``workers`` workers. Each one calls ``setup(*setup_args)`` once (build an
environment, load a model) and keeps what it returns; :meth:`Fanout.map` then runs
``fn(state, shared, job)`` for each job on some worker and returns the results in job order.
``shared`` is the same for every job of one call (a policy's files): with Ray it goes to the object
store once. ``fn`` and ``setup`` must be module-level functions (they travel by name).

``ray_address``: None runs without Ray (``workers`` 1: in this process; more: spawned processes);
``"local"`` starts a local Ray instance with ``workers`` CPUs; any other string is a cluster address
for ``ray.init(address=...)`` (``host:port``, ``ray://host:port`` or ``auto``). A process already
connected to Ray keeps that connection. Each worker is then a Ray actor holding one CPU.
A worker may run on another machine: ship what it needs (file bytes, arrays), not paths, unless
they are on a filesystem every node sees (see :func:`folder_files`).

Example::

    with Fanout(workers=2, ray_address="local", setup=make_env, setup_args=("box_close",)) as fanout:
        results = fanout.map(run_episodes, [[1000, 1002], [1001, 1003]], shared=policy_files)
"""

from __future__ import annotations

import multiprocessing
import socket
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rise.models.checkpoint import ALLOWED_SUFFIXES, CheckpointError

OPTION = "ray_address (rise ... --ray)"
_STATE: dict[str, Any] = {}  # a pool process's worker state


class FanoutError(RuntimeError):
    """Ray was asked for but cannot be used (not installed, or no cluster at the address)."""


def folder_files(folder: str | Path) -> dict[str, bytes]:
    """The bytes of a checkpoint folder's files (JSON and safetensors only), to ship to a worker."""
    paths = [p for p in sorted(Path(folder).iterdir()) if p.is_file() and not p.name.startswith(".")]
    for path in paths:
        if path.suffix not in ALLOWED_SUFFIXES:
            raise CheckpointError(f"{path}: refused: only .safetensors and .json files are shipped")
    if not paths:
        raise CheckpointError(f"{folder}: no checkpoint files to ship")
    return {path.name: path.read_bytes() for path in paths}


def write_files(files: dict[str, bytes], folder: str | Path) -> Path:
    """Write shipped :func:`folder_files` into ``folder`` (then load it as usual: it is verified)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if Path(name).name != name or name.startswith("."):
            raise CheckpointError(f"{name!r}: not a plain checkpoint file name")
        (folder / name).write_bytes(data)
    return folder


def load_shipped(files: dict[str, bytes], load: Callable[[Path], Any]) -> Any:
    """``load(folder)`` on shipped files written into a temporary folder (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="rise-shipped-") as tmp:
        return load(write_files(files, Path(tmp) / "checkpoint"))


def _threads(count: int) -> int:
    """Set torch's thread count, returning the old one (workers run one: they are the parallelism)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(count)
    return old


def _inline(fn: Callable, *args: Any) -> Any:
    old = _threads(1)  # as in a worker (results do not then vary with the driver's thread count)
    try:
        return fn(*args)
    finally:
        _threads(old)


def _pool_init(setup: Callable | None, setup_args: tuple) -> None:
    _threads(1)
    _STATE["state"] = setup(*setup_args) if setup is not None else None


def _pool_call(fn: Callable, shared: Any, job: Any) -> Any:
    return fn(_STATE["state"], shared, job)


class _Worker:
    """The body of a Ray actor: its own state, then jobs."""

    def __init__(self, setup: Callable | None, *setup_args: Any):  # top-level refs: resolved by Ray
        _threads(1)
        self.state = setup(*setup_args) if setup is not None else None

    def run(self, fn: Callable, shared: Any, job: Any) -> Any:
        return fn(self.state, shared, job)


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at ``host:port`` (ray.init would retry for many minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise FanoutError(f"{OPTION}: {address!r} is not 'local', 'auto', host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise FanoutError(f"{OPTION}: no Ray cluster reachable at {address!r} ({error}); start one with "
                          "`ray start --head` or use 'local'") from None


def _connect(address: str, workers: int):
    """The ray module, connected; and whether this call connected it (so :meth:`close` disconnects)."""
    try:
        import ray
    except ImportError as error:
        raise FanoutError(f"{OPTION}: {address!r} needs the ray package ({error}); "
                          "pip install 'ray==2.60.0', or leave the option out") from None
    if address != "local":
        _probe(address)
    started = not ray.is_initialized()
    try:
        if started:
            ray.init(**({"num_cpus": workers, "include_dashboard": False} if address == "local"
                        else {"address": address}))
        cpus = int(ray.cluster_resources().get("CPU", 0))
    except Exception as error:  # ray raises ConnectionError, RuntimeError, ValueError, by cause
        raise FanoutError(f"{OPTION}: cannot use Ray at {address!r}: {type(error).__name__}: "
                          f"{error}") from None
    if cpus < workers:  # an actor holds one CPU: the rest would wait for ever
        if started:
            ray.shutdown()
        raise FanoutError(f"{OPTION}: {workers} workers need {workers} CPUs, the Ray cluster has {cpus}; "
                          "use fewer workers")
    return ray, started


class Fanout:
    """``workers`` workers with their own state, in this process, in processes or as Ray actors."""

    def __init__(self, workers: int = 1, ray_address: str | None = None, *, setup: Callable | None = None,
                 setup_args: tuple = ()):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if ray_address is not None and not ray_address.strip():
            raise FanoutError(f"{OPTION}: empty address (use 'local', or host:port)")
        self.workers = workers
        self.mode = "ray" if ray_address is not None else "processes" if workers > 1 else "inline"
        self._ray = self._pool = self._state = None
        self._started_ray, self._actors = False, []
        if self.mode == "inline":
            self._state = _inline(setup, *setup_args) if setup is not None else None
        elif self.mode == "processes":
            # an executor, not a Pool: a worker that dies or fails its setup raises here, never hangs
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_pool_init, initargs=(setup, setup_args))
        else:
            self._ray, self._started_ray = _connect(ray_address, workers)
            actor = self._ray.remote(num_cpus=1)(_Worker)
            args = [self._ray.put(a) for a in setup_args]  # once in the object store, not per actor
            self._actors = [actor.remote(setup, *args) for _ in range(workers)]

    def map(self, fn: Callable, jobs: Sequence, shared: Any = None) -> list:
        """``fn(state, shared, job)`` for every job, spread over the workers; results in job order."""
        jobs = list(jobs)
        if self.mode == "inline":
            return [_inline(fn, self._state, shared, job) for job in jobs]
        if self.mode == "processes":
            return list(self._pool.map(_pool_call, [fn] * len(jobs), [shared] * len(jobs), jobs))
        ref = self._ray.put(shared)
        return self._ray.get([self._actors[i % len(self._actors)].run.remote(fn, ref, job)
                              for i, job in enumerate(jobs)])

    def close(self) -> None:
        """Stop the workers (and the Ray connection or instance this object started)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        for actor in self._actors:
            self._ray.kill(actor)
        if self._started_ray:
            self._ray.shutdown()
        self._pool, self._actors, self._started_ray = None, [], False
        state, self._state = self._state, None
        if hasattr(state, "close"):
            state.close()

    def __enter__(self) -> Fanout:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
