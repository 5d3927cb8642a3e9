"""Running a policy on a robot (ROS-free): inference off the control thread, chunk blending, and
hot-swapping verified checkpoints between control ticks.

Three kinds of thread meet in :class:`PolicyRuntime`, and only for microseconds under one lock:

- the **control thread** calls :meth:`~PolicyRuntime.tick` once per control period; it takes the
  next target from the :class:`~rise.policy.blend.ChunkBlender` and never waits for the model. A
  candidate that finished loading is made live at the start of a tick, so the switch falls between
  two ticks and a tick sees the old policy or the new one, never a mixture;
- the **inference worker** predicts a new chunk from the latest observation once ``replan_every``
  ticks have passed since its last one, and blends it in (the ticks spent thinking are skipped);
- a **loader** thread per announcement: :func:`rise.models.checkpoint.read_checkpoint` (kind
  ``policy``, inside ``root``, announced sha256, at most ``max_checkpoint_bytes``; the policy is
  built from the bytes that were hashed), :meth:`Policy.load`, a check against the robot (action size,
  cameras) and a dry run (one prediction on black frames: finite, shape (H, A)). A candidate that
  fails any of these is refused with the reason and the running policy keeps going.

:meth:`~PolicyRuntime.rollback` returns to the policy that was live before the last swap. Every
swap is timed from the announcement to the tick that made it live (:class:`SwapRecord`).

Example (a 30 Hz control loop)::

    runtime = PolicyRuntime(action_dim=7, cameras=("front", "wrist"), period_s=1 / 30)
    runtime.start()
    runtime.load_candidate("ckpt/policy/step_001000", expected_sha256=sha, root="ckpt").wait(30)
    runtime.set_enabled(True)
    while running:
        runtime.observe({"front": front_rgb, "wrist": wrist_rgb}, joints)   # on new data
        rows = runtime.tick()        # (n, A): this tick's target, then the planned ones; or None
        ...
    runtime.close()
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from rise.models.checkpoint import DEFAULT_MAX_BYTES, Manifest, read_checkpoint
from rise.policy.blend import ChunkBlender
from rise.policy.policy_io import FILES, Policy

GIL_SWITCH_S = 0.0005  # the interpreter's thread switch interval while a runtime runs [s]
ERROR_RETRY_S = 0.5  # after a failed prediction, wait this long before the next one [s]
EventCallback = Callable[[str, str], None]  # (loaded|refused|superseded|swapped|rollback|error, message)


class PolicySwapError(RuntimeError):
    """A swap or rollback that cannot happen; the message says why."""


@dataclasses.dataclass(frozen=True)
class LoadedPolicy:
    """A policy and where it came from (``manifest`` is None for a policy handed over in memory)."""

    policy: Policy
    manifest: Manifest | None = None

    @property
    def sha256(self) -> str:
        return self.manifest.sha256 if self.manifest else "in-memory"


@dataclasses.dataclass(frozen=True)
class SwapRecord:
    """Timing of one swap on the runtime's clock [s]."""

    sha256: str
    announced_s: float  # load_candidate was called
    ready_s: float  # verified, loaded and dry-run
    live_s: float  # the control tick that made it live
    missed_ticks: int = 0  # control ticks missed from the announcement to the tick that made it live

    @property
    def swap_ms(self) -> float:
        """Announcement -> live [ms]."""
        return (self.live_s - self.announced_s) * 1e3


class LoadRequest:
    """One announced candidate; :meth:`wait` until it is ready or refused (then ``error`` says why)."""

    def __init__(self, folder: Path, expected_sha256: str | None, root: Path | None, announced_s: float):
        self.folder, self.expected_sha256, self.root = folder, expected_sha256, root
        self.announced_s = announced_s
        self.missed_at_announce = 0  # the runtime's missed-tick count when it was announced
        self.ready_s: float | None = None
        self.loaded: LoadedPolicy | None = None
        self.error: str | None = None
        self._done = threading.Event()

    def wait(self, timeout_s: float) -> bool:
        """True once the candidate is ready or refused (within ``timeout_s``)."""
        return self._done.wait(timeout_s)


