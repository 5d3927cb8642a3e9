"""Recorder core: synchronised camera / joint-state / command samples in, dataset episodes out.

Example (the simulator feeding it directly; the ROS recorder node does the same from its
subscriptions)::

    recorder = Recorder(writer, tolerance_ns=5_000_000)          # reference: the first camera
    recorder.start_episode("pick up the cube")
    recorder.on_sample("command", t_ns, action)                  # what was sent to the arm
    recorder.on_sample("joint_state", t_ns, positions)           # (J,) joint positions
    recorder.on_sample("front", t_ns, rgb)                       # (H, W, 3) uint8 per camera
    report = recorder.stop_episode(success=True)                 # EpisodeReport

Each :class:`~rise.data.sync.MatchedSet` (a reference sample with a camera frame of every camera
and a joint state within tolerance) becomes one dataset frame; its action is the command that
answered it: the first command stamped within one period after the frame (else the latest
earlier one; the state itself before the first command). Frames wait for that decision. Sync counts
(matched, dropped, late, per stream) are stored in the episode's ``rise_metadata`` under
``"sync"``, with ``"gaps"``: per camera / joint-state stream, every stretch longer than ``gap_ns``
(default 0.5 s) without a sample (an unplugged camera, a stalled driver), still open at the end
or not: ``{"front": [{"start_ns", "end_ns", "seconds"}]}``. Samples outside an episode are
ignored. The dataset's ``timestamp`` column is ``frame_index / fps`` (LeRobot's contract with the
videos); the real capture stamps are kept in the ``*.capture_ns`` columns, so a dropped reference
sample shows there as a gap.

No threads and no ROS: callers serialise calls (one thread, or a lock around every call).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from rise.data.sync import DEFAULT_MAX_WAIT_NS, MatchedSet, StreamSynchronizer
from rise.data.writer import DatasetWriteError, DatasetWriter

STATE_STREAM = "joint_state"
COMMAND_STREAM = "command"
DEFAULT_GAP_NS = 500_000_000  # a stream silent for longer than this is a gap in the episode's metadata
_MAX_COMMANDS = 1024  # command history kept for look-ups (newest win)


class EmptyEpisodeError(ValueError):
    """The episode ended without a single matched frame; it was discarded."""


@dataclasses.dataclass(frozen=True)
class EpisodeReport:
    """What one recorded episode came to."""

    episode_index: int  # index in the dataset
    frames: int  # frames written
    dropped: int  # reference samples without a match in every stream
    late: int  # samples that arrived after their window was decided
    duration_s: float  # capture time from the first to the last frame written [s]
    dropped_by_stream: dict[str, int]  # stream that lacked a match -> count
    late_by_stream: dict[str, int]  # stream -> late samples


class Recorder:
    """Feeds a :class:`DatasetWriter` from timestamped samples of named streams.

    Streams: one per camera of the writer's spec (payload: RGB uint8 (H, W, 3)), ``state_stream``
    (payload: (J,) joint positions), ``command_stream`` (payload: (J,) command sent; not
    synchronised, looked up by stamp) and, if ``reference`` names none of these, a tick stream
    whose payload is ignored. ``reference`` defaults to the first camera (or the state stream
    without cameras). ``tolerance_ns``, ``max_wait_ns`` and ``max_buffer`` go to the
    :class:`~rise.data.sync.StreamSynchronizer`.
    """

    def __init__(self, writer: DatasetWriter, *, tolerance_ns: int, reference: str | None = None,
                 max_wait_ns: int = DEFAULT_MAX_WAIT_NS, max_buffer: int = 32,
                 state_stream: str = STATE_STREAM, command_stream: str = COMMAND_STREAM,
                 gap_ns: int = DEFAULT_GAP_NS):
        self._writer = writer
        self._cameras = writer.spec.camera_names
        self._state_stream = state_stream
        self._command_stream = command_stream
        synced = (*self._cameras, state_stream)
        reference = reference if reference is not None else synced[0]
        if reference == command_stream or len(set(synced)) != len(synced) or command_stream in synced:
            raise ValueError(f"streams must be distinct and the reference cannot be the command stream: "
                             f"cameras {list(self._cameras)}, state {state_stream!r}, "
                             f"command {command_stream!r}, reference {reference!r}")
        others = [name for name in synced if name != reference]
        self._sync = StreamSynchronizer(reference, others, tolerance_ns, max_wait_ns=max_wait_ns,
                                        max_buffer=max_buffer)
        self._command_stamps: list[int] = []
        self._commands: list[np.ndarray] = []
        self._period_ns = int(round(1e9 / writer.spec.fps))
        self._pending: list[MatchedSet] = []  # matched, waiting for the command that answered them
        self._newest_ns = -1
        self._frames = 0
        self._first_ns: int | None = None
        self._last_ns: int | None = None
        self._active = False
        self._gap_ns = int(gap_ns)
        self._last_seen: dict[str, int] = {}  # stream -> newest stamp in this episode
        self._gaps: dict[str, list[tuple[int, int]]] = {}

    @property
    def writer(self) -> DatasetWriter:
        """The dataset writer episodes go to."""
        return self._writer

    @property
    def recording(self) -> bool:
        """True between :meth:`start_episode` and :meth:`stop_episode` / :meth:`discard_episode`."""
        return self._active

    @property
    def streams(self) -> tuple[str, ...]:
        """Every stream name :meth:`on_sample` accepts (reference first)."""
        return (self._sync.reference, *self._sync.others, self._command_stream)

    def start_episode(self, task: str) -> None:
        """Start a new episode of ``task``; earlier samples and counts are forgotten."""
        self._writer.start_episode(task)
        self._sync.reset()
        self._command_stamps.clear()
        self._commands.clear()
        self._pending.clear()
        self._newest_ns = -1
        self._frames = 0
        self._first_ns = self._last_ns = None
        self._last_seen, self._gaps = {}, {}
        self._active = True

    def on_sample(self, stream: str, stamp_ns: int, payload: Any = None) -> int:
        """Add one sample (capture stamp in ns); returns how many frames it completed."""
        if stream not in self.streams:
            raise KeyError(f"unknown stream {stream!r}: expected one of {list(self.streams)}")
        if not self._active:
            return 0
        self._newest_ns = max(self._newest_ns, int(stamp_ns))
        if stream == self._command_stream:
            self._add_command(int(stamp_ns), payload)
            return self._write([])
        self._note_arrival(stream, int(stamp_ns))
        return self._write(self._sync.push(stream, stamp_ns, payload))

    def stop_episode(self, success: bool, metadata: Mapping[str, Any] | None = None) -> EpisodeReport:
        """Write what can still be matched, commit the episode and report on it.

        ``metadata`` (JSON-serialisable) is stored with the episode; the key ``"sync"`` is set
        by the recorder. Raises :class:`EmptyEpisodeError` (episode discarded) without frames.
        """
        self._require_active()
        self._write(self._sync.flush(), final=True)
        counters = self._sync.counters
        if self._frames == 0:
            self.discard_episode()
            raise EmptyEpisodeError(f"no frame matched in the episode ({counters.dropped} dropped, "
                                    f"{counters.late} late); it was discarded")
        sync_info = {**counters.as_dict(), "reference": self._sync.reference,
                     "tolerance_ns": self._sync.tolerance_ns, "gaps": self.gaps()}
        try:
            index = self._writer.end_episode(success, {**(metadata or {}), "sync": sync_info})
        finally:
            self._active = self._writer.recording
        return EpisodeReport(
            episode_index=index, frames=self._frames, dropped=counters.dropped, late=counters.late,
            duration_s=(self._last_ns - self._first_ns) / 1e9,
            dropped_by_stream=counters.dropped_by_stream, late_by_stream=counters.late_by_stream,
        )

    def gaps(self) -> dict[str, list[dict[str, float]]]:
        """Silences longer than ``gap_ns`` per stream in this episode, including one still open."""
        report = {}
        for stream, last in self._last_seen.items():
            gaps = list(self._gaps.get(stream, []))
            if self._newest_ns - last > self._gap_ns:
                gaps.append((last, self._newest_ns))
            if gaps:
                report[stream] = [{"start_ns": a, "end_ns": b, "seconds": round((b - a) / 1e9, 3)}
                                  for a, b in gaps]
        return report

    def discard_episode(self) -> None:
        """Drop the episode being recorded (does nothing when none is)."""
        self._active = False
        self._pending.clear()
        self._writer.discard_episode()

    # ------------------------------------------------------------ internals

    def _require_active(self) -> None:
        if not self._active:
            raise RuntimeError("no episode is being recorded; call start_episode first")

    def _note_arrival(self, stream: str, stamp_ns: int) -> None:
        last = self._last_seen.get(stream)
        if last is not None and stamp_ns - last > self._gap_ns:
            self._gaps.setdefault(stream, []).append((last, stamp_ns))
        if last is None or stamp_ns > last:
            self._last_seen[stream] = stamp_ns

    def _add_command(self, stamp_ns: int, action: Any) -> None:
        at = bisect.bisect_right(self._command_stamps, stamp_ns)
        self._command_stamps.insert(at, stamp_ns)
        self._commands.insert(at, np.asarray(action, dtype=np.float32))
        if len(self._commands) > _MAX_COMMANDS:
            del self._command_stamps[0], self._commands[0]

    def _action_for(self, stamp_ns: int, state: np.ndarray, final: bool) -> np.ndarray | None:
        """The command that answered the frame at ``stamp_ns``, or None while that is not known yet.

        That is the first command stamped in ``[stamp, stamp + one period)`` — a policy or teleop
        command computed from this frame comes right after it, and LeRobot pairs each observation
        with the action taken after it. Without one, the latest earlier command (the arm is still
        following it), or the state itself before any command. Undecided until a later command
        or sample shows the window has passed (or ``final``, at the end of the episode).
        """
        after = bisect.bisect_left(self._command_stamps, stamp_ns)
        if after < len(self._command_stamps):
            if self._command_stamps[after] < stamp_ns + self._period_ns:
                return self._commands[after]
        elif not final and self._newest_ns < stamp_ns + self._period_ns:
            return None
        return self._commands[after - 1] if after > 0 else state

    def _forget_commands_before(self, stamp_ns: int) -> None:
        keep = max(bisect.bisect_left(self._command_stamps, stamp_ns) - 1, 0)
        del self._command_stamps[:keep], self._commands[:keep]

    def _write(self, matched: list[MatchedSet], final: bool = False) -> int:
        """Queue matched sets; write those whose action is decided. Returns frames written."""
        self._pending.extend(matched)
        written = 0
        while self._pending:
            sample = self._pending[0]
            state = np.asarray(sample.payloads[self._state_stream], dtype=np.float32)
            action = self._action_for(sample.stamp_ns, state, final)
            if action is None:
                break
            self._pending.pop(0)
            try:
                self._writer.add_frame(
                    state=state, action=action,
                    images={name: sample.payloads[name] for name in self._cameras},
                    state_capture_ns=sample.stamps_ns[self._state_stream],
                    image_capture_ns={name: sample.stamps_ns[name] for name in self._cameras},
                )
            except DatasetWriteError:
                self._active = False
                self._pending.clear()
                raise
            self._forget_commands_before(sample.stamp_ns)
            self._frames += 1
            written += 1
            self._first_ns = sample.stamp_ns if self._first_ns is None else self._first_ns
            self._last_ns = sample.stamp_ns
        return written
