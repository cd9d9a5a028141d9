"""Pure-pursuit waypoint follower: route + pose + speed -> CARLA throttle / steer / brake.

A reference driver for tests and benchmarks, and an optional behaviour-cloning teacher. It only
uses what a ROS node also has (the waypoints Path and the odometry), in the same map frame
(x forward/east, y left, yaw CCW), so it can run on either side of the bridge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Control(NamedTuple):
    throttle: float  # [0, 1]
    steer: float  # [-1, 1], positive = RIGHT (CARLA)
    brake: float  # [0, 1]


@dataclass
class WaypointFollower:
    """Pure pursuit on the route's points plus a proportional speed loop.

    Defaults match SimConfig's defaults. `wheelbase` is the bicycle wheelbase that converts path
    curvature into a wheel angle (delta = atan(wheelbase * curvature)); highway-env's kinematic
    Vehicle (length 5 m, slip angle beta = atan(tan(delta) / 2), yaw rate v sin(beta) / 2.5) behaves
    like a 5 m wheelbase for small angles. The lookahead grows with speed, the classic way to keep
    pure pursuit from oscillating at a 0.2 s control period.
    """

    target_speed: float = 8.0  # [m/s]
    lookahead_time: float = 0.8  # [s]
    min_lookahead: float = 5.0  # [m]
    wheelbase: float = 5.0  # [m]
    max_steer_rad: float = math.pi / 4  # wheel angle at |steer| = 1 (SimConfig.max_steer_rad)
    speed_gain: float = 0.5  # throttle (or brake) per m/s of speed error

    def control(self, route: np.ndarray, pose: tuple[float, float, float], speed: float) -> Control:
        """route: (N, 2) map-frame points in driving order; pose: (x, y, yaw) in the map frame."""
        route = np.asarray(route, dtype=np.float64)
        if route.ndim != 2 or route.shape[0] == 0 or route.shape[1] != 2:
            return Control(0.0, 0.0, 1.0)  # nothing to follow: stop
        x, y, yaw = pose
        c, s = math.cos(yaw), math.sin(yaw)
        dx, dy = route[:, 0] - x, route[:, 1] - y
        fwd, left = c * dx + s * dy, -s * dx + c * dy  # vehicle frame
        dist = np.hypot(fwd, left)
        lookahead = max(self.min_lookahead, self.lookahead_time * max(speed, 0.0))
        # Search forward from the closest point, so a route that laps the circuit several times
        # (published once per episode) still yields the next target, not a point of a later lap.
        nearest = int(np.argmin(dist))
        beyond = np.nonzero(dist[nearest:] >= lookahead)[0]
        target = nearest + int(beyond[0]) if beyond.size else route.shape[0] - 1
        tx, ty = fwd[target], left[target]
        chord = max(math.hypot(tx, ty), 1e-6)
        curvature = 2.0 * ty / chord**2  # = 2 sin(alpha) / chord, positive = turn left
        delta = math.atan(self.wheelbase * curvature)
        # A left turn (positive curvature, yaw increasing) is a NEGATIVE CARLA steer.
        steer = float(np.clip(-delta / self.max_steer_rad, -1.0, 1.0))
        effort = self.speed_gain * (self.target_speed - speed)
        return Control(float(np.clip(effort, 0.0, 1.0)), steer, float(np.clip(-effort, 0.0, 1.0)))

    def control_state(self, route: np.ndarray, state) -> Control:
        """Convenience for a SimState (anything with x, y, yaw, speed)."""
        return self.control(route, (state.x, state.y, state.yaw), state.speed)
