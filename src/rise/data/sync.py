"""Match samples of several streams by capture stamp (pure Python, deterministic, bounded memory).

Example::

    sync = StreamSynchronizer("front", ["wrist", "joint_state"], tolerance_ns=10_000_000)
    for matched in sync.push("wrist", stamp_ns, rgb):     # any stream, any order
        write(matched.stamp_ns, matched.payloads)          # {"front": ..., "wrist": ..., ...}
    leftovers = sync.flush()                               # at the end of an episode

One stream is the *reference* (the control tick or a camera): each of its samples becomes one
:class:`MatchedSet` once every other stream has a sample within ``tolerance_ns`` of it (the
nearest one is taken), or is *dropped*. A reference sample is decided when

* every other stream has reached its stamp (a sample at or after it arrived): matched if all of
  them have a sample in the window, dropped otherwise;
* or some stream has moved past ``stamp + tolerance_ns`` without a sample in the window:
  dropped, counted against that stream;
* or it has waited ``max_wait_ns`` (measured on the newest stamp seen on any stream, so the
  result depends only on the samples, not on wall-clock time) or more than ``max_buffer``
  reference samples are pending: decided with what has arrived.

Decisions are made oldest first, so matched sets come out in stamp order. A sample is *late*
when it arrives after the window it belongs to was decided: a reference sample not newer than
the last decided one (discarded), or another stream's sample that arrives out of order into a
decided window, or into a window that was decided without waiting for it. Late samples that
can still serve an undecided reference sample are kept. Each stream buffers at most
``max_buffer`` samples (the oldest is evicted); size it to cover ``max_wait_ns`` at the stream's
rate. Not thread-safe: callers serialise calls.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from typing import Any

DEFAULT_MAX_WAIT_NS = 500_000_000


@dataclasses.dataclass(frozen=True)
class MatchedSet:
    """One reference sample and the nearest sample of every other stream."""

    stamp_ns: int  # the reference sample's capture stamp
    payloads: dict[str, Any]  # stream -> payload (the reference stream included)
    stamps_ns: dict[str, int]  # stream -> capture stamp of the sample used


@dataclasses.dataclass
class SyncCounters:
    """What happened to the samples pushed since the last reset."""

    matched: int = 0  # reference samples that became a MatchedSet
    dropped: int = 0  # reference samples given up (no match within tolerance)
    late: int = 0  # samples that arrived after their window was decided
    dropped_by_stream: dict[str, int] = dataclasses.field(default_factory=dict)  # who lacked a match
    late_by_stream: dict[str, int] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for episode metadata)."""
        return dataclasses.asdict(self)


