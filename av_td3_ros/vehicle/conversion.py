"""Pedals -> physical targets, and back: the arithmetic behind the Ackermann and Autoware outputs.

The policy speaks CARLA's pedals: `steer` in [-1, 1] with steer > 0 turning RIGHT (CARLA's
left-handed frame), `throttle` and `brake` in [0, 1]. Vehicle stacks speak physics in REP-103
conventions: a road-wheel steering angle in rad, POSITIVE = LEFT (ackermann_msgs, Autoware's
`steering_tire_angle`), speeds in m/s, accelerations in m/s^2. Every field, exactly:

    steering_angle [rad]    = -steer * max_steering_angle
    acceleration   [m/s^2]  = throttle * max_acceleration - brake * max_deceleration
    speed          [m/s]    = clamp(current_speed + acceleration * dt, 0, max_speed)
    steering_rate  [rad/s]  = (steering_angle - previous.steering_angle) / dt   (0 without a previous)
    jerk           [m/s^3]  = (acceleration - previous.acceleration) / dt       (0 without a previous)

`dt` is the control period (the time until the next command). The speed is a target one control
period ahead, so a speed-tracking controller (carla_ackermann_control, Autoware's longitudinal
controller) and an acceleration-following one agree: throttle 0 / brake 0 means "keep the
current speed". The acceleration is a linear pedal model: CARLA's real throttle gives a torque
that falls with speed, so at speed the same throttle accelerates less than this says.

Pedals first pass `sanitize_pedals`: ranges clamped, and any non-finite or missing value gives a
full brake (steer 0, throttle 0, brake 1), like `ros.conversions.clamp_control` for the CARLA
output. A non-finite current speed gives a speed target of 0. No function here raises for bad
pedal or speed input; a non-positive or non-finite `dt` is a configuration error (ValueError).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from av_td3_ros.vehicle.parameters import VehicleParameters

__all__ = [
    "FULL_BRAKE",
    "Pedals",
    "VehicleCommand",
    "acceleration",
    "curvature",
    "pedals_from_targets",
    "rate_of_change",
    "sanitize_pedals",
    "speed_target",
    "steering_angle",
    "to_vehicle_command",
]


@dataclass(frozen=True)
class Pedals:
    """CARLA's control: steer in [-1, 1] (> 0 = right), throttle and brake in [0, 1]."""

    steer: float
    throttle: float
    brake: float


FULL_BRAKE = Pedals(steer=0.0, throttle=0.0, brake=1.0)


@dataclass(frozen=True)
class VehicleCommand:
    """Physical targets in REP-103 conventions (what the Ackermann/Autoware adapters publish).

    steering_angle [rad] road-wheel angle, + = left; steering_rate [rad/s] signed change of it
    per second; acceleration [m/s^2] signed (< 0 brakes); speed [m/s] >= 0, the target one
    control period ahead; jerk [m/s^3] signed change of the acceleration per second."""

    steering_angle: float
    steering_rate: float
    acceleration: float
    speed: float
    jerk: float


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _check_dt(dt: float) -> float:
    value = _finite(dt)
    if value is None or value <= 0.0:
        raise ValueError(f"dt must be a finite number of seconds > 0, got {dt!r}")
    return value


def sanitize_pedals(command) -> Pedals:
    """Anything with .steer .throttle .brake -> Pedals in range; non-finite or missing -> FULL_BRAKE."""
    values = tuple(_finite(getattr(command, name, None)) for name in ("steer", "throttle", "brake"))
    if any(v is None for v in values):
        return FULL_BRAKE
    steer, throttle, brake = values
    return Pedals(_clip(steer, -1.0, 1.0), _clip(throttle, 0.0, 1.0), _clip(brake, 0.0, 1.0))


def steering_angle(steer: float, params: VehicleParameters) -> float:
    """-steer * max_steering_angle [rad, + left]; steer clamped to [-1, 1]; non-finite -> 0."""
    value = _finite(steer)
    if value is None:
        return 0.0
    # Negated: CARLA's steer > 0 turns right, a REP-103 angle > 0 turns left. 0.0 - x keeps -0.0 out.
    return 0.0 - _clip(value, -1.0, 1.0) * params.max_steering_angle