class PolicyRuntime:
    """The live policy, the previous one, the plan of targets and the threads that feed it.

    Args:
        action_dim: the robot's target size (candidates must match); None: the first policy's.
        cameras: the robot's camera names (a candidate's cameras must be among them; a policy
            without names gets the frames in this order).
        period_s: the control period [s], for counting missed ticks.
        steps: flow (Euler) steps per prediction.
        replan_every: ticks between observations sent to the policy; None: half a chunk.
        min_fade: shortest cross-fade between chunks [ticks]; None: half a chunk.
        on_event: called with (kind, message) on loads, refusals, swaps, rollbacks and errors,
            from the thread where it happened.
        clock: monotonic time in seconds.
        max_checkpoint_bytes: a candidate checkpoint larger than this is refused unread.
    """

    def __init__(self, *, action_dim: int | None = None, cameras: Sequence[str] | None = None,
                 period_s: float = 1 / 30, steps: int = 10, replan_every: int | None = None,
                 min_fade: int | None = None, on_event: EventCallback | None = None,
                 clock: Callable[[], float] = time.monotonic, max_checkpoint_bytes: int = DEFAULT_MAX_BYTES):
        if period_s <= 0 or steps < 1 or (replan_every is not None and replan_every < 1):
            raise ValueError(f"expected period_s > 0, steps >= 1, replan_every >= 1; got {period_s}, "
                             f"{steps}, {replan_every}")
        self.action_dim, self.cameras = action_dim, tuple(cameras) if cameras is not None else None
        self.period_s, self.steps = float(period_s), int(steps)
        self._replan_every, self._min_fade = replan_every, min_fade
        self._on_event, self._clock = on_event, clock
        self.max_checkpoint_bytes = int(max_checkpoint_bytes)
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()  # one candidate loads at a time
        self.active: LoadedPolicy | None = None
        self.previous: LoadedPolicy | None = None
        self._ready: LoadRequest | None = None
        self._live_announced_s = -np.inf  # announcement time of the newest candidate made live
        self._blender: ChunkBlender | None = None
        self._images: Mapping[str, np.ndarray] | None = None
        self._state: np.ndarray | None = None
        self._enabled = False
        self._generation = 0  # bumped whenever the policy or the enable state changes
        self._want_chunk = True
        self._inflight = False
        self._request_tick = 0
        self._retry_s = 0.0  # after an inference error, ask again from then on
        self._closed = False
        self._worker: threading.Thread | None = None
        self.ticks = self.missed_ticks = self.chunks = 0
        self._last_tick_s: float | None = None
        self.intervals_s: collections.deque[float] = collections.deque(maxlen=100_000)
        self.inference_s: collections.deque[float] = collections.deque(maxlen=100_000)
        self.swaps: list[SwapRecord] = []
        self.last_refusal: str | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> PolicyRuntime:
        """Start the inference worker (once).

        Also shortens the interpreter's GIL switch interval to :data:`GIL_SWITCH_S` (process-wide):
        with the default 5 ms, the control thread waits up to 5 ms whenever the inference thread
        runs Python code, which is the whole tick jitter budget."""
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="policy-inference", daemon=True)
            self._worker.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker (after its current prediction)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout_s)

    # -- inputs -----------------------------------------------------------------------------
    def observe(self, images: Mapping[str, np.ndarray] | None = None,
                state: np.ndarray | None = None) -> None:
        """The latest camera frames (merged by name) and/or joint state."""
        with self._cond:
            if images is not None:
                self._images = {**(self._images or {}), **images}
            if state is not None:
                self._state = np.asarray(state, dtype=np.float32)
            self._cond.notify_all()

    def set_enabled(self, enabled: bool) -> None:
        """Enabled: targets flow, starting from the measured pose; disabled: :meth:`tick` gives None."""
        with self._cond:
            if bool(enabled) == self._enabled:
                return
            self._enabled = bool(enabled)
            self._new_generation()
            if self._blender is not None:
                self._blender.reset()  # the first chunk then fades in from the measured pose

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_policy(self, policy: Policy) -> None:
        """Make an in-memory policy live now (no verification: for tests and benchmarks)."""
        request = LoadRequest(Path("."), None, None, self._clock())
        request.loaded, request.ready_s = LoadedPolicy(policy), request.announced_s
        with self._cond:
            self._ready = request
            self._adopt(self._clock())

    # -- hot swap ---------------------------------------------------------------------------
    def load_candidate(self, folder: str | Path, expected_sha256: str | None = None,
                       root: str | Path | None = None, announced_s: float | None = None) -> LoadRequest:
        """Verify, load and dry-run ``folder`` on a background thread; the next tick after it is
        ready makes it live. Returns at once; ``request.wait()`` for the outcome."""
        request = LoadRequest(Path(folder), expected_sha256, Path(root) if root is not None else None,
                              self._clock() if announced_s is None else announced_s)
        with self._cond:
            request.missed_at_announce = self.missed_ticks
        threading.Thread(target=self._load, args=(request,), name="policy-loader", daemon=True).start()
        return request

    def _load(self, request: LoadRequest) -> None:
        with self._load_lock:
            try:
                checkpoint = read_checkpoint(request.folder, expected_sha256=request.expected_sha256,
                                             root=request.root, kind="policy",
                                             max_bytes=self.max_checkpoint_bytes, keep=FILES)
                manifest = checkpoint.manifest
                policy = Policy.load(checkpoint)
                self._check(policy)
                self._dry_run(policy)
            except Exception as error:  # whatever fails refuses the candidate, never the live policy
                reason = error if isinstance(error, ValueError | OSError) else repr(error)  # CheckpointError
                request.error = f"refused {request.folder}: {reason}"
                self.last_refusal = request.error
                request._done.set()
                self._event("refused", request.error)
                return
            request.loaded, request.ready_s = LoadedPolicy(policy, manifest), self._clock()
            with self._cond:
                newest = max(self._live_announced_s, self._ready.announced_s if self._ready else -np.inf)
                if request.announced_s < newest:
                    request.error = f"not used: {request.folder} was superseded by a newer announcement"
                else:
                    self._ready = request
            request._done.set()
            if request.error:
                self._event("superseded", request.error)
                return
            self._event("loaded", f"{request.folder} (sha256 {manifest.sha256[:12]}, step {manifest.step}) "
                                  "ready; live at the next control tick")

    def _check(self, policy: Policy) -> None:
        """A candidate must drive this robot: same action size, known cameras, state size."""
        cfg = policy.config
        if self.action_dim is not None and cfg.action_dim != self.action_dim:
            raise ValueError(f"action_dim {cfg.action_dim}, but the robot takes {self.action_dim} targets")
        if self._state is not None and self._state.shape != (cfg.state_dim,):
            raise ValueError(f"state_dim {cfg.state_dim}, but the robot's joint state has {self._state.size}")
        if self.cameras is not None:
            unknown = [c for c in policy.cameras or () if c not in self.cameras]
            if unknown or (policy.cameras is None and cfg.num_views != len(self.cameras)):
                raise ValueError(f"cameras {list(policy.cameras or [])} ({cfg.num_views} views) do not "
                                 f"fit the robot's {list(self.cameras)}")

    def _dry_run(self, policy: Policy) -> None:
        cfg = policy.config
        images = np.zeros((cfg.num_views, cfg.image_size, cfg.image_size, 3), np.uint8)
        state = self._state if self._state is not None else policy.state_stats.mean
        out = policy.predict(images, state, steps=self.steps)
        if out.shape != (cfg.horizon, cfg.action_dim) or not np.all(np.isfinite(out)):
            bad = "non-finite values" if out.shape == (cfg.horizon, cfg.action_dim) else f"shape {out.shape}"
            raise ValueError(f"dry run gave {bad}, expected finite ({cfg.horizon}, {cfg.action_dim})")

    def _adopt(self, now_s: float) -> None:
        """Make a ready candidate live (caller holds the lock, between two ticks)."""
        request, self._ready = self._ready, None
        self._live_announced_s = request.announced_s
        if self.active is not None:
            self.previous = self.active
        self.active = request.loaded
        action_dim = request.loaded.policy.config.action_dim
        if self._blender is None or self._blender.action_dim != action_dim:
            self.action_dim = action_dim
            self._blender = ChunkBlender(action_dim, self._fade())
        self._blender.min_fade = self._fade()
        self._new_generation()
        record = SwapRecord(self.active.sha256, request.announced_s, request.ready_s or now_s, now_s,
                            self.missed_ticks - request.missed_at_announce)
        self.swaps.append(record)
        self._event("swapped", f"policy {record.sha256[:12]} live {record.swap_ms:.1f} ms after its "
                               "announcement")

    def rollback(self) -> str:
        """Make the previous policy live again (it takes effect before the next tick); returns its
        sha256. Raises :class:`PolicySwapError` when there is none (one level of history)."""
        with self._cond:
            if self.previous is None:
                raise PolicySwapError("rollback: no previous policy to return to")
            dropped, self.active, self.previous = self.active, self.previous, None
            self._new_generation()
            sha = self.active.sha256
        self._event("rollback", f"rolled back from {dropped.sha256[:12]} to {sha[:12]}")
        return sha

    # -- control tick -----------------------------------------------------------------------
    def tick(self, now_s: float | None = None) -> np.ndarray | None:
        """One control tick: (n, A) float64 rows, this tick's target first and the planned ones
        after it; None while disabled, without a policy, or before its first chunk."""
        now = self._clock() if now_s is None else now_s
        with self._cond:
            self._count_tick(now)
            if self._ready is not None:
                self._adopt(now)
            if not self._enabled or self.active is None:
                return None
            target = self._blender.pop()
            if self._need_chunk():
                self._cond.notify_all()
            if target is None:
                return None
            return np.vstack([target[None], self._blender.plan])

    def _count_tick(self, now: float) -> None:
        self.ticks += 1
        if self._last_tick_s is not None:
            interval = now - self._last_tick_s
            self.intervals_s.append(interval)
            late = interval - self.period_s
            if late > self.period_s:  # late by more than one period: the ticks in between were missed
                self.missed_ticks += int(late // self.period_s)
        self._last_tick_s = now

    # -- inference worker -------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._need_chunk():
                    self._cond.wait(0.1)
                if self._closed:
                    return
                loaded, generation, asked_tick = self.active, self._generation, self.ticks
                images, state = dict(self._images), self._state
                self._inflight, self._want_chunk, self._request_tick = True, False, asked_tick
            started = self._clock()
            try:
                chunk = loaded.policy.predict(self._frames(loaded.policy, images), state, steps=self.steps)
            except Exception as error:  # reported; the worker must outlive any one bad prediction
                chunk = None
                self._event("error", f"inference failed: {type(error).__name__}: {error}")
            with self._cond:
                self._inflight = False
                if chunk is None:
                    self._retry_s, self._want_chunk = self._clock() + ERROR_RETRY_S, True
                    continue
                self.inference_s.append(self._clock() - started)
                if generation != self._generation:
                    continue  # swapped, rolled back or re-enabled meanwhile: ask the live policy
                skip = self.ticks - asked_tick
                if not len(self._blender) and self._blender.last is None:
                    skip = min(skip, len(chunk) - 1)  # the first chunk starts even when late
                    if state.shape == (self._blender.action_dim,):
                        self._blender.reset(start=state)  # fade in from the measured pose
                if self._blender.add(chunk, skip):
                    self.chunks += 1
                else:
                    self._want_chunk = True

    def _need_chunk(self) -> bool:
        if not self._enabled or self.active is None or self._inflight or self._state is None:
            return False
        if self._retry_s and self._clock() < self._retry_s:
            return False
        policy = self.active.policy
        names = policy.cameras or self.cameras
        if self._images is None or (names is not None and any(c not in self._images for c in names)):
            return False
        return self._want_chunk or self.ticks - self._request_tick >= self._replan()

    def _frames(self, policy: Policy, images: Mapping[str, np.ndarray]) -> Mapping | np.ndarray:
        if policy.cameras is not None:
            return images
        return np.stack([images[c] for c in (self.cameras or sorted(images))])

    def _replan(self) -> int:
        return self._replan_every or max(1, self.active.policy.config.horizon // 2)

    def _fade(self) -> int:
        return self._min_fade or max(1, self.active.policy.config.horizon // 2)

    def _new_generation(self) -> None:
        self._generation += 1
        self._want_chunk = True
        self._cond.notify_all()

    def _event(self, kind: str, message: str) -> None:
        if self._on_event is not None:
            self._on_event(kind, message)

    # -- reporting --------------------------------------------------------------------------
    def status(self) -> dict:
        """A JSON-ready summary: live and previous sha256, enabled, tick counts, last swap/refusal."""
        with self._cond:
            last_swap = self.swaps[-1] if self.swaps else None
            manifest = self.active.manifest if self.active else None
            inference = round(float(np.median(self.inference_s)) * 1e3, 2) if self.inference_s else None
            return {
                "active_sha256": self.active.sha256 if self.active else None,
                "active_path": str(manifest.folder) if manifest else None,
                "active_step": manifest.step if manifest else None,
                "previous_sha256": self.previous.sha256 if self.previous else None,
                "enabled": self._enabled,
                "ticks": self.ticks,
                "missed_ticks": self.missed_ticks,
                "chunks": self.chunks,
                "inference_ms_p50": inference,
                "swaps": len(self.swaps),
                "last_swap_ms": round(last_swap.swap_ms, 2) if last_swap else None,
                "last_swap_missed_ticks": last_swap.missed_ticks if last_swap else None,
                "last_refusal": self.last_refusal,
            }
