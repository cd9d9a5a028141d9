"""The pinhole model of CARLA's `sensor.camera.rgb`, for the embedded simulator's front view (no ROS).

Frames and conventions (each one is pinned by a test in test/test_camera.py):
- CARLA / UE4 is LEFT-handed: x forward, y RIGHT, z up, metres. carla.Rotation holds degrees: yaw
  about z (positive turns x towards y, i.e. to the right seen from above), pitch about y (positive
  lifts the nose), roll about x (positive lowers the right side). The rotation matrix is CARLA's
  own (LibCarla geom::Transform, see `carla_rotation_matrix`): its columns are the rotated frame's
  forward, right and up axes.
- highway-env's world plane is the same frame. Its y is the car's right at heading 0 and its
  heading grows from x towards y (a right turn), so (x_hw, y_hw, z up) IS CARLA's frame and
  heading_hw is CARLA's yaw (in radians). A vehicle's origin is the centre of its footprint, on the
  ground. (The ROS map frame that simulator.py reports flips y; nothing here uses it.)
- config/objects.json gives a sensor's `spawn_point` relative to its car in the ROS convention
  (REP 103: right-handed, y LEFT, degrees: positive pitch lowers the nose, positive yaw looks left):
  carla_spawn_objects makes a ROS pose of it and the bridge spawns the sensor at
  carla_common.transforms.ros_pose_to_carla_transform of that pose, i.e. location (x, -y, z) and
  rotation (roll, -pitch, -yaw) - what `CarlaPose.from_ros` does.
- The camera looks along its own x. Image u grows with its y (right), v with -z (down):
  (X, Y, Z)_optical = (y, -z, x)_sensor. Intrinsics as CARLA's: fov is the HORIZONTAL field of
  view, f = width / (2 tan(fov / 2)) for both axes (square pixels), principal point at the image
  centre. So another image size with the same fov is the same camera at another resolution, and a
  square image has a wider vertical field of view, as in CARLA.
- Pixel coordinates are continuous, (0, 0) the top-left CORNER of the image: pixel (i, j) covers
  [i, i + 1) x [j, j + 1), the principal point (width / 2, height / 2) is the centre of the image.
  OpenCV's drawing puts pixel centres on integers; the renderer shifts by half a pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from av_td3_ros.episodes.fleet import ego_sensors
from av_td3_ros.episodes.poses import CarlaPose

__all__ = [
    "RGB_FRONT_ID",
    "PinholeCamera",
    "camera_from_sensor",
    "carla_rotation_matrix",
    "rgb_front_camera",
    "vehicle_from_world",
]

RGB_FRONT_ID = "rgb_front"

# CARLA's sensor axes (x forward, y right, z up) -> the optical frame (X right, Y down, Z forward).
_OPTICAL_FROM_SENSOR = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def carla_rotation_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """CARLA's rotation matrix of carla.Rotation(pitch, yaw, roll) [degrees]: rotated frame -> parent."""
    cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    return np.array([
        [cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr],
        [cp * sy, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr],
        [sp, -cp * sr, cp * cr],
    ])


def vehicle_from_world(position, heading: float) -> np.ndarray:
    """4x4: a point of highway-env's world (x, y, z up) -> the frame of a car at (position, heading)."""
    c, s = math.cos(heading), math.sin(heading)
    px, py = float(position[0]), float(position[1])
    return np.array([
        [c, s, 0.0, -(c * px + s * py)],
        [-s, c, 0.0, s * px - c * py],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ])


