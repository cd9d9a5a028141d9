"""The ego vehicle's state as the driving core uses it (what nav_msgs/Odometry carries)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VehicleState"]


@dataclass(frozen=True)
class VehicleState:
    """Position (m, map frame), yaw (rad, CCW from x), speed = |twist.linear| (m/s, >= 0) and
    forward_speed = twist.linear.x (vehicle frame; negative when reversing)."""

    x: float
    y: float
    yaw: float
    speed: float
    forward_speed: float
    frame_id: str = "map"
