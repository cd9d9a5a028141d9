"""The front camera's geometry (av_td3_ros.sim.camera) and what the front view draws with it.

The camera is config/objects.json's `rgb_front` (800x600, fov 90, 2 m ahead of the car's origin and
2 m up): f = 800 / (2 tan 45 deg) = 400 px, principal point (400, 300). Each test states what the
pinhole model predicts and checks the model, and where it matters the rendered frame, against it.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TEST_DIR

from av_td3_ros.episodes.poses import CarlaPose, quaternion_from_rpy
from av_td3_ros.sim import EmbeddedSimulator, SimConfig
from av_td3_ros.sim.camera import PinholeCamera, camera_from_sensor, rgb_front_camera
from av_td3_ros.sim.render import (
    ASPHALT,
    EGO_FACES,
    GRASS,
    MARKING,
    OTHER,
    OTHER_FACES,
    SKY,
    FrontCameraRenderer,
)

F = 400.0  # rgb_front's focal length [px]
CX, CY = 400.0, 300.0


def _rgb_front_json() -> dict:
    data = json.loads((TEST_DIR.parent / "config" / "objects.json").read_text())
    return next(s for s in data["objects"][0]["sensors"] if s["id"] == "rgb_front")


def _camera(**spawn_point) -> PinholeCamera:
    """rgb_front with some of its objects.json spawn_point values replaced (ROS convention)."""
    sensor = _rgb_front_json()
    sensor["spawn_point"] = {**sensor["spawn_point"], **spawn_point}
    return camera_from_sensor(sensor)


def _world(pose: tuple[float, float, float], forward: float, right: float) -> np.ndarray:
    """The highway-env world point `forward` m ahead and `right` m to the right of a car at pose."""
    x, y, heading = pose
    return np.array([x + forward * math.cos(heading) - right * math.sin(heading),
                     y + forward * math.sin(heading) + right * math.cos(heading)])


def _pixels(image: np.ndarray, colour) -> np.ndarray:
    return np.all(image == np.array(colour, dtype=np.uint8), axis=-1)


def test_rgb_front_is_the_objects_json_camera():
    sensor = _rgb_front_json()
    camera = rgb_front_camera()
    assert (camera.width, camera.height, camera.fov) == (800, 600, 90.0)
    assert (camera.width, camera.height, camera.fov) == (
        sensor["image_size_x"], sensor["image_size_y"], sensor["fov"])
    sp = sensor["spawn_point"]
    assert camera.mount == CarlaPose.from_ros(sp["x"], sp["y"], sp["z"], sp["roll"], sp["pitch"], sp["yaw"])
    assert camera.focal == pytest.approx(F)
    # Another image size is the same camera at another resolution: the fov, hence f / width, stays.
    small = rgb_front_camera(400, 300)
    assert small.focal == pytest.approx(200.0) and small.mount == camera.mount
    assert SimConfig().camera_view == "front"
    assert (SimConfig().image_width, SimConfig().image_height) == (800, 600)


def test_a_known_ground_point_lands_on_the_pixel_the_pinhole_model_predicts():
    camera = rgb_front_camera()
    # 12 m ahead of the car's origin = 10 m ahead of the camera, 3 m to the right, on the ground
    # (2 m below the camera): u = 400 + 400 * 3 / 10, v = 300 + 400 * 2 / 10.
    uv, depth = camera.project([[12.0, 3.0, 0.0]])
    assert uv[0] == pytest.approx([520.0, 380.0]) and depth[0] == pytest.approx(10.0)
    # The same point in highway-env's world, for a car anywhere, heading anywhere.
    pose = (37.0, -12.0, 2.2)
    point = _world(pose, 12.0, 3.0)
    q = camera.world_projection(pose[:2], pose[2]) @ np.array([point[0], point[1], 0.0, 1.0])
    assert q[:2] / q[2] == pytest.approx([520.0, 380.0])
    assert camera.ground_homography @ np.array([12.0, 3.0, 1.0]) == pytest.approx([5200.0, 3800.0, 10.0])
    # Left of the car is left in the image, and a point 2 m above the ground is 80 px higher.
    assert camera.project([[12.0, -3.0, 0.0]])[0][0] == pytest.approx([280.0, 380.0])
    assert camera.project([[12.0, 3.0, 2.0]])[0][0] == pytest.approx([520.0, 300.0])
    assert camera.project([[1.0, 0.0, 0.0]])[1][0] < 0  # behind the camera: negative depth


@pytest.mark.parametrize("pitch", [-10.0, 0.0, 5.0, 20.0])
def test_the_horizon_row_matches_the_pitch(pitch):
    """objects.json pitch is ROS's: positive lowers the nose, so the horizon rises by f tan(pitch)."""
    camera = _camera(pitch=pitch)
    expected = CY - F * math.tan(math.radians(pitch))
    for u in (0.0, 400.0, 800.0):
        assert camera.horizon_row(u) == pytest.approx(expected)
    assert camera.vanishing_point([1.0, 0.0, 0.0])[1] == pytest.approx(expected)  # straight ahead
    # The frame: sky above that row, ground below it, in every column. (A car 1 m long, all behind
    # the camera: a 20 degree pitch shows the roof of a real one, as the next test checks.)
    tiny = SimpleNamespace(position=np.zeros(2), heading=0.0, LENGTH=1.0, WIDTH=1.0)
    frame = FrontCameraRenderer(camera).render(tiny, [])
    row = int(math.floor(expected))
    assert _pixels(frame[: row - 1], SKY).all()
    assert _pixels(frame[row + 2:], GRASS).all()  # no road in this empty world


