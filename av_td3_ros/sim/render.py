"""Heading-up, ego-centred top-down camera for the embedded simulator (OpenCV, no pygame).

Why not highway-env's EnvViewer: it draws the world north-up, so a heading-up frame needs a larger
frame rotated and cropped every step (cost, resampling blur at 84 px), and it paints the whole
world grey with only the lane lines on top, so asphalt and off-road look the same - the one thing
a driving policy most needs to see. Here every world point goes through one affine map (world ->
ego frame -> pixels), the road surface is filled, and OpenCV's anti-aliased primitives keep thin
markings visible after the perception layer downsamples to 84x84. The lane geometry is sampled once
(the circuit is static); each frame is a handful of vectorised transforms and fill/line calls.

Image axes: up = the car's heading, right = the car's right. It is a camera looking straight down
from above the car, so it is not mirrored: a road bending left bends to the left of the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from highway_env.road.lane import AbstractLane, LineType

# Colours are BGRA (the bridge's image encoding is bgra8). They are chosen for grey-level contrast
# too, because perception converts to grayscale: grass ~60, asphalt ~120, markings ~245,
# ego ~190, other cars ~40 (0.299 R + 0.587 G + 0.114 B).
GRASS = (30, 80, 30, 255)
ASPHALT = (120, 120, 120, 255)
MARKING = (245, 245, 245, 255)
EGO = (0, 200, 255, 255)  # amber
OTHER = (110, 35, 25, 255)  # dark blue
WINDSHIELD = (40, 40, 40, 255)

_SHIFT = 4  # OpenCV fixed-point fraction bits: sub-pixel vertex positions keep AA edges smooth
_SCALE = float(1 << _SHIFT)
_SAMPLE_M = 1.0  # lane sampling step; the sagitta error on a 15 m radius is < 1 cm
_STRIPE_SPACING = 4.33  # highway-env's dashed-line pattern (LaneGraphics), so the look is familiar
_STRIPE_LENGTH = 3.0
_MARKING_WIDTH_M = 0.3


@dataclass
class _LaneShape:
    ground: np.ndarray  # (K, 2) closed polygon, world (highway-env) frame
    solid: list[np.ndarray]  # polylines of continuous markings
    dashes: list[np.ndarray]  # short polylines of striped markings
    centre: np.ndarray  # (2,) bounding-circle centre, for culling
    radius: float


def _sample_lane(lane: AbstractLane) -> _LaneShape:
    n = max(2, int(math.ceil(lane.length / _SAMPLE_M)) + 1)
    s = np.linspace(0.0, lane.length, n)
    half = [lane.width_at(si) / 2.0 for si in s]
    # highway-env lateral < 0 is the lane's left side (line_types[0]), > 0 its right (line_types[1]).
    left = np.array([lane.position(si, -h) for si, h in zip(s, half, strict=True)])
    right = np.array([lane.position(si, h) for si, h in zip(s, half, strict=True)])
    solid: list[np.ndarray] = []
    dashes: list[np.ndarray] = []
    for side, edge in ((0, left), (1, right)):
        kind = lane.line_types[side]
        if kind in (LineType.CONTINUOUS, LineType.CONTINUOUS_LINE):
            solid.append(edge)
        elif kind == LineType.STRIPED:
            sign = -1.0 if side == 0 else 1.0
            for start in np.arange(0.0, lane.length, _STRIPE_SPACING):
                end = min(start + _STRIPE_LENGTH, lane.length)
                if end - start < 0.5 * _STRIPE_LENGTH:
                    continue
                # Three points per dash so dashes on tight arcs follow the curve.
                dashes.append(
                    np.array([lane.position(t, sign * lane.width_at(t) / 2.0)
                              for t in (start, 0.5 * (start + end), end)])
                )
    ground = np.concatenate([left, right[::-1]])
    lo, hi = ground.min(axis=0), ground.max(axis=0)
    centre = 0.5 * (lo + hi)
    return _LaneShape(ground, solid, dashes, centre, float(np.linalg.norm(hi - centre)))


class TopDownRenderer:
    """Draws the road network and vehicles into a (H, W, 4) uint8 BGRA frame around the ego."""

    def __init__(self, width: int, height: int, view_width_m: float, anchor: tuple[float, float]):
        self.width = int(width)
        self.height = int(height)
        self.ppm = self.width / float(view_width_m)  # pixels per metre
        self.anchor_px = np.array([anchor[0] * self.width, anchor[1] * self.height])
        # Anything farther than the farthest image corner (+ a car length) cannot be visible.
        far_px = max(np.hypot(cx, cy) for cx in (self.anchor_px[0], self.width - self.anchor_px[0])
                     for cy in (self.anchor_px[1], self.height - self.anchor_px[1]))
        self.view_radius_m = far_px / self.ppm + 5.0
        self.marking_px = max(1, int(round(_MARKING_WIDTH_M * self.ppm)))
        self._lanes: list[_LaneShape] = []
        self._signature: tuple | None = None
        # All lane vertices in one array, so a frame is one matrix product and then slicing.
        self._points = np.zeros((0, 2))
        self._ground_slices: list[slice] = []
        self._line_slices: list[list[slice]] = []

    def set_road(self, network) -> None:
        """Sample the lane geometry; skipped when the network is the same circuit as last time."""
        lanes = [lane for to_dict in network.graph.values() for lanes in to_dict.values() for lane in lanes]
        signature = tuple(
            (type(lane).__name__, round(lane.length, 6), tuple(np.round(lane.position(0, 0), 6)),
             tuple(lane.line_types))
            for lane in lanes
        )
        if signature != self._signature:
            self._lanes = [_sample_lane(lane) for lane in lanes]
            self._signature = signature
            chunks: list[np.ndarray] = []
            self._ground_slices, self._line_slices = [], []
            offset = 0

            def take(points: np.ndarray) -> slice:
                nonlocal offset
                chunks.append(points)
                offset += len(points)
                return slice(offset - len(points), offset)

            for shape in self._lanes:
                self._ground_slices.append(take(shape.ground))
                self._line_slices.append([take(p) for p in (*shape.solid, *shape.dashes)])
            self._points = np.concatenate(chunks) if chunks else np.zeros((0, 2))

    def _affine(self, position: np.ndarray, heading: float) -> tuple[np.ndarray, np.ndarray]:
        """World (highway-env, y down) -> pixel: u = cx + right * ppm, v = cy - forward * ppm."""
        c, s = math.cos(heading), math.sin(heading)
        # forward = d . (c, s); right = d . (-s, c)  (highway-env's +y is the car's right at heading 0)
        a = self.ppm * np.array([[-s, c], [-c, -s]])
        b = self.anchor_px - a @ position
        return a, b

    def _px(self, points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.round((points @ a.T + b) * _SCALE).astype(np.int32)

    def render(self, ego, others) -> np.ndarray:
        """ego / others: highway-env RoadObjects (position, heading, LENGTH, WIDTH)."""
        image = np.empty((self.height, self.width, 4), dtype=np.uint8)
        image[:] = GRASS
        a, b = self._affine(np.asarray(ego.position, dtype=np.float64), float(ego.heading))
        visible = [
            k for k, lane in enumerate(self._lanes)
            if np.hypot(*(lane.centre - ego.position)) <= lane.radius + self.view_radius_m
        ]
        if visible:
            px = self._px(self._points, a, b)
            # One call per polygon: fillPoly with several contours fills by parity, so the overlaps
            # where lane segments join would turn into holes.
            for k in visible:
                cv2.fillPoly(image, [px[self._ground_slices[k]]], ASPHALT, lineType=cv2.LINE_AA,
                             shift=_SHIFT)
            lines = [px[sl] for k in visible for sl in self._line_slices[k]]
            if lines:
                cv2.polylines(image, lines, False, MARKING, thickness=self.marking_px,
                              lineType=cv2.LINE_AA, shift=_SHIFT)
        for vehicle in others:
            if np.hypot(*(vehicle.position - ego.position)) <= self.view_radius_m:
                self._draw_vehicle(image, vehicle, OTHER, a, b)
        self._draw_vehicle(image, ego, EGO, a, b)  # last, so it is always on top
        return image

    def _draw_vehicle(self, image: np.ndarray, vehicle, colour, a: np.ndarray, b: np.ndarray) -> None:
        length, width = float(vehicle.LENGTH), float(vehicle.WIDTH)
        c, s = math.cos(vehicle.heading), math.sin(vehicle.heading)
        rot = np.array([[c, -s], [s, c]])

        def box(x0: float, x1: float, half_w: float) -> np.ndarray:
            corners = np.array([[x0, -half_w], [x1, -half_w], [x1, half_w], [x0, half_w]])
            return self._px(corners @ rot.T + vehicle.position, a, b)

        cv2.fillPoly(image, [box(-length / 2, length / 2, width / 2)], colour, lineType=cv2.LINE_AA,
                     shift=_SHIFT)
        # A windshield band shows which way a car points (the ego always points up).
        cv2.fillPoly(image, [box(0.05 * length, 0.25 * length, 0.4 * width)], WINDSHIELD,
                     lineType=cv2.LINE_AA, shift=_SHIFT)
