"""An embedded stand-in for CARLA on highway-env 1.12.1's `racetrack-v1` (no ROS in here).

highway-env provides the circuit (its lane graph), the kinematic bicycle physics, collision
detection and optional IDM traffic. This module drives them directly instead of through
`env.step()`: the gym step builds an observation and a reward every call (the Kinematics
observation alone costs ~7 ms for its pandas table) and `env.render()` redraws at every physics
substep. We step the road ourselves, render once per tick, and convert everything into the signals
the CARLA ROS bridge publishes.

Frames and signs (tested in test/test_sim.py):
- highway-env's world frame has y pointing DOWN on screen, so its heading grows clockwise on
  screen and a positive steering angle turns the car RIGHT - the same as CARLA's left-handed frame.
- The map frame we report is ROS-like (REP 103): x_map = x_hw, y_map = -y_hw (y LEFT),
  yaw_map = -heading_hw (counter-clockwise positive). This is the flip the CARLA ROS bridge applies.
- CARLA steer in [-1, 1], positive = right, maps to highway-env steering = steer * max_steer_rad
  with the SAME sign. Steering right therefore makes yaw_map decrease.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# The package __init__ has already set SDL_VIDEODRIVER / PYGAME_HIDE_SUPPORT_PROMPT: it runs before
# this module, and before highway-env (which imports pygame) is imported anywhere in this package.
import gymnasium as gym
import highway_env  # noqa: F401  (registers racetrack-v1)
import numpy as np
from highway_env import utils as hw_utils
from highway_env.road.lane import LineType
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.kinematics import Vehicle

from av_td3_ros.config_schema import Settings, setting
from av_td3_ros.sim.camera import rgb_front_camera
from av_td3_ros.sim.render import FrontCameraRenderer, TopDownRenderer

ENV_ID = "racetrack-v1"
EGO_ACTOR_ID = 1  # other actors are numbered 2, 3, ... in spawn order; 0 means "none"

# carla_msgs/CarlaLaneInvasionEvent marking constants, so a node can publish them unchanged.
LANE_MARKING_OTHER = 0
LANE_MARKING_BROKEN = 1
LANE_MARKING_SOLID = 2

CAMERA_VIEWS = ("front", "top")
# The SimConfig settings sim_node declares as parameters (the others are the library's: the
# camera's anchor, the vehicle dynamics). The demo's evaluation rebuilds the run's world from the
# same list.
NODE_SETTINGS = ("seed", "camera_view", "image_width", "image_height", "view_width_m",
                 "fixed_delta_seconds", "traffic", "traffic_speed", "random_start", "initial_speed")
_RGB_FRONT = rgb_front_camera()  # config/objects.json's camera: its image size is the default one


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


@dataclass
class SimConfig(Settings):
    """Everything that shapes the embedded simulation. Defaults are the demo's defaults.

    Step period: 0.2 s (5 Hz). At racetrack speeds (5-10 m/s) one tick moves the car 1-2 m, a few
    pixels at 84x84, so consecutive frames in a 4-stack differ visibly; a discount of 0.99 spans
    ~20 s of driving; and every measurement in FACTS (random policy ~7-9 steps, kinematics TD3 in
    60 s, pure pursuit 1,500-step episodes) was taken at this rate. 20 Hz would cost 4x the
    transitions, inference and ROS traffic per second of driving for nearly identical frames.
    """

    camera_view: str = setting(
        "front", "front: what the rgb_front camera of config/objects.json sees (same fov and mounting); "
        "top: a heading-up map around the car", choices=CAMERA_VIEWS,
    )
    image_width: int = setting(_RGB_FRONT.width, "camera image width [px]", min=8, max=4096)
    image_height: int = setting(_RGB_FRONT.height, "camera image height [px]", min=8, max=4096)
    # Top view only. 40 m -> 10 px/m at 400 px (15 m visible ahead), 2.1 px/m at 84 px (20 m ahead).
    view_width_m: float = setting(40.0, "metres of ground across the image width", min=1.0)
    ego_anchor: tuple[float, float] = setting(
        (0.5, 0.5), "where the ego sits in the image, as fractions of (width, height) from the top-left",
        min=0.0, max=1.0,
    )
    fixed_delta_seconds: float = setting(
        0.2, "simulated seconds per tick (one control per tick, CARLA's synchronous mode); times the "
        "15 Hz physics it must be a whole number of substeps", min=0.05, max=1.0,
    )
    simulation_frequency: float = setting(15.0, "physics substeps per second (highway-env's default)", gt=0.0)
    # 0 keeps the learning problem to lane keeping.
    traffic: int = setting(0, "other (IDM) cars on the circuit", min=0, max=20)
    # IDM keeps its spawn speed as its target. highway-env's racetrack draws 6-9 m/s, slower than
    # the ego's ~10.5, but a car that never brakes for them can still survive a 300-step episode by
    # driving slower everywhere (docs/benchmarks.md section 10). Slow cars make that cost speed,
    # so only a driver that sees them drives fast and survives.
    traffic_speed: tuple[float, float] = setting(
        (6.0, 9.0), "IDM cars' spawn and target speed, uniform in [low, high] [m/s]", min=0.0, max=12.0,
    )
    seed: int = setting(0, "seed of the first reset (later resets continue its random stream)", min=0)
    # The track's speed limit is 10.
    max_speed: float = setting(12.0, "full-throttle asymptote [m/s]", gt=0.0)
    # highway-env's own spawn speed (the lane's limit), at which FACTS measured random ~7-9 steps.
    # A slow start lets a random or untrained policy brake to a standstill and "survive"
    # (measured: 5 m/s gives random episodes of ~117 steps, 10 m/s ~19), which hides whether it steers.
    initial_speed: float = setting(10.0, "ego speed at each reset [m/s]", min=0.0, max=12.0)
    max_accel: float = setting(
        5.0, "full throttle at standstill [m/s^2] (highway-env's action range)", gt=0.0
    )
    max_brake_decel: float = setting(6.0, "full brake [m/s^2]", gt=0.0)
    # So that zero throttle slows down like a car.
    rolling_decel: float = setting(0.3, "coasting deceleration [m/s^2]", min=0.0)
    max_steer_rad: float = setting(
        math.pi / 4, "wheel angle at |steer| = 1 [rad] (highway-env's steering range)", gt=0.0
    )
    random_start: bool = setting(
        False, "start each episode anywhere on the circuit (false: highway-env's start)"
    )

    def validate(self) -> None:
        super().validate()
        n = self.fixed_delta_seconds * self.simulation_frequency
        self.require("fixed_delta_seconds", abs(n - round(n)) <= 1e-6 and round(n) >= 1,
                     f"times simulation_frequency ({self.simulation_frequency}) must be a whole number >= 1")
        self.require("traffic_speed", len(self.traffic_speed) == 2, "two speeds: [low, high]")
        low, high = self.traffic_speed
        self.require("traffic_speed", low <= high, "[low, high] with low <= high")

    @property
    def substeps(self) -> int:
        return int(round(self.fixed_delta_seconds * self.simulation_frequency))


@dataclass(frozen=True, eq=False)  # eq on an image array would be ambiguous
class SimState:
    """One tick's worth of CARLA-like signals. Poses are in the ROS-like map frame (y left, yaw CCW)."""

    frame: int  # monotonic across resets, like CARLA's world frame
    sim_time: float  # frame * fixed_delta_seconds [s]; monotonic across resets (safe for /clock)
    episode: int  # number of resets so far
    episode_step: int  # ticks since the last reset (0 at reset)
    image: np.ndarray = field(repr=False)  # (H, W, 4) uint8 BGRA: the front camera or the top view
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0  # [rad] in [-pi, pi)
    speed: float = 0.0  # [m/s] >= 0
    vx: float = 0.0  # vehicle frame, forward [m/s]
    vy: float = 0.0  # vehicle frame, left [m/s] (the bicycle model's side slip)
    yaw_rate: float = 0.0  # [rad/s] CCW positive
    collision: bool = False  # the ego touched another actor during this tick
    collision_actor_id: int = 0  # that actor (0 = none)
    lane_invasion: bool = False  # the ego's centre crossed a lane marking during this tick
    crossed_markings: tuple[int, ...] = ()  # LANE_MARKING_* of each crossed marking, in order
    on_road: bool = True  # the ego's centre is inside a lane
    lane_offset: float = 0.0  # [m] from the current lane's centreline, positive = left

    @property
    def pose(self) -> tuple[float, float, float]:
        return self.x, self.y, self.yaw


