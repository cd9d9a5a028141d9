"""vehicle: pedal commands -> physical vehicle targets, and the deploy-mode command gate (no ROS).

    parameters  VehicleParameters (defaults: CARLA's Tesla Model 3)
    conversion  steer/throttle/brake -> steering angle, rate, acceleration, speed, jerk (and back)
    gate        CommandGate: limits, latched e-stop, heartbeat, stop ramp, limit counters
"""

from av_td3_ros.vehicle.conversion import (
    FULL_BRAKE,
    Pedals,
    VehicleCommand,
    acceleration,
    curvature,
    pedals_from_targets,
    rate_of_change,
    sanitize_pedals,
    speed_target,
    steering_angle,
    to_vehicle_command,
)
from av_td3_ros.vehicle.gate import COUNTERS, CommandGate, GateLimits, GateResult, gear_for
from av_td3_ros.vehicle.parameters import VehicleParameters

__all__ = [
    "COUNTERS",
    "FULL_BRAKE",
    "CommandGate",
    "GateLimits",
    "GateResult",
    "Pedals",
    "VehicleCommand",
    "VehicleParameters",
    "acceleration",
    "curvature",
    "gear_for",
    "pedals_from_targets",
    "rate_of_change",
    "sanitize_pedals",
    "speed_target",
    "steering_angle",
    "to_vehicle_command",
]