def test_a_camera_pitched_down_sees_the_roof_of_its_own_car_and_rgb_front_does_not():
    """The camera is 0.5 m above the 1.5 m roof and 0.5 m behind its front edge: the roof is 45
    degrees below the horizontal, outside rgb_front's 36.9 degree half-height, inside it at 20 degrees
    of pitch (56.9)."""
    ego = SimpleNamespace(position=np.zeros(2), heading=0.0, LENGTH=5.0, WIDTH=2.0)
    level = FrontCameraRenderer(rgb_front_camera()).render(ego, [])
    assert not np.any([_pixels(level, colour) for colour in EGO_FACES])
    pitched = FrontCameraRenderer(_camera(pitch=20.0)).render(ego, [])
    assert _pixels(pitched[-1, 300:500], EGO_FACES[2]).all()  # the roof across the bottom centre


def test_roll_tilts_the_horizon_and_yaw_turns_the_view_the_ros_way():
    """objects.json roll > 0 lowers the camera's right side (the horizon rises to the right); yaw > 0
    turns it left (what is straight ahead of the car moves to the right of the image)."""
    rolled = _camera(roll=10.0)
    rise = rolled.horizon_row(0.0) - rolled.horizon_row(800.0)
    assert rise == pytest.approx(800.0 * math.tan(math.radians(10.0)))
    assert rolled.horizon_row(400.0) == pytest.approx(CY)
    turned = _camera(yaw=20.0)
    u, v = turned.vanishing_point([1.0, 0.0, 0.0])
    assert (u, v) == pytest.approx((CX + F * math.tan(math.radians(20.0)), CY))


def test_the_carla_conventions_agree_with_the_ros_pose_carla_spawn_objects_makes():
    """An independent path: the spawn point as the ROS pose carla_spawn_objects builds (quaternion of
    roll, pitch, yaw), projected in ROS axes (y left), gives the same pixels as the CARLA-frame model."""
    spawn = {"x": 1.5, "y": 0.4, "z": 1.7, "roll": 4.0, "pitch": 7.0, "yaw": -12.0}
    camera = _camera(**spawn)
    qx, qy, qz, qw = quaternion_from_rpy(*(math.radians(spawn[k]) for k in ("roll", "pitch", "yaw")))
    rotation = np.array([  # the quaternion's matrix: sensor axes -> car axes, ROS frame
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
    ])
    rng = np.random.default_rng(0)
    points_ros = np.column_stack([rng.uniform(5, 40, 20), rng.uniform(-10, 10, 20), rng.uniform(0, 3, 20)])
    sensor = (points_ros - [spawn["x"], spawn["y"], spawn["z"]]) @ rotation  # R^T (p - t), row-wise
    # ROS sensor axes (x forward, y left, z up): right is -y, down is -z.
    expected = np.column_stack([CX + F * -sensor[:, 1] / sensor[:, 0], CY + F * -sensor[:, 2] / sensor[:, 0]])
    points_carla = points_ros * [1.0, -1.0, 1.0]
    uv, depth = camera.project(points_carla)
    assert uv == pytest.approx(expected) and depth == pytest.approx(sensor[:, 0])


def _straight_start(**config) -> EmbeddedSimulator:
    """The ego at rest on the first straight, in the right lane (map y = -5), aligned with it."""
    for seed in range(50):
        sim = EmbeddedSimulator(SimConfig(initial_speed=0.0, **config))
        state = sim.reset(seed=seed)
        if abs(state.y + 5.0) < 0.1 and abs(state.yaw) < 1e-9 and state.x < 75.0:
            return sim
        sim.close()
    raise AssertionError("no seed starts on the first straight in the right lane")


