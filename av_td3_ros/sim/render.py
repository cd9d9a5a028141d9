"""The embedded simulator's cameras (OpenCV, no pygame): the front camera and a top-down map.

`FrontCameraRenderer` is what CARLA's `rgb_front` camera would see on flat ground: every ground
polygon (lane surfaces, lane markings as ribbons of their real width) and every car (an upright
box) goes through the pinhole model of sim/camera.py, is clipped in homogeneous coordinates and
filled with OpenCV's anti-aliased primitives, over a precomputed sky and grass background.
Projecting the polygons is the exact image of the flat ground that warping a top-down render
through the ground homography approximates: warping needs a source resolution that grows as 1/depth
near the car (at 400x300 the bottom rows sample the ground at ~75 px/m) and a source covering the
whole frustum; even a blurry 10 px/m source plus the warp cost 3.3-3.8x this renderer
(`bench/sim_speed.py --warp`, docs/benchmarks.md section 5). Projected polygons cost about what the
top-down frame does and are sharp at any depth.

`TopDownRenderer` is a heading-up, ego-centred map. Why not highway-env's EnvViewer: it draws the
world north-up, so a heading-up frame needs a larger frame rotated and cropped every step (cost,
resampling blur at 84 px), and it paints the whole world grey with only the lane lines on top, so
asphalt and off-road look the same - the one thing a driving policy most needs to see. Here every
world point goes through one affine map (world -> ego frame -> pixels). Its image axes: up = the
car's heading, right = the car's right; it is a camera looking straight down from above the car, so
it is not mirrored: a road bending left bends to the left of the image.

Both sample the lane geometry once (the circuit is static); each frame is a handful of vectorised
transforms and fill calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from highway_env.road.lane import AbstractLane, LineType

from av_td3_ros.sim.camera import PinholeCamera

# Colours are BGRA (the bridge's image encoding is bgra8). They are chosen for grey-level contrast
# too, because perception converts to grayscale: grass ~60, asphalt ~120, markings ~245,
# ego ~190, other cars ~40 (0.299 R + 0.587 G + 0.114 B), sky ~188.
GRASS = (30, 80, 30, 255)
ASPHALT = (120, 120, 120, 255)
MARKING = (245, 245, 245, 255)
EGO = (0, 200, 255, 255)  # amber
OTHER = (110, 35, 25, 255)  # dark blue
# The front camera's boxes: ends, sides (darker) and roof (lighter), so a car's shape reads in grey
# levels too (other cars ~40 / ~29 / ~66).
OTHER_FACES = (OTHER, (80, 25, 18, 255), (150, 60, 45, 255))
EGO_FACES = (EGO, (0, 150, 190, 255), (90, 225, 255, 255))
WINDSHIELD = (40, 40, 40, 255)
SKY = (235, 206, 135, 255)  # light blue

VEHICLE_HEIGHT_M = 1.5  # highway-env's cars have a footprint only; 1.5 m is a saloon's height

_SHIFT = 4  # OpenCV fixed-point fraction bits: sub-pixel vertex positions keep AA edges smooth
_SCALE = float(1 << _SHIFT)
_SAMPLE_M = 1.0  # lane sampling step; the sagitta error on a 15 m radius is < 1 cm
_STRIPE_SPACING = 4.33  # highway-env's dashed-line pattern (LaneGraphics), so the look is familiar
_STRIPE_LENGTH = 3.0
_MARKING_WIDTH_M = 0.3
_JOIN_OVERLAP_M = 0.5
_SURFACE_MARGIN_M = 0.1
_SOLID_TYPES = (LineType.CONTINUOUS, LineType.CONTINUOUS_LINE)
_CORNER_BITS = np.arange(8)
_GUARD_PX = 8000.0  # vertices are kept within this many pixels of the image (see FrontCameraRenderer)


def _fill(image: np.ndarray, colour: tuple[int, int, int, int]) -> None:
    """Paint every pixel: one 32-bit store per pixel (a 4-tuple broadcast costs 0.45 ms at 400x300)."""
    image.view(np.uint32).fill(np.frombuffer(bytes(colour), dtype=np.uint32)[0])


@dataclass
class _LaneShape:
    ground: np.ndarray  # (K, 2) closed polygon, world (highway-env) frame
    solid: list[np.ndarray]  # polylines of continuous markings
    dashes: list[np.ndarray]  # short polylines of striped markings
    solid_ribbons: list[np.ndarray]  # the same markings as closed polygons _MARKING_WIDTH_M wide
    dash_ribbons: list[list[np.ndarray]]  # per striped side: its dashes (they never overlap)
    centre: np.ndarray  # (2,) bounding-circle centre, for culling
    radius: float


def _sample_lane(lane: AbstractLane) -> _LaneShape:
    # Surfaces and solid lines run _JOIN_OVERLAP_M past both ends of the lane and its surface
    # _SURFACE_MARGIN_M past both sides: racetrack-v1's segments leave gaps of up to 0.14 m at some
    # joins, and where two anti-aliased polygons merely touch, the background shows through their
    # shared edge as a thin line (across the road at a join, along it between two lanes) - a line a
    # front camera shows plainly near the car. The margin stays under the 0.15 m half-width of a
    # solid edge line.
    n = max(2, int(math.ceil((lane.length + 2 * _JOIN_OVERLAP_M) / _SAMPLE_M)) + 1)
    s = np.linspace(-_JOIN_OVERLAP_M, lane.length + _JOIN_OVERLAP_M, n)
    half = np.array([lane.width_at(si) / 2.0 for si in s])

    def edge(offsets: np.ndarray, at: np.ndarray = s) -> np.ndarray:
        return np.array([lane.position(si, o) for si, o in zip(at, offsets, strict=True)])

    def ribbon(at: np.ndarray, centre_offsets: np.ndarray) -> np.ndarray:
        m = _MARKING_WIDTH_M / 2.0
        return np.concatenate([edge(centre_offsets - m, at), edge(centre_offsets + m, at)[::-1]])

    # highway-env lateral < 0 is the lane's left side (line_types[0]), > 0 its right (line_types[1]).
    left, right = edge(-half), edge(half)
    solid: list[np.ndarray] = []
    dashes: list[np.ndarray] = []
    solid_ribbons: list[np.ndarray] = []
    dash_ribbons: list[list[np.ndarray]] = []
    for side, points in ((0, left), (1, right)):
        kind = lane.line_types[side]
        sign = -1.0 if side == 0 else 1.0
        if kind in _SOLID_TYPES:
            solid.append(points)
            solid_ribbons.append(ribbon(s, sign * half))
        elif kind == LineType.STRIPED:
            dash_ribbons.append([])
            for start in np.arange(0.0, lane.length, _STRIPE_SPACING):
                end = min(start + _STRIPE_LENGTH, lane.length)
                if end - start < 0.5 * _STRIPE_LENGTH:
                    continue
                # Three points per dash so dashes on tight arcs follow the curve.
                at = np.array([start, 0.5 * (start + end), end])
                offsets = sign * np.array([lane.width_at(t) / 2.0 for t in at])
                dashes.append(edge(offsets, at))
                dash_ribbons[-1].append(ribbon(at, offsets))
    margin = half + _SURFACE_MARGIN_M
    ground = np.concatenate([edge(-margin), edge(margin)[::-1]])
    lo, hi = ground.min(axis=0), ground.max(axis=0)
    centre = 0.5 * (lo + hi)
    return _LaneShape(ground, solid, dashes, solid_ribbons, dash_ribbons, centre,
                      float(np.linalg.norm(hi - centre)))


class _RoadShapes:
    """The sampled lanes of the current circuit; re-sampled only when the network changes."""

    def __init__(self) -> None:
        self.lanes: list[_LaneShape] = []
        self._signature: tuple | None = None

    def update(self, network) -> bool:
        """True when the geometry changed (the caller rebuilds what it derives from it)."""
        lanes = [lane for to_dict in network.graph.values() for lanes in to_dict.values() for lane in lanes]
        signature = tuple(
            (type(lane).__name__, round(lane.length, 6), tuple(np.round(lane.position(0, 0), 6)),
             tuple(lane.line_types))
            for lane in lanes
        )
        if signature == self._signature:
            return False
        self.lanes = [_sample_lane(lane) for lane in lanes]
        self._signature = signature
        return True


class _Packed:
    """Polygons (or polylines) in one (N, 2) array, so a frame transforms them with one product."""

    def __init__(self, shapes: list[np.ndarray]):
        self.points = np.concatenate(shapes) if shapes else np.zeros((0, 2))
        self.lengths = np.array([len(p) for p in shapes], dtype=np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.slices = [slice(int(a), int(a + n)) for a, n in zip(self.starts, self.lengths, strict=True)]


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
        self._road = _RoadShapes()
        self._lanes: list[_LaneShape] = []
        # All lane vertices in one array, so a frame is one matrix product and then slicing.
        self._points = np.zeros((0, 2))
        self._ground_slices: list[slice] = []
        self._line_slices: list[list[slice]] = []

    def set_road(self, network) -> None:
        """Sample the lane geometry; skipped when the network is the same circuit as last time."""
        if not self._road.update(network):
            return
        self._lanes = self._road.lanes
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
        _fill(image, GRASS)
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


# --- the front camera -----------------------------------------------------------------------------

def _clip_polygons(points: np.ndarray, lengths: np.ndarray, planes: np.ndarray):
    """Sutherland-Hodgman on many polygons at once: the parts where every plane . (p, 1) >= 0.

    points (N, 3) holds the polygons one after the other, lengths their vertex counts (each >= 1).
    Returns (points, lengths) of the clipped polygons, in the same order; a polygon wholly outside
    gets length 0. Clipping a convex polygon gives a convex one; a concave polygon may get
    zero-area bridges along a clip line, which a fill draws as nothing."""
    lengths = np.asarray(lengths, dtype=np.int64)
    for plane in planes:
        dist = points @ plane[:3] + plane[3]
        inside = dist >= 0.0
        if inside.all():
            continue
        alive = lengths > 0
        starts = np.cumsum(lengths) - lengths
        following = np.arange(1, len(points) + 1)
        following[(starts + lengths - 1)[alive]] = starts[alive]  # each polygon closes on itself
        dist_next = dist[following]
        crosses = inside != (dist_next >= 0.0)
        t = dist / np.where(crosses, dist - dist_next, 1.0)
        # Per edge i -> i+1: vertex i if it is inside, then the crossing point if the edge crosses.
        out = np.empty((len(points), 2, 3))
        out[:, 0] = points
        out[:, 1] = points + t[:, None] * (points[following] - points)
        keep = np.empty((len(points), 2), dtype=bool)
        keep[:, 0], keep[:, 1] = inside, crosses
        kept = keep.sum(axis=1)
        new_lengths = np.zeros_like(lengths)
        new_lengths[alive] = np.add.reduceat(kept, starts[alive])
        points, lengths = out[keep], new_lengths
    return points, lengths


def _clip(points: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """One polygon (n, 3) clipped to every plane . (p, 1) >= 0."""
    clipped, _ = _clip_polygons(points, np.array([len(points)]), planes)
    return clipped


class FrontCameraRenderer:
    """What `camera` (mounted on the ego) sees: (H, W, 4) uint8 BGRA frames, like CARLA's camera.

    The ground is flat at z = 0; lanes and markings lie on it, cars are boxes of their footprint and
    VEHICLE_HEIGHT_M standing on it, sky above the horizon. Polygons whose bounding circle is
    farther than max_distance_m are culled whole (so the road does not end at a visible line).
    """

    def __init__(self, camera: PinholeCamera, max_distance_m: float = 150.0,
                 vehicle_height_m: float = VEHICLE_HEIGHT_M):
        if camera.mount.z <= 0.0:
            raise ValueError(f"the camera must be above the ground (z > 0), got z = {camera.mount.z}")
        self.camera = camera
        self.width, self.height = camera.width, camera.height
        self.max_distance_m = float(max_distance_m)
        self.vehicle_height_m = float(vehicle_height_m)
        # Clip planes on (u w, v w, w). OpenCV's fixed-point fill misplaces edges whose vertices lie
        # ~1e6 px away, which points just in front of the camera would: everything is clipped to a
        # guard band _GUARD_PX wide around the image, and the ground also to half the depth of the
        # nearest ground the camera sees (nothing nearer is in the image; most ground polygons that
        # reach no nearer than that need no clipping).
        guard = _GUARD_PX
        band = [
            [1.0, 0.0, guard, 0.0],
            [-1.0, 0.0, self.width + guard, 0.0],
            [0.0, 1.0, guard, 0.0],
            [0.0, -1.0, self.height + guard, 0.0],
        ]
        nearest = camera.nearest_ground_depth()
        self._ground_near = 0.5 * nearest if nearest is not None else 0.05
        self._box_near = 0.05
        self._ground_planes = np.array([[0.0, 0.0, 1.0, -self._ground_near], *band])
        self._box_planes = np.array([[0.0, 0.0, 1.0, -self._box_near], *band])
        self._guard = guard
        self._background = self._sky_and_ground()
        self._road = _RoadShapes()
        self._polys = _Packed([])
        self._groups: list[tuple[tuple[int, int, int, int], list[int]]] = []  # (colour, polygon ids)
        self._ground_h = np.zeros((3, 0))
        self._ego_key: tuple[float, float] | None = None
        self._ego_cache: list = []
        self._poly_centres = np.zeros((0, 2))
        self._poly_radii = np.zeros(0)

    def _sky_and_ground(self) -> np.ndarray:
        """Grass everywhere, sky above the horizon - fixed in the image, since the camera is rigid on
        a car on flat ground - drawn once."""
        image = np.empty((self.height, self.width, 4), dtype=np.uint8)
        _fill(image, GRASS)
        w, h = float(self.width), float(self.height)
        frame = np.array([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [w, h, 1.0], [0.0, h, 1.0]])
        sky_side = np.append(-self.camera.horizon, 0.0)[None, :]  # horizon . (u, v, 1) <= 0
        sky = _clip(frame, sky_side)
        if len(sky) >= 3:
            cv2.fillPoly(image, [self._to_px(sky[:, :2])], SKY, lineType=cv2.LINE_AA, shift=_SHIFT)
        return image

    @staticmethod
    def _to_px(uv: np.ndarray) -> np.ndarray:
        # OpenCV puts pixel centres on integer coordinates; ours are half a pixel further.
        return np.round((uv - 0.5) * _SCALE).astype(np.int32)

    def set_road(self, network) -> None:
        """Sample the lane geometry; skipped when the network is the same circuit as last time."""
        if not self._road.update(network):
            return
        shapes: list[np.ndarray] = []
        groups: list[tuple[tuple[int, int, int, int], list[int]]] = []

        def group(colour, polygons) -> None:
            groups.append((colour, list(range(len(shapes), len(shapes) + len(polygons)))))
            shapes.extend(polygons)

        # One fill call per group, in this order: surfaces, then markings on top. A group's polygons
        # must not overlap (fillPoly fills several contours by parity); lane segments and their
        # markings do overlap where segments join, so they are groups of one, while the dashes of one
        # lane side are one group.
        for lane in self._road.lanes:
            group(ASPHALT, [lane.ground])
        for lane in self._road.lanes:
            for ribbon in lane.solid_ribbons:
                group(MARKING, [ribbon])
            for dashes in lane.dash_ribbons:
                group(MARKING, dashes)
        self._polys = _Packed(shapes)
        # Homogeneous ground points as rows (x, y, 1): a frame's projection is one 3x3 @ 3xN product.
        self._ground_h = np.vstack([self._polys.points.T, np.ones(len(self._polys.points))])
        self._groups = [(colour, ids) for colour, ids in groups if ids]
        lo = np.array([p.min(axis=0) for p in shapes]) if shapes else np.zeros((0, 2))
        hi = np.array([p.max(axis=0) for p in shapes]) if shapes else np.zeros((0, 2))
        self._poly_centres = 0.5 * (lo + hi)
        self._poly_radii = np.linalg.norm(hi - self._poly_centres, axis=1)

    def render(self, ego, others) -> np.ndarray:
        """ego / others: highway-env RoadObjects (position, heading, LENGTH, WIDTH)."""
        image = self._background.copy()
        position = np.asarray(ego.position, dtype=np.float64)
        world = self.camera.world_projection(position, float(ego.heading))
        self._draw_ground(image, world, position)
        self._draw_vehicles(image, world, position, ego, others)
        return image

    def _ground_contours(self, world: np.ndarray, ego_position: np.ndarray) -> list[np.ndarray | None]:
        """Each packed polygon as an OpenCV contour in this frame, or None when it is not in view."""
        polys = self._polys
        q = world[:, [0, 1, 3]] @ self._ground_h  # rows u w, v w, w of every vertex
        depth = q[2]
        starts = polys.starts
        wmin, wmax = np.minimum.reduceat(depth, starts), np.maximum.reduceat(depth, starts)
        near_enough = (np.hypot(self._poly_centres[:, 0] - ego_position[0],
                                self._poly_centres[:, 1] - ego_position[1])
                       <= self._poly_radii + self.max_distance_m)
        # Polygons wholly beyond the ground near plane: pixels by one division, then a bounding box.
        ahead = wmin >= self._ground_near
        safe_depth = np.maximum(depth, self._ground_near)
        u, v = q[0] / safe_depth, q[1] / safe_depth
        umin, umax = np.minimum.reduceat(u, starts), np.maximum.reduceat(u, starts)
        vmin, vmax = np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)
        g = self._guard
        off_image = ahead & ((umax < 0) | (umin > self.width) | (vmax < 0) | (vmin > self.height))
        direct = ahead & (umin > -g) & (umax < self.width + g) & (vmin > -g) & (vmax < self.height + g)
        shown = near_enough & (wmax > self._ground_near) & ~off_image
        contours: list[np.ndarray | None] = [None] * len(polys.slices)
        show_direct = np.flatnonzero(shown & direct)
        if len(show_direct):
            uv = np.empty((len(u), 2))
            uv[:, 0], uv[:, 1] = u, v
            px = self._to_px(np.clip(uv, -g, max(self.width, self.height) + g))
            for k in show_direct.tolist():
                contours[k] = px[polys.slices[k]]
        clip = np.flatnonzero(shown & ~direct)
        if len(clip):
            vertices = np.concatenate([q[:, polys.slices[k]].T for k in clip.tolist()])
            clipped, lengths = _clip_polygons(vertices, polys.lengths[clip], self._ground_planes)
            pixels = self._to_px(clipped[:, :2] / clipped[:, 2:3])
            ends = np.cumsum(lengths)
            for k, end, n in zip(clip.tolist(), ends.tolist(), lengths.tolist(), strict=True):
                if n >= 3:
                    contours[k] = pixels[end - n:end]
        return contours

    def _draw_ground(self, image: np.ndarray, world: np.ndarray, ego_position: np.ndarray) -> None:
        if not self._polys.slices:
            return
        contours = self._ground_contours(world, ego_position)
        for colour, ids in self._groups:
            drawn = [contours[k] for k in ids if contours[k] is not None]
            if drawn:
                cv2.fillPoly(image, drawn, colour, lineType=cv2.LINE_AA, shift=_SHIFT)

    def _draw_vehicles(self, image: np.ndarray, world: np.ndarray, ego_position: np.ndarray, ego,
                       others) -> None:
        # Where the camera is in the world, for back-face culling and the painter's order.
        c, s = math.cos(ego.heading), math.sin(ego.heading)
        x, y, z = self.camera.position
        camera_world = np.array([ego_position[0] + c * x - s * y, ego_position[1] + s * x + c * y, z])
        boxes = []
        for vehicle in others:
            centre = np.asarray(vehicle.position, dtype=np.float64)
            if math.hypot(centre[0] - ego_position[0], centre[1] - ego_position[1]) <= self.max_distance_m:
                boxes.append((math.hypot(centre[0] - camera_world[0], centre[1] - camera_world[1]), centre,
                              vehicle))
        faces = []
        for _, centre, vehicle in sorted(boxes, key=lambda box: -box[0]):  # far to near
            faces += self._box_faces(world, camera_world, centre, float(vehicle.heading),
                                     float(vehicle.LENGTH), float(vehicle.WIDTH), OTHER_FACES)
        for contour, colour in (*self._contours(faces), *self._ego_contours(ego)):
            cv2.fillConvexPoly(image, contour, colour, lineType=cv2.LINE_AA, shift=_SHIFT)

    def _ego_contours(self, ego) -> list:
        """The ego's own box as its camera sees it: the same in every frame (the camera is rigid on
        it), so computed once per car size. rgb_front sees none of it (the camera is above the roof,
        looking ahead); a camera mounted behind the car would. Drawn last: nothing is nearer."""
        key = (float(ego.LENGTH), float(ego.WIDTH))
        if key != self._ego_key:
            faces = self._box_faces(self.camera.projection, self.camera.position, np.zeros(2), 0.0, *key,
                                    EGO_FACES)
            self._ego_key, self._ego_cache = key, self._contours(faces)
        return self._ego_cache

    def _contours(self, faces: list) -> list:
        """[(homogeneous polygon, colour)] -> [(OpenCV contour, colour)] of those in the image."""
        if not faces:
            return []
        clipped, lengths = _clip_polygons(np.concatenate([q for q, _ in faces]), np.full(len(faces), 4),
                                          self._box_planes)
        uv = clipped[:, :2] / clipped[:, 2:3]
        pixels = self._to_px(uv)
        out = []
        for (_, colour), end, n in zip(faces, np.cumsum(lengths).tolist(), lengths.tolist(), strict=True):
            box = uv[end - n:end]
            if n >= 3 and box[:, 0].max() >= 0 and box[:, 0].min() <= self.width \
                    and box[:, 1].max() >= 0 and box[:, 1].min() <= self.height:
                out.append((pixels[end - n:end], colour))
        return out

    def _box_faces(self, world: np.ndarray, camera_world: np.ndarray, centre: np.ndarray, heading: float,
                   length: float, width: float, palette: tuple) -> list:
        """The faces of a car's box turned towards the camera: [((4, 3) homogeneous pixels, colour)].

        A box is convex: those faces never overlap each other in the image."""
        half_l, half_w, height = length / 2.0, width / 2.0, self.vehicle_height_m
        c, s = math.cos(heading), math.sin(heading)
        # The camera in the box's own frame (forward, right, up) decides which faces it can see.
        dx, dy = camera_world[0] - centre[0], camera_world[1] - centre[1]
        cam = (c * dx + s * dy, -s * dx + c * dy, camera_world[2])
        end, side, roof = palette
        faces = []
        if cam[0] < -half_l:
            faces.append(((0, 2, 6, 4), end))  # rear
        if cam[0] > half_l:
            faces.append(((1, 3, 7, 5), end))  # front
        if cam[1] < -half_w:
            faces.append(((0, 1, 5, 4), side))  # left side
        if cam[1] > half_w:
            faces.append(((2, 3, 7, 6), side))  # right side
        if cam[2] > height:
            faces.append(((4, 5, 7, 6), roof))
        if not faces:  # the camera is inside the box
            return []
        # Corner k: bit 0 front (else rear), bit 1 right (else left), bit 2 roof (else ground).
        fwd = np.where(_CORNER_BITS & 1, half_l, -half_l)
        right = np.where(_CORNER_BITS & 2, half_w, -half_w)
        corners = np.column_stack([centre[0] + c * fwd - s * right, centre[1] + s * fwd + c * right,
                                   np.where(_CORNER_BITS & 4, height, 0.0), np.ones(8)])
        q = corners @ world.T
        if (q[:, 2] < self._box_near).all():
            return []
        return [(q[list(index)], colour) for index, colour in faces]
