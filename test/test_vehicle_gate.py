"""CommandGate: limits that no input sequence breaks, a latched e-stop, heartbeat loss, the stop ramp."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from av_td3_ros.vehicle import COUNTERS, CommandGate, GateLimits, VehicleParameters, gear_for

LIMITS = GateLimits()
HEARTBEAT_LIMITS = GateLimits(heartbeat_timeout=0.3)
EPS = 1e-9


def _within(value: float, bound: float) -> bool:
    return abs(value) <= bound * (1.0 + EPS) + EPS


def drive(gate: CommandGate, t0: float, seconds: float, dt: float, angle: float, accel: float, speed: float,
          heartbeat: bool = False):
    """Call the gate every dt for `seconds`; returns [(time, GateResult)]."""
    out = []
    for i in range(1, int(round(seconds / dt)) + 1):
        t = t0 + i * dt
        if heartbeat:
            gate.heartbeat(t)
        out.append((t, gate.update(t, angle, accel, speed)))
    return out


# --- limits --------------------------------------------------------------------------------------------


def test_defaults_come_from_the_vehicle_and_autowares_gate_and_stop_operator():
    assert LIMITS.max_steering_angle == VehicleParameters().max_steering_angle
    assert (LIMITS.max_acceleration, LIMITS.max_deceleration) == (3.0, 8.0)
    assert (LIMITS.max_steering_rate, LIMITS.max_jerk, LIMITS.max_speed) == (1.0, 5.0, 25.0)
    assert (LIMITS.stop_deceleration, LIMITS.stop_jerk) == (2.5, 1.5)
    assert LIMITS.heartbeat_timeout == 0.0  # no heartbeat required unless configured


def test_limits_that_contradict_each_other_or_are_not_positive_are_refused():
    with pytest.raises(ValueError, match="stop_deceleration"):
        GateLimits(stop_deceleration=9.0)
    with pytest.raises(ValueError, match="stop_jerk"):
        GateLimits(max_jerk=1.0)
    with pytest.raises(ValueError, match="max_speed"):
        GateLimits(max_speed=0.0)
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        GateLimits(heartbeat_timeout=math.nan)


def test_for_vehicle_takes_the_cars_ranges_and_overrides():
    car = VehicleParameters(max_steering_angle=0.6, max_acceleration=2.0, max_deceleration=5.0,
                            max_speed=12.0)
    limits = GateLimits.for_vehicle(car, max_steering_rate=2.0)
    assert (limits.max_steering_angle, limits.max_acceleration, limits.max_deceleration) == (0.6, 2.0, 5.0)
    assert limits.max_speed == 12.0 and limits.max_steering_rate == 2.0


def test_the_first_call_outputs_straight_wheels_no_acceleration_and_the_measured_speed():
    result = CommandGate().update(0.0, 1.0, 3.0, 7.0)
    command = result.command
    assert (command.steering_angle, command.acceleration, command.speed) == (0.0, 0.0, 7.0)
    assert result.state == "driving"


def test_steering_angle_and_rate_are_limited_and_counted():
    gate = CommandGate(GateLimits(max_steering_angle=0.45, max_steering_rate=1.0))
    gate.update(0.0, 0.0, 0.0, 5.0)
    results = [r for _, r in drive(gate, 0.0, 1.0, 0.125, angle=3.0, accel=0.0, speed=5.0)]
    angles = [r.command.steering_angle for r in results]
    assert angles[:5] == [0.125, 0.25, 0.375, 0.45, 0.45]  # 1 rad/s, then the 0.45 rad limit
    assert results[0].command.steering_rate == 1.0
    assert results[3].command.steering_rate == pytest.approx(0.075 / 0.125)
    assert gate.counters["steering_angle"] == 8 and gate.counters["steering_rate"] == 3


def test_acceleration_and_jerk_are_limited_and_counted():
    gate = CommandGate(GateLimits(max_acceleration=2.0, max_jerk=5.0))
    gate.update(0.0, 0.0, 0.0, 5.0)
    results = [r for _, r in drive(gate, 0.0, 1.0, 0.125, angle=0.0, accel=50.0, speed=5.0)]
    assert [r.command.acceleration for r in results[:5]] == [0.625, 1.25, 1.875, 2.0, 2.0]
    assert results[0].command.jerk == 5.0
    assert results[0].command.speed == 5.0 + 0.625 * 0.125  # measured + a * dt
    assert gate.counters["acceleration"] == 8 and gate.counters["jerk"] == 3


def test_at_max_speed_the_speed_target_is_capped_and_the_acceleration_taken_to_zero():
    gate = CommandGate(GateLimits(max_speed=10.0))
    gate.update(0.0, 0.0, 0.0, 9.0)
    drive(gate, 0.0, 1.0, 0.1, angle=0.0, accel=3.0, speed=9.0)  # accelerating at +3
    results = [r for _, r in drive(gate, 1.0, 1.0, 0.1, angle=0.0, accel=3.0, speed=10.5)]  # measured above
    assert all(r.command.speed <= 10.0 for r in results)
    assert results[0].command.acceleration == pytest.approx(2.5)  # down at max_jerk, not in one step
    assert results[-1].command.acceleration == 0.0
    assert gate.counters["speed"] >= 10


def test_a_non_finite_command_brakes_and_is_counted():
    gate = CommandGate()
    gate.update(0.0, 0.2, 0.0, 5.0)
    result = gate.update(0.1, math.nan, 1.0, 5.0)
    assert result.command.acceleration == pytest.approx(-0.5)  # towards -max_deceleration at max_jerk
    assert result.command.steering_angle == 0.0  # kept (the first output was straight)
    assert "non_finite_command" in result.limited


def test_time_that_stands_still_or_goes_back_repeats_the_previous_output():
    gate = CommandGate()
    gate.update(0.0, 0.0, 0.0, 5.0)
    first = gate.update(1.0, 0.5, 1.0, 5.0).command
    assert gate.update(1.0, -0.5, -5.0, 5.0).command == first
    back = gate.update(0.5, -0.5, -5.0, 5.0)
    assert back.command == first and back.limited == ("time_backwards",)
    assert gate.update(math.nan, 0.5, 1.0, 5.0).command == first
    # After going back the gate counts from the new time: 0.1 s later it moves by one 0.1 s step.
    step = gate.update(0.6, -0.5, -5.0, 5.0).command
    assert step.steering_angle == pytest.approx(first.steering_angle - 0.1)
    assert gate.counters["time_backwards"] == 1 and gate.counters["non_finite_time"] == 1


def test_a_long_gap_between_updates_counts_as_max_step():
    gate = CommandGate(GateLimits(max_step=0.5))
    gate.update(0.0, 0.0, 0.0, 5.0)
    result = gate.update(1000.0, 1.0, 3.0, 5.0)
    assert result.command.steering_angle == pytest.approx(0.5)  # 1 rad/s * 0.5 s, not * 1000 s
    assert result.command.acceleration == pytest.approx(2.5)
    assert "step_capped" in result.limited


# --- e-stop, heartbeat, release ------------------------------------------------------------------------


def test_estop_is_latched_until_an_explicit_release_and_a_false_message_does_not_release():
    gate = CommandGate()
    drive(gate, 0.0, 1.0, 0.1, angle=0.1, accel=1.0, speed=5.0)
    gate.estop(True, 1.0)
    gate.estop(False, 1.05)  # the button is up again: still stopped
    gate.estop(True, 1.06)
    gate.estop(False, 1.07)
    results = [r for _, r in drive(gate, 1.0, 10.0, 0.1, angle=0.1, accel=1.0, speed=5.0)]
    assert all(r.state in ("stopping", "holding") and r.stop_reasons == ("estop",) for r in results)
    assert results[-1].state == "holding" and results[-1].command.speed == 0.0
    assert gate.counters["estop_engaged"] == 2

    gate.estop(True, 11.0)
    assert gate.release(11.0) == (False, "release refused: the e-stop input is still engaged")
    gate.estop(False, 11.1)
    ok, message = gate.release(11.1)
    assert ok and message == "released (estop)"
    after = [r for _, r in drive(gate, 11.0, 1.0, 0.1, angle=0.1, accel=1.0, speed=0.0)]
    assert after[0].state == "driving"
    # From the hold (acceleration -2.5) back to the policy's +1 at max_jerk, not in one step.
    assert after[0].command.acceleration == pytest.approx(-2.5 + 5.0 * 0.1)
    assert gate.counters["release_refused"] == 1 and gate.counters["released"] == 1


def test_the_car_waits_for_the_first_heartbeat_then_a_lost_heartbeat_latches_a_stop():
    gate = CommandGate(HEARTBEAT_LIMITS)  # timeout 0.3 s
    gate.update(0.0, 0.0, 1.0, 0.0)
    waiting = gate.update(0.125, 0.0, 1.0, 0.0)
    assert waiting.state == "holding" and waiting.stop_reasons == ("waiting_for_heartbeat",)
    driving = drive(gate, 0.125, 1.0, 0.125, angle=0.0, accel=1.0, speed=5.0, heartbeat=True)
    assert all(r.state == "driving" for _, r in driving)  # the first heartbeat armed it, no release needed

    silent = drive(gate, 1.125, 0.5, 0.125, angle=0.0, accel=1.0, speed=5.0)  # last heartbeat at 1.125
    assert [(t, r.state) for t, r in silent] == [(1.25, "driving"), (1.375, "driving"), (1.5, "stopping"),
                                                 (1.625, "stopping")]
    assert silent[2][1].stop_reasons == ("heartbeat_lost",)

    back = drive(gate, 1.625, 1.0, 0.125, angle=0.0, accel=1.0, speed=5.0, heartbeat=True)
    assert all(r.state != "driving" for _, r in back)  # a heartbeat that comes back does not release
    assert gate.release(2.625) == (True, "released (heartbeat_lost)")
    gate.heartbeat(2.75)
    assert gate.update(2.75, 0.0, 1.0, 5.0).state == "driving"
    assert gate.counters["heartbeat_lost"] == 1


def test_release_is_refused_without_a_live_heartbeat():
    gate = CommandGate(HEARTBEAT_LIMITS)
    gate.heartbeat(0.0)
    gate.update(0.0, 0.0, 0.0, 0.0)
    gate.estop(True, 0.1)
    gate.estop(False, 0.2)
    assert gate.release(5.0) == (False, "release refused: no live heartbeat")
    gate.heartbeat(5.0)
    assert gate.release(5.0)[0]


def test_a_clock_that_jumps_back_keeps_an_old_heartbeat_alive_for_at_most_one_timeout():
    gate = CommandGate(HEARTBEAT_LIMITS)
    gate.heartbeat(100.0)
    gate.update(100.0, 0.0, 0.0, 0.0)
    assert gate.update(50.0, 0.0, 0.0, 0.0).state == "driving"  # re-anchored: age 0 at t = 50
    assert gate.update(50.2, 0.0, 0.0, 0.0).state == "driving"
    assert gate.update(50.4, 0.0, 0.0, 0.0).stop_reasons == ("heartbeat_lost",)


# --- the stop ramp -------------------------------------------------------------------------------------


def test_the_default_ramp_reaches_minus_2_5_at_1_5_per_second_and_stops_from_10_m_s_in_about_4_8_s():
    gate = CommandGate()
    drive(gate, 0.0, 1.0, 0.05, angle=0.05, accel=0.0, speed=10.0)
    gate.estop(True, 1.0)
    ramp = drive(gate, 1.0, 8.0, 0.05, angle=0.05, accel=0.0, speed=10.0)
    accel = {round(t - 1.0, 2): r.command.acceleration for t, r in ramp}
    assert accel[1.0] == pytest.approx(-1.5)
    assert accel[2.0] == -2.5
    assert all(r.command.steering_angle == 0.05 for _, r in ramp)  # the wheels stay where they were
    stopped_at = next(t for t, r in ramp if r.command.speed == 0.0) - 1.0
    # Continuous profile: 10 - 0.75 t^2 until t = 5/3 s, then -2.5 m/s^2: 0 at 4.83 s.
    assert stopped_at == pytest.approx(5 / 3 + (10.0 - 0.75 * (5 / 3) ** 2) / 2.5, abs=0.15)
    assert all(r.state == "holding" and r.command.speed == 0.0 for t, r in ramp if t - 1.0 > stopped_at)


def test_a_car_under_throttle_cuts_it_at_max_jerk_before_the_ramp():
    gate = CommandGate()
    drive(gate, 0.0, 2.0, 0.1, angle=0.0, accel=3.0, speed=10.0)
    gate.estop(True, 2.0)
    ramp = [r.command.acceleration for _, r in drive(gate, 2.0, 2.0, 0.1, angle=0.0, accel=3.0, speed=10.0)]
    assert ramp[:7] == pytest.approx([2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.15])  # 5 m/s^3, then 1.5 m/s^3


# --- fuzzing -------------------------------------------------------------------------------------------

_numbers = st.one_of(
    st.floats(-2.0, 2.0),
    st.floats(-1e6, 1e6),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, -0.0]),
)
_time_steps = st.one_of(
    st.floats(0.0, 0.3),
    st.floats(-50.0, 0.0),  # the clock goes back
    st.floats(0.3, 1e6),  # long gaps
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
_events = st.one_of(
    st.tuples(st.just("update"), _time_steps, _numbers, _numbers, _numbers),
    st.tuples(st.just("estop"), st.booleans()),
    st.tuples(st.just("heartbeat"), _time_steps),
    st.tuples(st.just("release")),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_events, max_size=120), limits=st.sampled_from([LIMITS, HEARTBEAT_LIMITS]))
def test_no_input_sequence_makes_the_output_exceed_a_limit_or_a_rate_limit(events, limits):
    gate = CommandGate(limits)
    t = 0.0
    previous = None  # (output, time of the update that produced it, or None)
    anchor = None  # the gate's time base as the module doc defines it
    heartbeat_at = None
    estop_latched = False
    for event in events:
        kind = event[0]
        if kind == "estop":
            gate.estop(event[1], t)
            estop_latched = estop_latched or event[1]
            continue
        if kind == "heartbeat":
            stamp = t + event[1]
            gate.heartbeat(stamp)
            if math.isfinite(stamp):
                heartbeat_at = stamp
            continue
        if kind == "release":
            ok, _ = gate.release(t)
            assert not (ok and gate.estop_input), "released while the e-stop is pressed"
            if ok:
                estop_latched = False
            continue
        _, step, angle, accel, speed = event
        now = t + step
        result = gate.update(now, angle, accel, speed)
        command = result.command
        assert all(math.isfinite(v) for v in dataclasses.astuple(command)), command
        assert _within(command.steering_angle, limits.max_steering_angle)
        assert -limits.max_deceleration <= command.acceleration <= limits.max_acceleration
        assert 0.0 <= command.speed <= limits.max_speed
        assert _within(command.steering_rate, limits.max_steering_rate)
        assert _within(command.jerk, limits.max_jerk)
        if previous is not None:
            if not math.isfinite(now) or anchor is None or now <= anchor:
                assert command == previous, "a call without a later time must repeat the output"
            else:
                dt = min(now - anchor, limits.max_step)
                steering_step = command.steering_angle - previous.steering_angle
                assert _within(steering_step, limits.max_steering_rate * dt)
                assert _within(command.acceleration - previous.acceleration, limits.max_jerk * dt)
        if estop_latched:
            assert result.state != "driving" and "estop" in result.stop_reasons
        if math.isfinite(now):
            if heartbeat_at is not None and heartbeat_at > now:
                heartbeat_at = now
            if limits.heartbeat_timeout > 0 and result.state == "driving":
                assert heartbeat_at is not None and now - heartbeat_at <= limits.heartbeat_timeout
            anchor = now  # every finite call re-anchors the time base (earlier, later or equal)
            t = now
        previous = command


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.lists(st.tuples(st.floats(0.01, 0.3), _numbers, _numbers, st.floats(0.0, 30.0)), min_size=1,
                    max_size=40),
    after=st.lists(st.tuples(st.floats(0.01, 0.3), _numbers, _numbers, _numbers), min_size=1, max_size=20),
    cause=st.sampled_from(["estop", "heartbeat"]),
)
def test_estop_and_heartbeat_loss_bring_the_commanded_speed_to_zero_along_the_bounded_ramp(
    prefix, after, cause
):
    limits = HEARTBEAT_LIMITS
    gate = CommandGate(limits)
    t = 0.0
    gate.heartbeat(t)
    gate.update(t, 0.0, 0.0, 10.0)
    for dt, angle, accel, speed in prefix:  # the policy drives, whatever it asks for
        t += dt
        gate.heartbeat(t)
        assert gate.update(t, angle, accel, speed).state == "driving"
    if cause == "estop":
        gate.estop(True, t)
    last = gate.update(t, 0.0, 0.0, 0.0).command  # same time: the last driving output again
    trigger, stop_bound, settle = None, math.inf, math.inf
    outputs = []
    steps = itertools.cycle(after)  # the policy keeps asking for anything while the car stops
    while trigger is None or t < trigger[0] + max(stop_bound, settle) + 1.0:
        dt, angle, accel, speed = next(steps)
        t += dt
        result = gate.update(t, angle, accel, speed)
        if result.state == "driving":
            assert cause == "heartbeat" and trigger is None  # still within the heartbeat timeout
            last = result.command
            continue
        if trigger is None:
            trigger = (t - dt, last)
            # Throttle cut (a0 / max_jerk), the ramp to -stop_deceleration, then braking at
            # stop_deceleration; + one step of discretization per phase.
            a0 = max(last.acceleration, 0.0)
            stop_bound = (a0 / limits.max_jerk + limits.stop_deceleration / limits.stop_jerk
                          + last.speed / limits.stop_deceleration + 3 * 0.3 + 0.1)
            # A car braking harder than the ramp eases to it.
            settle = (-last.acceleration - limits.stop_deceleration) / limits.stop_jerk + 0.4
        outputs.append((t, result.command, result.state))
    t0, start = trigger
    prev, prev_t = start, t0
    for now, command, state in outputs:
        dt = now - prev_t
        assert command.steering_angle == start.steering_angle
        assert command.acceleration >= min(start.acceleration, -limits.stop_deceleration) - EPS
        if prev.acceleration <= 0.0:
            assert _within(command.acceleration - prev.acceleration, limits.stop_jerk * dt)
            assert command.acceleration <= 0.0
        else:
            assert command.acceleration < prev.acceleration or command.acceleration == 0.0
        assert command.speed <= prev.speed  # never a higher speed target during a stop
        if prev.speed == 0.0:
            assert command.speed == 0.0 and state == "holding"  # then hold
        if now - t0 > stop_bound:
            assert command.speed == 0.0, f"moving {now - t0:.2f} s into the stop (bound {stop_bound:.2f} s)"
        prev, prev_t = command, now
    assert outputs[-1][1].acceleration == pytest.approx(-limits.stop_deceleration)


def test_every_counter_is_reported():
    assert set(CommandGate().counters) == set(COUNTERS)


def test_park_only_while_holding_and_the_car_has_stopped():
    assert gear_for("holding", 0.05) == "park"
    assert gear_for("holding", 0.5) == "drive"  # commanded 0, still rolling
    assert gear_for("stopping", 0.0) == "drive"
    assert gear_for("driving", 0.0) == "drive"  # standing in traffic is not parking
    assert gear_for("holding", math.nan) == "drive"
