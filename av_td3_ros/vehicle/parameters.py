"""VehicleParameters: what turning a pedal command into physical targets must know about the car.

Defaults are CARLA's Tesla Model 3 (`vehicle.tesla.model3`) as the CARLA ROS bridge and its
`carla_ackermann_control` see it (carla-simulator/ros-bridge):

- max_steering_angle = radians(70) = 1.2217 rad. CARLA keeps a wheel's `max_steer_angle` in
  DEGREES (`carla.WheelPhysicsControl`, default 70.0 in LibCarla `rpc/WheelPhysicsControl.h`);
  the bridge publishes it per wheel in RADIANS on `/carla/<role>/vehicle_info`
  (`CarlaEgoVehicleInfoWheel.max_steer_angle = math.radians(wheel.max_steer_angle)`,
  `ego_vehicle.py`), and `carla_ackermann_control` uses the smallest non-zero wheel angle, with
  radians(70) as its fallback (`carla_control_physics.get_vehicle_max_steering_angle`). The
  Model 3's front wheels are taken to keep CARLA's 70 degrees: the number lives in the car's
  Unreal asset, which no text source shows, so check it on a running server (`vehicle_info`;
  `from_vehicle_info` below reads it). It is a road-wheel angle and the physical meaning of
  `steer = +-1`: CARLA turns `steer` into a wheel angle as steer * max_steer_angle.
- max_acceleration 3.0 m/s^2, max_deceleration 8.0 m/s^2, max_speed 50 m/s (180 km/h):
  `carla_control_physics.get_vehicle_max_acceleration` ("0-100 km/h in 9.2 seconds"),
  `get_vehicle_max_deceleration` and `get_vehicle_max_speed`, the values
  `carla_ackermann_control` applies to every CARLA car.
- wheelbase 2.875 m: Tesla's published Model 3 wheelbase (2,875 mm). CARLA does not publish
  it: the bridge's vehicle_info has no wheel positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from av_td3_ros.config_schema import Settings, setting

__all__ = ["CARLA_DEFAULT_MAX_STEER_DEG", "VehicleParameters"]

CARLA_DEFAULT_MAX_STEER_DEG = 70.0


@dataclass(frozen=True)
class VehicleParameters(Settings):
    """The car behind the pedals. Angles in rad, speeds in m/s, accelerations in m/s^2 (magnitudes).
    The policy node's `vehicle.*` parameters derive from these settings."""

    max_steering_angle: float = setting(math.radians(CARLA_DEFAULT_MAX_STEER_DEG),
                                        "road-wheel angle at |steer| = 1 [rad] (CARLA: 70 deg)", gt=0.0,
                                        lt=1.57)
    max_acceleration: float = setting(3.0, "acceleration at full throttle [m/s^2]", gt=0.0, max=100.0)
    max_deceleration: float = setting(8.0, "deceleration at full brake [m/s^2, a magnitude]", gt=0.0,
                                      max=100.0)
    max_speed: float = setting(50.0, "the car's top speed [m/s]", gt=0.0, max=200.0)
    wheelbase: float = setting(2.875, "wheelbase [m] (Tesla Model 3)", gt=0.0, max=20.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{f.name} must be a number, got {type(value).__name__}")
            if not math.isfinite(value) or value <= 0.0:
                raise ValueError(f"{f.name} must be finite and > 0, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        if self.max_steering_angle >= math.pi / 2:
            raise ValueError(f"max_steering_angle must be < pi/2 rad, got {self.max_steering_angle!r}")
        super().__post_init__()  # the settings' ranges

    @classmethod
    def from_vehicle_info(cls, info, **overrides: float) -> VehicleParameters:
        """From a carla_msgs/CarlaEgoVehicleInfo (duck-typed: `.wheels[i].max_steer_angle` in rad).

        The steering limit is the smallest non-zero wheel angle, as carla_ackermann_control
        takes it; a message without a usable wheel angle keeps the default. The other fields
        are not in the message and come from `overrides` or the defaults."""
        angles = []
        for wheel in getattr(info, "wheels", ()) or ():
            angle = getattr(wheel, "max_steer_angle", 0.0)
            try:
                angle = float(angle)
            except (TypeError, ValueError):
                continue
            if math.isfinite(angle) and 0.0 < angle < math.pi / 2:
                angles.append(angle)
        base = cls(**overrides)
        if not angles or "max_steering_angle" in overrides:
            return base
        return replace(base, max_steering_angle=min(angles))

    @classmethod
    def for_embedded_simulator(cls, config, wheelbase: float = 2.875) -> VehicleParameters:
        """The embedded simulator's car (duck-typed `av_td3_ros.sim.SimConfig`): its steering range
        `max_steer_rad`, full-throttle `max_accel`, full-brake `max_brake_decel` and `max_speed`."""
        return cls(
            max_steering_angle=float(config.max_steer_rad),
            max_acceleration=float(config.max_accel),
            max_deceleration=float(config.max_brake_decel),
            max_speed=float(config.max_speed),
            wheelbase=wheelbase,
        )
