"""Poses in CARLA's frame, and their conversion to and from ROS (no carla, no rclpy here).

CARLA is left-handed (x forward, y RIGHT, z up; angles in degrees, yaw clockwise seen from
above); ROS REP 103 is right-handed (x forward, y LEFT, z up; radians, yaw counter-clockwise).
The CARLA ROS bridge converts with y -> -y, pitch -> -pitch, yaw -> -yaw (roll unchanged),
and so do we. Spawn and goal points given as text use the bridge's own `spawn_point`
parameter format: "x,y,z,roll,pitch,yaw" in the ROS map frame, metres and DEGREES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CarlaPose", "parse_pose", "quaternion_from_rpy"]


def quaternion_from_rpy(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of the static-axes x-y-z (roll, pitch, yaw) rotation, radians (ROS RPY)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
        cr * cp * cy + sr * sp * sy,
    )


@dataclass(frozen=True)
class CarlaPose:
    """A pose in CARLA's world frame: metres and degrees, as carla.Transform holds it."""

    x: float
    y: float
    z: float
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0

    def __post_init__(self) -> None:
        for name in ("x", "y", "z", "roll", "pitch", "yaw"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"pose {name} is not finite: {getattr(self, name)!r}")

    @classmethod
    def from_ros(cls, x: float, y: float, z: float, roll: float = 0.0, pitch: float = 0.0,
                 yaw: float = 0.0) -> CarlaPose:
        """From the ROS map frame (metres, DEGREES), as the bridge's spawn_point parameter."""
        return cls(x, -y, z, roll, -pitch, -yaw)

    @classmethod
    def from_transform(cls, transform) -> CarlaPose:
        """From a carla.Transform (or anything with .location.x.. and .rotation.roll..)."""
        loc, rot = transform.location, transform.rotation
        return cls(float(loc.x), float(loc.y), float(loc.z), float(rot.roll), float(rot.pitch),
                   float(rot.yaw))

    def to_transform(self, carla):
        """A carla.Transform; `carla` is the imported carla module."""
        return carla.Transform(
            carla.Location(x=self.x, y=self.y, z=self.z),
            carla.Rotation(pitch=self.pitch, yaw=self.yaw, roll=self.roll),
        )

    def ros_position(self) -> tuple[float, float, float]:
        return (self.x, -self.y, self.z)

    def ros_orientation(self) -> tuple[float, float, float, float]:
        """(x, y, z, w) quaternion in the ROS map frame."""
        return quaternion_from_rpy(math.radians(self.roll), -math.radians(self.pitch),
                                   -math.radians(self.yaw))

    def distance_xy(self, x: float, y: float) -> float:
        return math.hypot(self.x - x, self.y - y)

    def describe(self) -> str:
        """Short human text in the ROS frame (what a user sees in rviz / rqt)."""
        rx, ry, rz = self.ros_position()
        return f"x={rx:.1f} y={ry:.1f} z={rz:.1f} yaw={-self.yaw:.0f}deg"


def parse_pose(text: str) -> CarlaPose:
    """'x,y,z,roll,pitch,yaw' (ROS map frame, metres, degrees) -> CarlaPose; ValueError if not."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 6:
        raise ValueError(f"'{text}' is not 'x,y,z,roll,pitch,yaw' (6 numbers)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"'{text}' is not 'x,y,z,roll,pitch,yaw' (6 numbers)") from None
    return CarlaPose.from_ros(*values)