def acceleration(throttle: float, brake: float, params: VehicleParameters) -> float:
    """throttle * max_acceleration - brake * max_deceleration [m/s^2]; pedals clamped to [0, 1];
    a non-finite pedal -> -max_deceleration (full brake)."""
    t, b = _finite(throttle), _finite(brake)
    if t is None or b is None:
        return -params.max_deceleration
    return _clip(t, 0.0, 1.0) * params.max_acceleration - _clip(b, 0.0, 1.0) * params.max_deceleration


def speed_target(current_speed: float, accel: float, dt: float, params: VehicleParameters) -> float:
    """clamp(current_speed + accel * dt, 0, max_speed) [m/s]; a non-finite speed or
    acceleration -> 0 (stop)."""
    dt = _check_dt(dt)
    v, a = _finite(current_speed), _finite(accel)
    if v is None or a is None:
        return 0.0
    return _clip(v + a * dt, 0.0, params.max_speed)


def rate_of_change(value: float, previous: float | None, dt: float) -> float:
    """(value - previous) / dt; 0 without a previous value or when either is non-finite."""
    dt = _check_dt(dt)
    v, p = _finite(value), _finite(previous) if previous is not None else None
    if v is None or p is None:
        return 0.0
    return (v - p) / dt


def to_vehicle_command(
    command,
    current_speed: float,
    dt: float,
    params: VehicleParameters,
    previous: VehicleCommand | None = None,
) -> VehicleCommand:
    """Pedals (duck-typed .steer .throttle .brake) + measured speed -> VehicleCommand (module doc).

    `previous` is the command sent one period earlier (for steering_rate and jerk). No limits
    beyond the car's own ranges: in deploy mode the CommandGate produces the command instead."""
    dt = _check_dt(dt)
    pedals = sanitize_pedals(command)
    angle = steering_angle(pedals.steer, params)
    accel = acceleration(pedals.throttle, pedals.brake, params)
    return VehicleCommand(
        steering_angle=angle,
        steering_rate=rate_of_change(angle, None if previous is None else previous.steering_angle, dt),
        acceleration=accel,
        speed=speed_target(current_speed, accel, dt, params),
        jerk=rate_of_change(accel, None if previous is None else previous.acceleration, dt),
    )


def pedals_from_targets(steering_angle_rad: float, accel: float, params: VehicleParameters) -> Pedals:
    """The inverse for a simulator that takes pedals (sim_node, a converter node): physical
    targets -> CARLA pedals.

        steer    = clamp(-steering_angle / max_steering_angle, -1, 1)
        throttle = clamp(acceleration / max_acceleration, 0, 1)    if acceleration > 0, else 0
        brake    = clamp(-acceleration / max_deceleration, 0, 1)   if acceleration < 0, else 0

    `to_vehicle_command` followed by this gives back the sanitized pedals (up to rounding) when
    throttle and brake are not both pressed. Non-finite targets -> FULL_BRAKE."""
    angle, a = _finite(steering_angle_rad), _finite(accel)
    if angle is None or a is None:
        return FULL_BRAKE
    steer = 0.0 - _clip(angle / params.max_steering_angle, -1.0, 1.0)
    throttle = _clip(a / params.max_acceleration, 0.0, 1.0) if a > 0.0 else 0.0
    brake = _clip(-a / params.max_deceleration, 0.0, 1.0) if a < 0.0 else 0.0
    return Pedals(steer, throttle, brake)


def curvature(steering_angle_rad: float, params: VehicleParameters) -> float:
    """Kinematic bicycle path curvature tan(steering_angle) / wheelbase [1/m, + left]; yaw rate
    at speed v is v * curvature [rad/s]. Non-finite -> 0."""
    angle = _finite(steering_angle_rad)
    if angle is None:
        return 0.0
    return math.tan(_clip(angle, -params.max_steering_angle, params.max_steering_angle)) / params.wheelbase
