"""The embedded simulator core (av_td3_ros.sim): frames, signs, events, determinism, a driver.

Fast (a few seconds): small images where the size does not matter, short rollouts.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from av_td3_ros.sim import (
    LANE_MARKING_BROKEN,
    LANE_MARKING_SOLID,
    EmbeddedSimulator,
    SimConfig,
    WaypointFollower,
)
from av_td3_ros.sim.camera import rgb_front_camera
from av_td3_ros.sim.render import ASPHALT, EGO, GRASS, SKY

SMALL = dict(image_width=84, image_height=84)
TOP = dict(camera_view="top")


def _is(pixel: np.ndarray, colour: tuple[int, int, int, int]) -> bool:
    return bool(np.array_equal(pixel, np.array(colour, dtype=np.uint8)))


def _vehicle_frame(points: np.ndarray, pose: tuple[float, float, float]) -> np.ndarray:
    """Map-frame points -> (forward, left) of a car at pose."""
    x, y, yaw = pose
    c, s = math.cos(yaw), math.sin(yaw)
    d = np.asarray(points) - [x, y]
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)


def _start_in_lane(lane_y: float, **config) -> tuple[EmbeddedSimulator, int]:
    """A simulator whose ego starts on the first straight in the lane at map y = lane_y (0 or -5)."""
    for seed in range(50):
        sim = EmbeddedSimulator(SimConfig(**{**SMALL, **config}))
        state = sim.reset(seed=seed)
        if abs(state.y - lane_y) < 0.1 and abs(state.yaw) < 1e-6:
            return sim, seed
        sim.close()
    raise AssertionError(f"no seed starts in the lane at y={lane_y}")


@pytest.fixture
def follower() -> WaypointFollower:
    return WaypointFollower()


def test_default_image_is_the_rgb_front_camera_of_objects_json_in_bgra8():
    sim = EmbeddedSimulator()
    state = sim.reset(seed=0)
    img = state.image
    camera = rgb_front_camera()
    assert img.shape == (camera.height, camera.width, 4) == (600, 800, 4) and img.dtype == np.uint8
    assert (img[..., 3] == 255).all()  # opaque: bgra8 as the CARLA camera publishes
    assert (img[: int(camera.horizon_row(0)) - 1] == SKY).all()  # a level camera: sky in the top half
    assert _is(img[-1, 400], ASPHALT)  # the road just ahead of the car, which starts in its lane
    state2 = sim.step(0.5, 0.0, 0.0)
    assert state2.image is not img and not np.shares_memory(state2.image, img)  # frames never alias
    sim.close()


def test_top_view_image_is_400x300_bgra8_and_not_black():
    sim = EmbeddedSimulator(SimConfig(**TOP, image_width=400, image_height=300))
    state = sim.reset(seed=0)
    img = state.image
    assert img.shape == (300, 400, 4) and img.dtype == np.uint8
    assert (img[..., 3] == 255).all()  # opaque: bgra8 as the CARLA camera publishes
    assert img[..., :3].std() > 20  # not a flat (e.g. black) frame
    colours = {tuple(p) for p in img.reshape(-1, 4)[::97]}
    assert GRASS in colours and ASPHALT in colours
    assert _is(img[160, 200], EGO)  # the ego sits at the centre by default (1 m behind: its body)
    state2 = sim.step(0.5, 0.0, 0.0)
    assert state2.image is not img and not np.shares_memory(state2.image, img)  # frames never alias
    sim.close()


def test_same_seed_and_actions_give_the_same_images_and_poses():
    rng = np.random.default_rng(7)
    actions = rng.uniform(-1, 1, size=(40, 2))

    def rollout(seed: int):
        # Traffic on, so the IDM vehicles' use of the seeded generator is covered too.
        sim = EmbeddedSimulator(SimConfig(**SMALL, traffic=3))
        states = [sim.reset(seed=seed)]
        for steer, pedal in actions:
            states.append(sim.step(max(pedal, 0.0), steer, max(-pedal, 0.0)))
        states.append(sim.reset())  # the stream continues deterministically after a reset too
        sim.close()
        return states

    a, b, c = rollout(11), rollout(11), rollout(12)
    for sa, sb in zip(a, b, strict=True):
        assert np.array_equal(sa.image, sb.image)
        assert (sa.x, sa.y, sa.yaw, sa.speed, sa.frame) == (sb.x, sb.y, sb.yaw, sb.speed, sb.frame)
        assert (sa.collision, sa.lane_invasion, sa.on_road) == (sb.collision, sb.lane_invasion, sb.on_road)
    assert any(not np.array_equal(sa.image, sc.image) for sa, sc in zip(a, c, strict=True))


def test_traffic_drives_at_the_configured_speed_and_a_range_that_is_not_low_high_is_refused():
    from av_td3_ros.config_schema import SettingError

    sim = EmbeddedSimulator(SimConfig(**SMALL, traffic=4, traffic_speed=(2.0, 3.0)))
    sim.reset(seed=5)
    for _ in range(10):
        sim.step(0.0, 0.0, 1.0)
    cars = [v for v in sim._env.road.vehicles if v is not sim._env.vehicle]
    sim.close()
    assert len(cars) == 4
    assert all(2.0 <= c.target_speed <= 3.0 for c in cars), [c.target_speed for c in cars]
    assert all(c.speed <= 3.5 for c in cars), [c.speed for c in cars]  # IDM holds its target
    with pytest.raises(SettingError, match="traffic_speed"):
        SimConfig(traffic_speed=(5.0, 4.0))
    # a ROS array parameter of any length reaches here (sim_node -p traffic_speed:=[5.0])
    for wrong_length in ([5.0], [3.0, 4.0, 5.0]):
        with pytest.raises(SettingError, match="two speeds"):
            SimConfig(traffic_speed=wrong_length)
    assert SimConfig(traffic_speed=[3, 5]).traffic_speed == (3.0, 5.0)


def test_image_is_heading_up_and_agrees_with_the_map_frame(follower):
    """Through curves (heading turning well over 90 degrees) the ego stays at the anchor pixel and
    every lane-centre route point drawn where the map-frame convention says is on asphalt."""
    cfg = SimConfig(**TOP, image_width=160, image_height=120, view_width_m=40.0)
    ppm = cfg.image_width / cfg.view_width_m
    cx, cy = cfg.image_width * 0.5, cfg.image_height * 0.5
    sim = EmbeddedSimulator(cfg)
    state = sim.reset(seed=0)
    yaws = []
    for _ in range(60):
        route = sim.route()
        state = sim.step(*follower.control_state(route, state))
        yaws.append(state.yaw)
        img = state.image
        assert _is(img[int(cy + ppm), int(cx)], EGO)  # 1 m behind the centre: the car's body
        local = _vehicle_frame(sim.route(), state.pose)
        u = np.round(cx - local[:, 1] * ppm).astype(int)  # left in the world = left in the image
        v = np.round(cy - local[:, 0] * ppm).astype(int)  # ahead in the world = up in the image
        keep = (local[:, 0] > 4.0) & (u >= 0) & (u < cfg.image_width) & (v >= 0) & (v < cfg.image_height)
        assert keep.sum() >= 5
        pixels = img[v[keep], u[keep]]
        assert not any(_is(p, GRASS) for p in pixels)
        assert np.mean([_is(p, ASPHALT) for p in pixels]) >= 0.9
    assert np.ptp(np.unwrap(yaws)) > math.pi / 2
    sim.close()


def test_front_view_agrees_with_the_map_frame(follower):
    """Through curves, every lane-centre route point 5-20 m ahead lands, through the pinhole model
    of rgb_front and the map-frame pose (y left, yaw CCW), on the road in the rendered frame. (Farther
    away a row of 400x300 pixels spans several metres of ground and blends in the markings.)"""
    sim = EmbeddedSimulator(SimConfig(image_width=400, image_height=300))
    camera = rgb_front_camera(400, 300)
    state = sim.reset(seed=0)
    yaws = []
    for _ in range(60):
        state = sim.step(*follower.control_state(sim.route(), state))
        yaws.append(state.yaw)
        local = _vehicle_frame(sim.route(), state.pose)  # (forward, left)
        points = np.column_stack([local[:, 0], -local[:, 1], np.zeros(len(local))])  # CARLA: y right
        uv, depth = camera.project(points)
        keep = (local[:, 0] > 5.0) & (local[:, 0] < 20.0) & (uv[:, 0] >= 0) & (uv[:, 0] < 400) \
            & (uv[:, 1] >= 0) & (uv[:, 1] < 300)
        assert keep.sum() >= 5
        pixels = state.image[uv[keep, 1].astype(int), uv[keep, 0].astype(int)]
        assert not any(_is(p, GRASS) or _is(p, SKY) for p in pixels)
        assert np.mean([_is(p, ASPHALT) for p in pixels]) >= 0.9
    assert np.ptp(np.unwrap(yaws)) > math.pi / 2
    sim.close()


@pytest.mark.parametrize("lane_y, road_side", [(-5.0, "left"), (0.0, "right")])
def test_image_is_not_mirrored(lane_y, road_side):
    """On the first straight the two-lane road lies to the left of a car in the right lane (y = -5)
    and to the right of a car in the left lane (y = 0): 5 m to that side is asphalt, 5 m to the
    other side is grass."""
    sim, _ = _start_in_lane(lane_y, **TOP)
    img = sim.state.image
    ppm = 84 / 40.0
    left_px, right_px = img[42, round(42 - 5 * ppm)], img[42, round(42 + 5 * ppm)]
    road, grass = (left_px, right_px) if road_side == "left" else (right_px, left_px)
    assert _is(road, ASPHALT) and _is(grass, GRASS)
    sim.close()


def test_steering_right_decreases_the_map_yaw_and_left_increases_it():
    sim = EmbeddedSimulator(SimConfig(**SMALL))
    for steer, sign in ((1.0, -1.0), (-1.0, 1.0)):
        start = sim.reset(seed=3)
        assert abs(start.yaw) < 1e-9  # first straight, heading east
        state = start
        for _ in range(3):
            state = sim.step(0.3, steer, 0.0)
        assert sign * state.yaw > 0.2
        assert sign * state.yaw_rate > 0  # CCW-positive rate agrees with the yaw change
        assert sign * (state.y - start.y) > 0  # a right turn moves the car to map -y (right)
        assert sign * state.vy > 0  # side slip points into the turn
    sim.close()


def test_pose_moves_along_its_yaw_and_speed():
    sim = EmbeddedSimulator(SimConfig(**SMALL))
    prev = sim.reset(seed=1)
    for steer in (0.0, 0.4, 0.4, -0.4, -0.4, 0.0):
        state = sim.step(0.4, steer, 0.0)
        dx, dy = state.x - prev.x, state.y - prev.y
        heading = math.atan2(dy, dx)
        mid_yaw = prev.yaw + 0.5 * math.remainder(state.yaw - prev.yaw, 2 * math.pi)
        assert abs(math.remainder(heading - mid_yaw, 2 * math.pi)) < 0.25  # within the slip angle
        assert math.hypot(dx, dy) == pytest.approx(0.5 * (prev.speed + state.speed) * 0.2, rel=0.1)
        assert state.sim_time == pytest.approx(prev.sim_time + 0.2)
        assert state.frame == prev.frame + 1
        prev = state
    sim.close()


def test_route_lies_ahead_on_the_lane_and_moves_with_the_car(follower):
    sim = EmbeddedSimulator(SimConfig(**SMALL))
    state = sim.reset(seed=0)
    route = sim.route()
    assert route.shape == (100, 2) and route.dtype == np.float64
    gaps = np.linalg.norm(np.diff(route, axis=0), axis=1)
    assert gaps.max() < 2.2 and np.median(gaps) == pytest.approx(2.0, abs=0.05)  # no jumps at joins
    local = _vehicle_frame(route, state.pose)
    assert 0.0 < local[0, 0] <= 2.5 and abs(local[0, 1]) < 0.5
    assert gaps.sum() > 190  # ~200 m, across several lane segments of the circuit
    first = route[0]
    for _ in range(20):
        state = sim.step(*follower.control_state(sim.route(), state))
    moved = sim.route()
    local = _vehicle_frame(moved, state.pose)
    assert 0.0 < local[0, 0] <= 2.5 and abs(local[0, 1]) < 1.0  # still starts just ahead
    assert np.linalg.norm(moved[0] - first) > 20  # it moved with the car
    long_route = sim.route(distance_m=1000.0, spacing_m=5.0)  # several laps for a one-shot Path
    assert long_route.shape == (200, 2)
    sim.close()


def test_collision_event_names_the_other_actor_and_the_car_stays_drivable():
    sim = EmbeddedSimulator(SimConfig(**SMALL))
    sim.reset(seed=0)
    other = sim.spawn_vehicle_ahead(12.0)
    assert other >= 2
    events = []
    for _ in range(15):
        state = sim.step(1.0, 0.0, 0.0)
        events.append((state.collision, state.collision_actor_id))
    hits = [actor for hit, actor in events if hit]
    assert hits and set(hits) == {other}
    assert not events[0][0]  # 12 m ahead: no contact on the first tick
    assert all((actor == 0) == (not hit) for hit, actor in events)
    before = state
    for _ in range(3):  # highway-env would freeze a crashed car (no steering, braking); CARLA does not
        state = sim.step(0.5, 1.0, 0.0)
    assert state.speed > 0.5 and abs(state.yaw - before.yaw) > 0.05
    sim.close()


def test_lane_invasion_reports_broken_then_solid_and_leaving_the_road():
    sim, _ = _start_in_lane(0.0)  # left lane: a right turn crosses the broken centre line first
    crossings, left_road_at = [], None
    for k in range(40):
        state = sim.step(0.3, 0.4, 0.0)
        if state.lane_invasion:
            assert state.crossed_markings
            crossings.extend(state.crossed_markings)
        else:
            assert state.crossed_markings == ()
        if not state.on_road:
            left_road_at = k
            break
    assert left_road_at is not None
    assert crossings == [LANE_MARKING_BROKEN, LANE_MARKING_SOLID]
    assert state.lane_invasion and state.crossed_markings[-1] == LANE_MARKING_SOLID  # the tick it left
    sim.close()


def test_reset_starts_a_fresh_episode_with_later_stamps():
    sim = EmbeddedSimulator(SimConfig(**SMALL))
    first = sim.reset(seed=5)
    for _ in range(30):
        state = sim.step(1.0, 0.3, 0.0)
    assert not state.on_road
    again = sim.reset(seed=5)
    assert (again.x, again.y, again.yaw, again.speed) == (first.x, first.y, first.yaw, first.speed)
    assert np.array_equal(again.image, first.image)
    assert again.on_road and not again.collision and not again.lane_invasion
    assert again.episode == first.episode + 1 and again.episode_step == 0
    assert again.frame > state.frame and again.sim_time > state.sim_time  # /clock never goes back
    with pytest.raises(RuntimeError):
        EmbeddedSimulator(SimConfig(**SMALL)).step(0.0, 0.0, 0.0)
    sim.close()


def test_throttle_brake_mapping():
    sim = EmbeddedSimulator(SimConfig(**SMALL, initial_speed=0.0))
    assert sim.reset(seed=0).speed == 0.0
    speeds = [sim.step(1.0, 0.0, 0.0).speed for _ in range(60)]
    assert speeds[0] > 0.5 and np.all(np.diff(speeds) > 0)
    assert 10.0 < speeds[-1] < sim.config.max_speed  # saturates below the asymptote
    coast = [sim.step(0.0, 0.0, 0.0).speed for _ in range(5)]
    assert np.all(np.diff(coast) < 0) and coast[0] > speeds[-1] - 0.2  # coasting: a gentle slow-down
    braked = [sim.step(0.0, 0.0, 1.0).speed for _ in range(15)]
    assert braked[-1] == 0.0 and min(braked) >= 0.0  # full brake stops, never reverses
    assert sim.step(0.0, 0.0, 1.0).speed == 0.0
    assert sim.step(float("nan"), float("nan"), float("nan")).speed == 0.0  # NaN is ignored, not fatal


def _episode_length(sim: EmbeddedSimulator, seed: int, policy, cap: int) -> int:
    """Ticks until the car leaves the road or invades a lane (a tick that does counts), at most cap."""
    state = sim.reset(seed=seed)
    for tick in range(1, cap + 1):
        state = sim.step(*policy(state))
        if not state.on_road or state.lane_invasion:
            return tick
    return cap


def test_pure_pursuit_drives_on_while_random_actions_leave_the_road(follower):
    sim = EmbeddedSimulator(SimConfig(**SMALL))
    pursuit = [_episode_length(sim, seed, lambda st: follower.control_state(sim.route(), st), 300)
               for seed in range(3)]
    rng = np.random.default_rng(0)

    def random_policy(_state):
        steer, pedal = rng.uniform(-1, 1, 2)  # the contract's action: (steer, throttle_brake)
        return max(pedal, 0.0), steer, max(-pedal, 0.0)

    random_lengths = [_episode_length(sim, 100 + seed, random_policy, 300) for seed in range(10)]
    assert pursuit == [300, 300, 300]  # no lane invasion at all in 300 ticks (60 s, ~1.3 laps)
    assert np.median(random_lengths) <= 30, random_lengths
    sim.close()


def test_config_rejects_a_tick_that_is_not_whole_substeps():
    with pytest.raises(ValueError):
        SimConfig(fixed_delta_seconds=0.1, simulation_frequency=15.0)
    assert SimConfig(fixed_delta_seconds=0.05, simulation_frequency=20.0).substeps == 1


def test_importing_sets_offscreen_sdl_and_no_ros():
    env = {k: v for k, v in os.environ.items() if k not in ("SDL_VIDEODRIVER", "PYGAME_HIDE_SUPPORT_PROMPT")}
    code = (
        "import os, sys; import av_td3_ros.sim; "
        "print(os.environ.get('SDL_VIDEODRIVER'), 'rclpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == ["offscreen False"]  # and no pygame banner on stdout
