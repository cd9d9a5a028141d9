"""Pedals -> physical targets: one test per field, the defaults and their sources, the inverse."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from av_td3_ros.vehicle import (
    FULL_BRAKE,
    Pedals,
    VehicleCommand,
    VehicleParameters,
    acceleration,
    curvature,
    pedals_from_targets,
    rate_of_change,
    sanitize_pedals,
    speed_target,
    steering_angle,
    to_vehicle_command,
)

MODEL3 = VehicleParameters()
CAR = VehicleParameters(max_steering_angle=0.5, max_acceleration=2.0, max_deceleration=6.0, max_speed=20.0,
                        wheelbase=2.5)


def test_defaults_are_carla_model3_as_the_bridge_and_carla_ackermann_control_see_it():
    assert MODEL3.max_steering_angle == pytest.approx(math.radians(70.0))  # 1.2217 rad
    assert MODEL3.max_acceleration == 3.0
    assert MODEL3.max_deceleration == 8.0
    assert MODEL3.max_speed == pytest.approx(180.0 / 3.6)
    assert MODEL3.wheelbase == 2.875


@pytest.mark.parametrize("field", ["max_steering_angle", "max_acceleration", "max_deceleration", "max_speed",
                                   "wheelbase"])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_every_parameter_must_be_finite_and_positive(field, bad):
    with pytest.raises(ValueError, match=field):
        VehicleParameters(**{field: bad})


def test_a_steering_limit_of_90_degrees_or_more_is_refused():
    with pytest.raises(ValueError, match="pi/2"):
        VehicleParameters(max_steering_angle=math.pi / 2)


def test_from_vehicle_info_takes_the_smallest_non_zero_wheel_angle_like_carla_ackermann_control():
    wheels = [SimpleNamespace(max_steer_angle=a) for a in (1.2217, 1.1, 0.0, 0.0)]  # rad, as the bridge sends
    params = VehicleParameters.from_vehicle_info(SimpleNamespace(wheels=wheels), max_speed=30.0)
    assert params.max_steering_angle == 1.1
    assert params.max_speed == 30.0
    # No usable wheel angle (a message before the bridge filled it, or garbage): the default stays.
    junk = [SimpleNamespace(max_steer_angle=v) for v in (0.0, math.nan, "x", 70.0)]  # 70: degrees by mistake
    assert VehicleParameters.from_vehicle_info(SimpleNamespace(wheels=junk)) == MODEL3


def test_for_embedded_simulator_reads_the_sim_cars_ranges():
    from av_td3_ros.sim.simulator import SimConfig

    config = SimConfig()
    params = VehicleParameters.for_embedded_simulator(config)
    assert params.max_steering_angle == config.max_steer_rad
    assert params.max_acceleration == config.max_accel
    assert params.max_deceleration == config.max_brake_decel
    assert params.max_speed == config.max_speed


# --- one test per field -----------------------------------------------------------------------------


def test_steering_angle_is_minus_steer_times_max_angle_positive_left():
    assert steering_angle(1.0, CAR) == -0.5  # CARLA full right -> -0.5 rad (REP-103: right is negative)
    assert steering_angle(-1.0, CAR) == 0.5  # full left -> +0.5 rad
    assert steering_angle(0.3, CAR) == pytest.approx(-0.15)
    assert steering_angle(0.0, CAR) == 0.0 and math.copysign(1.0, steering_angle(0.0, CAR)) == 1.0
    assert steering_angle(7.0, CAR) == -0.5  # clamped to the car's range
    assert steering_angle(math.nan, CAR) == 0.0


def test_acceleration_is_throttle_times_max_accel_minus_brake_times_max_decel():
    assert acceleration(1.0, 0.0, CAR) == 2.0
    assert acceleration(0.0, 1.0, CAR) == -6.0
    assert acceleration(0.5, 0.0, CAR) == 1.0
    assert acceleration(0.0, 0.25, CAR) == -1.5
    assert acceleration(0.5, 0.5, CAR) == 1.0 - 3.0  # both pressed: the formula, not a priority rule
    assert acceleration(0.0, 0.0, CAR) == 0.0  # coasting = keep speed
    assert acceleration(3.0, -2.0, CAR) == 2.0  # pedals clamped to [0, 1]
    assert acceleration(math.inf, 0.0, CAR) == -6.0  # non-finite -> full brake


def test_speed_is_the_current_speed_plus_acceleration_times_dt_clamped_to_0_and_max_speed():
    assert speed_target(10.0, 2.0, 0.2, CAR) == pytest.approx(10.4)
    assert speed_target(10.0, -6.0, 0.2, CAR) == pytest.approx(8.8)
    assert speed_target(10.0, 0.0, 0.2, CAR) == 10.0  # no pedal: keep the speed
    assert speed_target(0.5, -6.0, 0.2, CAR) == 0.0  # never a negative (reverse) target
    assert speed_target(19.9, 2.0, 0.2, CAR) == 20.0  # max_speed
    assert speed_target(math.nan, 2.0, 0.2, CAR) == 0.0  # unknown speed -> stop
    with pytest.raises(ValueError, match="dt"):
        speed_target(1.0, 1.0, 0.0, CAR)


def test_steering_rate_is_the_change_of_the_angle_per_second_since_the_previous_command():
    previous = to_vehicle_command(Pedals(0.0, 0.0, 0.0), 5.0, 0.1, CAR)
    command = to_vehicle_command(Pedals(-0.2, 0.0, 0.0), 5.0, 0.1, CAR, previous)  # a bit to the left
    assert command.steering_angle == pytest.approx(0.1)
    assert command.steering_rate == pytest.approx(1.0)  # (0.1 - 0) / 0.1 s, + = turning left
    assert previous.steering_rate == 0.0  # no previous command
    assert rate_of_change(1.0, None, 0.1) == 0.0


def test_jerk_is_the_change_of_the_acceleration_per_second_since_the_previous_command():
    previous = to_vehicle_command(Pedals(0.0, 1.0, 0.0), 5.0, 0.2, CAR)  # +2 m/s^2
    command = to_vehicle_command(Pedals(0.0, 0.0, 0.5), 5.0, 0.2, CAR, previous)  # -3 m/s^2
    assert command.jerk == pytest.approx((-3.0 - 2.0) / 0.2)
    assert previous.jerk == 0.0


def test_to_vehicle_command_puts_the_fields_together():
    command = to_vehicle_command(SimpleNamespace(steer=0.5, throttle=0.5, brake=0.0), 10.0, 0.2, CAR)
    assert command == VehicleCommand(steering_angle=-0.25, steering_rate=0.0, acceleration=1.0,
                                     speed=pytest.approx(10.2), jerk=0.0)


@pytest.mark.parametrize("bad", [SimpleNamespace(steer=math.nan, throttle=1.0, brake=0.0),
                                 SimpleNamespace(steer=0.0, throttle=math.inf, brake=0.0),
                                 SimpleNamespace(steer=0.0, throttle=1.0),  # no brake field
                                 SimpleNamespace(steer="left", throttle=1.0, brake=0.0),
                                 None])
def test_any_unusable_pedal_command_becomes_a_full_brake(bad):
    assert sanitize_pedals(bad) == FULL_BRAKE
    command = to_vehicle_command(bad, 10.0, 0.2, CAR)
    assert command.steering_angle == 0.0
    assert command.acceleration == -CAR.max_deceleration
    assert command.speed == pytest.approx(10.0 - 6.0 * 0.2)


def test_curvature_is_tan_of_the_angle_over_the_wheelbase():
    assert curvature(0.2, CAR) == pytest.approx(math.tan(0.2) / 2.5)
    assert curvature(-0.2, CAR) == -curvature(0.2, CAR)
    assert curvature(math.nan, CAR) == 0.0


# --- the inverse (for a simulator or converter that takes pedals) ----------------------------------------


def test_pedals_from_targets_inverts_each_formula():
    assert pedals_from_targets(0.25, 0.0, CAR) == Pedals(steer=-0.5, throttle=0.0, brake=0.0)  # left
    assert pedals_from_targets(-0.5, 1.0, CAR) == Pedals(steer=1.0, throttle=0.5, brake=0.0)
    assert pedals_from_targets(0.0, -3.0, CAR) == Pedals(steer=0.0, throttle=0.0, brake=0.5)
    assert pedals_from_targets(9.0, 99.0, CAR) == Pedals(steer=-1.0, throttle=1.0, brake=0.0)  # clamped
    assert pedals_from_targets(math.nan, 1.0, CAR) == FULL_BRAKE


@settings(max_examples=300, deadline=None)
@given(steer=st.floats(-1, 1), pedal=st.floats(-1, 1))
def test_pedals_survive_the_round_trip_through_physical_targets(steer, pedal):
    pedals = Pedals(steer, max(pedal, 0.0), max(-pedal, 0.0))  # how the policy's action becomes pedals
    command = to_vehicle_command(pedals, 5.0, 0.2, MODEL3)
    back = pedals_from_targets(command.steering_angle, command.acceleration, MODEL3)
    assert back.steer == pytest.approx(pedals.steer, abs=1e-12)
    assert back.throttle == pytest.approx(pedals.throttle, abs=1e-12)
    assert back.brake == pytest.approx(pedals.brake, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    steer=st.floats(allow_nan=True, allow_infinity=True),
    throttle=st.floats(allow_nan=True, allow_infinity=True),
    brake=st.floats(allow_nan=True, allow_infinity=True),
    speed=st.floats(allow_nan=True, allow_infinity=True),
)
def test_every_command_is_finite_and_within_the_cars_ranges_whatever_the_input(steer, throttle, brake, speed):
    pedals = SimpleNamespace(steer=steer, throttle=throttle, brake=brake)
    command = to_vehicle_command(pedals, speed, 0.05, CAR)
    assert all(math.isfinite(v) for v in dataclasses.astuple(command))
    assert abs(command.steering_angle) <= CAR.max_steering_angle
    assert -CAR.max_deceleration <= command.acceleration <= CAR.max_acceleration
    assert 0.0 <= command.speed <= CAR.max_speed
