"""The arm safety filter: the one place where joint commands are checked before they are sent.

Every command for the arm (teleop or policy) passes through :class:`SafetyFilter`, which enforces
per joint (in ``arm.joint_names`` order: arm joints, then the gripper):

- position limits ``[lower, upper]``: targets are clipped into them;
- a per-tick change limit ``safety.velocity_scale * max_velocity / control_rate_hz``: :meth:`tick`
  steps toward the latest target by at most this much per call;
- a start tolerance: the first command after activation, after an e-stop release, after a
  command timeout or after :meth:`SafetyFilter.reset` must lie within ``safety.start_tolerance``
  of the measured pose on every joint, or it is refused; the arm never jumps at activation;
- a command timeout: no command for ``safety.command_timeout_s`` holds the arm and deactivates;
- a latching e-stop: holds until released, and the release needs a fresh near-pose command.

Nothing is dropped silently: every call returns a :class:`FilterResult` with what is sent and why.
All times are seconds on one monotonic clock chosen by the caller (``now_s``).

Example (the arm bridge, once per control tick)::

    from rise.config import load_robot
    robot = load_robot("sim")
    safety = SafetyFilter(robot.arm, robot.control_rate_hz)
    safety.update_measured(joint_state_positions, now_s)          # on /joint_states
    target = safety.validate(msg.joint_names, msg.points[-1].positions)  # CommandError if bad
    safety.command(target, now_s)                                 # on a teleop / policy command
    result = safety.tick(now_s)                                   # timer at control_rate_hz
    if result.sent:
        publish(result.positions)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from rise.config.robot import ArmConfig


class CommandError(ValueError):
    """A command that cannot be interpreted (unknown, missing or duplicate joint, NaN, length)."""


class MeasurementError(ValueError):
    """A measured joint state that cannot be used (wrong length, NaN or infinite values)."""


@dataclasses.dataclass(frozen=True)
class FilterResult:
    """What the filter sends (or accepted as a target, for :meth:`SafetyFilter.command`) and why."""

    positions: np.ndarray
    """Joint positions in joint order (float64, read-only); empty when nothing can be sent yet."""
    held: bool
    """True when the output is a hold of the last sent (or measured) position."""
    clipped: bool
    """True when the target was changed by a position or per-tick limit."""
    reasons: tuple[str, ...] = ()
    """Human-readable reasons for holding or clipping, one per cause."""

    @property
    def sent(self) -> bool:
        """False only before any pose is known, when there is nothing to send."""
        return self.positions.size > 0


def _frozen(values: np.ndarray) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.flags.writeable = False
    return array


class SafetyFilter:
    """Position, per-tick change, start-tolerance, timeout and e-stop limits for one arm.

    Not thread-safe: call it from one thread (or under the caller's lock). :meth:`tick` is meant
    to be called once per control period (``1 / control_rate_hz``); its change limit is per call.
    """

    def __init__(self, arm: ArmConfig, control_rate_hz: float):
        if not (math.isfinite(control_rate_hz) and control_rate_hz > 0):
            raise ValueError(f"control_rate_hz: expected a finite value > 0, got {control_rate_hz}")
        joints = arm.all_joints
        self._names = arm.joint_names
        self._index = {name: i for i, name in enumerate(self._names)}
        self._units = tuple("rad" for _ in arm.joints) + ("m",)
        self._lower = _frozen([j.lower for j in joints])
        self._upper = _frozen([j.upper for j in joints])
        self._max_velocity = _frozen([j.max_velocity for j in joints])
        self._max_step = _frozen(arm.safety.velocity_scale * self._max_velocity / control_rate_hz)
        self._start_tolerance = arm.safety.start_tolerance
        self._timeout_s = arm.safety.command_timeout_s
        self._measured: np.ndarray | None = None
        self._measured_s = -math.inf
        self._sent: np.ndarray | None = None
        self._target: np.ndarray | None = None
        self._target_reasons: tuple[str, ...] = ()
        self._last_command_s: float | None = None
        self._active = False
        self._estopped = False
        self._timeout_reason = ""

    # --- properties ------------------------------------------------------------------------

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Joint order of every array in and out: arm joints, then the gripper."""
        return self._names

    @property
    def lower(self) -> np.ndarray:
        return self._lower

    @property
    def upper(self) -> np.ndarray:
        return self._upper

    @property
    def units(self) -> tuple[str, ...]:
        """Position unit per joint: ``rad`` for the arm joints, ``m`` for the gripper."""
        return self._units

    @property
    def max_velocity(self) -> np.ndarray:
        """Each joint's configured velocity limit [rad/s or m/s], before ``velocity_scale``."""
        return self._max_velocity

    @property
    def max_step(self) -> np.ndarray:
        """Largest change per tick, per joint [rad or m]."""
        return self._max_step

    @property
    def estopped(self) -> bool:
        """True from ``set_estop(True)`` until ``set_estop(False)``."""
        return self._estopped

    @property
    def active(self) -> bool:
        """True once a first command was accepted, until an e-stop, a timeout or a reset."""
        return self._active

    # --- inputs ----------------------------------------------------------------------------

    def update_measured(self, positions: np.ndarray, now_s: float) -> None:
        """Record the measured joint positions (joint order); raises MeasurementError if unusable."""
        values = np.asarray(positions, dtype=np.float64)
        if values.shape != (len(self._names),):
            raise MeasurementError(f"expected {len(self._names)} measured positions "
                                   f"({', '.join(self._names)}), got shape {values.shape}")
        bad = [self._names[i] for i in np.flatnonzero(~np.isfinite(values))]
        if bad:
            raise MeasurementError(f"non-finite measured position on {', '.join(bad)}")
        self._measured = _frozen(values)
        self._measured_s = now_s

    def validate(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
        """Map a named command to joint order; raises CommandError naming what is wrong.

        ``names`` may be in any order but must name every joint exactly once.
        """
        names = _as_list(names, "joint names")
        values = _as_list(positions, "positions")
        if len(names) != len(values):
            raise CommandError(f"got {len(names)} joint names and {len(values)} positions")
        out = np.full(len(self._names), np.nan)
        seen: set[str] = set()
        for name, value in zip(names, values, strict=True):
            if not isinstance(name, str) or name not in self._index:
                raise CommandError(f"unknown joint {name!r} (expected {', '.join(self._names)})")
            if name in seen:
                raise CommandError(f"duplicate joint {name!r}")
            seen.add(name)
            out[self._index[name]] = _finite_float(name, value)
        missing = [n for n in self._names if n not in seen]
        if missing:
            raise CommandError(f"missing joints: {', '.join(missing)}")
        return out

    def command(self, target: np.ndarray, now_s: float) -> FilterResult:
        """Take a new target (joint order) from the active source; nothing is sent until :meth:`tick`.

        Returns the target as accepted (clipped into the position limits), or, when refused
        (e-stop, no measured pose, first command too far from the measured pose), the hold
        position with ``held=True`` and the reasons. Raises CommandError for a wrong shape or
        non-finite values.
        """
        target = self._checked_target(target)
        if self._estopped:
            return self._hold(("estop engaged",))
        self._check_timeout(now_s)
        clipped_target, reasons = self._clip_to_limits(target)
        if not self._active:
            refusal = self._first_command_refusal(clipped_target, now_s)
            if refusal:
                return self._hold(refusal)
            self._active = True
            self._timeout_reason = ""
        self._target = _frozen(clipped_target)
        self._target_reasons = reasons
        self._last_command_s = now_s
        return FilterResult(self._target, held=False, clipped=bool(reasons), reasons=reasons)

    def tick(self, now_s: float) -> FilterResult:
        """Compute what to send this control tick: a step toward the target, or a hold."""
        if self._estopped:
            return self._send_hold(("estop engaged",))
        self._check_timeout(now_s)
        if not self._active or self._target is None:
            return self._send_hold((self._timeout_reason or "inactive: waiting for a first command "
                                    "near the measured pose",))
        return self._send_step()

    def set_estop(self, engaged: bool) -> None:
        """Engage (latching) or release the e-stop; a release needs a fresh near-pose command."""
        if engaged:
            self._deactivate()
        self._timeout_reason = ""
        self._estopped = bool(engaged)

    def reset(self) -> None:
        """Forget the target (e.g. on a source switch): the next command is a first command."""
        self._deactivate()
        self._timeout_reason = ""

    # --- internals -------------------------------------------------------------------------

    def _deactivate(self) -> None:
        self._active = False
        self._target = None
        self._target_reasons = ()

    def _check_timeout(self, now_s: float) -> None:
        """Deactivate (hold) when the active source sent nothing for ``command_timeout_s``."""
        if not self._active or self._last_command_s is None:
            return
        age_s = now_s - self._last_command_s
        if age_s > self._timeout_s:
            self._deactivate()
            self._timeout_reason = f"command timeout ({age_s:.2f} s)"

    def _checked_target(self, target: np.ndarray) -> np.ndarray:
        try:
            values = np.asarray(target, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise CommandError(f"target is not an array of numbers: {error}") from None
        if values.shape != (len(self._names),):
            raise CommandError(f"expected {len(self._names)} target positions, got shape {values.shape}")
        bad = [self._names[i] for i in np.flatnonzero(~np.isfinite(values))]
        if bad:
            raise CommandError(f"non-finite target position on {', '.join(bad)}")
        return values

    def _clip_to_limits(self, target: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        clipped = np.clip(target, self._lower, self._upper)
        reasons = []
        for i in np.flatnonzero(clipped != target):
            side, limit = ("above", self._upper[i]) if target[i] > self._upper[i] else \
                ("below", self._lower[i])
            reasons.append(f"{self._names[i]}: position {target[i]:.4g} {side} limit {limit:.4g}")
        return clipped, tuple(reasons)

    def _first_command_refusal(self, target: np.ndarray, now_s: float) -> tuple[str, ...]:
        """Reasons to refuse a first command (empty when it is acceptable)."""
        if self._measured is None:
            return ("first command refused: no measured pose yet",)
        age_s = now_s - self._measured_s
        if age_s > self._timeout_s:
            return (f"first command refused: measured pose is {age_s:.2f} s old "
                    f"(limit {self._timeout_s:g} s)",)
        distance = np.abs(target - self._measured)
        return tuple(
            f"first command {distance[i]:.3g} {self._units[i]} from measured pose on "
            f"{self._names[i]} (tolerance {self._start_tolerance:g})"
            for i in np.flatnonzero(distance > self._start_tolerance))

    def _hold_position(self) -> np.ndarray | None:
        """The last sent position, else the measured one clipped into the limits, else None."""
        if self._sent is not None:
            return self._sent
        if self._measured is not None:
            return _frozen(np.clip(self._measured, self._lower, self._upper))
        return None

    def _measured_clip_reasons(self) -> tuple[str, ...]:
        if self._sent is not None or self._measured is None:
            return ()
        _, reasons = self._clip_to_limits(self._measured)
        return tuple(f"holding measured pose inside limits: {r}" for r in reasons)

    def _hold(self, reasons: tuple[str, ...]) -> FilterResult:
        """A hold result without sending (for :meth:`command`)."""
        position = self._hold_position()
        if position is None:
            return FilterResult(_frozen(np.empty(0)), held=True, clipped=False,
                                reasons=(*reasons, "no measured pose yet: nothing to send"))
        return FilterResult(position, held=True, clipped=False, reasons=reasons)

    def _send_hold(self, reasons: tuple[str, ...]) -> FilterResult:
        """Send the hold position (records it as the last sent position)."""
        clip_reasons = self._measured_clip_reasons()
        result = self._hold(reasons)
        if result.sent:
            self._sent = result.positions
            result = dataclasses.replace(result, clipped=bool(clip_reasons),
                                         reasons=(*result.reasons, *clip_reasons))
        return result

    def _send_step(self) -> FilterResult:
        """Step from the last sent position toward the target within the per-tick limit."""
        start = self._hold_position()
        if start is None:  # unreachable: activation requires a measured pose
            return self._send_hold(("no measured pose yet",))
        delta = self._target - start
        step = np.clip(delta, -self._max_step, self._max_step)
        positions = _frozen(np.clip(start + step, self._lower, self._upper))
        reasons = list(self._target_reasons) + list(self._measured_clip_reasons())
        for i in np.flatnonzero(np.abs(delta) > self._max_step):
            reasons.append(f"{self._names[i]}: rate limited, {abs(delta[i]):.3g} {self._units[i]} "
                           f"to target > {self._max_step[i]:.3g} per tick")
        self._sent = positions
        return FilterResult(positions, held=False, clipped=bool(reasons), reasons=tuple(reasons))


def _as_list(values: Sequence, what: str) -> list:
    try:
        return list(values)
    except TypeError:
        raise CommandError(f"{what}: expected a sequence, got {type(values).__name__}") from None


def _finite_float(name: str, value: object) -> float:
    if isinstance(value, (str, bytes, bool, np.bool_)) or (isinstance(value, np.ndarray)
                                                          and value.ndim > 0):
        raise CommandError(f"{name}: position {value!r} is not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise CommandError(f"{name}: position {value!r} is not a number") from None
    if not math.isfinite(number):
        raise CommandError(f"{name}: position {number} is not finite")
    return number