def test_lane_markings_converge_to_the_vanishing_point_on_a_straight():
    """The dashed centre line (2.5 m left of the car) and the solid right edge (2.5 m right) run along
    the car's heading, so their images are lines through the vanishing point of the forward
    direction: (400, 300) for this camera. Fitted on the rendered frame: the right edge over the
    ground 2.7-20 m ahead of the camera, the dashed line over rows below 420 (2.7-6.7 m), where the
    road's left edge, 7.5 m left, is out of the image and cannot be mistaken for it."""
    sim = _straight_start()
    image = sim.step(0.0, 0.0, 1.0).image
    camera = rgb_front_camera()
    assert camera.vanishing_point([1.0, 0.0, 0.0]) == pytest.approx([CX, CY])
    white = _pixels(image, MARKING)
    lines = {"left": [], "right": []}
    for v in range(int(CY + F * 2.0 / 20.0), 600):
        columns = np.flatnonzero(white[v])
        runs = [run.mean() + 0.5 for run in np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
                if len(run) >= 2]  # the centre of each marking crossing this row
        left, right = [u for u in runs if u < CX], [u for u in runs if u >= CX]
        if left and v >= 420:
            lines["left"].append((v + 0.5, max(left)))
        if right:
            lines["right"].append((v + 0.5, min(right)))
    fits = {}
    for side, rows in lines.items():
        assert len(rows) > 60, side  # the dashes leave gaps, but most rows have marking pixels
        v, u = np.array(rows).T
        fits[side] = np.polyfit(v, u, 1)  # u = a v + b
        # Each marking's image is straight and where the model puts it: u = 400 -+ f * 2.5 / depth.
        predicted = CX + (-1 if side == "left" else 1) * 2.5 * (v - CY) / 2.0
        assert np.abs(u - predicted).max() < 1.5, side
    (a1, b1), (a2, b2) = fits["left"], fits["right"]
    v_meet = (b2 - b1) / (a1 - a2)
    assert (a1 * v_meet + b1, v_meet) == pytest.approx((CX, CY), abs=1.0)
    sim.close()


def test_a_car_20_m_ahead_has_the_apparent_size_the_model_predicts():
    """A 5 x 2 m car, 1.5 m high, centred 20 m ahead: its rear face is 17.5 m ahead of the car's origin,
    15.5 m in front of the camera: 400 * 2 / 15.5 = 51.6 px wide, 400 * 1.5 / 15.5 = 38.7 px high,
    its lower edge on the ground at v = 300 + 400 * 2 / 15.5 = 351.6. The camera, 0.5 m above its roof,
    also sees the roof up to the front edge, 20.5 m away: v = 300 + 400 * 0.5 / 20.5 = 309.8."""
    sim = _straight_start()
    sim.spawn_vehicle_ahead(20.0)
    image = sim.step(0.0, 0.0, 1.0).image
    body = np.any([_pixels(image, colour) for colour in OTHER_FACES], axis=0)
    rows, cols = np.nonzero(body)
    # Pixels wholly inside the outline have the faces' exact colours; the partly covered rim is blended.
    assert cols.min() == pytest.approx(CX - 25.8, abs=1.0)
    assert cols.max() + 1 == pytest.approx(CX + 25.8, abs=1.0)
    assert rows.max() + 1 == pytest.approx(351.6, abs=1.0)
    assert rows.min() == pytest.approx(309.8, abs=1.0)
    rear = np.flatnonzero(_pixels(image[:, int(CX)], OTHER))  # the rear face's column at the centre
    assert len(rear) == pytest.approx(38.7, abs=1.5)
    # The model's own projection of the box gives the same outline.
    corners = [[x, y, z] for x in (17.5, 22.5) for y in (-1.0, 1.0) for z in (0.0, 1.5)]
    uv, _ = rgb_front_camera().project(corners)
    assert uv[:, 0].max() - uv[:, 0].min() == pytest.approx(51.6, abs=0.1)
    assert (uv[:, 1].min(), uv[:, 1].max()) == pytest.approx((309.76, 351.61), abs=0.01)
    sim.close()


def test_the_front_view_is_not_mirrored():
    """In the right lane of the first straight the road's other lane is to the left: 5 m left of the
    car, 10 m ahead of the camera, is asphalt; 5 m right is grass."""
    sim = _straight_start()
    image = sim.step(0.0, 0.0, 1.0).image
    v = int(CY + F * 2.0 / 10.0)
    left, right = image[v, int(CX - F * 5.0 / 10.0)], image[v, int(CX + F * 5.0 / 10.0)]
    assert np.array_equal(left, ASPHALT) and np.array_equal(right, GRASS)
    sim.close()


def test_a_camera_under_the_ground_or_a_bad_sensor_entry_is_refused():
    with pytest.raises(ValueError, match="above the ground"):
        FrontCameraRenderer(_camera(z=-0.5))
    with pytest.raises(ValueError, match="fov"):
        camera_from_sensor({**_rgb_front_json(), "fov": 180.0})
    with pytest.raises(ValueError, match="not a camera sensor entry"):
        camera_from_sensor({**_rgb_front_json(), "image_size_x": "wide"})
    with pytest.raises(ValueError, match="camera_view"):
        SimConfig(camera_view="side")