class _Buffer:
    """Samples of one stream sorted by stamp, at most ``capacity`` of them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.stamps: list[int] = []
        self.payloads: list[Any] = []
        self.max_seen_ns: int | None = None  # newest stamp ever pushed (survives pruning)

    def insert(self, stamp_ns: int, payload: Any) -> None:
        at = bisect.bisect_right(self.stamps, stamp_ns)
        self.stamps.insert(at, stamp_ns)
        self.payloads.insert(at, payload)
        if len(self.stamps) > self.capacity:
            del self.stamps[0], self.payloads[0]
        if self.max_seen_ns is None or stamp_ns > self.max_seen_ns:
            self.max_seen_ns = stamp_ns

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> int | None:
        """Index of the sample nearest ``stamp_ns`` within tolerance (earlier wins a tie)."""
        at = bisect.bisect_left(self.stamps, stamp_ns)
        candidates = [i for i in (at - 1, at) if 0 <= i < len(self.stamps)]
        best = min(candidates, key=lambda i: abs(self.stamps[i] - stamp_ns), default=None)
        if best is None or abs(self.stamps[best] - stamp_ns) > tolerance_ns:
            return None
        return best

    def pop_front(self) -> tuple[int, Any]:
        return self.stamps.pop(0), self.payloads.pop(0)

    def prune_before(self, stamp_ns: int) -> None:
        cut = bisect.bisect_left(self.stamps, stamp_ns)
        del self.stamps[:cut], self.payloads[:cut]

    def clear(self) -> None:
        self.stamps.clear()
        self.payloads.clear()
        self.max_seen_ns = None


class StreamSynchronizer:
    """Matches every other stream's samples to the reference stream's samples by capture stamp."""

    def __init__(self, reference: str, others: Sequence[str], tolerance_ns: int, *,
                 max_wait_ns: int = DEFAULT_MAX_WAIT_NS, max_buffer: int = 32):
        if reference in others or len(set(others)) != len(others):
            raise ValueError(f"streams must be unique: reference {reference!r}, others {list(others)}")
        if tolerance_ns < 0 or max_wait_ns < 0 or max_buffer < 1:
            raise ValueError("tolerance_ns and max_wait_ns must be >= 0 and max_buffer >= 1")
        self.reference = reference
        self.others = tuple(others)
        self.tolerance_ns = int(tolerance_ns)
        self.max_wait_ns = int(max_wait_ns)
        self.max_buffer = int(max_buffer)
        self._pending = _Buffer(capacity=max_buffer + 1)  # overflow is decided, never evicted
        self._buffers = {name: _Buffer(capacity=max_buffer) for name in self.others}
        self.reset()

    @property
    def counters(self) -> SyncCounters:
        """A copy of the counters."""
        return dataclasses.replace(self._counters, dropped_by_stream=dict(self._counters.dropped_by_stream),
                                   late_by_stream=dict(self._counters.late_by_stream))

    @property
    def pending(self) -> int:
        """Reference samples not decided yet."""
        return len(self._pending.stamps)

    def reset(self) -> None:
        """Forget all samples, decisions and counters (e.g. at the start of an episode)."""
        self._pending.clear()
        for buffer in self._buffers.values():
            buffer.clear()
        self._latest_ns: int | None = None
        self._decided_ns: int | None = None  # stamp of the last decided reference sample
        self._forced_until_ns: dict[str, int] = {}  # stream -> end of the last window not waited for
        self._counters = SyncCounters(
            dropped_by_stream=dict.fromkeys(self.others, 0),
            late_by_stream=dict.fromkeys((self.reference, *self.others), 0),
        )

    def push(self, stream: str, stamp_ns: int, payload: Any = None) -> list[MatchedSet]:
        """Add a sample; returns the matched sets it completed (oldest first, often none)."""
        stamp_ns = int(stamp_ns)
        if stream == self.reference:
            self._push_reference(stamp_ns, payload)
        elif stream in self._buffers:
            self._push_other(stream, stamp_ns, payload)
        else:
            raise KeyError(f"unknown stream {stream!r}: expected one of {[self.reference, *self.others]}")
        if self._latest_ns is None or stamp_ns > self._latest_ns:
            self._latest_ns = stamp_ns
        return self._decide(force_all=False)

    def flush(self) -> list[MatchedSet]:
        """Decide every pending reference sample with what has arrived (end of a recording)."""
        return self._decide(force_all=True)

    # ------------------------------------------------------------ internals

    def _count_late(self, stream: str) -> None:
        self._counters.late += 1
        self._counters.late_by_stream[stream] += 1

    def _push_reference(self, stamp_ns: int, payload: Any) -> None:
        if self._decided_ns is not None and stamp_ns <= self._decided_ns:
            self._count_late(self.reference)
            return
        self._pending.insert(stamp_ns, payload)

    def _push_other(self, stream: str, stamp_ns: int, payload: Any) -> None:
        buffer = self._buffers[stream]
        out_of_order = buffer.max_seen_ns is not None and stamp_ns < buffer.max_seen_ns
        in_decided_window = self._decided_ns is not None and stamp_ns <= self._decided_ns + self.tolerance_ns
        forced_until_ns = self._forced_until_ns.get(stream)
        not_waited_for = forced_until_ns is not None and stamp_ns <= forced_until_ns
        if (out_of_order and in_decided_window) or not_waited_for:
            self._count_late(stream)
            if stamp_ns < self._decided_ns - self.tolerance_ns:
                return  # cannot serve any undecided reference sample
        buffer.insert(stamp_ns, payload)

    def _must_force(self, stamp_ns: int, force_all: bool) -> bool:
        waited_too_long = self._latest_ns is not None and self._latest_ns - stamp_ns > self.max_wait_ns
        return force_all or waited_too_long or len(self._pending.stamps) > self.max_buffer

    def _decide(self, force_all: bool) -> list[MatchedSet]:
        out: list[MatchedSet] = []
        while self._pending.stamps:
            stamp_ns = self._pending.stamps[0]
            forced = self._must_force(stamp_ns, force_all)
            matches, missing, waiting = self._look_up(stamp_ns, forced)
            if waiting and not missing:
                break
            _, payload = self._pending.pop_front()
            self._decided_ns = stamp_ns
            if forced:
                for name in self.others:
                    seen = self._buffers[name].max_seen_ns
                    if seen is None or seen < stamp_ns:
                        self._forced_until_ns[name] = stamp_ns + self.tolerance_ns
            if missing:
                self._counters.dropped += 1
                for name in missing:
                    self._counters.dropped_by_stream[name] += 1
            else:
                out.append(self._matched(stamp_ns, payload, matches))
            for buffer in self._buffers.values():
                buffer.prune_before(stamp_ns - self.tolerance_ns)
        return out

    def _look_up(self, stamp_ns: int, forced: bool) -> tuple[dict[str, int], list[str], bool]:
        """(index of the nearest sample per stream, streams without one, any stream still to wait for)."""
        matches: dict[str, int] = {}
        missing: list[str] = []
        waiting = False
        for name, buffer in self._buffers.items():
            index = buffer.nearest(stamp_ns, self.tolerance_ns)
            reached = buffer.max_seen_ns is not None and buffer.max_seen_ns >= stamp_ns
            if index is not None and (reached or forced):
                matches[name] = index
            elif reached or forced:
                missing.append(name)
            else:
                waiting = True
        return matches, missing, waiting

    def _matched(self, stamp_ns: int, payload: Any, matches: dict[str, int]) -> MatchedSet:
        self._counters.matched += 1
        payloads = {self.reference: payload}
        stamps = {self.reference: stamp_ns}
        for name, index in matches.items():
            buffer = self._buffers[name]
            payloads[name] = buffer.payloads[index]
            stamps[name] = buffer.stamps[index]
        return MatchedSet(stamp_ns=stamp_ns, payloads=payloads, stamps_ns=stamps)
