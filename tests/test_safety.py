"""Safety filter: hand cases for every limit, and property tests over random command streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rise.config import load_robot
from rise.hardware.safety import CommandError, FilterResult, MeasurementError, SafetyFilter

ROBOT = load_robot("sim")
ARM = ROBOT.arm
RATE_HZ = ROBOT.control_rate_hz
NAMES = ARM.joint_names
HOME = np.array(ARM.home)
TICK_S = 1.0 / RATE_HZ
LOWER = np.array([j.lower for j in ARM.all_joints])
UPPER = np.array([j.upper for j in ARM.all_joints])
MAX_STEP = np.array([ARM.safety.velocity_scale * j.max_velocity / RATE_HZ for j in ARM.all_joints])


def joint(name: str) -> int:
    return NAMES.index(name)


def with_joint(base: np.ndarray, name: str, value: float) -> np.ndarray:
    out = base.copy()
    out[joint(name)] = value
    return out


def active_filter(now_s: float = 0.0) -> SafetyFilter:
    """A filter measured at home and activated by a command at home, one tick sent."""
    safety = SafetyFilter(ARM, RATE_HZ)
    safety.update_measured(HOME, now_s)
    assert not safety.command(HOME, now_s).held
    assert safety.tick(now_s).positions.tolist() == HOME.tolist()
    return safety


def test_limits_come_from_the_config():
    safety = SafetyFilter(ARM, RATE_HZ)
    assert safety.joint_names == NAMES
    np.testing.assert_allclose(safety.max_step, MAX_STEP)
    assert safety.max_step[joint("waist")] == pytest.approx(0.1)  # 3 rad/s at 30 Hz
    with pytest.raises(ValueError, match="control_rate_hz"):
        SafetyFilter(ARM, 0.0)


def test_clips_above_and_below_position_limits():
    safety = active_filter()
    target = with_joint(with_joint(HOME, "elbow", 2.5), "shoulder", -5.0)
    accepted = safety.command(target, 0.0)
    assert accepted.clipped and not accepted.held
    assert accepted.positions[joint("elbow")] == 2.1
    assert accepted.positions[joint("shoulder")] == -1.9
    assert "elbow: position 2.5 above limit 2.1" in accepted.reasons
    assert "shoulder: position -5 below limit -1.9" in accepted.reasons
    now_s = 0.0
    for _ in range(30):
        now_s += TICK_S
        safety.command(target, now_s)
        result = safety.tick(now_s)
        assert np.all(result.positions <= UPPER) and np.all(result.positions >= LOWER)
    assert result.positions[joint("elbow")] == pytest.approx(2.1)
    assert result.positions[joint("shoulder")] == pytest.approx(-1.9)
    assert result.clipped and any("above limit" in r for r in result.reasons)


def test_rate_limit_reaches_the_target_over_several_ticks():
    safety = active_filter()
    target = with_joint(HOME, "waist", 0.35)
    safety.command(target, 0.0)
    waists = []
    for k in range(1, 6):
        result = safety.tick(k * TICK_S)
        waists.append(result.positions[joint("waist")])
        assert not result.held
    assert waists == pytest.approx([0.1, 0.2, 0.3, 0.35, 0.35])
    first = SafetyFilter(ARM, RATE_HZ)
    first.update_measured(HOME, 0.0)
    first.tick(0.0)
    first.command(with_joint(HOME, "waist", 0.15), 0.0)
    limited = first.tick(TICK_S)
    assert limited.clipped and limited.reasons == ("waist: rate limited, 0.15 rad to target > 0.1 per tick",)
    assert not active_filter().tick(TICK_S).clipped


def test_gripper_rate_limit_is_in_metres():
    safety = active_filter()
    safety.command(with_joint(HOME, "gripper", 0.0), 0.0)
    result = safety.tick(TICK_S)
    assert result.positions[joint("gripper")] == pytest.approx(0.04 - 0.2 / 30)
    assert any(r.startswith("gripper: rate limited") and " m " in r for r in result.reasons)


def test_first_command_far_from_the_measured_pose_is_refused():
    safety = SafetyFilter(ARM, RATE_HZ)
    safety.update_measured(HOME, 0.0)
    far = with_joint(HOME, "shoulder", HOME[joint("shoulder")] + 0.8)
    refused = safety.command(far, 0.0)
    assert refused.held and not safety.active
    assert refused.reasons == ("first command 0.8 rad from measured pose on shoulder (tolerance 0.2)",)
    np.testing.assert_array_equal(refused.positions, HOME)
    held = safety.tick(TICK_S)
    assert held.held and held.positions.tolist() == HOME.tolist()
    near = with_joint(HOME, "shoulder", HOME[joint("shoulder")] + 0.15)
    assert not safety.command(near, TICK_S).held and safety.active
    moved = safety.tick(2 * TICK_S)
    assert moved.positions[joint("shoulder")] == pytest.approx(HOME[joint("shoulder")] + 0.1)


def test_first_command_needs_a_fresh_measured_pose():
    safety = SafetyFilter(ARM, RATE_HZ)
    nothing = safety.command(HOME, 0.0)
    assert nothing.held and not nothing.sent
    assert nothing.reasons[0] == "first command refused: no measured pose yet"
    empty = safety.tick(0.0)
    assert empty.held and not empty.sent and empty.positions.shape == (0,)
    safety.update_measured(HOME, 0.0)
    stale = safety.command(HOME, 2.0)
    assert stale.held and "measured pose is 2.00 s old" in stale.reasons[0]


def test_timeout_holds_and_requires_a_new_first_command():
    safety = active_filter()
    safety.command(with_joint(HOME, "waist", 1.0), 0.0)
    moving = safety.tick(TICK_S)
    held = safety.tick(0.6)
    assert held.held and held.reasons == ("command timeout (0.60 s)",) and not safety.active
    np.testing.assert_array_equal(held.positions, moving.positions)
    assert safety.tick(0.7).reasons == ("command timeout (0.60 s)",)
    safety.update_measured(moving.positions, 0.7)
    far = safety.command(with_joint(HOME, "waist", 1.0), 0.7)
    assert far.held and "from measured pose on waist" in far.reasons[0]
    assert not safety.command(moving.positions, 0.7).held
    assert not safety.tick(0.7 + TICK_S).held


def test_late_command_after_a_silent_gap_is_a_first_command():
    safety = active_filter()
    late = safety.command(with_joint(HOME, "waist", 1.0), 5.0)
    assert late.held and not safety.active


def test_estop_engages_within_one_tick_and_latches_until_released():
    safety = active_filter()
    safety.command(with_joint(HOME, "waist", 1.0), 0.0)
    last = safety.tick(TICK_S)
    safety.set_estop(True)
    assert safety.estopped and not safety.active
    for k in range(2, 40):  # commands keep coming, well past the timeout: still held
        now_s = k * TICK_S
        refused = safety.command(with_joint(HOME, "waist", 1.0), now_s)
        assert refused.held and refused.reasons == ("estop engaged",)
        result = safety.tick(now_s)
        assert result.held and result.reasons == ("estop engaged",)
        np.testing.assert_array_equal(result.positions, last.positions)
    safety.set_estop(False)
    assert not safety.estopped and not safety.active
    released = safety.tick(40 * TICK_S)
    assert released.held and released.reasons[0].startswith("inactive")
    safety.update_measured(last.positions, 40 * TICK_S)
    assert safety.command(with_joint(HOME, "waist", 1.0), 40 * TICK_S).held  # far: refused
    assert not safety.command(last.positions, 40 * TICK_S).held
    assert safety.active


def test_reset_makes_the_next_command_a_first_command():
    safety = active_filter()
    safety.reset()
    assert not safety.active
    assert safety.command(with_joint(HOME, "waist", 0.5), 0.0).held
    assert not safety.command(with_joint(HOME, "waist", 0.1), 0.0).held


def test_measured_pose_outside_the_limits_is_held_inside_them():
    safety = SafetyFilter(ARM, RATE_HZ)
    safety.update_measured(with_joint(HOME, "elbow", 2.15), 0.0)
    result = safety.tick(0.0)
    assert result.held and result.clipped and result.positions[joint("elbow")] == 2.1
    assert "holding measured pose inside limits: elbow: position 2.15 above limit 2.1" in result.reasons


def test_validate_maps_names_in_any_order():
    safety = SafetyFilter(ARM, RATE_HZ)
    order = list(reversed(NAMES))
    values = [float(i) / 10 for i in range(len(NAMES))]
    out = safety.validate(order, values)
    assert out.dtype == np.float64
    for name, value in zip(order, values, strict=True):
        assert out[joint(name)] == value


@pytest.mark.parametrize(("names", "positions", "message"), [
    ([*NAMES[:-1], "wrist_yaw"], list(HOME), "unknown joint 'wrist_yaw'"),
    (list(NAMES[:-1]), list(HOME[:-1]), "missing joints: gripper"),
    ([*NAMES[:-1], "waist"], list(HOME), "duplicate joint 'waist'"),
    (list(NAMES), list(HOME[:-1]), "got 7 joint names and 6 positions"),
    (list(NAMES), [*HOME[:-1], math.nan], "gripper: position nan is not finite"),
    (list(NAMES), [math.inf, *HOME[1:]], "waist: position inf is not finite"),
    (list(NAMES), ["0.1", *HOME[1:]], "waist: position '0.1' is not a number"),
    ([1, *NAMES[1:]], list(HOME), "unknown joint 1"),
    (list(NAMES), 3.0, "positions: expected a sequence"),
])
def test_validate_refuses_bad_commands(names, positions, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SafetyFilter(ARM, RATE_HZ).validate(names, positions)


def test_command_and_measurement_refuse_nan_and_wrong_shapes():
    safety = active_filter()
    with pytest.raises(CommandError, match="non-finite target position on elbow"):
        safety.command(with_joint(HOME, "elbow", math.nan), 0.0)
    with pytest.raises(CommandError, match="expected 7 target positions"):
        safety.command(HOME[:-1], 0.0)
    with pytest.raises(MeasurementError, match="non-finite measured position on waist"):
        safety.update_measured(with_joint(HOME, "waist", math.inf), 0.0)
    with pytest.raises(MeasurementError, match="expected 7 measured positions"):
        safety.update_measured(HOME[:3], 0.0)
    result = safety.tick(TICK_S)
    assert np.all(np.isfinite(result.positions)) and not result.held


def test_results_cannot_be_modified():
    result = active_filter().tick(TICK_S)
    assert isinstance(result, FilterResult)
    with pytest.raises(ValueError):
        result.positions[0] = 1.0


# --- properties ------------------------------------------------------------------------------

_unit = st.floats(-1.0, 1.0, allow_nan=False)
_KINDS = ["tick"] * 6 + ["near"] * 3 + ["measure"] * 2 + ["far", "estop", "release", "reset", "bad"]
_operation = st.tuples(
    st.sampled_from(_KINDS),
    st.lists(_unit, min_size=len(NAMES), max_size=len(NAMES)).map(np.array),
    st.one_of(st.just(TICK_S), st.floats(0.0, 0.1), st.floats(0.0, 0.7)),  # dt [s], mostly in time
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(0, len(NAMES) - 1),
)


def _scaled(unit: np.ndarray, margin: float) -> np.ndarray:
    """[-1, 1] per joint to anywhere from ``margin`` below the lower limit to as much above the upper."""
    return LOWER - margin + (unit + 1) / 2 * (UPPER - LOWER + 2 * margin)


def _run(safety: SafetyFilter, operation: tuple, now_s: float, measured: np.ndarray):
    """Apply one random operation; returns (now_s, measured, tick result or None)."""
    kind, unit, dt_s, bad_value, bad_joint = operation
    now_s += dt_s if kind in ("tick", "near", "far", "measure") else 0.0
    if kind == "tick":
        result = safety.tick(now_s)
        if result.sent:  # the arm follows: the next measurement is what was sent
            measured = np.array(result.positions)
            safety.update_measured(measured, now_s)
        return now_s, measured, result
    if kind == "measure":
        measured = _scaled(unit, margin=0.1)  # sometimes slightly outside the limits
        safety.update_measured(measured, now_s)
    elif kind in ("near", "far"):
        target = measured + unit * 0.15 if kind == "near" else _scaled(unit, margin=1.0)
        assert np.all(np.isfinite(safety.command(target, now_s).positions))
    elif kind in ("estop", "release"):
        safety.set_estop(kind == "estop")
    elif kind == "reset":
        safety.reset()
    else:
        with pytest.raises(CommandError):
            safety.command(with_joint(HOME, NAMES[bad_joint], bad_value), now_s)
    return now_s, measured, None


@settings(max_examples=200, deadline=None)
@given(operations=st.lists(_operation, min_size=5, max_size=80))
def test_tick_output_always_within_limits_rate_and_finite(operations):
    safety = SafetyFilter(ARM, RATE_HZ)
    measured, now_s, previous = HOME.copy(), 0.0, None
    safety.update_measured(measured, now_s)
    for operation in operations:
        now_s, measured, result = _run(safety, operation, now_s, measured)
        if result is None or not result.sent:
            continue
        out = result.positions
        assert out.shape == (len(NAMES),) and out.dtype == np.float64
        assert np.all(np.isfinite(out))
        assert np.all(out >= LOWER) and np.all(out <= UPPER)
        if previous is not None:
            assert np.all(np.abs(out - previous) <= MAX_STEP * (1 + 1e-9))
        if safety.estopped:
            assert result.held and "estop engaged" in result.reasons
        if result.held:
            assert result.reasons
        previous = out


_junk = st.one_of(
    st.floats(), st.integers(), st.text(max_size=3), st.none(), st.booleans(),
    st.lists(st.floats(), max_size=2), st.complex_numbers(),
)


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.one_of(st.sampled_from(NAMES), st.text(max_size=8), st.integers()),
                      max_size=9),
       positions=st.lists(st.one_of(st.floats(), _junk), max_size=9))
def test_validate_returns_finite_joint_order_or_raises_command_error(names, positions):
    try:
        out = SafetyFilter(ARM, RATE_HZ).validate(names, positions)
    except CommandError:
        return
    assert sorted(names) == sorted(NAMES)
    assert out.shape == (len(NAMES),) and np.all(np.isfinite(out))


@settings(max_examples=100, deadline=None)
@given(names=st.permutations(NAMES), positions=st.lists(
    st.floats(-10, 10, allow_nan=False), min_size=len(NAMES), max_size=len(NAMES)))
def test_validate_accepts_every_ordering(names, positions):
    out = SafetyFilter(ARM, RATE_HZ).validate(names, positions)
    for name, value in zip(names, positions, strict=True):
        assert out[joint(name)] == value