class EmbeddedSimulator:
    """racetrack-v1 behind a CARLA-like tick: reset(), step(throttle, steer, brake), route(), close()."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        cfg = self.config
        hw_config = {
            # The cheapest observation highway-env offers: we never read it, but reset() builds one.
            "observation": {"type": "AttributesObservation", "attributes": []},
            "action": {"type": "ContinuousAction"},  # makes the ego a plain kinematic Vehicle
            "other_vehicles": 0,  # traffic is spawned here, with an exact count
            "simulation_frequency": cfg.simulation_frequency,
            "policy_frequency": 1.0 / cfg.fixed_delta_seconds,
        }
        # The gym checker rejects the empty observation space; we do not use the gym API anyway.
        self._env = gym.make(ENV_ID, config=hw_config, disable_env_checker=True).unwrapped
        if cfg.camera_view == "front":
            self._renderer = FrontCameraRenderer(rgb_front_camera(cfg.image_width, cfg.image_height))
        else:
            self._renderer = TopDownRenderer(cfg.image_width, cfg.image_height, cfg.view_width_m,
                                             cfg.ego_anchor)
        self._dt = cfg.fixed_delta_seconds / cfg.substeps
        self._frame = 0
        self._episode = 0
        self._episode_step = 0
        self._seeded = False
        self._actor_ids: dict[int, int] = {}
        self._band = 0
        self._state: SimState | None = None

    # ----------------------------------------------------------------------------------- lifecycle
    @property
    def fixed_delta_seconds(self) -> float:
        return self.config.fixed_delta_seconds

    @property
    def state(self) -> SimState | None:
        return self._state

    def reset(self, seed: int | None = None) -> SimState:
        """New episode. A seed reseeds everything; None continues the random stream (as gymnasium),
        except on the very first reset, which uses config.seed. Frame and time keep increasing."""
        if seed is None and not self._seeded:
            seed = self.config.seed
        self._env.reset(seed=seed)
        self._seeded = self._seeded or seed is not None
        env, rng, cfg = self._env, self._env.np_random, self.config
        ego = env.vehicle
        if cfg.random_start:
            lane_index = env.road.network.random_lane_index(rng)
            lane = env.road.network.get_lane(lane_index)
            s = float(rng.uniform(0.0, lane.length))
            ego.position = np.asarray(lane.position(s, 0.0), dtype=np.float64)
            ego.heading = lane.heading_at(s)
            ego.on_state_update()
        ego.speed = float(cfg.initial_speed)
        # Instance limits (highway-env clips against these); the ego never reverses, like a car
        # without a reverse gear engaged.
        ego.MAX_SPEED, ego.MIN_SPEED = float(cfg.max_speed), 0.0
        ego.action = {"steering": 0.0, "acceleration": 0.0}
        self._spawn_traffic(cfg.traffic, rng)
        self._actor_ids = {id(ego): EGO_ACTOR_ID}
        for other in self._others():
            self._register(other)
        self._renderer.set_road(env.road.network)
        self._band = self._lane_band(ego)
        self._episode += 1
        self._episode_step = 0
        # A reset is a tick of its own (CARLA needs one to apply a respawn): a fresh, later stamp.
        self._frame += 1
        self._state = self._make_state(collision_actor=0, crossed=())
        return self._state

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> EmbeddedSimulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- tick
    def step(self, throttle: float, steer: float, brake: float) -> SimState:
        """Apply one CARLA-style control for fixed_delta_seconds and return the new state.

        throttle, brake in [0, 1]; steer in [-1, 1], positive = RIGHT (CARLA). Values are clipped,
        NaN counts as 0. Longitudinal model (per physics substep, v = speed):
            a = max_accel * throttle * (1 - v / max_speed) - (max_brake_decel * brake + rolling_decel)
        the second term only while moving, and never past standstill. This gives CARLA-like
        behaviour that highway-env's raw acceleration lacks: speed saturates with throttle, a car
        coasts down with no throttle, and brake stops without reversing.
        """
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        throttle = float(np.clip(np.nan_to_num(throttle), 0.0, 1.0))
        brake = float(np.clip(np.nan_to_num(brake), 0.0, 1.0))
        steer = float(np.clip(np.nan_to_num(steer), -1.0, 1.0))
        cfg, env, ego = self.config, self._env, self._env.vehicle
        steering = steer * cfg.max_steer_rad  # same sign: both CARLA and highway-env turn right on +
        collision_actor = 0
        crossed: list[int] = []
        for _ in range(cfg.substeps):
            v = float(ego.speed)
            accel = cfg.max_accel * throttle * max(0.0, 1.0 - v / cfg.max_speed)
            if v > 0.0:
                accel -= cfg.max_brake_decel * brake + cfg.rolling_decel
            accel = max(accel, -v / self._dt)  # stop at zero, do not roll backwards
            ego.action = {"steering": steering, "acceleration": accel}
            env.road.act()  # traffic decides; the ego's plain Vehicle keeps the action set above
            env.road.step(self._dt)
            hit = self._collect_collision(ego)
            collision_actor = collision_actor or hit
            band = self._lane_band(ego)
            if band != self._band:
                crossed.extend(self._crossed_markings(ego, self._band, band))
                self._band = band
        self._frame += 1
        self._episode_step += 1
        self._state = self._make_state(collision_actor=collision_actor, crossed=tuple(crossed))
        return self._state

    # --------------------------------------------------------------------------------------- route
    def route(self, distance_m: float = 200.0, spacing_m: float = 2.0) -> np.ndarray:
        """Centreline of the ego's current lane ahead, (N, 2) float64 map-frame points.

        Points start one spacing ahead of the ego's projection on its lane and follow the lane graph
        (the same lane id) across segments; N = round(distance_m / spacing_m). The circuit is closed,
        so any distance works: a node that publishes the route once per reset can ask for several laps.
        """
        if self._state is None:
            raise RuntimeError("call reset() before route()")
        if spacing_m <= 0 or distance_m < spacing_m:
            raise ValueError("need spacing_m > 0 and distance_m >= spacing_m")
        network, ego = self._env.road.network, self._env.vehicle
        index = ego.lane_index
        lane = network.get_lane(index)
        target = lane.local_coordinates(ego.position)[0] + spacing_m
        count = int(round(distance_m / spacing_m))
        points = np.empty((count, 2), dtype=np.float64)
        k = 0
        while k < count:
            if target <= lane.length:
                points[k] = lane.position(target, 0.0)
                k += 1
                target += spacing_m
                continue
            # Segments of racetrack-v1 overlap or leave small gaps at their joins (up to ~2.6 m on
            # the outer lane); restarting at the projection of this lane's end keeps the spacing even.
            end = lane.position(lane.length, 0.0)
            leftover = target - lane.length
            index = self._next_lane_index(index)
            lane = network.get_lane(index)
            target = float(np.clip(lane.local_coordinates(end)[0], 0.0, lane.length)) + leftover
        points[:, 1] *= -1.0  # highway-env y down -> map y left
        return points

    def spawn_vehicle_ahead(self, distance_m: float, speed: float = 0.0, lane_offset_m: float = 0.0) -> int:
        """Place a passive car (constant speed, no controller) on the ego's lane, distance_m ahead.

        For scenario tests (collision events). Returns its actor id. The frame is not re-rendered
        until the next step().
        """
        if self._state is None:
            raise RuntimeError("call reset() before spawn_vehicle_ahead()")
        network, ego = self._env.road.network, self._env.vehicle
        index = ego.lane_index
        lane = network.get_lane(index)
        s = lane.local_coordinates(ego.position)[0] + distance_m
        while s > lane.length:
            end = lane.position(lane.length, 0.0)
            s -= lane.length
            index = self._next_lane_index(index)
            lane = network.get_lane(index)
            s += max(0.0, lane.local_coordinates(end)[0])
        # lane_offset_m is map-frame left-positive; highway-env's lateral is right-positive.
        vehicle = Vehicle(self._env.road, lane.position(s, -lane_offset_m), lane.heading_at(s), speed)
        self._env.road.vehicles.append(vehicle)
        return self._register(vehicle)

    # ------------------------------------------------------------------------------------ internals
    def _others(self) -> list:
        ego = self._env.vehicle
        return [v for v in self._env.road.vehicles if v is not ego] + list(self._env.road.objects)

    def _register(self, actor) -> int:
        actor_id = EGO_ACTOR_ID + len(self._actor_ids)
        self._actor_ids[id(actor)] = actor_id
        return actor_id

    def _spawn_traffic(self, count: int, rng: np.random.Generator) -> None:
        """IDM cars at random places of the circuit, >= 20 m from every other car (as racetrack-v1)."""
        road = self._env.road
        spawned, attempts = 0, 0
        while spawned < count and attempts < 50 * max(count, 1):
            attempts += 1
            index = road.network.random_lane_index(rng)
            lane = road.network.get_lane(index)
            s = float(rng.uniform(0.0, lane.length))
            position = lane.position(s, 0.0)
            if any(np.linalg.norm(position - v.position) < 20.0 for v in road.vehicles):
                continue
            # No route: IDM picks the next lane from the graph at each join, i.e. drives the loop.
            low, high = self.config.traffic_speed
            speed = low + float(rng.uniform(0.0, high - low))
            vehicle = IDMVehicle(road, position, lane.heading_at(s), speed=speed)
            road.vehicles.append(vehicle)
            spawned += 1

    def _next_lane_index(self, index: tuple) -> tuple:
        """The racetrack's lane graph is a single loop: one successor road; keep the lane id."""
        graph = self._env.road.network.graph
        _from, _to, lane_id = index
        next_to = next(iter(graph[_to]))
        return _to, next_to, min(lane_id, len(graph[_to][next_to]) - 1)

    def _collect_collision(self, ego) -> int:
        """Report a contact as an event and clear highway-env's sticky `crashed` flags.

        highway-env freezes a crashed vehicle for good (zero steering, braking to a stop). CARLA
        does not: its collision sensor fires and the car stays drivable; ending the episode is the
        episode manager's call. The push-apart impulse highway-env computed is still applied.
        """
        hit = 0
        if ego.crashed:
            others = self._others()
            touching = [o for o in others if hw_utils.are_polygons_intersecting(
                ego.polygon(), o.polygon(), np.zeros(2), np.zeros(2))[0]]
            if not touching and others:  # already pushed apart this substep: take the nearest
                touching = [min(others, key=lambda o: np.linalg.norm(o.position - ego.position))]
            if touching:
                hit = self._actor_ids.get(id(touching[0]), 0) or self._register(touching[0])
        for vehicle in self._env.road.vehicles:
            vehicle.crashed = False
        return hit

    def _lane_band(self, ego) -> int:
        """Which stripe of road the ego's centre is in: lane id, -1 off the left edge, n off the right.

        Lane ids of a racetrack road run left (0) to right; highway-env's lateral coordinate is
        positive to the right of the lane direction.
        """
        _from, _to, lane_id = ego.lane_index
        s, lat = ego.lane.local_coordinates(ego.position)
        half = ego.lane.width_at(s) / 2.0
        if lat < -half:
            return lane_id - 1
        if lat > half:
            return lane_id + 1
        return lane_id

    def _crossed_markings(self, ego, old: int, new: int) -> list[int]:
        """Markings between two bands of the ego's current road, in crossing order.

        A boundary drawn by both neighbouring lanes counts as the more visible of the two types;
        a boundary with no line at all is not a marking (no event). Moving between two off-road
        bands (the closest lane can jump across the infield) is not an invasion either.
        """
        lanes = self._env.road.network.graph[ego.lane_index[0]][ego.lane_index[1]]
        n = len(lanes)
        if not (0 <= old < n or 0 <= new < n):
            return []
        step = 1 if new > old else -1
        out = []
        for k in range(old, new, step):
            boundary = max(k, k + step)  # boundary b separates band b-1 (left) and band b (right)
            kinds = []
            if boundary - 1 >= 0:
                kinds.append(lanes[boundary - 1].line_types[1])
            if boundary < n:
                kinds.append(lanes[boundary].line_types[0])
            if any(t in (LineType.CONTINUOUS, LineType.CONTINUOUS_LINE) for t in kinds):
                out.append(LANE_MARKING_SOLID)
            elif LineType.STRIPED in kinds:
                out.append(LANE_MARKING_BROKEN)
        return out

    def _make_state(self, collision_actor: int, crossed: tuple[int, ...]) -> SimState:
        cfg, ego = self.config, self._env.vehicle
        image = self._renderer.render(ego, self._others())
        speed = float(ego.speed)
        # The kinematic bicycle's slip angle at the centre of gravity (highway-env Vehicle.step).
        beta = math.atan(0.5 * math.tan(float(ego.action["steering"])))
        yaw_rate_hw = speed * math.sin(beta) / (ego.LENGTH / 2.0)
        s, lat = ego.lane.local_coordinates(ego.position)
        return SimState(
            frame=self._frame,
            sim_time=self._frame * cfg.fixed_delta_seconds,
            episode=self._episode,
            episode_step=self._episode_step,
            image=image,
            x=float(ego.position[0]),
            y=-float(ego.position[1]),
            yaw=_wrap(-float(ego.heading)),
            speed=speed,
            vx=speed * math.cos(beta),
            vy=-speed * math.sin(beta),
            yaw_rate=-yaw_rate_hw,
            collision=collision_actor != 0,
            collision_actor_id=int(collision_actor),
            lane_invasion=len(crossed) > 0,
            crossed_markings=crossed,
            on_road=bool(ego.lane.on_lane(ego.position, s, lat)),
            lane_offset=-float(lat),
        )
