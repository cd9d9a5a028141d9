"""The CARLA ROS bridge's messages, built from the embedded simulator's SimState.

What the bridge publishes, and so what sim_node publishes (the policy node cannot tell them apart):
- every header is stamped with the world's simulation time and `frame_id` "map", except the
  camera ("<role>/rgb_front") and the events (the role name), as the bridge's sensors do;
- CarlaStatus (carla_msgs 1.3.0) has no header: frame number, fixed_delta_seconds, sync flags;
- Odometry: pose in the map frame, twist in the VEHICLE frame (x forward, y left), child frame
  the role name;
- Path: the route ahead, one pose per waypoint, each oriented along the route;
- CarlaCollisionEvent: the other actor's id; highway-env has no contact impulse, so
  `normal_impulse` is zero (the policy counts events, it never reads the impulse);
- CarlaLaneInvasionEvent: the crossed markings as LANE_MARKING_* values.
"""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from carla_msgs.msg import CarlaCollisionEvent, CarlaLaneInvasionEvent, CarlaStatus
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rosgraph_msgs.msg import Clock

from av_td3_ros.ros.conversions import array_to_image

__all__ = [
    "MAP_FRAME",
    "clock_message",
    "collision_message",
    "float_seconds_stamp",
    "image_message",
    "lane_invasion_message",
    "odometry_message",
    "route_message",
    "stamp_of",
    "status_message",
]

MAP_FRAME = "map"


def stamp_of(frame: int, fixed_delta_seconds: float) -> Time:
    """The stamp of world frame `frame`, computed in integer nanoseconds so that two messages of
    one frame carry bit-identical stamps (the policy node compares them exactly)."""
    ns = int(frame) * int(round(fixed_delta_seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def float_seconds_stamp(seconds: float) -> Time:
    """A stamp the way the bridge makes one from CARLA's float seconds (ros_compatibility's
    `ros_timestamp(sec, from_sec=True)`): the fraction truncated to nanoseconds, so two clocks of
    one tick computed differently (sensor timestamp, world snapshot) can differ by 1 ns."""
    whole = int(seconds)
    nanosec = min(max(int((seconds - whole) * 1e9), 0), 999_999_999)
    return Time(sec=whole, nanosec=nanosec)


def _yaw_quaternion(msg_orientation, yaw: float) -> None:
    msg_orientation.x = 0.0
    msg_orientation.y = 0.0
    msg_orientation.z = math.sin(yaw / 2.0)
    msg_orientation.w = math.cos(yaw / 2.0)


def clock_message(stamp: Time) -> Clock:
    return Clock(clock=stamp)


def status_message(frame: int, fixed_delta_seconds: float) -> CarlaStatus:
    """The world's status; carla_msgs 1.3.0's CarlaStatus has no header (the frame number is its
    only time reference)."""
    return CarlaStatus(frame=int(frame), fixed_delta_seconds=float(fixed_delta_seconds),
                       synchronous_mode=True, synchronous_mode_running=True)


def image_message(state, stamp: Time, role_name: str):
    return array_to_image(state.image, "bgra8", stamp, f"{role_name}/rgb_front")


def odometry_message(state, stamp: Time, role_name: str) -> Odometry:
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = MAP_FRAME
    msg.child_frame_id = role_name
    msg.pose.pose.position.x = float(state.x)
    msg.pose.pose.position.y = float(state.y)
    _yaw_quaternion(msg.pose.pose.orientation, float(state.yaw))
    msg.twist.twist.linear.x = float(state.vx)
    msg.twist.twist.linear.y = float(state.vy)
    msg.twist.twist.angular.z = float(state.yaw_rate)
    return msg


def route_message(points: np.ndarray, stamp: Time) -> Path:
    """(N, 2) map-frame waypoints -> Path; each pose faces the next waypoint (the last one keeps
    the previous heading)."""
    points = np.asarray(points, dtype=np.float64)
    msg = Path()
    msg.header.stamp = stamp
    msg.header.frame_id = MAP_FRAME
    headings = np.arctan2(np.diff(points[:, 1]), np.diff(points[:, 0]))
    headings = np.append(headings, headings[-1] if headings.size else 0.0)
    for (x, y), yaw in zip(points, headings, strict=True):
        pose = PoseStamped()
        pose.header = msg.header
        pose.pose.position.x = float(x)
        pose.pose.position.y = float(y)
        _yaw_quaternion(pose.pose.orientation, float(yaw))
        msg.poses.append(pose)
    return msg


def collision_message(state, stamp: Time, role_name: str) -> CarlaCollisionEvent:
    msg = CarlaCollisionEvent(other_actor_id=int(state.collision_actor_id))
    msg.header.stamp = stamp
    msg.header.frame_id = role_name
    return msg


def lane_invasion_message(state, stamp: Time, role_name: str) -> CarlaLaneInvasionEvent:
    msg = CarlaLaneInvasionEvent(crossed_lane_markings=[int(m) for m in state.crossed_markings])
    msg.header.stamp = stamp
    msg.header.frame_id = role_name
    return msg
