"""Pose + speed + route -> the 23 kinematic inputs of the policy, and the car's place on the route.

Pure numpy. Frames (docs/CONTRACTS.md): map coordinates in metres, yaw counter-clockwise from
the map x axis (ROS); the vehicle frame has x forward and y LEFT, so a positive angle or y means
"to the left".

The vector (float32, 3 + 2 * num_waypoints = 23 values):
    [speed (m/s), distance to the next waypoint (m), angle to the next waypoint (rad, > 0 left),
     x0, y0, x1, y1, ..., x9, y9]  the next 10 route points in the vehicle frame (m).

"Next waypoint" is the first route point AHEAD of the car along the route: the end of the
route segment the car is on. The car is placed on the route by projecting it onto the nearest
segment, searched only from the current segment forward within `search_ahead` metres of arc
length. So the progress index never moves backwards, and a route that passes close to itself
(a loop, a figure of eight, a lap that ends where it started) never snaps back to an earlier
part of the route.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from av_td3_ros.config_schema import Settings, setting

__all__ = ["InvalidInput", "KinematicsEncoder", "Route", "RoutePosition", "locate_on_route", "wrap_angle"]


class InvalidInput(ValueError):
    """Input that cannot give a meaningful result (non-finite pose, malformed route, ...)."""


def wrap_angle(angle: float) -> float:
    """Angle in [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def finite_number(name: str, value: float) -> float:
    """float(value), or InvalidInput naming `name` for a non-number or a non-finite value."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise InvalidInput(f"{name} must be finite, got {value!r}")
    return value


class Route:
    """A polyline of (x, y) map points, in driving order, read-only.

    Rejects fewer than 2 points, non-finite coordinates and consecutive points closer than
    `min_segment_length` (a zero-length segment has no direction: heading and lateral offset
    would be undefined). Use `Route.deduplicated()` for raw paths that may repeat a point.
    A point may reappear later (a closed lap ends where it started): only consecutive
    duplicates are an error.
    """

    def __init__(self, points, min_segment_length: float = 1e-3) -> None:
        try:
            array = np.array(points, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"route points must be numbers: {error}") from None
        if array.ndim != 2 or array.shape[1] != 2:
            raise InvalidInput(f"route must be an (N, 2) array of (x, y) points, got shape {array.shape}")
        if array.shape[0] < 2:
            raise InvalidInput(f"route needs at least 2 points, got {array.shape[0]}")
        if not np.isfinite(array).all():
            bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
            raise InvalidInput(f"route point {bad} is not finite: {array[bad].tolist()}")
        with np.errstate(over="ignore", invalid="ignore"):
            vectors = np.diff(array, axis=0)
            lengths = np.hypot(vectors[:, 0], vectors[:, 1])
            too_long = not (np.isfinite(lengths * lengths).all() and np.isfinite(lengths.sum()))
        if too_long:
            # Finite points can still be too far apart to measure (segment vectors or squared
            # lengths overflow): the projections would be NaN (found by fuzzing, test_hardening.py).
            raise InvalidInput(f"route points too far apart: segment length overflow ({lengths.max():.3g} m)")
        if lengths.min() < min_segment_length:
            bad = int(np.argmin(lengths))
            raise InvalidInput(
                f"route points {bad} and {bad + 1} are duplicates ({lengths[bad]:.3g} m apart, minimum "
                f"{min_segment_length} m): use Route.deduplicated() to drop repeated points"
            )
        array.setflags(write=False)
        self.points = array
        self.segment_vectors = vectors  # (N - 1, 2) from point i to point i + 1
        self.segment_lengths = lengths
        self.segment_lengths_squared = lengths * lengths
        self.segment_headings = np.arctan2(vectors[:, 1], vectors[:, 0])
        self.cumulative_length = np.concatenate([[0.0], np.cumsum(lengths)])  # arc length at each point
        for derived in (vectors, lengths, self.segment_lengths_squared, self.segment_headings,
                        self.cumulative_length):
            derived.setflags(write=False)

    @classmethod
    def deduplicated(cls, points, min_spacing: float = 0.01) -> Route:
        """A route from raw points with every point closer than `min_spacing` to the previously
        KEPT point dropped (paths from planners can repeat a point at lane transitions)."""
        try:
            array = np.array(points, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"route points must be numbers: {error}") from None
        if array.ndim != 2 or array.shape[1] != 2:
            raise InvalidInput(f"route must be an (N, 2) array of (x, y) points, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise InvalidInput("route has non-finite points")
        kept = []
        for point in array:
            if not kept or math.hypot(*(point - kept[-1])) >= min_spacing:
                kept.append(point)
        return cls(np.array(kept).reshape(-1, 2), min_segment_length=min(min_spacing, 1e-3))

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_segments(self) -> int:
        return len(self) - 1

    @property
    def length(self) -> float:
        """Total arc length (m)."""
        return float(self.cumulative_length[-1])


@dataclass(frozen=True)
class RoutePosition:
    """Where the car is relative to the route (the closest point of the searched segments).

    segment: index i of the closest segment (points[i] -> points[i + 1]).
    fraction: position of the closest point along it, 0..1.
    lateral_offset: signed distance from the route (m), > 0 when the car is LEFT of the route
        (its magnitude is the distance to the route polyline).
    heading_error: car yaw minus the segment's heading, wrapped to [-pi, pi); > 0 when the car
        points to the left of the route direction.
    distance_along: arc length from the route start to the closest point (m).
    """

    segment: int
    fraction: float
    lateral_offset: float
    heading_error: float
    distance_along: float


def _project(route: Route, x: float, y: float, first: int, stop: int) -> tuple[int, float, float]:
    """Closest point on segments first..stop-1: (segment, fraction, squared distance). Ties go
    to the earliest segment, except at a vertex: a car at or past the end of a segment has
    passed that point, so it is placed at the start of the next one."""
    starts = route.points[first:stop]
    vectors = route.segment_vectors[first:stop]
    rel_x = x - starts[:, 0]
    rel_y = y - starts[:, 1]
    t = (rel_x * vectors[:, 0] + rel_y * vectors[:, 1]) / route.segment_lengths_squared[first:stop]
    np.clip(t, 0.0, 1.0, out=t)
    off_x = rel_x - t * vectors[:, 0]
    off_y = rel_y - t * vectors[:, 1]
    dist2 = off_x * off_x + off_y * off_y
    best = int(np.argmin(dist2))
    if t[best] == 1.0 and best + 1 < t.shape[0]:
        # The end of segment `best` is its closest point; then it is also the closest point of
        # the next segment (anything closer there would have won), at fraction 0.
        best += 1
    return first + best, float(t[best]), float(dist2[best])


def _position(route: Route, x: float, y: float, yaw: float, segment: int, fraction: float,
              dist2: float) -> RoutePosition:
    start_x, start_y = route.points[segment]
    vec_x, vec_y = route.segment_vectors[segment]
    # Which side: the sign of the cross product direction x (car - segment start).
    cross = vec_x * (y - start_y) - vec_y * (x - start_x)
    lateral = math.copysign(math.sqrt(dist2), cross) if cross != 0.0 else math.sqrt(dist2)
    return RoutePosition(
        segment=segment,
        fraction=fraction,
        lateral_offset=lateral,
        heading_error=wrap_angle(yaw - float(route.segment_headings[segment])),
        distance_along=float(route.cumulative_length[segment] + fraction * route.segment_lengths[segment]),
    )


def locate_on_route(route: Route, x: float, y: float, yaw: float, first_segment: int = 0,
                    last_segment: int | None = None) -> RoutePosition:
    """Lateral offset and heading error of a pose to the route: the closest point on segments
    first_segment..last_segment (all by default). For a car driving a route that passes near
    itself use KinematicsEncoder.position instead: its search only moves forward."""
    if not isinstance(route, Route):
        raise InvalidInput(f"route must be a Route, got {type(route).__name__}")
    x, y, yaw = finite_number("x", x), finite_number("y", y), finite_number("yaw", yaw)
    last = route.num_segments - 1 if last_segment is None else int(last_segment)
    if not 0 <= int(first_segment) <= last < route.num_segments:
        raise InvalidInput(
            f"segment range {first_segment}..{last_segment} outside 0..{route.num_segments - 1}"
        )
    segment, fraction, dist2 = _project(route, x, y, int(first_segment), last + 1)
    return _position(route, x, y, yaw, segment, fraction, dist2)


@dataclass(frozen=True)
class KinematicsConfig(Settings):
    """How KinematicsEncoder follows the route; the policy node's `kinematics.*` parameters derive
    from these settings."""

    num_waypoints: int = setting(10, "route waypoints in the kinematic vector (3 + 2 per waypoint)", min=1)
    search_ahead: float = setting(
        30.0, "metres of route searched ahead of the car's current segment when re-anchoring it each step",
        min=1.0, max=1000.0,
    )
    finish_distance: float = setting(
        2.0, "metres before the route's end at which the route counts as finished (truncated)",
        min=0.0, max=100.0,
    )
    anchor_tolerance: float = setting(
        1.0, "first anchoring: among route points this close (m) to the closest, the earliest", min=0.0
    )


class KinematicsEncoder:
    """Turns (route, pose, speed) into the policy's kinematic vector, following the car along
    the route.

    Call `encode()` once per control step. The first call after construction, `reset()` or a
    different Route object anchors the car globally (the closest route point; among points
    within `anchor_tolerance` metres of the closest, the earliest stretch, so a lap starting
    where it ends starts at its beginning). Later calls search forward only, from the current segment
    within `search_ahead` metres of arc length (>> the distance driven in one step).
    `route_finished` latches once the car is within `finish_distance` metres of arc length
    from the route's end.
    """

    def __init__(self, config: KinematicsConfig | None = None, **overrides) -> None:
        """`overrides` by KinematicsConfig's names (e.g. finish_distance=5.0) change single settings."""
        c = dataclasses.replace(config or KinematicsConfig(), **overrides)
        self.num_waypoints = c.num_waypoints
        self.size = 3 + 2 * self.num_waypoints
        self.search_ahead = c.search_ahead
        self.finish_distance = c.finish_distance
        self.anchor_tolerance = c.anchor_tolerance
        self._waypoint_offsets = np.arange(self.num_waypoints)
        self._route: Route | None = None
        self._search_stop: np.ndarray | None = None  # per segment: end (exclusive) of its search window
        self.reset()

    def reset(self) -> None:
        """Forget the progress (a new episode): the next encode() anchors globally."""
        self._segment: int | None = None
        self.position: RoutePosition | None = None
        self.next_index = 0
        self.route_finished = False

    @property
    def progress(self) -> int | None:
        """Index of the route segment the car is on (None before the first encode)."""
        return self._segment

    def encode(self, route: Route, x: float, y: float, yaw: float, speed: float) -> np.ndarray:
        """(size,) float32 kinematic vector; also updates `position`, `next_index`,
        `route_finished`. Raises InvalidInput (nothing updated) for a non-Route route or a
        non-finite value."""
        if not isinstance(route, Route):
            raise InvalidInput(f"route must be a Route, got {type(route).__name__}")
        x, y = finite_number("x", x), finite_number("y", y)
        yaw, speed = finite_number("yaw", yaw), finite_number("speed", speed)
        if route is not self._route:
            self._set_route(route)

        if self._segment is None:
            segment, fraction, dist2 = self._anchor(route, x, y)
        else:
            first = self._segment
            segment, fraction, dist2 = _project(route, x, y, first, int(self._search_stop[first]))
        self._segment = segment
        self.position = _position(route, x, y, yaw, segment, fraction, dist2)
        if self.position.distance_along >= route.length - self.finish_distance:
            self.route_finished = True
        last_index = len(route) - 1
        self.next_index = last_index if self.route_finished else segment + 1

        waypoints = route.points[np.minimum(self._waypoint_offsets + self.next_index, last_index)]
        rel_x = waypoints[:, 0] - x
        rel_y = waypoints[:, 1] - y
        cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
        out = np.empty(self.size, dtype=np.float32)
        out[3::2] = cos_yaw * rel_x + sin_yaw * rel_y  # forward
        out[4::2] = cos_yaw * rel_y - sin_yaw * rel_x  # left
        ahead_x, ahead_y = float(out[3]), float(out[4])
        out[0] = speed
        out[1] = math.hypot(ahead_x, ahead_y)
        out[2] = math.atan2(ahead_y, ahead_x)
        return out

    def _set_route(self, route: Route) -> None:
        self._route = route
        starts = route.cumulative_length[:-1]
        stop = np.searchsorted(route.cumulative_length, starts + self.search_ahead, side="right")
        # At least the current and the next segment, never past the last one.
        stop = np.maximum(stop, np.arange(route.num_segments) + 2)
        self._search_stop = np.minimum(stop, route.num_segments)
        self.reset()

    def _anchor(self, route: Route, x: float, y: float) -> tuple[int, float, float]:
        starts = route.points[:-1]
        rel = np.array([x, y]) - starts
        t = np.clip((rel * route.segment_vectors).sum(axis=1) / route.segment_lengths_squared, 0.0, 1.0)
        offset = rel - t[:, None] * route.segment_vectors
        distance = np.hypot(offset[:, 0], offset[:, 1])
        # A pose so far out that projections overflow gives NaN distances; with every one NaN
        # there is no place on the route to anchor it (found by fuzzing, test_hardening.py: a
        # NaN min selected no segment and raised IndexError).
        distance[np.isnan(distance)] = np.inf
        if not np.isfinite(distance).any():
            raise InvalidInput(f"pose ({x:.3g}, {y:.3g}) is too far from the route to place it")
        # The earliest stretch of route near the car, then the closest segment of that stretch
        # (the earliest candidate alone may be a segment just behind the car).
        earliest = int(np.flatnonzero(distance <= distance.min() + self.anchor_tolerance)[0])
        return _project(route, x, y, earliest, int(self._search_stop[earliest]))