@dataclass(frozen=True)
class PinholeCamera:
    """A camera rigidly mounted on a car: `mount` is its transform relative to the car, in CARLA's frame."""

    width: int
    height: int
    fov: float  # horizontal field of view [degrees]
    mount: CarlaPose

    def __post_init__(self) -> None:
        whole = int(self.width) == self.width and int(self.height) == self.height
        if not whole or self.width < 1 or self.height < 1:
            raise ValueError(f"camera image size must be whole pixels >= 1, got {self.width}x{self.height}")
        if not (math.isfinite(self.fov) and 0.0 < self.fov < 180.0):
            raise ValueError(f"camera fov must be in (0, 180) degrees, got {self.fov!r}")

    @cached_property
    def focal(self) -> float:
        """Focal length [px], the same on both axes."""
        return self.width / (2.0 * math.tan(math.radians(self.fov) / 2.0))

    @cached_property
    def intrinsics(self) -> np.ndarray:
        f = self.focal
        return np.array([[f, 0.0, self.width / 2.0], [0.0, f, self.height / 2.0], [0.0, 0.0, 1.0]])

    @cached_property
    def rotation(self) -> np.ndarray:
        """Sensor axes -> car axes (columns: the camera's forward, right and up in the car's frame)."""
        return carla_rotation_matrix(self.mount.roll, self.mount.pitch, self.mount.yaw)

    @cached_property
    def position(self) -> np.ndarray:
        """The optical centre in the car's frame [m]."""
        return np.array([self.mount.x, self.mount.y, self.mount.z])

    @cached_property
    def projection(self) -> np.ndarray:
        """3x4: a car-frame point (x, y, z, 1) -> (u w, v w, w), w the depth along the optical axis."""
        rt = self.rotation.T
        extrinsic = np.hstack([rt, (-rt @ self.position)[:, None]])
        return self.intrinsics @ _OPTICAL_FROM_SENSOR @ extrinsic

    @cached_property
    def ground_homography(self) -> np.ndarray:
        """3x3: a point of the car-frame ground plane (x, y, 1), z = 0 -> (u w, v w, w)."""
        return self.projection[:, [0, 1, 3]]

    def world_projection(self, position, heading: float) -> np.ndarray:
        """3x4 projection of highway-env world points for a car at (position, heading)."""
        return self.projection @ vehicle_from_world(position, heading)

    def project(self, points) -> tuple[np.ndarray, np.ndarray]:
        """Car-frame points (N, 3) -> pixels (N, 2) and depths (N,). A depth <= 0 means behind the
        camera: its pixel is meaningless."""
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        q = pts @ self.projection[:, :3].T + self.projection[:, 3]
        depth = q[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return q[:, :2] / depth[:, None], depth

    def vanishing_point(self, direction) -> np.ndarray | None:
        """Pixel where lines along this car-frame direction meet; None if they do not converge ahead."""
        q = self.projection[:, :3] @ np.asarray(direction, dtype=np.float64)
        return q[:2] / q[2] if q[2] > 1e-12 else None

    @cached_property
    def horizon(self) -> np.ndarray:
        """The ground plane's vanishing line (a, b, c), a u + b v + c = 0, with (a, b) of unit length
        when the horizon crosses the image plane, and signed so that a u + b v + c > 0 on the ground."""
        h = self.ground_homography
        line = np.cross(h[:, 0], h[:, 1])  # through the vanishing points of the ground's x and y
        # For a ground point g, line . (H g) = det(H) * g_3, and H g = w (u, v, 1): the sign of det(H)
        # makes the ground side (depth w > 0) positive.
        line *= math.copysign(1.0, np.linalg.det(h))
        norm = math.hypot(line[0], line[1])
        return line / norm if norm > 1e-12 else line

    def nearest_ground_depth(self) -> float | None:
        """Smallest depth of any ground point in the image; None if the image shows no ground.

        Depth is affine on the ground and the ground in view is the image rectangle's part below
        the horizon, a convex region: the minimum is at one of its corners, and the corners on the
        horizon are infinitely far."""
        w, h = float(self.width), float(self.height)
        corners = np.array([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [w, h, 1.0], [0.0, h, 1.0]])
        below = corners[corners @ self.horizon > 1e-9]
        if len(below) == 0:
            return None
        # A pixel's ray in the car's frame, scaled to depth 1; it meets z = 0 at depth -z_cam / ray_z.
        rays = (self.rotation @ _OPTICAL_FROM_SENSOR.T @ np.linalg.inv(self.intrinsics) @ below.T).T
        return float(np.min(-self.position[2] / rays[:, 2]))

    def horizon_row(self, u: float) -> float:
        """Row v of the horizon at column u (continuous pixel coordinates)."""
        a, b, c = self.horizon
        if abs(b) < 1e-12:
            raise ValueError("the horizon is vertical or not in the image plane for this camera")
        return -(a * u + c) / b


def camera_from_sensor(sensor: dict, width: int | None = None, height: int | None = None) -> PinholeCamera:
    """A camera from an objects.json sensor entry (carla_spawn_objects' format and defaults).

    width / height replace image_size_x / image_size_y; the fov stays, so it is the same camera at
    another resolution."""
    try:
        spawn = sensor.get("spawn_point", {})
        mount = CarlaPose.from_ros(
            float(spawn.get("x", 0.0)), float(spawn.get("y", 0.0)), float(spawn.get("z", 0.0)),
            float(spawn.get("roll", 0.0)), float(spawn.get("pitch", 0.0)), float(spawn.get("yaw", 0.0)),
        )
        # CARLA's sensor.camera.rgb defaults: 800x600, fov 90.
        w = int(sensor.get("image_size_x", 800)) if width is None else int(width)
        h = int(sensor.get("image_size_y", 600)) if height is None else int(height)
        fov = float(sensor.get("fov", 90.0))
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"not a camera sensor entry ({exc}): {sensor!r}") from None
    return PinholeCamera(w, h, fov, mount)


def rgb_front_camera(width: int | None = None, height: int | None = None) -> PinholeCamera:
    """The `rgb_front` camera of config/objects.json (whose single source is fleet.ego_sensors())."""
    sensor = next(s for s in ego_sensors() if s["id"] == RGB_FRONT_ID)
    return camera_from_sensor(sensor, width, height)
